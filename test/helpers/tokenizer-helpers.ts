// Shared by the tokenizer tests: fixture files and golden encodings (test/fixtures/tokenizer/).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

export const TOKENIZER_FIXTURES = join(__dirname, '..', 'fixtures', 'tokenizer')
export const MODELS = ['ernie_style_bpe', 'unigram'] as const
export type FixtureModel = (typeof MODELS)[number]

export interface Golden {
  text: string
  ids: number[]
  pieces: string[]
}

export function readFixture(name: string): Uint8Array {
  const buf = readFileSync(join(TOKENIZER_FIXTURES, name))
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.length)
}

export function modelBytes(model: FixtureModel): Uint8Array {
  return readFixture(`${model}.model`)
}

export function goldens(model: FixtureModel): Golden[] {
  return readFileSync(join(TOKENIZER_FIXTURES, `${model}.golden.jsonl`), 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Golden)
}

/** First golden line whose ids differ from `encode`, described; undefined when all match. */
export function firstIdMismatch(lines: Golden[], encode: (text: string) => number[]): string | undefined {
  for (const [i, g] of lines.entries()) {
    const ids = encode(g.text)
    if (ids.length !== g.ids.length || ids.some((id, k) => id !== g.ids[k])) {
      return `line ${i} ${JSON.stringify(g.text.slice(0, 60))}: got ${JSON.stringify(ids.slice(0, 40))}, want ${JSON.stringify(g.ids.slice(0, 40))}`
    }
  }
  return undefined
}

// A minimal ModelProto writer, to build small synthetic models in tests.
export interface SyntheticPiece {
  piece: string
  score: number
  /** 1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED, 6 BYTE. */
  type: number
}

export interface SyntheticModel {
  pieces: SyntheticPiece[]
  /** 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR. */
  modelType: number
  byteFallback?: boolean
  normalizer?: { name?: string; addDummyPrefix?: boolean; removeExtraWhitespaces?: boolean; escapeWhitespaces?: boolean }
}

function varint(n: number): number[] {
  const out: number[] = []
  let v = n >= 0 ? BigInt(n) : (1n << 64n) + BigInt(n)
  do {
    let b = Number(v & 0x7fn)
    v >>= 7n
    if (v > 0n) b |= 0x80
    out.push(b)
  } while (v > 0n)
  return out
}

const key = (field: number, wire: number) => varint(field * 8 + wire)
const lengthDelimited = (field: number, body: number[]) => [...key(field, 2), ...varint(body.length), ...body]
const utf8Bytes = (s: string) => [...Buffer.from(s, 'utf8')]
const boolField = (field: number, v: boolean) => [...key(field, 0), v ? 1 : 0]

export function writeModelProto(m: SyntheticModel): Uint8Array {
  const out: number[] = []
  for (const p of m.pieces) {
    const f = Buffer.alloc(4)
    f.writeFloatLE(p.score)
    out.push(...lengthDelimited(1, [...lengthDelimited(1, utf8Bytes(p.piece)), ...key(2, 5), ...f, ...key(3, 0), ...varint(p.type)]))
  }
  const trainer = [...key(3, 0), ...varint(m.modelType), ...key(4, 0), ...varint(m.pieces.length), ...boolField(35, m.byteFallback ?? false), ...key(43, 0), ...varint(-1)]
  out.push(...lengthDelimited(2, trainer))
  const n = m.normalizer ?? {}
  const norm = [
    ...lengthDelimited(1, utf8Bytes(n.name ?? 'identity')),
    ...boolField(3, n.addDummyPrefix ?? true),
    ...boolField(4, n.removeExtraWhitespaces ?? true),
    ...boolField(5, n.escapeWhitespaces ?? true),
  ]
  out.push(...lengthDelimited(3, norm))
  return Uint8Array.from(out)
}
