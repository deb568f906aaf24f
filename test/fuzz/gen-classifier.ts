// A saved classifier (the run's: method 'head', a linear head on ernie-tiny, labels
// negative/positive) with classifier.json's fields or head.safetensors corrupted. The verdicts
// follow ClassifierJson (lib/classifier/format.ts: each field's type and values) and the head the
// file describes: tensors of the shapes and dtype (F32) it needs, standardisation included.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { verdictOfChanges, type FileContent, type Generated, type Rng, type Verdict } from './case'
import { FIXTURES, safetensorsFile, tile } from './fixtures'

const JSON_FILE = 'classifier.json'
const HEAD_FILE = 'head.safetensors'

interface Saved {
  meta: Record<string, unknown>
  head: Array<{ name: string; dtype: string; shape: number[]; bytes: Buffer }>
}

const saved = new Map<string, Saved>()

function savedClassifier(dir: string): Saved {
  let s = saved.get(dir)
  if (!s) {
    const bytes = fs.readFileSync(path.join(dir, HEAD_FILE))
    const n = Number(bytes.readBigUInt64LE(0))
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>
    const data = bytes.subarray(8 + n)
    const head = Object.entries(header)
      .filter(([name]) => name !== '__metadata__')
      .map(([name, e]) => ({ name, dtype: e.dtype, shape: e.shape, bytes: Buffer.from(data.subarray(e.data_offsets[0], e.data_offsets[1])) }))
    s = { meta: JSON.parse(fs.readFileSync(path.join(dir, JSON_FILE), 'utf8')), head }
    saved.set(dir, s)
  }
  return s
}

const REMOVED = Symbol('removed')
type Change = { path: string[]; value: unknown; verdict: Verdict }

const int = (v: unknown) => typeof v === 'number' && Number.isInteger(v)

/** Field changes, each with its verdict. */
function fieldChange(rng: Rng, meta: Record<string, unknown>): Change {
  const base = meta.base as Record<string, unknown>
  const labels = meta.labels as { names: string[] }
  const field = rng.int(0, 13)
  const ch = (p: string[], value: unknown, verdict: Verdict): Change => ({ path: p, value, verdict })
  switch (field) {
    case 0: {
      const v = rng.pick<unknown>(['ernie-sentiment-classifier', 'ernie-sentiment', '', null, REMOVED, 1])
      return ch(['format'], v, v === 'ernie-sentiment-classifier' ? 'accept' : 'reject')
    }
    case 1: {
      const v = rng.pick<unknown>([2, 3, 0, '2', 2.5, null, REMOVED])
      return ch(['version'], v, v === 2 ? 'accept' : 'reject')
    }
    case 2: {
      const v = rng.pick<unknown>(['head', 'HEAD', 'linear', '', null, REMOVED, 0, ['head']])
      return ch(['method'], v, v === 'head' ? 'accept' : 'reject')
    }
    case 3: {
      const v = rng.pick<unknown>([
        ['bad', 'good'],
        ['负面', '正面'],
        ['negative', 'positive', 'neutral'],
        ['negative'],
        ['negative', 'negative'],
        ['negative', ''],
        ['negative', ' '],
        ['negative', 1],
        'negative,positive',
        null,
        REMOVED,
        { 0: 'negative', 1: 'positive' },
      ])
      const ok = Array.isArray(v) && v.length === 2 && v.every((n) => typeof n === 'string' && n.trim() !== '') && v[0] !== v[1]
      return ch(['labels', 'names'], v, ok ? 'accept' : 'reject')
    }
    case 4: {
      const v = rng.pick<unknown>([true, false, 'true', 1, null])
      return ch(['labels', 'numericIsIndex'], v, typeof v === 'boolean' ? 'accept' : 'reject')
    }
    case 5: {
      const v = rng.pick<unknown>([2, 16, 512, 100000, 1, 0, -5, 16.5, '256', null, REMOVED, 1e400])
      return ch(['maxLength'], v, int(v) && (v as number) >= 2 ? 'accept' : 'reject')
    }
    case 6: {
      const v = rng.pick<unknown>(['head', 'head_tail', 'tail', '', null, 3])
      return ch(['truncation'], v, v === 'head' || v === 'head_tail' ? 'accept' : 'reject')
    }
    case 7: {
      const v = rng.pick<unknown>(['last', 'mean', 'first', 'max', 'LAST', '', null, 0])
      return ch(['pooling'], v, v === 'last' || v === 'mean' || v === 'first' ? 'accept' : 'reject')
    }
    case 8: {
      const v = rng.pick<unknown>(['fp32', 'bf16', 'auto', REMOVED, 'fp16', 'FP32', '', 32])
      return ch(['precision'], v, v === REMOVED || v === 'fp32' || v === 'bf16' || v === 'auto' ? 'accept' : 'reject')
    }
    case 9: {
      const v = rng.pick<unknown>([true, false, REMOVED, 'false', 0, null])
      return ch(['appendEos'], v, v === REMOVED || typeof v === 'boolean' ? 'accept' : 'reject')
    }
    case 10: {
      // the saved head is linear: a record of another head, or none, does not describe head.safetensors
      const v = rng.pick<unknown>([{ kind: 'linear' }, { kind: 'mlp', hiddenSize: 16 }, { kind: 'mlp' }, { kind: 'tree' }, {}, 'linear', null, REMOVED])
      return ch(['head'], v, JSON.stringify(v) === '{"kind":"linear"}' ? 'accept' : 'reject')
    }
    case 11: {
      const ernie = path.join(FIXTURES, 'ernie-tiny')
      const v = rng.pick<unknown>([
        { kind: 'path', ref: ernie },
        { kind: 'path', ref: path.join(FIXTURES, 'qwen3-tiny') },
        { kind: 'path', ref: path.join(FIXTURES, 'no-such-model') },
        { kind: 'path', ref: '' },
        { kind: 'saved', ref: '.' },
        { kind: 'saved', ref: '../ernie-tiny' },
        { kind: 'saved', ref: ernie },
        { kind: 'bundled', ref: '../../test/fixtures/ernie-tiny' },
        { kind: 'hub', ref: 'no-such-org/no-such-model' },
        { kind: 'git', ref: ernie },
        { kind: 'path' },
        { ref: ernie },
        'ernie-tiny',
        null,
        REMOVED,
      ])
      // the architecture fields recorded beside kind and ref stay
      const value = v && typeof v === 'object' ? { ...base, kind: undefined, ref: undefined, ...v } : v
      const ok = JSON.stringify(v) === JSON.stringify({ kind: 'path', ref: ernie })
      return ch(['base'], value, ok ? 'accept' : 'reject')
    }
    case 12: {
      // the architecture the classifier was trained on: a base that differs is refused; absent, unchecked
      const key = rng.pick(['hiddenSize', 'numHiddenLayers', 'vocabSize', 'modelType', 'headDim'])
      const v = rng.pick<unknown>([REMOVED, base[key], typeof base[key] === 'number' ? (base[key] as number) + 1 : 'qwen3', String(base[key])])
      return ch(['base', key], v, v === REMOVED || v === base[key] ? 'accept' : 'reject')
    }
    default: {
      const v = rng.pick<unknown>([42, 0, -7, 2 ** 31, '42', 1.5, null])
      return ch(['seed'], v, int(v) ? 'accept' : 'reject')
    }
  }
}

function apply(meta: Record<string, unknown>, c: Change): Record<string, unknown> {
  const out = structuredClone(meta)
  let obj = out
  for (const k of c.path.slice(0, -1)) obj = obj[k] as Record<string, unknown>
  const last = c.path[c.path.length - 1]
  if (c.value === REMOVED) delete obj[last]
  else obj[last] = c.value
  return out
}

/** head.safetensors changed: a tensor removed, reshaped, relabelled, or the file gone. */
function headChange(rng: Rng, s: Saved): { what: string; content: FileContent | null; verdict: Verdict } {
  const kind = rng.int(0, 5)
  const tensors = s.head.map((t) => ({ ...t, shape: [...t.shape] }))
  const t = rng.pick(tensors)
  const write = () => {
    const { header, data } = tile(tensors)
    return safetensorsFile(JSON.stringify({ __metadata__: { format: 'pt' }, ...header }), data)
  }
  if (kind === 0) {
    tensors.splice(tensors.indexOf(t), 1)
    return { what: `${HEAD_FILE}: ${t.name} removed`, content: write(), verdict: 'reject' }
  }
  if (kind === 1) {
    const shape = t.shape.length === 2 ? [t.shape[1], t.shape[0]] : [1, ...t.shape]
    t.shape = shape
    return { what: `${HEAD_FILE}: ${t.name} shape ${JSON.stringify(shape)} (same count)`, content: write(), verdict: 'reject' }
  }
  if (kind === 2) {
    t.dtype = rng.pick(['I32', 'U32'])
    return { what: `${HEAD_FILE}: ${t.name} relabelled ${t.dtype}`, content: write(), verdict: 'reject' }
  }
  if (kind === 3) {
    t.dtype = 'BF16'
    t.shape = [...t.shape.slice(0, -1), t.shape[t.shape.length - 1] * 2]
    return { what: `${HEAD_FILE}: ${t.name} relabelled BF16 ${JSON.stringify(t.shape)}`, content: write(), verdict: 'reject' }
  }
  if (kind === 4) return { what: `${HEAD_FILE} removed`, content: null, verdict: 'reject' }
  const reordered = tile(rng.shuffle(tensors))
  return { what: `${HEAD_FILE}: tensors in another order`, content: safetensorsFile(JSON.stringify(reordered.header), reordered.data), verdict: 'accept' }
}

export function classifierCase(rng: Rng, classifierDir: string): Generated {
  const s = savedClassifier(classifierDir)
  const target = (files: Record<string, FileContent | null>) => ({ kind: 'classifier' as const, files })
  const kind = rng.int(0, 9)
  if (kind <= 5) {
    let meta = s.meta
    const changes: Array<{ key: string; verdict: Verdict }> = []
    const whats: string[] = []
    for (let i = 0, n = rng.pick([1, 1, 2]); i < n; i++) {
      const c = fieldChange(rng, meta)
      if (changes.some((d) => d.key === c.path.join('.'))) continue // a field changed once per case
      meta = apply(meta, c)
      changes.push({ key: c.path.join('.'), verdict: c.verdict })
      whats.push(`${c.path.join('.')} ${c.value === REMOVED ? 'removed' : JSON.stringify(c.value)?.slice(0, 60)}`)
    }
    const { verdict } = verdictOfChanges(changes)
    // the head record can disagree with head.safetensors; a base 'saved' in the classifier's
    // directory, which holds no model, is named by its weights file
    return { verdict, what: whats.join(', '), target: target({ [JSON_FILE]: JSON.stringify(meta, null, 2) }), names: [JSON_FILE, HEAD_FILE, 'model.safetensors'] }
  }
  if (kind === 6) {
    // harmless: optional records removed, unknown keys added, keys reordered
    const meta: Record<string, unknown> = Object.fromEntries(rng.shuffle(Object.entries(s.meta)))
    const dropped = rng.shuffle(['training', 'metrics', 'library', 'savedAt']).slice(0, rng.int(0, 4))
    for (const k of dropped) delete meta[k]
    meta.x_fuzz = { note: 'unknown key' }
    return { verdict: 'accept', what: `keys reordered, ${dropped.join(', ') || 'nothing'} removed, an unknown key`, target: target({ [JSON_FILE]: JSON.stringify(meta) }), names: [JSON_FILE] }
  }
  if (kind === 7) {
    const text = JSON.stringify(s.meta, null, 2)
    const [what, content] = rng.pick<[string, FileContent]>([
      ['JSON cut short', text.slice(0, rng.int(0, text.length - 2))],
      ['top level an array', `[${text}]`],
      ['top level null', 'null'],
      ['a UTF-8 BOM first', '\ufeff' + text],
      ['empty', ''],
    ])
    return { verdict: 'reject', what: `${JSON_FILE}: ${what}`, target: target({ [JSON_FILE]: content }), names: [JSON_FILE] }
  }
  const h = headChange(rng, s)
  return { verdict: h.verdict, what: h.what, target: target({ [HEAD_FILE]: h.content }), names: [HEAD_FILE, JSON_FILE] }
}
