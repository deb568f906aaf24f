// model.safetensors with its structure corrupted: the header length, the header's JSON, each
// entry's dtype, shape and data_offsets, tensor names, tensors removed, added or swapped, the
// file cut or extended. The tensor bytes themselves are never touched (they stay finite bf16).
// The verdicts follow the format (the tensors tile the data area exactly, header starts with
// '{', dtypes and shapes agree with the byte ranges) and the loader's contract (every tensor the
// config implies present with its shape, every tensor present used or derived).
import type { Generated, ModelFixture, Rng } from './case'
import { checkpoint, safetensorsFile, tensorBytes, tile, type HeaderEntry, type ParsedCheckpoint } from './fixtures'

const FILE = 'model.safetensors'

const FIXTURE_NAMES: readonly ModelFixture[] = ['ernie-tiny', 'qwen3-tiny', 'ernie-tiny-paddle']
const BYTES: Record<string, number> = { BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1, U16: 2, I16: 2, F16: 2, BF16: 2, U32: 4, I32: 4, F32: 4, U64: 8, I64: 8, F64: 8 }

interface Ctx {
  rng: Rng
  fixture: ModelFixture
  c: ParsedCheckpoint
}

type Op = (x: Ctx) => { what: string; verdict: Generated['verdict']; bytes: Uint8Array | null; why?: string }

const headerText = (entries: Array<[string, unknown]>) => JSON.stringify(Object.fromEntries(entries))
const copyEntries = (c: ParsedCheckpoint): Array<[string, HeaderEntry]> => c.entries.map(([n, e]) => [n, { ...e, shape: [...e.shape], data_offsets: [...e.data_offsets] as [number, number] }])
const original = (c: ParsedCheckpoint) => safetensorsFile(headerText(c.entries), c.data)
const elements = (shape: number[]) => shape.reduce((a, b) => a * b, 1)

const OPS: Array<[number, Op]> = [
  // The stored header length off by k: the header then ends inside the data, or data bytes are
  // read as header padding; either way the tensors no longer tile the data area.
  [
    4,
    ({ rng, c }) => {
      const k = rng.pick([1n, 2n, 3n, 7n, 8n, 9n, 16n, 64n, 1000n, BigInt(c.data.length), 1n << 32n, 1n << 62n])
      const delta = rng.chance(0.5) ? k : -k
      return { what: `header length ${delta > 0n ? '+' : ''}${delta}`, verdict: 'reject', bytes: safetensorsFile(headerText(c.entries), c.data, delta) }
    },
  ],
  // The file cut short (inside the length, the header or the data) or extended.
  [
    2,
    ({ rng, c }) => {
      const whole = original(c)
      const cut = rng.pick([rng.int(0, 7), rng.int(8, 200), whole.length - rng.int(1, 4096), whole.length - 1])
      return { what: `file cut to ${cut} of ${whole.length} bytes`, verdict: 'reject', bytes: whole.subarray(0, cut) }
    },
  ],
  [0.5, () => ({ what: 'model.safetensors removed', verdict: 'reject', bytes: null })],
  [
    1,
    ({ rng, c }) => {
      const extra = rng.pick([1, 2, 8, 64, 4096])
      return { what: `${extra} bytes appended`, verdict: 'reject', bytes: Buffer.concat([original(c), Buffer.alloc(extra, rng.int(0, 255))]) }
    },
  ],
  // A tensor's dtype changed. Another size disagrees with its byte range; a 2-byte integer type
  // is not a weight type; F16 is one the loader reads (widened to bf16): the bits reinterpreted
  // are finite F16 weights (an F16 infinity or NaN needs a BF16 exponent of 2^121 or more), a valid file.
  [
    3,
    ({ rng, c }) => {
      const entries = copyEntries(c)
      const [name, e] = rng.pick(entries)
      const dtype = rng.pick(['F32', 'F64', 'I8', 'U8', 'BOOL', 'I32', 'U16', 'I16', 'F16', 'bf16', 'BF32', '', 16, null, ['BF16']])
      ;(e as unknown as Record<string, unknown>).dtype = dtype
      const verdict = dtype === 'F16' ? 'accept' : 'reject'
      return { what: `${name}: dtype ${JSON.stringify(dtype)}`, verdict, bytes: safetensorsFile(headerText(entries), c.data) }
    },
  ],
  // dtype and shape changed together so the byte range still fits (BF16 [n] -> F32 [n/2]): a
  // valid file whose tensor no longer has the shape the config implies.
  [
    1,
    ({ rng, c }) => {
      const entries = copyEntries(c)
      const [name, e] = rng.pick(entries)
      const shape = [...e.shape]
      shape[shape.length - 1] /= 2
      e.dtype = 'F32'
      e.shape = shape
      return { what: `${name}: relabelled F32 ${JSON.stringify(shape)}`, verdict: 'reject', bytes: safetensorsFile(headerText(entries), c.data) }
    },
  ],
  // A tensor's shape changed: dims swapped (same bytes; the checkpoint's shape is wrong unless
  // the tensor is square), a dim added or dropped, resized, or not a list of integers.
  [
    4,
    ({ rng, c }) => {
      const entries = copyEntries(c)
      const [name, e] = rng.pick(entries)
      const s = e.shape
      const kind = rng.int(0, 6)
      let shape: unknown
      if (kind === 0) shape = [...s].reverse()
      else if (kind === 1) shape = [1, ...s]
      else if (kind === 2) shape = s.length > 1 ? [elements(s)] : [...s, 1]
      else if (kind === 3) shape = s.map((d, i) => (i === 0 ? d + rng.pick([-1, 1, d]) : d))
      else if (kind === 4) shape = s.map((d, i) => (i === s.length - 1 ? rng.pick([-d, d + 0.5, String(d), null]) : d))
      else if (kind === 5) shape = rng.pick([[], {}, 'shape', null, [[...s]]])
      else shape = s.map((d) => d * 2)
      const same = JSON.stringify(shape) === JSON.stringify(s)
      ;(e as unknown as Record<string, unknown>).shape = shape
      return { what: `${name}: shape ${JSON.stringify(shape)}`, verdict: same ? 'accept' : 'reject', bytes: safetensorsFile(headerText(entries), c.data) }
    },
  ],
  // data_offsets moved, resized, or of the wrong type.
  [
    4,
    ({ rng, c }) => {
      const entries = copyEntries(c)
      const [name, e] = rng.pick(entries)
      const [b, end] = e.data_offsets
      const k = rng.pick([1, 2, 8, 128, 4096])
      const kind = rng.int(0, 5)
      let offsets: unknown
      if (kind === 0) offsets = [b + k, end + k]
      else if (kind === 1) offsets = [Math.max(0, b - k), Math.max(0, end - k)]
      else if (kind === 2) offsets = [b, end + rng.pick([-k, k])]
      else if (kind === 3) offsets = [end, b]
      else if (kind === 4) offsets = rng.pick([[b], [b, end, end], [String(b), end], [b + 0.5, end], [-b - 2, end], null, { begin: b, end }])
      else offsets = [b, c.data.length + k]
      ;(e as unknown as Record<string, unknown>).data_offsets = offsets
      return { what: `${name}: data_offsets ${JSON.stringify(offsets)}`, verdict: 'reject', bytes: safetensorsFile(headerText(entries), c.data) }
    },
  ],
  // Two tensors of the same byte length exchange their ranges: a valid file whose weights are
  // other (finite) weights: it loads and computes.
  [
    2,
    ({ rng, c }) => {
      const entries = copyEntries(c)
      const bySize = new Map<number, number[]>()
      entries.forEach(([, e], i) => {
        const n = e.data_offsets[1] - e.data_offsets[0]
        bySize.set(n, [...(bySize.get(n) ?? []), i])
      })
      const groups = [...bySize.values()].filter((g) => g.length > 1)
      const [i, j] = rng.shuffle(rng.pick(groups))
      const a = entries[i][1]
      const b = entries[j][1]
      ;[a.data_offsets, b.data_offsets] = [b.data_offsets, a.data_offsets]
      return { what: `${entries[i][0]} and ${entries[j][0]} swap data_offsets`, verdict: 'accept', bytes: safetensorsFile(headerText(entries), c.data) }
    },
  ],
  // A tensor renamed: a required one goes missing and an unexplained one appears.
  [
    3,
    ({ rng, c }) => {
      const entries = copyEntries(c)
      const i = rng.int(0, entries.length - 1)
      const name = entries[i][0]
      const renamed = rng.pick([
        name.replace('layers.0.', 'layers.7.'),
        name.replace('layers.1.', 'layers.2.'),
        name.toUpperCase(),
        `${name}.orig`,
        name.replace(/^(model|ernie)\./, ''),
        name.replace(/^model\./, 'ernie.').replace(/^ernie\./, 'model.'),
        name.replace('weight', 'bias'),
        '',
        '__proto__',
        'constructor',
        name + '\u0000',
        name.replace(/\./g, '/'),
      ])
      if (renamed === name) return { what: `${name} renamed to itself`, verdict: 'accept', bytes: original(c) }
      entries[i] = [renamed, entries[i][1]]
      return { what: `${name} renamed ${JSON.stringify(renamed)}`, verdict: 'reject', bytes: safetensorsFile(headerText(entries), c.data) }
    },
  ],
  // A tensor removed (its bytes too, the rest re-tiled): a valid file lacking a weight.
  [
    2,
    ({ rng, c }) => {
      const names = c.entries.map(([n]) => n)
      const drop = rng.pick(names)
      const kept = c.entries.filter(([n]) => n !== drop).map(([name, e]) => ({ name, dtype: e.dtype, shape: e.shape, bytes: tensorBytes(c, name) }))
      const { header, data } = tile(kept)
      return { what: `${drop} removed`, verdict: 'reject', bytes: safetensorsFile(JSON.stringify(header), data) }
    },
  ],
  // A tensor's header entry removed but its bytes kept: an unexplained range.
  [
    1,
    ({ rng, c }) => {
      const entries = copyEntries(c)
      const i = rng.int(0, entries.length - 1)
      const [gone] = entries.splice(i, 1)
      return { what: `${gone[0]}'s entry removed, bytes kept`, verdict: 'reject', bytes: safetensorsFile(headerText(entries), c.data) }
    },
  ],
  // A tensor added (bytes copied from the embedding, so finite). RoPE's inverse frequencies are
  // a buffer the engine derives (explained, not read); lm_head.weight of the right shape is an
  // untied output layer, read; anything else is a tensor no part of the model uses.
  [
    3,
    ({ rng, fixture, c }) => {
      const H = c.config.hidden_size as number
      const V = c.config.vocab_size as number
      const p = fixture === 'ernie-tiny-paddle' ? 'ernie.' : 'model.'
      const extra = rng.pick([
        { name: `${p}layers.0.self_attn.rotary_emb.inv_freq`, dtype: 'F32', shape: [16], verdict: 'accept' as const },
        { name: 'lm_head.weight', dtype: 'BF16', shape: fixture === 'ernie-tiny-paddle' ? [H, V] : [V, H], verdict: 'accept' as const },
        { name: 'lm_head.weight', dtype: 'BF16', shape: [V, H + 2], verdict: 'reject' as const },
        { name: `${p}layers.2.input_layernorm.weight`, dtype: 'BF16', shape: [H], verdict: 'reject' as const },
        { name: 'score.weight', dtype: 'BF16', shape: [2, H], verdict: 'reject' as const },
        { name: 'extra.tensor', dtype: 'F32', shape: [3, 5], verdict: 'reject' as const },
        { name: `${p}layers.0.mlp.gate_proj.lora_A.weight`, dtype: 'BF16', shape: [8, H], verdict: 'reject' as const },
        { name: 'empty', dtype: 'BF16', shape: [0], verdict: 'reject' as const },
      ])
      const n = elements(extra.shape) * BYTES[extra.dtype]
      // finite values: bf16 weights as they are, or (for F32) small integers' bit patterns read as floats (denormal, finite)
      const bytes = extra.dtype === 'BF16' ? Buffer.from(c.data.subarray(0, n)) : Buffer.alloc(n, 1)
      const tensors = c.entries.map(([name, e]) => ({ name, dtype: e.dtype, shape: e.shape, bytes: tensorBytes(c, name) }))
      tensors.splice(rng.int(0, tensors.length), 0, { name: extra.name, dtype: extra.dtype, shape: extra.shape, bytes })
      const { header, data } = tile(tensors)
      return { what: `${extra.name} ${extra.dtype} ${JSON.stringify(extra.shape)} added`, verdict: extra.verdict, bytes: safetensorsFile(JSON.stringify(header), data) }
    },
  ],
  // __metadata__: an object of strings is free-form; anything else is malformed.
  [
    2,
    ({ rng, c }) => {
      const meta = rng.pick([
        { value: { format: 'pt' }, verdict: 'accept' as const },
        { value: { format: 'pt', note: 'fuzz', '': '' }, verdict: 'accept' as const },
        { value: null, verdict: 'accept' as const },
        { value: {}, verdict: 'accept' as const },
        { value: { format: 1 }, verdict: 'reject' as const },
        { value: { nested: { a: 'b' } }, verdict: 'reject' as const },
        { value: ['pt'], verdict: 'reject' as const },
        { value: 'pt', verdict: 'reject' as const },
      ])
      const entries: Array<[string, unknown]> = [...c.entries]
      entries.splice(rng.int(0, entries.length), 0, ['__metadata__', meta.value])
      return { what: `__metadata__ ${JSON.stringify(meta.value)}`, verdict: meta.verdict, bytes: safetensorsFile(headerText(entries), c.data) }
    },
  ],
  // The header's JSON: harmless rewrites (key order, whitespace, unknown fields in an entry,
  // extra padding) or broken ones (cut short, not an object, not starting with '{', invalid UTF-8).
  [
    4,
    ({ rng, c }) => {
      const text = headerText(c.entries)
      const kind = rng.int(0, 9)
      if (kind === 0) return { what: 'header keys shuffled', verdict: 'accept', bytes: safetensorsFile(headerText(rng.shuffle(c.entries)), c.data) }
      if (kind === 1) return { what: 'header pretty-printed', verdict: 'accept', bytes: safetensorsFile(JSON.stringify(Object.fromEntries(c.entries), null, 2), c.data) }
      if (kind === 2) return { what: 'header padded with 64 more spaces', verdict: 'accept', bytes: safetensorsFile(text + ' '.repeat(64), c.data) }
      if (kind === 3) {
        const entries = c.entries.map(([n, e]) => [n, { ...e, comment: 'fuzz' }] as [string, unknown])
        return { what: 'an unknown field in every entry', verdict: 'accept', bytes: safetensorsFile(headerText(entries), c.data) }
      }
      if (kind === 4) {
        const cut = rng.int(1, text.length - 1)
        return { what: `header JSON cut at ${cut} of ${text.length}`, verdict: 'reject', bytes: safetensorsFile(text.slice(0, cut), c.data) }
      }
      if (kind === 5) {
        const other = rng.pick(['[]', '"model"', '42', 'null', 'true', `[${text}]`])
        return { what: `header ${other.slice(0, 12)}`, verdict: 'reject', bytes: safetensorsFile(other, c.data) }
      }
      if (kind === 6) return { what: 'header starts with a BOM', verdict: 'reject', bytes: safetensorsFile('\ufeff' + text, c.data) }
      if (kind === 7) return { what: 'header starts with a space', verdict: 'reject', bytes: safetensorsFile(' ' + text, c.data) }
      if (kind === 8) {
        // a byte inside the first tensor name (past the opening '{"') that cannot occur in UTF-8
        const at = 2 + rng.int(0, 10)
        const bad = rng.pick([0xff, 0xc0, 0x80, 0xfe])
        const bytes = safetensorsFile(text, c.data)
        bytes[8 + at] = bad
        return { what: `byte 0x${bad.toString(16)} at header byte ${at}`, verdict: 'reject', bytes }
      }
      // a duplicated key: JSON.parse keeps the last, whose range differs, leaving the first's bytes unexplained
      const [n0] = c.entries[0]
      const [, e1] = c.entries[1]
      const dup = text.slice(0, -1) + `,${JSON.stringify(n0)}:${JSON.stringify(e1)}}`
      return { what: `${n0} listed twice (the second with ${c.entries[1][0]}'s range)`, verdict: 'reject', bytes: safetensorsFile(dup, c.data) }
    },
  ],
]

const TOTAL = OPS.reduce((s, [w]) => s + w, 0)

export function safetensorsCase(rng: Rng): Generated {
  const fixture = rng.pick(FIXTURE_NAMES)
  const c = checkpoint(fixture)
  let r = rng.next() * TOTAL
  const op = OPS.find(([w]) => (r -= w) < 0)![1]
  const { what, verdict, bytes, why } = op({ rng, fixture, c })
  return { verdict, why, what: `${fixture}: ${what}`, target: { kind: 'model', fixture, files: { [FILE]: bytes }, probeLength: 6 }, names: [FILE] }
}
