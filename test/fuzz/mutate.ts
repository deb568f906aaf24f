// Corruptions any JSON file or safetensors file can suffer, shared by the families that read
// such files: the text cut, of the wrong top-level type, not UTF-8, nested past any real file,
// a special file (FIFO, directory, link to an endless device) in its place; a safetensors file's
// tensors removed, renamed, reshaped, relabelled, converted or its header length off.
import type { FileContent, Rng } from './case'
import { safetensorsFile, tile } from './fixtures'

export const REMOVED = Symbol('removed')

/** One key of an object set (or removed), as a new object. */
export function withKey(obj: Record<string, unknown>, key: string, value: unknown): Record<string, unknown> {
  const out = { ...obj }
  if (value === REMOVED) delete out[key]
  else out[key] = value
  return out
}

export const describe = (v: unknown): string => (v === REMOVED ? 'removed' : (JSON.stringify(v) ?? String(v)).slice(0, 80))

/** A JSON text whose value nests `depth` arrays deep. */
export function deepArray(depth: number): string {
  return '['.repeat(depth) + ']'.repeat(depth)
}

/**
 * A JSON object file broken beyond reading: every one must be refused by a reader that takes
 * only UTF-8 JSON objects from regular files of a sane size.
 */
export function brokenJson(rng: Rng, text: string): [string, FileContent] {
  const bytes = Buffer.from(text, 'utf8')
  const at = rng.int(1, bytes.length - 2)
  const invalid = Buffer.concat([bytes.subarray(0, text.lastIndexOf('"', at) + 1), Buffer.from([0xff, 0xfe]), bytes.subarray(text.lastIndexOf('"', at) + 1)])
  const options: Array<[string, FileContent]> = [
    ['JSON cut short', text.slice(0, rng.int(0, text.length - 2))],
    ['top level an array', `[${text}]`],
    ['top level null', 'null'],
    ['top level a number', '1e400'],
    ['empty', ''],
    ['a UTF-8 BOM first', '\ufeff' + text],
    ['bytes 0xff 0xfe (not UTF-8) inside a string', invalid],
    ['a trailing comma', text.replace(/\s*}\s*$/, ',}')],
    ['nested 100000 arrays deep', deepArray(100_000)],
    ['a FIFO in its place', { special: 'fifo' }],
    ['a directory in its place', { special: 'directory' }],
    ['a link to /dev/zero in its place', { special: 'symlink', to: '/dev/zero' }],
  ]
  return rng.pick(options)
}

export interface Tensor {
  name: string
  dtype: string
  shape: number[]
  bytes: Buffer
}

/** A safetensors file's tensors, in file order. */
export function readTensors(bytes: Buffer): Tensor[] {
  const n = Number(bytes.readBigUInt64LE(0))
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>
  const data = bytes.subarray(8 + n)
  return Object.entries(header)
    .filter(([name]) => name !== '__metadata__')
    .map(([name, e]) => ({ name, dtype: e.dtype, shape: e.shape, bytes: Buffer.from(data.subarray(e.data_offsets[0], e.data_offsets[1])) }))
}

export function writeTensors(tensors: Tensor[], lengthDelta = 0n): Buffer {
  const { header, data } = tile(tensors)
  return safetensorsFile(JSON.stringify({ __metadata__: { format: 'pt' }, ...header }), data, lengthDelta)
}

/** F32 bytes as BF16 or F16, truncated (the values change a little; the file stays valid). */
function convert(t: Tensor, dtype: 'BF16' | 'F16'): Tensor {
  const f32 = new Float32Array(t.bytes.buffer.slice(t.bytes.byteOffset, t.bytes.byteOffset + t.bytes.length))
  const out = new Uint16Array(f32.length)
  const u32 = new Uint32Array(f32.buffer)
  for (let i = 0; i < f32.length; i++) {
    if (dtype === 'BF16') out[i] = u32[i] >>> 16
    else {
      // F16: sign, exponent rebased from 127 to 15 (the values here are small normals), mantissa cut to 10 bits
      const x = f32[i]
      const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0
      const a = Math.abs(x)
      if (a < 2 ** -14) out[i] = sign
      else {
        const e = Math.floor(Math.log2(a))
        out[i] = sign | ((e + 15) << 10) | Math.floor((a / 2 ** e - 1) * 1024)
      }
    }
  }
  return { ...t, dtype, bytes: Buffer.from(out.buffer) }
}

/**
 * A change to a safetensors file of F32 tensors, with the verdict for a reader that needs every
 * tensor it uses at its shape, refuses tensors it does not use, and reads F32, BF16 and F16.
 * `pick` chooses the tensor changed.
 */
export function tensorChange(rng: Rng, tensors: Tensor[], pick = () => rng.pick(tensors)): { what: string; content: FileContent; verdict: 'accept' | 'reject' } {
  const ts = tensors.map((t) => ({ ...t, shape: [...t.shape] }))
  const t = pick()
  const i = ts.findIndex((x) => x.name === t.name)
  const kind = rng.int(0, 10)
  const file = (what: string, verdict: 'accept' | 'reject', lengthDelta = 0n) => ({ what, content: writeTensors(ts, lengthDelta), verdict })
  switch (kind) {
    case 0:
      ts.splice(i, 1)
      return file(`${t.name} removed`, 'reject')
    case 1:
      ts.push({ ...ts[i], name: `${t.name.replace(/weight$/, 'extra')}` })
      return file(`an extra tensor beside ${t.name}`, 'reject')
    case 2:
      ts[i].name = t.name.replace(/\.(\w+)$/, '.default.$1') // score.bias -> score.default.bias
      return file(`${t.name} renamed with an adapter name`, 'reject')
    case 3: {
      if (t.shape.length !== 2 || t.shape[0] === t.shape[1]) return file(`${t.name} unchanged (tensors as they are)`, 'accept')
      ts[i].shape = [t.shape[1], t.shape[0]]
      return file(`${t.name} shape ${JSON.stringify(ts[i].shape)} (transposed)`, 'reject')
    }
    case 4:
      ts[i].dtype = rng.pick(['I32', 'U32', 'F64'])
      if (ts[i].dtype === 'F64') ts[i].shape = [...t.shape.slice(0, -1), t.shape[t.shape.length - 1] / 2]
      return file(`${t.name} relabelled ${ts[i].dtype}`, 'reject')
    case 5:
      ts[i].dtype = 'BF16'
      ts[i].shape = [...t.shape.slice(0, -1), t.shape[t.shape.length - 1] * 2]
      return file(`${t.name} relabelled BF16 with twice the columns`, 'reject')
    case 6: {
      if (t.dtype !== 'F32') return file(`${t.name} unchanged (tensors as they are)`, 'accept')
      const dtype = rng.pick(['BF16', 'F16'] as const)
      ts[i] = convert(t, dtype)
      return file(`${t.name} stored as ${dtype}`, 'accept')
    }
    case 7: {
      // a non-finite value (the bit patterns of NaN, +Inf, -Inf in the tensor's dtype)
      const wide = t.dtype === 'F32'
      const bytes = Buffer.from(ts[i].bytes)
      const at = rng.int(0, bytes.length / (wide ? 4 : 2) - 1)
      const which = rng.int(0, 2)
      if (wide) bytes.writeUInt32LE([0x7fc00000, 0x7f800000, 0xff800000][which], at * 4)
      else bytes.writeUInt16LE(t.dtype === 'F16' ? [0x7e00, 0x7c00, 0xfc00][which] : [0x7fc0, 0x7f80, 0xff80][which], at * 2)
      ts[i].bytes = bytes
      return file(`${t.name}[${at}] = ${['NaN', 'Infinity', '-Infinity'][which]}`, 'reject')
    }
    case 8:
      return { what: 'tensors in another order', content: writeTensors(rng.shuffle(ts)), verdict: 'accept' }
    case 9: {
      const k = BigInt(rng.pick([-8, -1, 1, 8, 1 << 20]))
      return file(`header length off by ${k}`, 'reject', k)
    }
    default: {
      const whole = writeTensors(ts)
      const cut = rng.int(0, whole.length - 1)
      return { what: `cut at byte ${cut} of ${whole.length}`, content: whole.subarray(0, cut), verdict: 'reject' }
    }
  }
}
