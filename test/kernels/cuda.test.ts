// The CUDA backend.
//
// Runs everywhere: device resolution ('cpu' | 'cuda' | 'auto', ERNIE_DEVICE, typed errors), what
// models, trainers and classifiers do with a device, the errors of the CUDA kernels where there
// is no CUDA build or device, and scripts/check-cuda.sh's ptxas parser on sample logs.
//
// Runs where a CUDA device is present (skipped otherwise): every CUDA kernel against the same
// float64 references the CPU tests use (test/helpers/reference.ts), on random inputs of awkward
// sizes, outputs NaN-filled first so that an unwritten element shows. Bounds allow for the products
// running on bf16 tensor cores (operands rounded to bf16, f32 accumulation); the row ops and
// optimisers are f32 and held to f32 bounds.
//
// ERNIE_CUDA_TEST_ON_CPU=1 runs those parity tests on the CPU kernels instead, which meet the
// same bounds: a check of the tests themselves on a machine without a GPU.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import { ErnieClassifier } from '../../lib/classifier/index'
import { cudaBuilt, cudaDevices, cudaInfo, resolveDevice, resolveModelDevice } from '../../lib/device'
import { kernels } from '../../lib/index'
import { ErnieModel } from '../../lib/model/index'
import { native } from '../../lib/native'
import { Trainer, type TrainTask } from '../../lib/train/index'
import { TINY, tinyRandomModel } from '../helpers/classifier-helpers'
import { firstNaN, nanFilled, randomF32, refGemm, relErr, rng, toBf16, toBf16Bits, valuesOf } from '../helpers/helpers'
import {
  kvSize,
  loraKeep,
  lseSize,
  qSize,
  refAdamw,
  refAttentionBackward,
  refAttentionForward,
  refCrossEntropy,
  refLoraBackward,
  refLoraForward,
  refRmsnorm,
  refRmsnormBackward,
  refRope,
  refSwiglu,
  type AttentionShape,
  type Pairing,
} from '../helpers/reference'

const onCpu = process.env.ERNIE_CUDA_TEST_ON_CPU === '1'
const hasDevice = cudaDevices().length > 0
const skip = hasDevice || onCpu ? false : 'no CUDA device on this machine'
const backend: typeof kernels.cuda.sync = onCpu ? kernels.sync : kernels.cuda.sync
const BACKEND = onCpu ? 'cpu (ERNIE_CUDA_TEST_ON_CPU)' : 'cuda'

// Products on bf16 tensor cores: each operand rounded to bf16 (2^-9 relative), f32 accumulation.
const PRODUCT_BOUND = 1e-2
// Attention: q, k, v and the probabilities in bf16.
const ATTENTION_BOUND = 2e-2
const ATTENTION_GRAD_BOUND = 3e-2
// Row ops and optimisers: f32 throughout.
const F32_BOUND = 1e-5

function withEnv(name: string, value: string | undefined, fn: () => void): void {
  const saved = process.env[name]
  if (value === undefined) delete process.env[name]
  else process.env[name] = value
  try {
    fn()
  } finally {
    if (saved === undefined) delete process.env[name]
    else process.env[name] = saved
  }
}

async function withEnvAsync(name: string, value: string | undefined, fn: () => Promise<void>): Promise<void> {
  const saved = process.env[name]
  if (value === undefined) delete process.env[name]
  else process.env[name] = value
  try {
    await fn()
  } finally {
    if (saved === undefined) delete process.env[name]
    else process.env[name] = saved
  }
}

// ================================================================ runs everywhere

t.test('cudaInfo describes the build and the devices', async (t) => {
  const info = cudaInfo()
  t.equal(typeof info.built, 'boolean')
  t.ok(Array.isArray(info.devices))
  t.equal(cudaBuilt(), info.built)
  if (!info.built) {
    t.same(info.devices, [], 'a build without CUDA has no devices')
    t.match(info.error, /not built with CUDA.*npm run build:cuda/)
  } else if (info.devices.length === 0) {
    t.match(info.error, /cudaGetDeviceCount/, 'a CUDA build without a device says what the runtime said')
  } else {
    for (const d of info.devices) t.match(d, { index: Number, name: String, computeCapability: /^\d+\.\d+$/, totalMemory: Number })
  }
})

t.test("resolveDevice: 'cpu' | 'cuda' | 'auto', ERNIE_DEVICE, typed errors", async (t) => {
  withEnv('ERNIE_DEVICE', undefined, () => {
    t.equal(resolveDevice('cpu'), 'cpu')
    t.equal(resolveDevice('auto'), hasDevice ? 'cuda' : 'cpu', "'auto' takes the GPU only when the CUDA build and a device exist")
    t.equal(resolveDevice(), hasDevice ? 'cuda' : 'cpu', 'no option and no ERNIE_DEVICE: auto')
    if (hasDevice) t.equal(resolveDevice('cuda'), 'cuda')
    else
      t.throws(() => resolveDevice('cuda'), {
        name: 'ErnieError',
        code: 'ERR_DEVICE',
        message: cudaBuilt()
          ? /^device "cuda" is not available: no CUDA device was found \(/
          : /^device "cuda" is not available: this build of ernie-sentiment was compiled without CUDA \(build the addon with `npm run build:cuda`/,
      })
    t.throws(() => resolveDevice('gpu'), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: `device must be 'cpu', 'cuda' or 'auto', got "gpu"` })
    t.throws(() => resolveDevice('CPU', 'Trainer: device'), { name: 'RangeError', message: /^Trainer: device must be/ })
    t.throws(() => resolveDevice(1), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /got number/ })
    t.throws(() => resolveDevice(null), { name: 'TypeError', message: /got null/ })
  })
  withEnv('ERNIE_DEVICE', 'cpu', () => {
    t.equal(resolveDevice(), 'cpu', 'ERNIE_DEVICE=cpu')
    t.equal(resolveDevice('auto'), hasDevice ? 'cuda' : 'cpu', 'an explicit option wins over ERNIE_DEVICE')
  })
  withEnv('ERNIE_DEVICE', 'cuda', () => {
    if (hasDevice) t.equal(resolveDevice(), 'cuda')
    else t.throws(() => resolveDevice(), { code: 'ERR_DEVICE', message: /^device "cuda" \(from ERNIE_DEVICE\) is not available/ })
    t.equal(resolveDevice('cpu'), 'cpu', 'an explicit option wins over ERNIE_DEVICE')
  })
  withEnv('ERNIE_DEVICE', 'auto', () => t.equal(resolveDevice(), hasDevice ? 'cuda' : 'cpu'))
  withEnv('ERNIE_DEVICE', 'tpu', () => {
    t.throws(() => resolveDevice(), { name: 'RangeError', message: `ERNIE_DEVICE must be 'cpu', 'cuda' or 'auto', got "tpu"` })
  })
  withEnv('ERNIE_DEVICE', '', () => t.equal(resolveDevice(), hasDevice ? 'cuda' : 'cpu', 'an empty ERNIE_DEVICE is unset'))
})

t.test('models, trainers and classifiers: device resolves to where the model graph runs', async (t) => {
  const expected = hasDevice ? 'cuda' : 'cpu'
  const noCuda = /device "cuda" is not available: /
  withEnv('ERNIE_DEVICE', undefined, () => {
    t.equal(resolveModelDevice('auto'), expected, "'auto' is the GPU where there is one, else the CPU")
    t.equal(resolveModelDevice(undefined), expected)
    if (hasDevice) t.equal(resolveModelDevice('cuda'), 'cuda')
    else t.throws(() => resolveModelDevice('cuda'), { name: 'ErnieError', code: 'ERR_DEVICE', message: noCuda })
    t.equal(resolveModelDevice('cpu'), 'cpu')
    t.throws(() => resolveModelDevice('gpu'), { name: 'RangeError' })
  })
  const cfg = { model_type: 'ernie4_5', architectures: ['Ernie4_5ForCausalLM'], hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 8, vocab_size: 64, rms_norm_eps: 1e-5, rope_theta: 500000, tie_word_embeddings: true }
  await withEnvAsync('ERNIE_DEVICE', undefined, async () => {
    const auto = ErnieModel.random(cfg, { device: 'auto' })
    t.equal(auto.device, expected, "ErnieModel.random({ device: 'auto' }) runs where 'auto' resolves")
    await auto.dispose()
    const onCpu = ErnieModel.random(cfg, { device: 'cpu' })
    t.equal(onCpu.device, 'cpu')
    await onCpu.dispose()
    t.throws(() => ErnieModel.random(cfg, { device: 'gpu' as never }), { name: 'RangeError', message: /^random: device must be/ })
    const loaded = await ErnieModel.fromPretrained(TINY, { device: 'cpu' })
    t.equal(loaded.device, 'cpu')
    await loaded.dispose()
    if (!hasDevice) {
      t.throws(() => ErnieModel.random(cfg, { device: 'cuda' }), { code: 'ERR_DEVICE', message: noCuda })
      await t.rejects(ErnieModel.fromPretrained(TINY, { device: 'cuda' }), { code: 'ERR_DEVICE', message: noCuda })
    }
  })
  if (!hasDevice)
    withEnv('ERNIE_DEVICE', 'cuda', () => {
      t.throws(() => ErnieModel.random(cfg), { code: 'ERR_DEVICE' }, 'ERNIE_DEVICE=cuda reaches models too')
    })

  const task: TrainTask<number, number> = {
    examples: () => [1],
    params: () => new Map<string, Float32Array>(),
    collate: (items) => items[0],
    lossAndGrad: async () => ({ loss: 0 }),
  }
  if (!hasDevice) t.throws(() => new Trainer(task, { device: 'cuda' }), { code: 'ERR_DEVICE', message: noCuda })
  t.throws(() => new Trainer(task, { device: 'tpu' as never }), { name: 'RangeError', message: /^Trainer: device must be/ })
  t.doesNotThrow(() => new Trainer(task, { device: 'auto' }))
  if (!hasDevice) t.throws(() => new ErnieClassifier({ model: TINY, device: 'cuda' }), { code: 'ERR_DEVICE', message: noCuda })
  t.doesNotThrow(() => new ErnieClassifier({ model: TINY, device: 'auto' }))
})

t.test('without a CUDA device the CUDA kernels say why', { skip: hasDevice ? 'a CUDA device is present' : false }, async (t) => {
  const o = { c: new Float32Array(4), m: 2, n: 2, segments: [{ a: new Float32Array(2), b: new Float32Array(2), k: 1 }] }
  const why = cudaBuilt() ? /no CUDA device was found/ : /compiled without CUDA/
  t.throws(() => kernels.cuda.sync.gemm(o), { name: 'ErnieError', code: 'ERR_DEVICE', message: /^kernels\.cuda\.gemm: device "cuda" is not available: / })
  t.throws(() => kernels.cuda.sync.attentionForward({} as never), { code: 'ERR_DEVICE', message: why })
  await t.rejects(kernels.cuda.gemm(o), { code: 'ERR_DEVICE', message: why })
  await t.rejects(kernels.cuda.benchmark({ kind: 'gemm', m: 1, n: 1, k: 1 }), { code: 'ERR_DEVICE' })
  t.throws(() => kernels.setCudaDevice(0), { code: 'ERR_DEVICE' })
  t.same(kernels.cudaPoolStats(), { inUse: 0, cached: 0 }, 'nothing was allocated')

  // The native ops under the wrappers check their arguments (TypeError / RangeError as on the
  // CPU) and their device: a CPU-only build says "not built with CUDA", a CUDA build without a
  // device names the CUDA call that failed and the runtime's message; code ERR_DEVICE both ways.
  const gemmSync = native.gemmSync as (o: unknown) => void
  const gemm = native.gemm as (o: unknown) => Promise<void>
  const onCuda = { ...o, device: 'cuda' }
  const failure = cudaBuilt() ? /^gemm: device 'cuda' is not available: .*cuda\w+/ : /^gemm: device 'cuda' is not available: not built with CUDA/
  t.throws(() => gemmSync(onCuda), { message: failure, code: 'ERR_DEVICE' })
  await t.rejects(async () => gemm(onCuda), { message: failure, code: 'ERR_DEVICE' }, 'the Promise form fails the same way')
  t.throws(() => gemmSync({ ...onCuda, c: [0, 0, 0, 0] }), { name: 'TypeError', message: /'c' must be a Float32Array/ })
  t.throws(() => gemmSync({ ...onCuda, c: new Float32Array(3) }), { name: 'RangeError', message: /'c' has 3 elements, expected m \* n = 4/ })
  t.throws(() => gemmSync({ ...o, device: 'tpu' }), { name: 'RangeError', message: /'device' must be 'cpu', 'cuda' or 'checked', got 'tpu'/ })
})

t.test('on a CUDA device, head dims past 128 are refused before any work', { skip: hasDevice ? false : 'no CUDA device' }, async (t) => {
  const attention = native.attentionForwardSync as (o: unknown) => void
  const shape = { batch: 1, tq: 1, tk: 1, heads: 1, kvHeads: 1, headDim: 256, q: new Float32Array(256), k: new Float32Array(256), v: new Float32Array(256), out: new Float32Array(256), lse: new Float32Array(1), device: 'cuda' }
  t.throws(() => attention(shape), { name: 'RangeError', message: /'headDim' must be in \[1, 128\], got 256/ })
})

// ---- scripts/check-cuda.sh: the ptxas report parser, on text --------------------------------
const GEMM = '_ZN5ernie4cuda39_GLOBAL__N__89b41309_7_gemm_cu_1c21191a16gemm_bf16_kernelENS1_10GemmParamsE'
const ATTN_BWD = '_ZN5ernie4cuda45_GLOBAL__N__22a9bade_12_attention_cu_b66c35da20attention_bwd_kernelILi128ELi16EEEvNS1_10AttnParamsE'
const ROPE = '_ZN5ernie4cuda38_GLOBAL__N__5f189479_6_ops_cu_b837322e11rope_kernelEPKfPfPKiPKdlllbd'

function ptxasEntry(name: string, arch: string, regs: number, spillStores: number, spillLoads: number): string {
  return [
    `ptxas info    : Compiling entry function '${name}' for '${arch}'`,
    `ptxas info    : Function properties for ${name}`,
    `    ${spillStores ? 24 : 0} bytes stack frame, ${spillStores} bytes spill stores, ${spillLoads} bytes spill loads`,
    `ptxas info    : Used ${regs} registers, used 1 barriers, 32768 bytes smem, 424 bytes cmem[0]`,
    `ptxas info    : Compile time = 12.345 ms`,
  ].join('\n')
}

t.test('check-cuda.sh --parse: registers and spills per kernel; a GEMM or attention spill fails', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-ptxas-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const script = path.join(__dirname, '..', '..', 'scripts', 'check-cuda.sh')
  const check = (log: string) => {
    const file = path.join(dir, `log${Math.random().toString(36).slice(2)}.txt`)
    fs.writeFileSync(file, log)
    const r = spawnSync('bash', [script, '--parse', file], { encoding: 'utf8' })
    return { status: r.status, out: r.stdout + r.stderr }
  }

  const clean = check(['ptxas info    : 0 bytes gmem', ptxasEntry(GEMM, 'sm_80', 128, 0, 0), ptxasEntry(ATTN_BWD, 'sm_90', 243, 0, 0), ptxasEntry(ROPE, 'sm_80', 40, 0, 0)].join('\n'))
  t.equal(clean.status, 0, 'no spills: exit 0')
  t.match(clean.out, /sm_80\s+128\s+0\s+0\s+0\s+\S*gemm_bf16_kernel/, 'the table has the GEMM kernel with its 128 registers')
  t.match(clean.out, /sm_90\s+243\s+0\s+0\s+0\s+\S*attention_bwd_kernel/)
  t.match(clean.out, /OK: 2 GEMM and attention kernel builds, none spills \(3 kernel builds in all\)/)

  const spill = check([ptxasEntry(GEMM, 'sm_80', 128, 0, 0), ptxasEntry(ATTN_BWD, 'sm_80', 255, 24, 16)].join('\n'))
  t.equal(spill.status, 1, 'a spill in an attention kernel: exit 1')
  t.match(spill.out, /FAIL: \S*attention_bwd_kernel\S*( 16>)? \(sm_80\) spills: 24 bytes spill stores, 16 bytes spill loads \(255 registers\)/, 'the failure names the kernel and target')
  t.notMatch(spill.out, /FAIL: \S*gemm/, 'the clean kernel is not blamed')

  const loadsOnly = check(ptxasEntry(GEMM, 'sm_90', 128, 0, 8))
  t.equal(loadsOnly.status, 1, 'spill loads alone fail too')
  t.match(loadsOnly.out, /FAIL: \S*gemm_bf16_kernel \(sm_90\)/)

  const elsewhere = check([ptxasEntry(GEMM, 'sm_80', 128, 0, 0), ptxasEntry(ROPE, 'sm_80', 255, 8, 8)].join('\n'))
  t.equal(elsewhere.status, 0, 'a spill outside the GEMM and attention kernels is a warning')
  t.match(elsewhere.out, /warning: \S*rope_kernel \(sm_80\) spills: 8 bytes spill stores/)

  const empty = check('nvcc fatal   : something went wrong\n')
  t.equal(empty.status, 1, 'a log without kernels fails')
  t.match(empty.out, /no kernel found/)
})

// ================================================================ parity (a CUDA device)

function operand(rows: number, k: number, seed: number, bf16: boolean): Float32Array | Uint16Array {
  const v = randomF32(rows * k, seed)
  return bf16 ? toBf16(v) : v
}
function accessor(values: Float64Array, rows: number, k: number, transposed: boolean) {
  return transposed ? (r: number, p: number) => values[p * rows + r] : (r: number, p: number) => values[r * k + p]
}

t.test(`gemm (${BACKEND}): every layout and dtype against float64`, { skip }, async (t) => {
  const shapes: [number, number, number][] = [
    [1, 1, 1],
    [7, 13, 5],
    [37, 45, 29],
    [131, 67, 300], // several K tiles
    [250, 33, 40], // two M tiles, ragged
    [130, 260, 64], // bf16 'mk' / 'nk' with K % 8 = 0: read in place, unpacked
  ]
  let seed = 1
  for (const [m, n, k] of shapes) {
    let worst = 0
    for (const aLayout of ['mk', 'km'] as const)
      for (const bLayout of ['nk', 'kn'] as const)
        for (const aBf16 of [false, true])
          for (const bBf16 of [false, true]) {
            const a = operand(m, k, seed++, aBf16), b = operand(n, k, seed++, bBf16)
            const c = nanFilled(m * n)
            backend.gemm({ c, m, n, segments: [{ a, b, k, aLayout, bLayout }] })
            const what = `${m}x${n}x${k} ${aLayout}/${bLayout} a:${aBf16 ? 'bf16' : 'f32'} b:${bBf16 ? 'bf16' : 'f32'}`
            const nan = firstNaN(c)
            if (nan >= 0) t.fail(`${what}: element ${nan} not written`)
            const ref = refGemm(m, n, k, accessor(valuesOf(a), m, k, aLayout === 'km'), accessor(valuesOf(b), n, k, bLayout === 'kn'))
            const err = relErr(c, ref)
            if (!(err <= PRODUCT_BOUND)) t.fail(`${what}: relative error ${err}`)
            worst = Math.max(worst, err)
          }
    t.pass(`${m}x${n}x${k}: 16 layout/dtype combinations, worst relative error ${worst.toExponential(2)}`)
  }
})

t.test(`gemm (${BACKEND}): alpha, scales, accumulate, several K segments, k = 0`, { skip }, async (t) => {
  const m = 53, n = 70, k = 91, r = 5
  const x = randomF32(m * k, 11), w = toBf16(randomF32(n * k, 12))
  const u = randomF32(m * r, 13), bl = randomF32(n * r, 14)
  const c0 = randomF32(m * n, 15)
  const c = Float32Array.from(c0)
  backend.gemm({ c, m, n, alpha: 0.5, accumulate: true, segments: [{ a: x, b: w, k }, { a: u, b: bl, k: r, scale: 3 }] })
  const base = refGemm(m, n, k, accessor(valuesOf(x), m, k, false), accessor(valuesOf(w), n, k, false))
  const lora = refGemm(m, n, r, accessor(valuesOf(u), m, r, false), accessor(valuesOf(bl), n, r, false))
  const ref = base.map((v, i) => c0[i] + 0.5 * (v + 3 * lora[i]))
  t.ok(relErr(c, ref) <= PRODUCT_BOUND, `C += 0.5 (x W^T + 3 u B^T): relative error ${relErr(c, ref).toExponential(2)}`)

  const zeros = nanFilled(6)
  backend.gemm({ c: zeros, m: 2, n: 3, segments: [{ a: new Float32Array(0), b: new Float32Array(0), k: 0 }] })
  t.same(Array.from(zeros), [0, 0, 0, 0, 0, 0], 'k = 0: C = 0')
  const kept = Float32Array.from([1, 2, 3, 4, 5, 6])
  backend.gemm({ c: kept, m: 2, n: 3, accumulate: true, segments: [{ a: new Float32Array(0), b: new Float32Array(0), k: 0 }] })
  t.same(Array.from(kept), [1, 2, 3, 4, 5, 6], 'k = 0 accumulating: C unchanged')

  t.throws(() => backend.gemm({ c: new Float32Array(5), m: 2, n: 3, segments: [{ a: new Float32Array(2), b: new Float32Array(3), k: 1 }] }), { name: 'RangeError', message: /'c' has 5 elements/ })
  t.throws(() => backend.gemm({ c: new Float32Array(6), m: 2, n: 3, segments: [{ a: new Float64Array(2) as never, b: new Float32Array(3), k: 1 }] }), { name: 'TypeError', message: /'segments\[0\]\.a' must be a Float32Array or a Uint16Array/ })
})

// ---- attention
function attentionCase(s: AttentionShape, seed: number) {
  return { q: randomF32(qSize(s), seed, 2), k: randomF32(kvSize(s), seed + 1), v: randomF32(kvSize(s), seed + 2), dout: randomF32(qSize(s), seed + 3) }
}

// Padding at both ends of batch 1 (its first 8 - (tk - tq) rows see no key at all) and three packed documents.
function masked(batch: number, tq: number, tk: number): { keyMask: Uint8Array; keyStart: Int32Array } {
  const keyMask = new Uint8Array(batch * tk).fill(1)
  if (batch > 1) for (let j = 0; j < tk; j++) if (j < 8 || j >= tk - 9) keyMask[tk + j] = 0
  const keyStart = new Int32Array(batch * tq)
  for (let b = 0; b < batch; b++)
    for (let i = 0; i < tq; i++) {
      const pos = i + tk - tq
      keyStart[b * tq + i] = pos >= Math.floor((2 * tk) / 3) ? Math.floor((2 * tk) / 3) : pos >= Math.floor(tk / 3) ? Math.floor(tk / 3) : 0
    }
  return { keyMask, keyStart }
}

const ATTENTION_CASES: [string, AttentionShape][] = [
  ['GQA 4:2, tq = tk = 67, head dim 24', { batch: 2, tq: 67, tk: 67, heads: 4, kvHeads: 2, headDim: 24 }],
  ['tq 7 < tk 150 (a KV cache), head dim 5', { batch: 1, tq: 7, tk: 150, heads: 2, kvHeads: 1, headDim: 5 }],
  ['130 rows (three tiles), head dim 64, scale 0.3', { batch: 1, tq: 130, tk: 130, heads: 2, kvHeads: 2, headDim: 64, scale: 0.3 }],
  ['padding and packed documents, head dim 128', { batch: 2, tq: 70, tk: 75, heads: 2, kvHeads: 1, headDim: 128, ...masked(2, 70, 75) }],
]

t.test(`attention forward (${BACKEND}) against float64`, { skip }, async (t) => {
  let seed = 100
  for (const [name, s] of ATTENTION_CASES) {
    const x = attentionCase(s, (seed += 10))
    const out = nanFilled(qSize(s)), lse = nanFilled(lseSize(s))
    backend.attentionForward({ ...s, q: x.q, k: x.k, v: x.v, out, lse })
    const ref = refAttentionForward(s, x.q, x.k, x.v)
    t.equal(firstNaN(out), -1, `${name}: every output written`)
    t.equal(firstNaN(lse), -1, `${name}: every lse written`)
    t.ok(relErr(out, ref.out) <= ATTENTION_BOUND, `${name}: out relative error ${relErr(out, ref.out).toExponential(2)}`)
    let seen = 0, bad = 0
    for (let i = 0; i < ref.lse.length; i++) {
      if (ref.lse[i] === -Infinity) {
        seen++
        if (lse[i] !== -Infinity) bad++
        continue
      }
      if (!(Math.abs(lse[i] - ref.lse[i]) <= ATTENTION_BOUND * (1 + Math.abs(ref.lse[i])))) bad++
    }
    t.equal(bad, 0, `${name}: lse within bounds${seen ? `, -inf on the ${seen} rows that see no key` : ''}`)
    if (seen) {
      const D = s.headDim
      let nonzero = 0
      for (let r = 0; r < ref.lse.length; r++) {
        if (ref.lse[r] !== -Infinity) continue
        const b = Math.floor(r / (s.heads * s.tq)), h = Math.floor(r / s.tq) % s.heads, i = r % s.tq
        for (let d = 0; d < D; d++) if (out[((b * s.tq + i) * s.heads + h) * D + d] !== 0) nonzero++
      }
      t.equal(nonzero, 0, `${name}: rows that see no key are exactly 0`)
    }
  }
})

t.test(`attention backward (${BACKEND}) against float64`, { skip }, async (t) => {
  let seed = 200
  for (const [name, s] of ATTENTION_CASES) {
    const x = attentionCase(s, (seed += 10))
    const out = nanFilled(qSize(s)), lse = nanFilled(lseSize(s))
    backend.attentionForward({ ...s, q: x.q, k: x.k, v: x.v, out, lse })
    const dq = nanFilled(qSize(s)), dk = nanFilled(kvSize(s)), dv = nanFilled(kvSize(s))
    backend.attentionBackward({ ...s, q: x.q, k: x.k, v: x.v, out, lse, dout: x.dout, dq, dk, dv })
    const ref = refAttentionBackward(s, x.q, x.k, x.v, x.dout)
    for (const [what, got, want] of [['dq', dq, ref.dq], ['dk', dk, ref.dk], ['dv', dv, ref.dv]] as const) {
      t.equal(firstNaN(got), -1, `${name}: every ${what} element written`)
      t.ok(relErr(got, want) <= ATTENTION_GRAD_BOUND, `${name}: ${what} relative error ${relErr(got, want).toExponential(2)}`)
    }
  }
})

// ---- LoRA
function loraCase(m: number, n: number, k: number, r: number, seed: number, bf16: boolean) {
  const w = randomF32(n * k, seed + 1, 0.5)
  return {
    m, n, k, rank: r, scale: 16 / r,
    x: randomF32(m * k, seed),
    weight: bf16 ? toBf16(w) : w,
    loraA: randomF32(r * k, seed + 2, 0.5),
    loraB: randomF32(n * r, seed + 3, 0.5),
  }
}

t.test(`LoRA linear (${BACKEND}): forward and backward against float64, dropout with the engine's mask`, { skip }, async (t) => {
  let seed = 300
  for (const [m, n, k, r, bf16, dropout] of [
    [37, 45, 29, 5, true, 0],
    [64, 96, 128, 8, false, 0],
    [19, 33, 41, 4, true, 0.25],
  ] as [number, number, number, number, boolean, number][]) {
    const c = loraCase(m, n, k, r, (seed += 10), bf16)
    const name = `m ${m}, n ${n}, k ${k}, rank ${r}, ${bf16 ? 'bf16' : 'f32'} W${dropout ? `, dropout ${dropout}` : ''}`
    const dropSeed = 77
    const keep = dropout ? (i: number) => loraKeep(BigInt(dropSeed), i, dropout) : undefined
    const xs = valuesOf(c.x)
    const p = { m, n, k, r, scale: c.scale, x: xs, w: valuesOf(c.weight), a: valuesOf(c.loraA), b: valuesOf(c.loraB), xd: keep ? xs.map((v, i) => (keep(i) ? v / (1 - dropout) : 0)) : undefined }
    const u = nanFilled(m * r), out = nanFilled(m * n)
    backend.loraForward({ ...c, u, out, dropout, seed: dropSeed })
    const ref = refLoraForward(p)
    t.equal(firstNaN(out), -1, `${name}: y written`)
    t.ok(relErr(out, ref.y) <= PRODUCT_BOUND, `${name}: y relative error ${relErr(out, ref.y).toExponential(2)}`)
    t.ok(relErr(u, ref.u) <= PRODUCT_BOUND, `${name}: u relative error ${relErr(u, ref.u).toExponential(2)}`)

    const dout = randomF32(m * n, seed + 5)
    const dA0 = randomF32(r * k, seed + 6), dB0 = randomF32(n * r, seed + 7)
    const dA = Float32Array.from(dA0), dB = Float32Array.from(dB0), dx = nanFilled(m * k)
    backend.loraBackward({ ...c, u, dout, dx, dA, dB, dropout, seed: dropSeed })
    const g = refLoraBackward(p, dout, keep, dropout ? 1 / (1 - dropout) : 1)
    t.ok(relErr(dx, g.dx) <= PRODUCT_BOUND, `${name}: dx relative error ${relErr(dx, g.dx).toExponential(2)}`)
    const dAref = g.dA.map((v, i) => v + dA0[i]), dBref = g.dB.map((v, i) => v + dB0[i])
    t.ok(relErr(dA, dAref) <= PRODUCT_BOUND, `${name}: dA (added to) relative error ${relErr(dA, dAref).toExponential(2)}`)
    t.ok(relErr(dB, dBref) <= PRODUCT_BOUND, `${name}: dB (added to) relative error ${relErr(dB, dBref).toExponential(2)}`)
  }
})

// ---- row ops
t.test(`RMSNorm and the per-head q/k norm (${BACKEND}) against float64`, { skip }, async (t) => {
  let seed = 400
  // [rows, dim]: a hidden-size row, and Qwen3's q/k norm (11 tokens x 4 heads, head dim 128)
  for (const [rows, dim, label] of [[37, 130, 'rows 37 x 130'], [44, 128, 'q/k norm: 11 tokens x 4 heads x 128']] as [number, number, string][])
    for (const bf16 of [false, true]) {
      const name = `${label}, ${bf16 ? 'bf16' : 'f32'} weight`
      const eps = 1e-6
      const x = randomF32(rows * dim, seed++, 2)
      const w32 = randomF32(dim, seed++, 1.5)
      const weight = bf16 ? toBf16(w32) : w32
      const out = nanFilled(rows * dim), rstd = nanFilled(rows)
      backend.rmsnormForward({ x, weight, rows, dim, eps, out, rstd })
      const ref = refRmsnorm(x, valuesOf(weight), rows, dim, eps)
      t.equal(firstNaN(out), -1, `${name}: every output written`)
      t.ok(relErr(out, ref.y) <= F32_BOUND, `${name}: y relative error ${relErr(out, ref.y).toExponential(2)}`)
      t.ok(relErr(rstd, ref.rstd) <= F32_BOUND, `${name}: rstd relative error ${relErr(rstd, ref.rstd).toExponential(2)}`)

      const inPlace = Float32Array.from(x)
      backend.rmsnormForward({ x: inPlace, weight, rows, dim, eps, out: inPlace })
      t.ok(relErr(inPlace, ref.y) <= F32_BOUND, `${name}: in place`)

      const dout = randomF32(rows * dim, seed++)
      const dx0 = randomF32(rows * dim, seed++), dw0 = randomF32(dim, seed++)
      const dx = Float32Array.from(dx0), dweight = Float32Array.from(dw0)
      backend.rmsnormBackward({ dout, x, weight, rstd, rows, dim, dx, dweight, accumulate: true })
      const g = refRmsnormBackward(dout, x, valuesOf(weight), rows, dim, eps)
      const dxRef = g.dx.map((v, i) => v + dx0[i]), dwRef = g.dw.map((v, i) => v + dw0[i])
      t.ok(relErr(dx, dxRef) <= F32_BOUND, `${name}: dx (accumulated) relative error ${relErr(dx, dxRef).toExponential(2)}`)
      t.ok(relErr(dweight, dwRef) <= F32_BOUND, `${name}: dweight (added to) relative error ${relErr(dweight, dwRef).toExponential(2)}`)
    }
})

t.test(`RoPE, both pairings (${BACKEND}), forward and backward against float64`, { skip }, async (t) => {
  let seed = 500
  for (const pairing of ['adjacent', 'half'] as Pairing[])
    for (const [rows, heads, headDim] of [[19, 3, 10], [9, 2, 130]]) {
      const name = `${pairing}, ${rows} tokens x ${heads} heads x ${headDim}`
      const r = rng(seed++)
      const positions = Int32Array.from({ length: rows }, () => Math.floor(r() * 5000))
      const x = randomF32(rows * heads * headDim, seed++)
      const theta = 500000
      const out = nanFilled(x.length)
      backend.ropeForward({ x, positions, heads, headDim, theta, pairing, out })
      t.equal(firstNaN(out), -1, `${name}: every output written`)
      const ref = refRope(x, positions, heads, headDim, theta, pairing)
      t.ok(relErr(out, ref) <= F32_BOUND, `${name}: forward relative error ${relErr(out, ref).toExponential(2)}`)
      const dout = randomF32(x.length, seed++)
      const dx = nanFilled(x.length)
      backend.ropeBackward({ dout, positions, heads, headDim, theta, pairing, dx })
      const refBack = refRope(dout, positions, heads, headDim, theta, pairing, true)
      t.ok(relErr(dx, refBack) <= F32_BOUND, `${name}: backward (the inverse rotation) relative error ${relErr(dx, refBack).toExponential(2)}`)
      const inPlace = Float32Array.from(x)
      backend.ropeForward({ x: inPlace, positions, heads, headDim, theta, pairing })
      t.ok(relErr(inPlace, ref) <= F32_BOUND, `${name}: in place`)
    }
})

t.test(`SwiGLU (${BACKEND}), split and fused layouts, against float64`, { skip }, async (t) => {
  const n = 1000
  const gate = randomF32(n, 601, 6), up = randomF32(n, 602, 2), dout = randomF32(n, 603)
  const ref = refSwiglu(gate, up, dout)
  const out = nanFilled(n)
  backend.swigluForward({ gate, up, out })
  t.ok(relErr(out, ref.out) <= F32_BOUND, `split forward: ${relErr(out, ref.out).toExponential(2)}`)
  const dgate = nanFilled(n), dup = nanFilled(n)
  backend.swigluBackward({ dout, gate, up, dgate, dup })
  t.ok(relErr(dgate, ref.dgate) <= F32_BOUND, `split dgate: ${relErr(dgate, ref.dgate).toExponential(2)}`)
  t.ok(relErr(dup, ref.dup) <= F32_BOUND, `split dup: ${relErr(dup, ref.dup).toExponential(2)}`)

  const rows = 7, dim = 130
  const gateUp = randomF32(rows * 2 * dim, 604, 6), dout2 = randomF32(rows * dim, 605)
  const g = new Float64Array(rows * dim), u = new Float64Array(rows * dim)
  for (let r = 0; r < rows; r++)
    for (let j = 0; j < dim; j++) {
      g[r * dim + j] = gateUp[r * 2 * dim + j]
      u[r * dim + j] = gateUp[r * 2 * dim + dim + j]
    }
  const ref2 = refSwiglu(g, u, dout2)
  const out2 = nanFilled(rows * dim)
  backend.swigluForward({ gateUp, rows, dim, out: out2 })
  t.ok(relErr(out2, ref2.out) <= F32_BOUND, `fused forward: ${relErr(out2, ref2.out).toExponential(2)}`)
  const dgateUp = nanFilled(rows * 2 * dim)
  backend.swigluBackward({ dout: dout2, gateUp, rows, dim, dgateUp })
  t.equal(firstNaN(dgateUp), -1, 'fused backward: every element written')
  const want = new Float64Array(rows * 2 * dim)
  for (let r = 0; r < rows; r++)
    for (let j = 0; j < dim; j++) {
      want[r * 2 * dim + j] = ref2.dgate[r * dim + j]
      want[r * 2 * dim + dim + j] = ref2.dup[r * dim + j]
    }
  t.ok(relErr(dgateUp, want) <= F32_BOUND, `fused backward: ${relErr(dgateUp, want).toExponential(2)}`)
})

t.test(`embedding (${BACKEND}): lookup (f32 and bf16 tables) and the gradient with repeated ids`, { skip }, async (t) => {
  const vocab = 50, dim = 33
  const ids = Int32Array.from([3, 0, 49, 3, 17, 3, 0, 25])
  for (const bf16 of [false, true]) {
    const t32 = randomF32(vocab * dim, bf16 ? 702 : 701)
    const table = bf16 ? toBf16(t32) : t32
    const values = valuesOf(table)
    const out = nanFilled(ids.length * dim)
    backend.embeddingForward({ ids, table, vocab, dim, out })
    let mismatches = 0
    for (let k = 0; k < ids.length; k++) for (let j = 0; j < dim; j++) if (out[k * dim + j] !== values[ids[k] * dim + j]) mismatches++
    t.equal(mismatches, 0, `${bf16 ? 'bf16' : 'f32'} table: rows copied exactly`)
  }
  const dout = randomF32(ids.length * dim, 703)
  const d0 = randomF32(vocab * dim, 704)
  const dtable = Float32Array.from(d0)
  backend.embeddingBackward({ ids, dout, dtable, vocab, dim })
  const want = Float64Array.from(d0)
  for (let k = 0; k < ids.length; k++) for (let j = 0; j < dim; j++) want[ids[k] * dim + j] += dout[k * dim + j]
  t.ok(relErr(dtable, want) <= F32_BOUND, `dtable += rows of dout: ${relErr(dtable, want).toExponential(2)}`)
})

// ---- loss
t.test(`chunked cross-entropy (${BACKEND}) against float64: loss, dhidden, dweight, ignored rows`, { skip }, async (t) => {
  const T = 45, H = 40, V = 300
  for (const bf16 of [false, true]) {
    const hidden = randomF32(T * H, bf16 ? 801 : 802, 2)
    const w32 = randomF32(V * H, bf16 ? 803 : 804, 0.5)
    const weight = bf16 ? toBf16(w32) : w32
    const r = rng(bf16 ? 805 : 806)
    const targets = Int32Array.from({ length: T }, () => (r() < 0.2 ? -100 : Math.floor(r() * V)))
    const ref = refCrossEntropy(hidden, valuesOf(weight), targets, T, H, V)
    const dhidden = nanFilled(T * H)
    const dw0 = randomF32(V * H, 807)
    const dweight = Float32Array.from(dw0)
    const res = backend.crossEntropy({ hidden, weight, targets, tokens: T, hiddenSize: H, vocab: V, chunk: 128, rowTile: 16, dhidden, dweight })
    const name = `${bf16 ? 'bf16' : 'f32'} head, 3 vocab chunks, 3 row tiles`
    t.equal(res.count, ref.count, `${name}: count`)
    t.ok(Math.abs(res.loss - ref.loss) <= 5e-3 * Math.abs(ref.loss), `${name}: loss ${res.loss} vs ${ref.loss}`)
    t.ok(Math.abs(res.lossSum - ref.lossSum) <= 5e-3 * Math.abs(ref.lossSum), `${name}: lossSum`)
    t.ok(relErr(dhidden, ref.dhidden) <= PRODUCT_BOUND, `${name}: dhidden relative error ${relErr(dhidden, ref.dhidden).toExponential(2)}`)
    let ignoredNonZero = 0
    for (let i = 0; i < T; i++) if (targets[i] < 0) for (let c = 0; c < H; c++) if (dhidden[i * H + c] !== 0) ignoredNonZero++
    t.equal(ignoredNonZero, 0, `${name}: ignored rows get a zero dhidden`)
    const dwRef = ref.dweight.map((v, i) => v + dw0[i])
    t.ok(relErr(dweight, dwRef) <= PRODUCT_BOUND, `${name}: dweight (added to) relative error ${relErr(dweight, dwRef).toExponential(2)}`)
  }
  const none = backend.crossEntropy({ hidden: new Float32Array(4), weight: new Float32Array(6), targets: Int32Array.from([-1, -100]), tokens: 2, hiddenSize: 2, vocab: 3 })
  t.same(none, { loss: 0, count: 0, lossSum: 0 }, 'no target: loss 0, count 0')
})

// ---- optimisers
t.test(`AdamW (${BACKEND}): three steps against float64, with the bf16 copy`, { skip }, async (t) => {
  const n = 1000
  const h = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 }
  const params = randomF32(n, 901), m = new Float32Array(n), v = new Float32Array(n)
  const p64 = Float64Array.from(params), m64 = new Float64Array(n), v64 = new Float64Array(n)
  const paramsBf16 = new Uint16Array(n).fill(0x7fc1)
  for (let step = 1; step <= 3; step++) {
    const grads = randomF32(n, 910 + step, 0.1)
    backend.adamwStep({ params, grads, m, v, paramsBf16, step, ...h })
    refAdamw(p64, grads, m64, v64, h, step)
  }
  t.ok(relErr(params, p64) <= F32_BOUND, `params relative error ${relErr(params, p64).toExponential(2)}`)
  t.ok(relErr(m, m64) <= F32_BOUND, `m relative error ${relErr(m, m64).toExponential(2)}`)
  t.ok(relErr(v, v64) <= F32_BOUND, `v relative error ${relErr(v, v64).toExponential(2)}`)
  let off = 0
  for (let i = 0; i < n; i++) if (paramsBf16[i] !== toBf16Bits(params[i])) off++
  t.equal(off, 0, 'paramsBf16 is the updated params rounded to bf16')
})

t.test(`8-bit AdamW (${BACKEND}): three steps beside the CPU kernel (the same quantisation map)`, { skip }, async (t) => {
  const n = 1000, blockSize = 256, blocks = Math.ceil(n / blockSize)
  const h = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 }
  const make = () => ({ params: randomF32(n, 951), m: new Uint8Array(n), v: new Uint8Array(n), mAbsmax: new Float32Array(blocks), vAbsmax: new Float32Array(blocks) })
  const gpu = make(), cpu = make()
  for (let step = 1; step <= 3; step++) {
    const grads = randomF32(n, 960 + step, 0.1)
    backend.adamw8bitStep({ ...gpu, grads, blockSize, step, ...h })
    kernels.sync.adamw8bitStep({ ...cpu, grads, blockSize, step, ...h })
  }
  t.ok(relErr(gpu.params, cpu.params) <= F32_BOUND, `params relative difference ${relErr(gpu.params, cpu.params).toExponential(2)}`)
  t.ok(relErr(gpu.mAbsmax, cpu.mAbsmax) <= F32_BOUND && relErr(gpu.vAbsmax, cpu.vAbsmax) <= F32_BOUND, 'absmax per block')
  let differ = 0, far = 0
  for (let i = 0; i < n; i++)
    for (const [a, b] of [[gpu.m[i], cpu.m[i]], [gpu.v[i], cpu.v[i]]]) {
      if (a !== b) differ++
      if (Math.abs(a - b) > 1) far++
    }
  t.ok(differ <= 0.01 * 2 * n, `codes: ${differ} of ${2 * n} differ (a value on a midpoint may round either way)`)
  t.equal(far, 0, 'no code is more than one step away')
  const p64 = Float64Array.from(randomF32(n, 951))
  t.ok(relErr(gpu.params, p64) > 0, 'the parameters moved')
})
