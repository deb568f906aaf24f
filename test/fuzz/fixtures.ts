// The fixtures the cases start from, read once per process: the tiny checkpoints (config and
// parsed safetensors), and the ChnSentiCorp training slice.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { sentencePieceToTokenizerJson } from '../../lib/index'
import type { ModelFixture } from './case'

export const FIXTURES = path.join(__dirname, '..', 'fixtures')

export interface HeaderEntry {
  dtype: string
  shape: number[]
  data_offsets: [number, number]
}

export interface ParsedCheckpoint {
  /** The header's tensors in file order (no __metadata__ in these fixtures). */
  entries: Array<[string, HeaderEntry]>
  data: Buffer
  /** config.json as text and as an object. */
  configText: string
  config: Record<string, unknown>
}

const checkpoints = new Map<ModelFixture, ParsedCheckpoint>()

export function checkpoint(name: ModelFixture): ParsedCheckpoint {
  let c = checkpoints.get(name)
  if (!c) {
    const dir = path.join(FIXTURES, name)
    const bytes = fs.readFileSync(path.join(dir, 'model.safetensors'))
    const n = Number(bytes.readBigUInt64LE(0))
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, HeaderEntry>
    const configText = fs.readFileSync(path.join(dir, 'config.json'), 'utf8')
    c = { entries: Object.entries(header), data: bytes.subarray(8 + n), configText, config: JSON.parse(configText) }
    checkpoints.set(name, c)
  }
  return c
}

/** A tensor's bytes in the fixture's data area. */
export function tensorBytes(c: ParsedCheckpoint, name: string): Buffer {
  const e = c.entries.find(([n]) => n === name)![1]
  return c.data.subarray(e.data_offsets[0], e.data_offsets[1])
}

/**
 * A safetensors file: the 8-byte length, the header text padded with spaces to a multiple of 8
 * (as HF's writer does), the data. `lengthDelta` makes the stored length disagree with the header.
 */
export function safetensorsFile(headerText: string, data: Uint8Array, lengthDelta = 0n): Buffer {
  const json = Buffer.from(headerText, 'utf8')
  const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, 0x20)
  json.copy(padded)
  const length = Buffer.alloc(8)
  length.writeBigUInt64LE(BigInt.asUintN(64, BigInt(padded.length) + lengthDelta))
  return Buffer.concat([length, padded, data])
}

/** Tensors laid end to end in the given order: the header entries and the data area they tile. */
export function tile(tensors: Array<{ name: string; dtype: string; shape: number[]; bytes: Uint8Array }>): { header: Record<string, unknown>; data: Buffer } {
  const header: Record<string, unknown> = {}
  let offset = 0
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.length] }
    offset += t.bytes.length
  }
  return { header, data: Buffer.concat(tensors.map((t) => t.bytes)) }
}

export interface LabeledLine {
  label: 0 | 1
  text: string
}

let train: LabeledLine[] | undefined

/** ChnSentiCorp training records (label<TAB>text_a under a header). */
export function trainingLines(): LabeledLine[] {
  train ??= fs
    .readFileSync(path.join(FIXTURES, 'chnsenticorp', 'train.tsv'), 'utf8')
    .split('\n')
    .slice(1)
    .filter((l) => l.includes('\t'))
    .map((l) => ({ label: Number(l.slice(0, l.indexOf('\t'))) as 0 | 1, text: l.slice(l.indexOf('\t') + 1) }))
    // short texts keep each case small; the fixture's texts hold no tabs, quotes or line breaks
    .filter((r) => r.text.length <= 80 && !/["\t\r\n]/.test(r.text))
  return train
}

/** The ernie-tiny fixture's PEFT adapter (r 4, alpha 8, all seven projections, F32). */
export const ADAPTER_DIR = path.join(FIXTURES, 'ernie-tiny', 'adapter')

const tokenizerForms = new Map<string, Record<string, Buffer>>()

/**
 * A tokenizer directory's files: ernie-tiny's tokenizer.model, or the tokenizer.json the
 * converter makes of it (as transformers' convert_slow_tokenizer would), with its tokenizer_config.json.
 */
export function tokenizerFiles(form: 'tokenizer.model' | 'tokenizer.json'): Record<string, Buffer> {
  let files = tokenizerForms.get(form)
  if (!files) {
    const dir = path.join(FIXTURES, 'ernie-tiny')
    const model = fs.readFileSync(path.join(dir, 'tokenizer.model'))
    const main = form === 'tokenizer.model' ? model : Buffer.from(JSON.stringify(sentencePieceToTokenizerJson(model), null, 2))
    files = { [form]: main, 'tokenizer_config.json': fs.readFileSync(path.join(dir, 'tokenizer_config.json')) }
    tokenizerForms.set(form, files)
  }
  return files
}
