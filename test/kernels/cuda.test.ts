// The CUDA backend, apart from its ops' results.
//
// Runs everywhere: what cudaInfo reports, device resolution ('cpu' | 'cuda' | 'auto',
// ERNIE_DEVICE, typed errors), what models, trainers and classifiers do with a device, the errors
// of the CUDA kernels where there is no CUDA build or device, and scripts/check-cuda.sh's ptxas
// parser on sample logs. Where a CUDA device is present: the refusal of bad arguments, of head
// dims past 128 and of precision 'fp32'.
//
// Every op's results on CUDA (against the float64 references, at the bf16 precision bounds) are
// cases of test/kernels/backend-ops.test.ts, which runs each case on every backend present.
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

const hasDevice = cudaDevices().length > 0

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

t.test('on a CUDA device, bad arguments and head dims past 128 are refused before any work', { skip: hasDevice ? false : 'no CUDA device' }, async (t) => {
  const attention = native.attentionForwardSync as (o: unknown) => void
  const shape = { batch: 1, tq: 1, tk: 1, heads: 1, kvHeads: 1, headDim: 256, q: new Float32Array(256), k: new Float32Array(256), v: new Float32Array(256), out: new Float32Array(256), lse: new Float32Array(1), device: 'cuda' }
  t.throws(() => attention(shape), { name: 'RangeError', message: /'headDim' must be in \[1, 128\], got 256/ })
  t.throws(() => kernels.cuda.sync.gemm({ c: new Float32Array(5), m: 2, n: 3, segments: [{ a: new Float32Array(2), b: new Float32Array(3), k: 1 }] }), { name: 'RangeError', message: /'c' has 5 elements/ })
  t.throws(() => kernels.cuda.sync.gemm({ c: new Float32Array(6), m: 2, n: 3, segments: [{ a: new Float64Array(2) as never, b: new Float32Array(3), k: 1 }] }), { name: 'TypeError', message: /'segments\[0\]\.a' must be a Float32Array or a Uint16Array/ })
  t.throws(() => kernels.cuda.sync.gemm({ c: new Float32Array(6), m: 2, n: 3, segments: [{ a: new Float32Array(2), b: new Float32Array(3), k: 1 }], precision: 'fp32' }), { name: 'RangeError', message: /'precision' 'fp32' is not available on the cuda backend/ }, "precision 'fp32' is refused: CUDA computes products in bf16")
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
