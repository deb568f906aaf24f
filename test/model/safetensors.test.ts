// safetensors: the fixtures read back against a header parsed here with plain fs reads and against
// config.json; strict validation (every malformed case names file and tensor); sharded sets; the
// atomic writer (round trip, SIGKILL mid-write); and a seeded fuzz that must never crash.
import t from 'tap'
import { constants as bufferConstants } from 'node:buffer'
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { openSafetensors, saveSafetensors, SafetensorsError, type TensorArray, type TensorToSave } from '../../lib/io/safetensors'
import { MappedFile } from '../../lib/io/mmap'
import { fromBf16Bits, killAtPause, rng } from '../helpers/helpers'

const fixtures = path.join(__dirname, '..', 'fixtures')
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-st-'))
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))

interface RawEntry {
  dtype: string
  shape: number[]
  data_offsets: [number, number]
}
// The test's own reader: header length, JSON header, data start. Independent of lib/io.
function readHeader(file: string): { header: Record<string, RawEntry>; dataStart: number; bytes: Buffer } {
  const bytes = fs.readFileSync(file)
  const n = Number(bytes.readBigUInt64LE(0))
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'))
  delete header.__metadata__
  return { header, dataStart: 8 + n, bytes }
}

function product(shape: number[]): number {
  return shape.reduce((p, d) => p * d, 1)
}

// Element i of a tensor decoded from the file's bytes, as a number.
function decodeElement(bytes: Buffer, at: number, dtype: string, i: number): number {
  switch (dtype) {
    case 'BF16':
      return fromBf16Bits(bytes.readUInt16LE(at + 2 * i))
    case 'F32':
      return bytes.readFloatLE(at + 4 * i)
    case 'I32':
      return bytes.readInt32LE(at + 4 * i)
    default:
      throw new Error(`test decoder: ${dtype}`)
  }
}
function viewElement(view: TensorArray, dtype: string, i: number): number {
  return dtype === 'BF16' ? fromBf16Bits(view[i] as number) : Number(view[i])
}

const fixtureFiles = [
  'ernie-tiny/model.safetensors',
  'ernie-tiny/golden.safetensors',
  'ernie-tiny/adapter/adapter_model.safetensors',
  'ernie-tiny-paddle/model.safetensors',
  'ernie-tiny-paddle/golden.safetensors',
  'qwen3-tiny/model.safetensors',
  'qwen3-tiny/golden.safetensors',
  'qwen3-tiny/adapter/adapter_model.safetensors',
]

t.test('every fixture file reads as the test decodes it', async (t) => {
  for (const rel of fixtureFiles) {
    const file = path.join(fixtures, rel)
    const { header, dataStart, bytes } = readHeader(file)
    using st = openSafetensors(file)
    t.same(Object.keys(st.tensors).sort(), Object.keys(header).sort(), `${rel}: tensor names`)
    for (const [name, e] of Object.entries(header)) {
      const info = st.tensors[name]
      t.equal(info.dtype, e.dtype)
      t.same(info.shape, e.shape)
      t.equal(info.byteOffset, dataStart + e.data_offsets[0])
      t.equal(info.byteLength, e.data_offsets[1] - e.data_offsets[0])
      const view = st.view(name)
      t.equal(view.length, product(e.shape), `${rel}: ${name} element count`)
      t.ok(view.constructor === (e.dtype === 'BF16' ? Uint16Array : e.dtype === 'F32' ? Float32Array : Int32Array))
      // First, last and a middle element, decoded from the raw bytes.
      for (const i of new Set([0, view.length >> 1, view.length - 1])) {
        const want = decodeElement(bytes, info.byteOffset, e.dtype, i)
        if (viewElement(view, e.dtype, i) !== want) t.fail(`${rel}: ${name}[${i}] = ${viewElement(view, e.dtype, i)}, file has ${want}`)
      }
      // And every byte.
      const raw = bytes.subarray(info.byteOffset, info.byteOffset + info.byteLength)
      if (!raw.equals(Buffer.from(view.buffer, view.byteOffset, view.byteLength))) t.fail(`${rel}: ${name} bytes differ`)
      t.equal(st.view(name), view, 'the view is cached')
    }
  }
})

t.test('checkpoint shapes agree with config.json', async (t) => {
  for (const name of ['ernie-tiny', 'qwen3-tiny']) {
    const cfg = JSON.parse(fs.readFileSync(path.join(fixtures, name, 'config.json'), 'utf8'))
    const { hidden_size: h, intermediate_size: inter, num_attention_heads: nh, num_key_value_heads: kv, head_dim: hd } = cfg
    using st = openSafetensors(path.join(fixtures, name))
    const expect: Record<string, number[]> = {
      'model.embed_tokens.weight': [cfg.vocab_size, h],
      'model.norm.weight': [h],
    }
    for (let l = 0; l < cfg.num_hidden_layers; l++) {
      const p = `model.layers.${l}.`
      Object.assign(expect, {
        [p + 'input_layernorm.weight']: [h],
        [p + 'post_attention_layernorm.weight']: [h],
        [p + 'self_attn.q_proj.weight']: [nh * hd, h],
        [p + 'self_attn.k_proj.weight']: [kv * hd, h],
        [p + 'self_attn.v_proj.weight']: [kv * hd, h],
        [p + 'self_attn.o_proj.weight']: [h, nh * hd],
        [p + 'mlp.gate_proj.weight']: [inter, h],
        [p + 'mlp.up_proj.weight']: [inter, h],
        [p + 'mlp.down_proj.weight']: [h, inter],
      })
      if (cfg.model_type === 'qwen3') {
        expect[p + 'self_attn.q_norm.weight'] = [hd]
        expect[p + 'self_attn.k_norm.weight'] = [hd]
      }
    }
    t.same(Object.keys(st.tensors).sort(), Object.keys(expect).sort(), `${name}: exactly the expected tensors (tied head)`)
    for (const [tensor, shape] of Object.entries(expect)) {
      t.same(st.tensors[tensor].shape, shape, `${name}: ${tensor}`)
      t.equal(st.tensors[tensor].dtype, 'BF16')
    }
    t.ok(nh * hd !== h || name === 'qwen3-tiny', 'ernie-tiny: query width differs from hidden')

    using golden = openSafetensors(path.join(fixtures, name, 'golden.safetensors'))
    const [b, T] = golden.tensors.input_ids.shape
    t.same(golden.tensors['base.hidden'].shape, [b, T, h])
    t.same(golden.tensors['base.logits'].shape, [b, T, cfg.vocab_size])
    const ids = golden.view('input_ids') as Int32Array
    const mask = golden.view('attention_mask') as Int32Array
    t.ok(ids.every((x) => x >= 0 && x < cfg.vocab_size), 'token ids in range')
    t.same([...new Set(mask)].sort(), [0, 1], 'mask is 0/1')
    t.equal(mask.subarray(0, T).reduce((s, x) => s + x, 0), T, 'row 0 is all real tokens')
    t.equal(mask.subarray(T).reduce((s, x) => s + x, 0), 15, 'row 1 has 15 real tokens (right-padded)')
    t.equal(golden.metadata.lora_r, '4')
  }
  const paddleCfg = JSON.parse(fs.readFileSync(path.join(fixtures, 'ernie-tiny-paddle', 'config.json'), 'utf8'))
  const { hidden_size: h, intermediate_size: inter, num_attention_heads: nh, num_key_value_heads: kv, head_dim: hd } = paddleCfg
  using paddle = openSafetensors(path.join(fixtures, 'ernie-tiny-paddle', 'model.safetensors'))
  t.same(paddle.tensors['ernie.layers.1.self_attn.qkv_proj.weight'].shape, [h, (nh + 2 * kv) * hd])
  t.same(paddle.tensors['ernie.layers.1.mlp.up_gate_proj.weight'].shape, [h, 2 * inter])
  t.same(paddle.tensors['ernie.layers.1.self_attn.o_proj.weight'].shape, [nh * hd, h], 'Paddle stores [in, out]')
  t.same(paddle.tensors['ernie.layers.1.mlp.down_proj.weight'].shape, [inter, h])
})

// --- hand-made files ---------------------------------------------------------------------------

let fileCounter = 0
// A safetensors file from a header (object, JSON text or raw bytes) and data, without library code.
function craft(header: unknown, data: Uint8Array | number, opts: { pad?: boolean; lengthField?: bigint } = {}): string {
  let json = Buffer.isBuffer(header) ? header : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8')
  if (opts.pad !== false && json.length % 8) json = Buffer.concat([json, Buffer.alloc(8 - (json.length % 8), 0x20)])
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(opts.lengthField ?? BigInt(json.length))
  const body = typeof data === 'number' ? Buffer.alloc(data) : Buffer.from(data)
  const file = path.join(dir, `crafted-${fileCounter++}.safetensors`)
  fs.writeFileSync(file, Buffer.concat([len, json, body]))
  return file
}

interface Asserts {
  ok(v: unknown, msg?: string): unknown
  equal(a: unknown, b: unknown, msg?: string): unknown
  match(a: unknown, b: unknown, msg?: string): unknown
  fail(msg?: string): unknown
}

function expectError(t: Asserts, file: string, code: string, tensor: string | undefined, message: RegExp) {
  try {
    openSafetensors(file).dispose()
    t.fail(`${path.basename(file)} opened; expected ${code}`)
  } catch (err) {
    t.ok(err instanceof SafetensorsError, `${code}: a SafetensorsError (${(err as Error).message})`)
    const e = err as SafetensorsError
    t.equal(e.code, code)
    t.equal(e.file, file)
    t.equal(e.tensor, tensor)
    t.match(e.message, message)
    t.ok(e.message.includes(file), 'the message names the file')
    if (tensor !== undefined) t.ok(e.message.includes(`'${tensor}'`), 'the message names the tensor')
  }
}

t.test('strict validation: each malformation gets its own error naming file and tensor', async (t) => {
  const a = { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] }
  const short = path.join(dir, 'short.safetensors')
  fs.writeFileSync(short, Buffer.from([1, 2, 3, 4, 5]))
  expectError(t, short, 'ERR_SAFETENSORS_TRUNCATED', undefined, /too short/)
  const empty = path.join(dir, 'empty.safetensors')
  fs.writeFileSync(empty, '')
  expectError(t, empty, 'ERR_SAFETENSORS_TRUNCATED', undefined, /empty/)

  const text = JSON.stringify({ a })
  expectError(t, craft({ a }, 24, { lengthField: BigInt(text.length + 100) }), 'ERR_SAFETENSORS_TRUNCATED', undefined, /runs past the end/)
  expectError(t, craft({ a }, 24, { lengthField: 1n << 40n }), 'ERR_SAFETENSORS_HEADER', undefined, /exceeds the 100000000-byte limit/)
  expectError(t, craft('[1, 2]', 0), 'ERR_SAFETENSORS_HEADER', undefined, /does not start with "\{"/)
  expectError(t, craft('{"a": ', 0), 'ERR_SAFETENSORS_HEADER', undefined, /not valid JSON/)
  expectError(t, craft('', 0, { pad: false }), 'ERR_SAFETENSORS_HEADER', undefined, /does not start/)
  const badUtf8 = Buffer.from('{"a?": {}}')
  badUtf8[3] = 0xff
  expectError(t, craft(badUtf8, 0), 'ERR_SAFETENSORS_HEADER', undefined, /not valid UTF-8/)
  expectError(t, craft({ a: 5 }, 0), 'ERR_SAFETENSORS_HEADER', 'a', /not an object/)

  expectError(t, craft({ a: { ...a, dtype: 'F7' } }, 24), 'ERR_SAFETENSORS_DTYPE', 'a', /unknown or unsupported dtype "F7"/)
  expectError(t, craft({ a: { ...a, dtype: undefined } }, 24), 'ERR_SAFETENSORS_DTYPE', 'a', /dtype undefined/)
  expectError(t, craft({ a: { ...a, dtype: 'F4' } }, 24), 'ERR_SAFETENSORS_DTYPE', 'a', /"F4"/) // sub-byte: unsupported
  for (const shape of [[2, -3], [2, 1.5], '2,3', null, [2, '3'], [2, 3e300]])
    expectError(t, craft({ a: { ...a, shape } }, 24), 'ERR_SAFETENSORS_SHAPE', 'a', /non-negative integers/)
  expectError(t, craft({ a: { ...a, data_offsets: [0, 20] } }, 24), 'ERR_SAFETENSORS_OFFSETS', 'a', /holds 20 bytes.*needs 24/)
  for (const data_offsets of [[24, 0], [0], '0,24', [0, 24.5], [-8, 16], [0, 2 ** 60]])
    expectError(t, craft({ a: { ...a, data_offsets } }, 24), 'ERR_SAFETENSORS_OFFSETS', 'a', /data_offsets|holds/)
  expectError(t, craft({ a }, 16), 'ERR_SAFETENSORS_OFFSETS', 'a', /\[0, 24\] run past the data area \(16 bytes\)/)
  // The tensors must tile the data area exactly, as the reference implementation requires.
  const later = { dtype: 'F32', shape: [2], data_offsets: [32, 40] }
  expectError(t, craft({ a, later }, 40), 'ERR_SAFETENSORS_GAP', 'later', /data_offsets \[32, 40\] leave bytes \[24, 32\) of the data area to no tensor/)
  expectError(t, craft({ later: { ...later, data_offsets: [8, 16] } }, 16), 'ERR_SAFETENSORS_GAP', 'later', /leave bytes \[0, 8\)/)
  expectError(t, craft({ a }, 25), 'ERR_SAFETENSORS_GAP', undefined, /the data area holds 25 bytes but the tensors cover 24/)
  expectError(t, craft({ a, inside: { dtype: 'I64', shape: [0], data_offsets: [8, 8] } }, 24), 'ERR_SAFETENSORS_OVERLAP', 'inside', /overlap tensor 'a'/)
  // A header length one byte short: the header still parses (it ends in padding), and every
  // tensor would read one byte early.
  const padded = JSON.stringify({ a })
  const spaces = 8 - (padded.length % 8 || 8)
  if (spaces > 0) expectError(t, craft({ a }, 24, { lengthField: BigInt(padded.length + spaces - 1) }), 'ERR_SAFETENSORS_GAP', undefined, /holds 25 bytes but the tensors cover 24/)
  else t.fail('the header needs padding for this case: change the tensor')
  const b = { dtype: 'BF16', shape: [12], data_offsets: [16, 40] }
  expectError(t, craft({ a, b }, 40), 'ERR_SAFETENSORS_OVERLAP', 'b', /overlap tensor 'a' at \[0, 24\]/)
  expectError(t, craft({ b, a }, 40), 'ERR_SAFETENSORS_OVERLAP', 'b', /overlap/)
  const same = { dtype: 'F32', shape: [6], data_offsets: [0, 24] }
  expectError(t, craft({ a, same }, 24), 'ERR_SAFETENSORS_OVERLAP', 'same', /overlap/)
  expectError(t, craft({ __metadata__: { k: 1 }, a }, 24), 'ERR_SAFETENSORS_METADATA', undefined, /__metadata__\['k'\] must be a string/)
  expectError(t, craft({ __metadata__: ['x'], a }, 24), 'ERR_SAFETENSORS_METADATA', undefined, /must be an object/)
  expectError(t, craft({ __metadata__: 'x', a }, 24), 'ERR_SAFETENSORS_METADATA', undefined, /must be an object/)
})

t.test('what the format allows: empty and scalar tensors, null metadata, misalignment', async (t) => {
  const values = new Float32Array([1.5, -2, 3.25, 0, 7, -0.5])
  const data = Buffer.alloc(33)
  Buffer.from(values.buffer).copy(data, 0)
  Buffer.from(values.buffer).copy(data, 24, 0, 8)
  const file = craft(
    {
      __metadata__: null,
      a: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] },
      after_a: { dtype: 'F32', shape: [2], data_offsets: [24, 32] },
      empty: { dtype: 'I64', shape: [0, 4], data_offsets: [24, 24] },
      scalar: { dtype: 'U8', shape: [], data_offsets: [32, 33] },
    },
    data,
  )
  using st = openSafetensors(file)
  t.same(Array.from(st.view('a')), Array.from(values))
  t.same(Array.from(st.view('after_a')), [1.5, -2])
  t.equal(st.view('empty').length, 0)
  t.ok(st.view('empty') instanceof BigInt64Array)
  t.equal(st.view('scalar').length, 1)
  t.same(st.metadata, {})

  // An unpadded 13-byte header puts the data at offset 21: F32 there is misaligned and copied.
  const odd = craft('{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}', new Uint8Array(values.buffer, 0, 12), { pad: false })
  const { dataStart } = readHeader(odd)
  t.not(dataStart % 4, 0, 'the fixture is misaligned')
  using mis = openSafetensors(odd)
  const x = mis.view('x')
  t.same(Array.from(x), [1.5, -2, 3.25])
  t.equal(x.byteOffset % 4, 0)

  t.throws(() => st.view('nope'), { code: 'ERR_SAFETENSORS_NO_TENSOR', tensor: 'nope' })
  const kept = st.view('a')
  st.dispose()
  t.equal(kept.length, 0, 'views are detached by dispose()')
  t.throws(() => st.view('a'), { code: 'ERR_SAFETENSORS_DISPOSED' })
  t.throws(() => openSafetensors(path.join(dir, 'missing.safetensors')), { code: 'ENOENT' })
})

t.test('a file past the largest ArrayBuffer (sparse, 4.5 GiB) still gives zero-copy views', async (t) => {
  const far = 4.5 * 2 ** 30
  const header = {
    near: { dtype: 'I32', shape: [2], data_offsets: [0, 8] },
    // The tensors tile the data area: a hole of zeros between them is a tensor too.
    hole: { dtype: 'U8', shape: [far - 8], data_offsets: [8, far] },
    far: { dtype: 'F32', shape: [3], data_offsets: [far, far + 12] },
  }
  const file = craft(header, 8)
  const { dataStart } = readHeader(file)
  // Writing past the end leaves a hole: the file takes a few KiB of disk.
  const fd = fs.openSync(file, 'r+')
  try {
    fs.writeSync(fd, Buffer.from(Int32Array.from([7, -7]).buffer), 0, 8, dataStart)
    fs.writeSync(fd, Buffer.from(Float32Array.from([0.5, 1.5, -2.5]).buffer), 0, 12, dataStart + far)
  } finally {
    fs.closeSync(fd)
  }
  using st = openSafetensors(file)
  t.same(Array.from(st.view('near')), [7, -7])
  t.same(Array.from(st.view('far')), [0.5, 1.5, -2.5])
  if (fs.statSync(file).size > bufferConstants.MAX_LENGTH) {
    using m = new MappedFile(file)
    t.throws(() => m.buffer(), { name: 'RangeError', message: /exceed the largest ArrayBuffer/ }, 'one buffer cannot span it')
  }
  fs.rmSync(file)
})

// --- writer ------------------------------------------------------------------------------------

function randomTensors(seed: number): Record<string, TensorToSave> {
  const r = rng(seed)
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(r() * 256))
  const f32 = Float32Array.from({ length: 3 * 5 * 7 }, () => r() * 2 - 1)
  return {
    'model.layers.0.w': { dtype: 'F32', shape: [3, 5, 7], data: f32 },
    bf16: { dtype: 'BF16', shape: [7, 3], data: new Uint16Array(bytes(42).buffer) },
    f16: { dtype: 'F16', shape: [5], data: new Uint16Array(bytes(10).buffer) },
    f64: { dtype: 'F64', shape: [3], data: Float64Array.from([Math.PI, -1e300, 5e-324]) },
    i64: { dtype: 'I64', shape: [2], data: BigInt64Array.from([-(2n ** 62n), 12345678901234n]) },
    u64: { dtype: 'U64', shape: [1], data: BigUint64Array.from([2n ** 64n - 1n]) },
    i32: { dtype: 'I32', shape: [2, 2], data: Int32Array.from([-1, 2, -3, 2 ** 31 - 1]) },
    u32: { dtype: 'U32', shape: [3], data: Uint32Array.from([0, 1, 2 ** 32 - 1]) },
    i16: { dtype: 'I16', shape: [3], data: Int16Array.from([-32768, 0, 32767]) },
    u16: { dtype: 'U16', shape: [1], data: Uint16Array.from([65535]) },
    i8: { dtype: 'I8', shape: [3], data: Int8Array.from([-128, 0, 127]) },
    u8: { dtype: 'U8', shape: [5], data: bytes(5) },
    bool: { dtype: 'BOOL', shape: [3], data: Uint8Array.from([1, 0, 1]) },
    fp8: { dtype: 'F8_E4M3', shape: [7], data: bytes(7) },
    scalar: { dtype: 'F32', shape: [], data: Float32Array.from([42]) },
    empty: { dtype: 'BF16', shape: [0, 3], data: new Uint16Array(0) },
    raw: { dtype: 'F32', shape: [2], data: new Uint8Array(Float32Array.from([1, 2]).buffer) },
    ['__proto__']: { dtype: 'I8', shape: [1], data: Int8Array.from([7]) },
  } as Record<string, TensorToSave>
}

t.test('saveSafetensors round trip: every dtype, aligned like the HF writer', async (t) => {
  const tensors = randomTensors(7)
  t.ok(Object.prototype.hasOwnProperty.call(tensors, '__proto__'), 'the odd name is a real key')
  const file = path.join(dir, 'round.safetensors')
  const metadata = { format: 'pt', note: 'ünï 😀 "quoted"' }
  await saveSafetensors(file, tensors, metadata)

  const { header, dataStart, bytes } = readHeader(file)
  t.equal(dataStart % 8, 0, 'the data area starts 8-aligned')
  const rawHeader = JSON.parse(bytes.subarray(8, dataStart).toString('utf8'))
  t.same(rawHeader.__metadata__, metadata)
  t.same(Object.keys(header).sort(), Object.keys(tensors).sort())
  const sizes: Record<string, number> = { F64: 8, I64: 8, U64: 8, F32: 4, I32: 4, U32: 4, BF16: 2, F16: 2, I16: 2, U16: 2 }
  let end = 0
  for (const [name, e] of Object.entries(header)) {
    const want = tensors[name]
    t.equal(e.dtype, want.dtype)
    t.same(e.shape, want.shape)
    t.equal((dataStart + e.data_offsets[0]) % (sizes[e.dtype] ?? 1), 0, `${name} aligned for ${e.dtype}`)
    const stored = bytes.subarray(dataStart + e.data_offsets[0], dataStart + e.data_offsets[1])
    t.ok(stored.equals(Buffer.from(want.data.buffer, want.data.byteOffset, want.data.byteLength)), `${name} bytes`)
    end = Math.max(end, e.data_offsets[1])
  }
  t.equal(bytes.length, dataStart + end, 'no trailing bytes')

  using st = openSafetensors(file)
  t.same({ ...st.metadata }, metadata)
  for (const [name, want] of Object.entries(tensors)) {
    const v = st.view(name)
    t.same(Buffer.from(v.buffer, v.byteOffset, v.byteLength), Buffer.from(want.data.buffer, want.data.byteOffset, want.data.byteLength))
  }
  t.ok(st.view('f64') instanceof Float64Array)
  t.equal((st.view('f64') as Float64Array)[2], 5e-324)
  t.equal((st.view('u64') as BigUint64Array)[0], 2n ** 64n - 1n)
  t.equal((st.view('scalar') as Float32Array)[0], 42)
  t.same(Array.from(st.view('raw') as Float32Array), [1, 2])
  t.equal((st.view('__proto__') as Int8Array)[0], 7)
})

t.test('saveSafetensors replaces a file and keeps its permissions', async (t) => {
  const file = path.join(dir, 'replace.safetensors')
  await saveSafetensors(file, { a: { dtype: 'I32', shape: [1], data: Int32Array.from([1]) } })
  fs.chmodSync(file, 0o600)
  using before = openSafetensors(file)
  const oldView = before.view('a') as Int32Array
  await saveSafetensors(file, { a: { dtype: 'I32', shape: [2], data: Int32Array.from([2, 3]) } })
  t.equal(fs.statSync(file).mode & 0o777, 0o600)
  using after = openSafetensors(file)
  t.same(Array.from(after.view('a')), [2, 3])
  t.same(Array.from(oldView), [1], 'a mapping of the old file still reads the old contents')
  t.same(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temporary file left')
})

t.test('saveSafetensors rejects what it cannot write, touching nothing', async (t) => {
  const file = path.join(dir, 'bad.safetensors')
  const bad: [Record<string, unknown>, RegExp, string | undefined][] = [
    [{ w: { dtype: 'BF16', shape: [2], data: new Float32Array(2) } }, /BF16 must be a Uint16Array or raw bytes/, 'w'],
    [{ w: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }, /holds 8 bytes.*needs 12/, 'w'],
    [{ w: { dtype: 'F7', shape: [2], data: new Float32Array(2) } }, /unknown dtype/, 'w'],
    [{ w: { dtype: 'F32', shape: [-2], data: new Float32Array(2) } }, /non-negative integers/, 'w'],
    [{ w: { dtype: 'F32', shape: [2], data: [1, 2] } }, /typed array/, 'w'],
    [{ __metadata__: { dtype: 'F32', shape: [1], data: new Float32Array(1) } }, /reserved/, '__metadata__'],
  ]
  for (const [tensors, message, tensor] of bad)
    await t.rejects(saveSafetensors(file, tensors as Record<string, TensorToSave>), { code: 'ERR_SAFETENSORS_ARGUMENT', tensor, message })
  await t.rejects(saveSafetensors(file, {}, { k: 5 as unknown as string }), { code: 'ERR_SAFETENSORS_ARGUMENT', message: /metadata\['k'\]/ })
  t.notOk(fs.existsSync(file))
  // A failure after the temporary file exists (the target is a directory): cleaned up.
  const target = path.join(dir, 'a-directory')
  fs.mkdirSync(path.join(target, 'inside'), { recursive: true })
  await t.rejects(saveSafetensors(target, { a: { dtype: 'U8', shape: [1], data: new Uint8Array(1) } }))
  t.ok(fs.statSync(path.join(target, 'inside')).isDirectory(), 'the directory is untouched')
  t.same(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temporary file left')
})

t.test('a writer killed (SIGKILL) at any stage leaves the previous file or the new one, whole', async (t) => {
  const atomic = path.join(dir, 'atomic')
  const previous = { w: { dtype: 'F32' as const, shape: [4], data: Float32Array.from([1, 2, 3, 4]) } }
  const size = 1 << 20
  // Before the rename the target is the previous file; after it, the complete new one.
  const stages = ['safetensors:opened', 'safetensors:partial', 'safetensors:synced', 'safetensors:renamed']
  const folderOf = (stage: string) => path.join(atomic, stage.replace(':', '-'))
  for (const stage of stages) {
    fs.mkdirSync(folderOf(stage), { recursive: true })
    await saveSafetensors(path.join(folderOf(stage), 'model.safetensors'), previous, { version: 'old' })
  }
  const before = fs.readFileSync(path.join(folderOf(stages[0]), 'model.safetensors'))
  // One child per stage, all at once.
  const runs = await Promise.all(stages.map((stage) => killAtPause(path.join(__dirname, 'save-child.ts'), [path.join(folderOf(stage), 'model.safetensors'), String(size)], stage)))
  for (const [i, stage] of stages.entries()) {
    const folder = folderOf(stage)
    const target = path.join(folder, 'model.safetensors')
    const run = runs[i]
    t.ok(run.paused && run.signal === 'SIGKILL', `${stage}: killed there (${run.stderr.slice(0, 500)})`)
    const leftovers = fs.readdirSync(folder).filter((f) => f.endsWith('.tmp'))
    if (stage !== 'safetensors:renamed') {
      t.ok(fs.readFileSync(target).equals(before), `${stage}: the previous file is byte-for-byte intact`)
      using st = openSafetensors(target)
      t.same(Array.from(st.view('w')), [1, 2, 3, 4])
      t.equal(st.metadata.version, 'old')
      t.equal(leftovers.length, 1, `${stage}: only a stray temporary file remains, beside the target`)
      // It holds what was written by then: nothing; the header and `a`; everything.
      const tmp = fs.readFileSync(path.join(folder, leftovers[0]))
      const expected = { 'safetensors:opened': 0, 'safetensors:partial': size, 'safetensors:synced': size + 4 }[stage]!
      t.equal(tmp.length && tmp.length - 8 - Number(tmp.readBigUInt64LE(0)), expected, `${stage}: ${expected} data bytes in the temporary file`)
    } else {
      t.same(leftovers, [], `${stage}: no temporary file`)
      using st = openSafetensors(target)
      t.equal(st.metadata.version, 'new', `${stage}: the target is the new file`)
      t.same(Array.from(st.view('b')), [5, 6, 7, 8])
      const a = st.view('a')
      t.ok(a.length === size / 4 && a.every((x) => x === 7), 'all of it')
    }
  }
})

// --- sharded -----------------------------------------------------------------------------------

t.test('a sharded checkpoint opens as one set', async (t) => {
  const shardDir = path.join(dir, 'sharded')
  fs.mkdirSync(shardDir)
  const source = path.join(fixtures, 'ernie-tiny', 'model.safetensors')
  using whole = openSafetensors(source)
  const names = Object.keys(whole.tensors).sort()
  const shards: Record<string, TensorToSave>[] = [{}, {}]
  const weightMap: Record<string, string> = {}
  names.forEach((name, i) => {
    const info = whole.tensors[name]
    shards[i % 2][name] = { dtype: info.dtype, shape: info.shape, data: whole.view(name) }
    weightMap[name] = `model-0000${(i % 2) + 1}-of-00002.safetensors`
  })
  await saveSafetensors(path.join(shardDir, 'model-00001-of-00002.safetensors'), shards[0], { format: 'pt' })
  await saveSafetensors(path.join(shardDir, 'model-00002-of-00002.safetensors'), shards[1], { format: 'pt' })
  const index = path.join(shardDir, 'model.safetensors.index.json')
  fs.writeFileSync(index, JSON.stringify({ metadata: { total_size: 993936 }, weight_map: weightMap }))

  for (const source of [index, shardDir]) {
    using set = openSafetensors(source)
    t.equal(set.path, index)
    t.same(Object.keys(set.tensors).sort(), names)
    t.equal(set.metadata.format, 'pt')
    for (const name of names) {
      t.equal(set.tensors[name].file, path.join(shardDir, weightMap[name]))
      const [a, b] = [set.view(name), whole.view(name)]
      if (!Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))) t.fail(name)
    }
  }

  const writeIndex = (body: string) => {
    const f = path.join(shardDir, `bad-${fileCounter++}.index.json`)
    fs.writeFileSync(f, body)
    return f
  }
  const first = names[0]
  const cases: [string, string | undefined, RegExp][] = [
    ['{"weight_map": ', undefined, /not valid JSON/],
    ['{"metadata": {}}', undefined, /"weight_map" object/],
    [JSON.stringify({ weight_map: { ...weightMap, [first]: weightMap[names[1]] } }), first, /does not hold it/],
    [JSON.stringify({ weight_map: { [first]: '../x.safetensors' } }), first, /relative path inside/],
    [JSON.stringify({ weight_map: { [first]: '/etc/x.safetensors' } }), first, /relative path inside/],
    [JSON.stringify({ weight_map: { [first]: 5 } }), first, /must be a file name/],
  ]
  for (const [body, tensor, message] of cases) {
    const f = writeIndex(body)
    t.throws(() => openSafetensors(f), { code: 'ERR_SAFETENSORS_INDEX', file: f, tensor, message })
  }
  // A shard that also holds a tensor the index places in another shard.
  const firstInfo = whole.tensors[first]
  await saveSafetensors(path.join(shardDir, 'extra.safetensors'), {
    [first]: { dtype: firstInfo.dtype, shape: firstInfo.shape, data: whole.view(first) },
    extra: { dtype: 'U8', shape: [1], data: new Uint8Array(1) },
  })
  const dup = writeIndex(JSON.stringify({ weight_map: { ...weightMap, extra: 'extra.safetensors' } }))
  t.throws(() => openSafetensors(dup), { code: 'ERR_SAFETENSORS_INDEX', tensor: first, message: /held by both/ })
  const missing = writeIndex(JSON.stringify({ weight_map: { [first]: 'gone.safetensors' } }))
  t.throws(() => openSafetensors(missing), { code: 'ENOENT' })
  // A directory with both: model.safetensors wins, as in transformers.
  fs.copyFileSync(source, path.join(shardDir, 'model.safetensors'))
  using preferred = openSafetensors(shardDir)
  t.equal(preferred.path, path.join(shardDir, 'model.safetensors'))
})

// --- fuzz --------------------------------------------------------------------------------------

t.test('fuzz: mutated files open and read in bounds, or throw SafetensorsError; never crash', async (t) => {
  // Bases: a small file with many dtypes and an empty tensor; and a real adapter file.
  const r0 = rng(99)
  const base1 = fs.readFileSync(
    craft(
      {
        __metadata__: { format: 'pt' },
        i64: { dtype: 'I64', shape: [2], data_offsets: [0, 16] },
        f32: { dtype: 'F32', shape: [3, 5], data_offsets: [16, 76] },
        i32: { dtype: 'I32', shape: [1, 4], data_offsets: [76, 92] },
        bf16: { dtype: 'BF16', shape: [7], data_offsets: [92, 106] },
        empty: { dtype: 'F16', shape: [0], data_offsets: [106, 106] },
        u8: { dtype: 'U8', shape: [9], data_offsets: [106, 115] },
      },
      Uint8Array.from({ length: 115 }, () => Math.floor(r0() * 256)),
    ),
  )
  const base2 = fs.readFileSync(path.join(fixtures, 'ernie-tiny', 'adapter', 'adapter_model.safetensors'))
  const dtypes = ['F32', 'BF16', 'F16', 'I64', 'U8', 'I32', 'F64', 'BOOL', 'F7', 'bf16', 3, null]
  const r = rng(2024)
  const int = (n: number) => Math.floor(r() * n)
  const pick = <T>(xs: T[]): T => xs[int(xs.length)]

  type Mutation = (b: Buffer) => Buffer
  const headerOf = (b: Buffer) => {
    const n = Number(b.readBigUInt64LE(0))
    return { n, header: JSON.parse(b.subarray(8, 8 + n).toString('utf8')) as Record<string, RawEntry> }
  }
  const rebuild = (b: Buffer, header: unknown, pad: boolean) => {
    const { n } = headerOf(b)
    let json = Buffer.from(JSON.stringify(header))
    if (pad && json.length % 8) json = Buffer.concat([json, Buffer.alloc(8 - (json.length % 8), 0x20)])
    const len = Buffer.alloc(8)
    len.writeBigUInt64LE(BigInt(json.length))
    return Buffer.concat([len, json, b.subarray(8 + n)])
  }
  const tensorNames = (h: Record<string, unknown>) => Object.keys(h).filter((k) => k !== '__metadata__')
  const mutations: Record<string, Mutation> = {
    flipHeaderBytes: (b) => {
      const c = Buffer.from(b)
      const end = 8 + headerOf(b).n
      for (let k = 1 + int(3); k > 0; k--) c[int(end)] ^= 1 << int(8)
      return c
    },
    randomHeaderByte: (b) => {
      const c = Buffer.from(b)
      c[8 + int(headerOf(b).n)] = int(256)
      return c
    },
    truncate: (b) => b.subarray(0, int(b.length)),
    lengthField: (b) => {
      const c = Buffer.from(b)
      const n = headerOf(b).n
      const choices = [n + 1 + int(64), n - 1 - int(8), b.length - 8 + int(3), int(2 ** 31), 2 ** 53, 0]
      c.writeBigUInt64LE(BigInt(Math.max(0, pick(choices))))
      return c
    },
    overlap: (b) => {
      const { header } = headerOf(b)
      const names = tensorNames(header)
      const [x, y] = [pick(names), pick(names)]
      const [begin, end] = header[y].data_offsets
      const span = header[x].data_offsets[1] - header[x].data_offsets[0]
      const start = begin + int(Math.max(1, end - begin))
      header[x].data_offsets = [start, start + span]
      return rebuild(b, header, r() < 0.5)
    },
    offsets: (b) => {
      const { header } = headerOf(b)
      const e = header[pick(tensorNames(header))]
      const d = pick([1, -1, 2, 4, -4, 1000, 2 ** 40])
      e.data_offsets = r() < 0.5 ? [e.data_offsets[0] + d, e.data_offsets[1] + d] : [e.data_offsets[0], e.data_offsets[1] + d]
      return rebuild(b, header, r() < 0.5)
    },
    dtype: (b) => {
      const { header } = headerOf(b)
      ;(header[pick(tensorNames(header))] as { dtype: unknown }).dtype = pick(dtypes)
      return rebuild(b, header, true)
    },
    shape: (b) => {
      const { header } = headerOf(b)
      const e = header[pick(tensorNames(header))] as { shape: unknown }
      e.shape = pick<unknown>([[], [0], [-1], [1.5], ['2'], [2 ** 26, 2 ** 26, 2 ** 26], [1, 2, 3], null])
      return rebuild(b, header, true)
    },
    metadata: (b) => {
      const { header } = headerOf(b)
      ;(header as Record<string, unknown>).__metadata__ = pick<unknown>([{ a: 'b' }, { a: 1 }, [], 'x', null, { '': '' }])
      return rebuild(b, header, true)
    },
    dataBytes: (b) => {
      const c = Buffer.from(b)
      const start = 8 + headerOf(b).n
      for (let k = 0; k < 8; k++) c[start + int(c.length - start)] = int(256)
      return c
    },
  }

  const outcomes: Record<string, { opened: number; rejected: number }> = {}
  const file = path.join(dir, 'fuzz.safetensors')
  for (let i = 0; i < 1200; i++) {
    const kind = pick(Object.keys(mutations))
    const bytes = mutations[kind](pick([base1, base2]))
    fs.writeFileSync(file, bytes)
    const o = (outcomes[kind] ??= { opened: 0, rejected: 0 })
    let st
    try {
      st = openSafetensors(file)
    } catch (err) {
      if (!(err instanceof SafetensorsError) || err.file !== file) {
        t.fail(`${kind} #${i}: not a SafetensorsError: ${(err as Error)?.stack ?? err}`)
        return
      }
      o.rejected++
      continue
    }
    o.opened++
    try {
      for (const [name, info] of Object.entries(st.tensors)) {
        if (info.byteOffset < 8 || info.byteOffset + info.byteLength > bytes.length) t.fail(`${kind} #${i}: ${name} out of bounds`)
        const v = st.view(name)
        if (v.byteLength !== info.byteLength) t.fail(`${kind} #${i}: ${name} view has ${v.byteLength} bytes`)
        // Read every element, and compare the bytes with the file's.
        const got = Buffer.from(v.buffer, v.byteOffset, v.byteLength)
        if (!got.equals(bytes.subarray(info.byteOffset, info.byteOffset + info.byteLength))) t.fail(`${kind} #${i}: ${name} bytes`)
      }
    } finally {
      st.dispose()
    }
  }
  t.comment(JSON.stringify(outcomes))
  for (const [kind, o] of Object.entries(outcomes)) {
    if (kind !== 'dataBytes') t.ok(o.rejected > 0, `${kind}: some mutations are rejected`)
    else t.equal(o.rejected, 0, 'data bytes are not validated: every such file opens')
  }
  t.ok(outcomes.flipHeaderBytes.opened + outcomes.offsets.opened + outcomes.overlap.opened > 0, 'some mutated headers still open')
})
