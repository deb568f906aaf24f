// Optimisers against float64 references of the same algorithms (test/helpers/reference.ts), on
// every ISA this CPU supports: AdamW (torch's), 8-bit AdamW (bitsandbytes' blockwise dynamic
// quantisation), SGD, and the global gradient norm and its clipping.
import t from 'tap'
import { kernels } from '../../lib/index'
import { firstNaN, forEachIsa, nanFilled, randomF32, relErr, rng, toBf16Bits } from '../helpers/helpers'
import { MAP_S, MAP_U, refAdamw, refAdamw8bit, refSgd, type AdamHyper, type Q8 } from '../helpers/reference'

// The code whose value is nearest to q (ties to the lower code).
function nearestCode(map: Float64Array, q: number): number {
  let best = 0
  for (let c = 1; c < 256; c++) if (Math.abs(map[c] - q) < Math.abs(map[best] - q)) best = c
  return best
}

// Values spread over many decades, as optimiser moments are: sign * 10^U(-9, 0) * scale.
function heavyTailed(n: number, seed: number, scale: number, signed: boolean): Float32Array {
  const r = rng(seed)
  return Float32Array.from({ length: n }, () => (signed && r() < 0.5 ? -1 : 1) * 10 ** (-9 * r()) * scale)
}

const HYPER: AdamHyper = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 }

t.test('adamwStep matches torch AdamW in float64 over several steps, with the bf16 copy', async (t) => {
  await forEachIsa((isa) => {
    const n = 70001 // past two pieces of work, not a multiple of any vector width
    const p = randomF32(n, 1, 1), m = new Float32Array(n), v = new Float32Array(n)
    const rp = Float64Array.from(p), rm = new Float64Array(n), rv = new Float64Array(n)
    for (let step = 1; step <= 3; step++) {
      const g = randomF32(n, 10 + step, 0.5)
      const before = Float64Array.from(p)
      const bf16 = new Uint16Array(n).fill(0x7fc1) // a NaN pattern the kernel never writes for finite params
      kernels.sync.adamwStep({ params: p, grads: g, m, v, paramsBf16: bf16, step, ...HYPER })
      refAdamw(rp, g, rm, rv, HYPER, step)
      const delta = p.map((x, i) => x - before[i]), refDelta = rp.map((x, i) => x - before[i])
      t.ok(relErr(delta, refDelta) < 2e-5, `${isa} step ${step}: update relative error ${relErr(delta, refDelta).toExponential(2)}`)
      t.ok(relErr(m, rm) < 1e-6 && relErr(v, rv) < 1e-6, `${isa} step ${step}: moments`)
      let same = true
      for (let i = 0; i < n; i++) same &&= bf16[i] === toBf16Bits(p[i])
      t.ok(same, `${isa} step ${step}: paramsBf16 is params rounded to bf16, every element`)
    }
  })
})

t.test('adamwStep at every length to 40 (each vector tail): matches float64, writes nothing past the end', async (t) => {
  await forEachIsa((isa) => {
    let worst = 0, momentsOk = true, bf16Ok = true, fenced = true
    const SENTINEL = 12345.5, PAD = 20
    for (let n = 1; n <= 40; n++) {
      // Each array a view of n elements followed by PAD sentinels a masked store must not touch.
      const view = (init: Float32Array) => {
        const buf = new Float32Array(n + PAD).fill(SENTINEL)
        buf.set(init)
        return buf.subarray(0, n)
      }
      const p = view(randomF32(n, 1000 + n, 1)), m = view(new Float32Array(n)), v = view(new Float32Array(n))
      const bf16Buf = new Uint16Array(n + PAD).fill(0x7fc1), bf16 = bf16Buf.subarray(0, n)
      const rp = Float64Array.from(p), rm = new Float64Array(n), rv = new Float64Array(n)
      for (let step = 1; step <= 2; step++) {
        const g = randomF32(n, 2000 + 10 * n + step, 0.5)
        const before = Float64Array.from(p)
        kernels.sync.adamwStep({ params: p, grads: g, m, v, paramsBf16: bf16, step, ...HYPER })
        refAdamw(rp, g, rm, rv, HYPER, step)
        worst = Math.max(worst, relErr(p.map((x, i) => x - before[i]), rp.map((x, i) => x - before[i])))
        momentsOk &&= relErr(m, rm) < 1e-6 && relErr(v, rv) < 1e-6
        for (let i = 0; i < n; i++) bf16Ok &&= bf16[i] === toBf16Bits(p[i])
      }
      for (const a of [p, m, v]) for (let i = n; i < n + PAD; i++) fenced &&= new Float32Array(a.buffer)[i] === SENTINEL
      for (let i = n; i < n + PAD; i++) fenced &&= bf16Buf[i] === 0x7fc1
    }
    t.ok(worst < 2e-5, `${isa}: worst update relative error ${worst.toExponential(2)}`)
    t.ok(momentsOk, `${isa}: moments`)
    t.ok(bf16Ok, `${isa}: paramsBf16 is params rounded to bf16, every element`)
    t.ok(fenced, `${isa}: nothing written past the end of params, m, v or paramsBf16`)
  })
})

t.test("adamwStep's bf16 copy rounds special values as f32_to_bf16 does (ties to even, NaN kept quiet)", async (t) => {
  // bf16 bits of f32 bits, as f32_to_bf16 (native/cpu/tensor.h): the NaN test on the raw bits,
  // since a NaN read into a JS number may lose its payload.
  const bf16OfBits = (u: number) =>
    (u & 0x7fffffff) > 0x7f800000 ? ((u >>> 16) | 0x40) & 0xffff : ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff
  const special = [
    0x7fc0ffff, 0xffc0ffff, 0x7fc18000, 0x7f800000, 0xff800000, 0x7f7fffff, 0xff7fffff, 0x7f7f8000, 0x3f808000, 0x3f818000,
    0xbf808000, 0xbf818000, 0x3f808001, 0x3f807fff, 0x00018000, 0x00008000, 0x00028000, 0x80018000, 0x807fffff, 0x00000001,
    0x80000000, 0x00000000, 0x3f800000, 0x4b7fffff, 0x0000ffff, 0x3fffffff, 0xbfffffff, 0x7effffff, 0x00800000, 0x3f7fffff,
    0x7fc00000, 0xc0490fdb, 0x40490fdb,
  ]
  await forEachIsa((isa) => {
    // lr 0, no decay, zero gradients: every param comes out as it went in, bits included.
    for (const n of [special.length, 16, 7, 1]) {
      const bits = Uint32Array.from({ length: n }, (_, i) => special[(i * 7) % special.length])
      const p = new Float32Array(bits.buffer)
      const bf16 = new Uint16Array(n).fill(0x1234)
      kernels.sync.adamwStep({ params: p, grads: new Float32Array(n), m: new Float32Array(n), v: new Float32Array(n), paramsBf16: bf16, lr: 0, weightDecay: 0, step: 1 })
      const after = new Uint32Array(p.buffer)
      let same = true, rounded = true
      for (let i = 0; i < n; i++) {
        same &&= after[i] === bits[i]
        rounded &&= bf16[i] === bf16OfBits(bits[i])
      }
      t.ok(same, `${isa} n=${n}: params unchanged by a zero step`)
      t.ok(rounded, `${isa} n=${n}: every bf16 is f32_to_bf16 of its param`)
    }
  })
})

t.test('the 8-bit maps are bitsandbytes dynamic maps', async (t) => {
  for (const signed of [true, false]) {
    const codes = Uint8Array.from({ length: 256 }, (_, i) => i)
    const out = nanFilled(256)
    kernels.sync.dequantizeBlockwise({ codes, absmax: Float32Array.of(1), output: out, blockSize: 256, signed })
    const ref = signed ? MAP_S : MAP_U
    t.same(Array.from(out), Array.from(ref), `${signed ? 'signed' : 'unsigned'} map, all 256 codes`)
  }
  t.equal(MAP_S[127], 0, 'signed: 0 is a code')
  t.equal(MAP_S[255], 1, 'signed: 1 is the top code')
  t.equal(MAP_U[0], 0, 'unsigned: code 0 is 0, so a zero state is all zeros')
})

t.test('blockwise quantisation round trip: nearest code, error within half a gap', async (t) => {
  await forEachIsa((isa) => {
    for (const [signed, blockSize] of [[true, 256], [false, 256], [true, 100], [false, 37]] as const) {
      const n = 1000
      const x = heavyTailed(n, blockSize + (signed ? 1 : 2), 3, signed)
      x[n - 1] = 0 // an exact zero, and a block whose absmax is 0
      if (blockSize === 37) x.fill(0, 37, 74)
      const codes = new Uint8Array(n), absmax = nanFilled(Math.ceil(n / blockSize)), out = nanFilled(n)
      kernels.sync.quantizeBlockwise({ input: x, codes, absmax, blockSize, signed })
      kernels.sync.dequantizeBlockwise({ codes, absmax, output: out, blockSize, signed })
      const map = signed ? MAP_S : MAP_U
      let absmaxOk = true, nearest = true, bounded = true
      let worst = 0
      for (let b = 0; b * blockSize < n; b++) {
        let mx = 0
        for (let i = b * blockSize; i < Math.min(n, (b + 1) * blockSize); i++) mx = Math.max(mx, Math.abs(x[i]))
        absmaxOk &&= absmax[b] === mx
      }
      for (let i = 0; i < n; i++) {
        const a = absmax[Math.floor(i / blockSize)]
        const q = a > 0 ? x[i] / a : 0
        const c = codes[i]
        // nearest, up to the f32 rounding of x * (1 / absmax) at a midpoint
        nearest &&= Math.abs(map[c] - q) <= Math.abs(map[nearestCode(map, q)] - q) + 1e-7 * Math.abs(q)
        // the largest half gap of either map is 0.9 / 64 / 2 (the top decade), also at q = -1
        const err = Math.abs(out[i] - x[i])
        worst = Math.max(worst, err / (a || 1))
        bounded &&= err <= (0.9 / 128 + 1e-6) * a // plus f32 rounding
      }
      const what = `${isa} ${signed ? 'signed' : 'unsigned'} blockSize ${blockSize}`
      t.ok(absmaxOk, `${what}: absmax is each block's max |x|`)
      t.ok(nearest, `${what}: every code is the nearest`)
      t.ok(bounded, `${what}: |x - dequant(quant(x))| <= absmax * 0.9 / 128 (worst ${worst.toExponential(2)})`)
      t.equal(firstNaN(out), -1, `${what}: every output written`)
    }
  })
})

t.test("quantizeBlockwise's absmax: each block's largest |x| wherever it lies; a NaN never wins", async (t) => {
  await forEachIsa((isa) => {
    let ok = true
    for (const blockSize of [1, 5, 8, 16, 23, 37, 40]) {
      const blocks = Math.max(3, blockSize), n = blocks * blockSize
      const x = randomF32(n, 70 + blockSize, 1)
      const expected = new Float32Array(blocks)
      for (let b = 0; b < blocks; b++) {
        const at = b * blockSize + (b % blockSize) // the largest at every position of a block in turn
        x[at] = (b % 2 ? -1 : 1) * (2 + b)
        if (blockSize > 1 && b % 3 === 2) x[b * blockSize + ((b + 1) % blockSize)] = NaN
        expected[b] = 2 + b
      }
      const codes = new Uint8Array(n), absmax = nanFilled(blocks)
      kernels.sync.quantizeBlockwise({ input: x, codes, absmax, blockSize, signed: true })
      for (let b = 0; b < blocks; b++) ok &&= absmax[b] === expected[b]
    }
    t.ok(ok, `${isa}: every absmax`)
  })
})

t.test('quantisation picks the right side of every midpoint of both maps', async (t) => {
  await forEachIsa((isa) => {
    for (const signed of [true, false]) {
      const map = signed ? MAP_S : MAP_U
      // One block with absmax 1 (the value 1 is in it), so q = x exactly.
      const xs: number[] = [1]
      const expected: number[] = [255]
      for (let k = 0; k < 255; k++) {
        const mid = (map[k] + map[k + 1]) / 2
        xs.push(Math.fround(mid * (1 + 2 ** -18)), Math.fround(mid * (1 - 2 ** -18)))
        expected.push(mid > 0 ? k + 1 : k, mid > 0 ? k : k + 1)
        xs.push(map[k])
        expected.push(k)
      }
      const input = Float32Array.from(xs)
      const codes = new Uint8Array(input.length), absmax = new Float32Array(1)
      kernels.sync.quantizeBlockwise({ input, codes, absmax, blockSize: 65536, signed })
      let wrong = 0
      for (let i = 0; i < input.length; i++) if (codes[i] !== expected[i]) wrong++
      t.equal(wrong, 0, `${isa} ${signed ? 'signed' : 'unsigned'}: ${input.length} values around all 255 midpoints`)
    }
  })
})

t.test('adamw8bitStep: one step matches a float64 reference of the same algorithm', async (t) => {
  await forEachIsa((isa) => {
    for (const blockSize of [256, 61]) {
      const n = 2000
      const p = randomF32(n, 21, 1), g = randomF32(n, 22, 0.01)
      // A non-trivial state: moments spread over decades, quantised by the engine.
      const m: Q8 = { codes: new Uint8Array(n), absmax: new Float32Array(Math.ceil(n / blockSize)) }
      const v: Q8 = { codes: new Uint8Array(n), absmax: new Float32Array(Math.ceil(n / blockSize)) }
      kernels.sync.quantizeBlockwise({ input: heavyTailed(n, 23, 0.01, true), codes: m.codes, absmax: m.absmax, blockSize, signed: true })
      kernels.sync.quantizeBlockwise({ input: heavyTailed(n, 24, 1e-4, false), codes: v.codes, absmax: v.absmax, blockSize, signed: false })
      const step = 7
      const rp = Float64Array.from(p)
      const ref = refAdamw8bit(rp, g, m, v, blockSize, HYPER, step)
      const before = Float64Array.from(p)
      const bf16 = new Uint16Array(n).fill(0x7fc1)
      kernels.sync.adamw8bitStep({ params: p, grads: g, m: m.codes, v: v.codes, mAbsmax: m.absmax, vAbsmax: v.absmax, blockSize, step, paramsBf16: bf16, ...HYPER })
      const what = `${isa} blockSize ${blockSize}`
      const delta = p.map((x, i) => x - before[i]), refDelta = rp.map((x, i) => x - before[i])
      t.ok(relErr(delta, refDelta) < 2e-5, `${what}: update relative error ${relErr(delta, refDelta).toExponential(2)}`)
      t.ok(relErr(m.absmax, ref.mAbs) < 1e-6 && relErr(v.absmax, ref.vAbs) < 1e-6, `${what}: new absmax`)
      let bf16Ok = true
      for (let i = 0; i < n; i++) bf16Ok &&= bf16[i] === toBf16Bits(p[i])
      t.ok(bf16Ok, `${what}: paramsBf16`)
      // Codes: the nearest to the float64 moments, except within f32 rounding of a midpoint.
      let bad = 0
      for (const [codes, q, map] of [[m.codes, ref.mq, MAP_S], [v.codes, ref.vq, MAP_U]] as const)
        for (let i = 0; i < n; i++) {
          const c = codes[i], best = nearestCode(map, q[i])
          if (c !== best && !(Math.abs(c - best) === 1 && Math.abs(Math.abs(map[c] - q[i]) - Math.abs(map[best] - q[i])) <= 1e-6 * Math.abs(q[i]))) bad++
        }
      t.equal(bad, 0, `${what}: re-quantised codes are the nearest to the updated moments`)
    }
  })
})

t.test('on an ill-conditioned quadratic 8-bit AdamW tracks fp32 AdamW and both converge', async (t) => {
  // f(x) = 1/2 sum lambda_i x_i^2, lambda spanning 10^3; cosine-decayed lr, no weight decay.
  const n = 1000, steps = 400
  const r = rng(5)
  const lambda = Float64Array.from({ length: n }, () => 10 ** (3 * r() - 1.5))
  const x0 = Float32Array.from({ length: n }, () => (r() < 0.5 ? -1 : 1) * (0.5 + 0.5 * r()))
  const f = (x: Float32Array) => x.reduce((s, xi, i) => s + 0.5 * lambda[i] * xi * xi, 0)
  const norm0 = Math.hypot(...x0)
  await forEachIsa((isa) => {
    const x32 = Float32Array.from(x0), x8 = Float32Array.from(x0)
    const m = new Float32Array(n), v = new Float32Array(n)
    const mq = new Uint8Array(n), vq = new Uint8Array(n), mAbsmax = new Float32Array(4), vAbsmax = new Float32Array(4)
    const g32 = new Float32Array(n), g8 = new Float32Array(n)
    let maxDev = 0
    for (let step = 1; step <= steps; step++) {
      const lr = 0.025 * (1 + Math.cos((Math.PI * (step - 1)) / steps))
      for (let i = 0; i < n; i++) {
        g32[i] = lambda[i] * x32[i]
        g8[i] = lambda[i] * x8[i]
      }
      kernels.sync.adamwStep({ params: x32, grads: g32, m, v, lr, step, weightDecay: 0 })
      kernels.sync.adamw8bitStep({ params: x8, grads: g8, m: mq, v: vq, mAbsmax, vAbsmax, lr, step, weightDecay: 0 })
      let d = 0
      for (let i = 0; i < n; i++) d += (x32[i] - x8[i]) ** 2
      maxDev = Math.max(maxDev, Math.sqrt(d) / norm0)
    }
    const f0 = f(x0)
    t.ok(f(x32) < 1e-10 * f0, `${isa}: fp32 converges (f ${f0.toExponential(2)} -> ${f(x32).toExponential(2)})`)
    t.ok(f(x8) < 1e-10 * f0, `${isa}: 8-bit converges (f -> ${f(x8).toExponential(2)})`)
    t.ok(maxDev < 0.15, `${isa}: max ||x8 - x32|| / ||x0|| over the run is ${maxDev.toExponential(2)}`)
  })
})

t.test('sgdStep matches torch SGD in float64', async (t) => {
  await forEachIsa((isa) => {
    const n = 40003
    for (const [momentum, nesterov, weightDecay] of [[0, false, 0], [0, false, 0.05], [0.9, false, 0.01], [0.9, true, 0.01]] as const) {
      const p = randomF32(n, 31, 1), buffer = momentum ? new Float32Array(n) : undefined
      const rp = Float64Array.from(p), rb = new Float64Array(n)
      for (let step = 1; step <= 3; step++) {
        const g = randomF32(n, 31 + step, 1)
        kernels.sync.sgdStep({ params: p, grads: g, lr: 0.1, momentum, nesterov, weightDecay, buffer })
        refSgd(rp, g, rb, { lr: 0.1, momentum, weightDecay, nesterov })
      }
      const what = `${isa} momentum ${momentum}${nesterov ? ' nesterov' : ''} wd ${weightDecay}`
      t.ok(relErr(p, rp) < 1e-6, `${what}: params relative error ${relErr(p, rp).toExponential(2)}`)
      if (buffer) t.ok(relErr(buffer, rb) < 1e-6, `${what}: momentum buffer`)
    }
  })
})

t.test('gradNorm: float64-accurate and independent of the thread count', async (t) => {
  const sizes = [0, 1, 1000, 70001, 33, 32768]
  const grads = sizes.map((n, i) => randomF32(n, 40 + i, 2))
  let ss = 0
  for (const g of grads) for (const x of g) ss += x * x
  const ref = Math.sqrt(ss)
  const threads = kernels.numThreads()
  try {
    await forEachIsa((isa) => {
      kernels.setNumThreads(threads)
      const norm = kernels.sync.gradNorm({ grads })
      t.ok(Math.abs(norm - ref) <= 1e-12 * ref, `${isa}: norm ${norm} vs ${ref}`)
      kernels.setNumThreads(1)
      t.equal(kernels.sync.gradNorm({ grads }), norm, `${isa}: one thread gives the same bits`)
      kernels.setNumThreads(3)
      t.equal(kernels.sync.gradNorm({ grads }), norm, `${isa}: three threads give the same bits`)
    })
  } finally {
    kernels.setNumThreads(threads)
  }
  t.equal(kernels.sync.gradNorm({ grads: [] }), 0, 'no gradients: 0')
  t.equal(await kernels.gradNorm({ grads }), kernels.sync.gradNorm({ grads }), 'the async form')
})

t.test('clipGradNorm: torch clip_grad_norm_ semantics', async (t) => {
  await forEachIsa((isa) => {
    const make = () => [randomF32(5000, 51, 1), randomF32(37, 52, 1), randomF32(40000, 53, 1)]
    const grads = make()
    const orig = make()
    let ss = 0
    for (const g of orig) for (const x of g) ss += x * x
    const ref = Math.sqrt(ss)
    const norm = kernels.sync.clipGradNorm({ grads, maxNorm: 1 })
    t.ok(Math.abs(norm - ref) <= 1e-12 * ref, `${isa}: returns the norm before clipping`)
    const coef = Math.fround(1 / (ref + 1e-6))
    let exact = true
    grads.forEach((g, k) => g.forEach((x, i) => (exact &&= x === Math.fround(orig[k][i] * coef))))
    t.ok(exact, `${isa}: every element scaled by maxNorm / (norm + 1e-6)`)
    t.ok(Math.abs(kernels.sync.gradNorm({ grads }) - 1) < 1e-5, `${isa}: the clipped norm is maxNorm`)

    const small = make()
    t.ok(Math.abs(kernels.sync.clipGradNorm({ grads: small, maxNorm: 1000 }) - ref) <= 1e-12 * ref)
    t.same(small.map((g) => Array.from(g)), orig.map((g) => Array.from(g)), `${isa}: below maxNorm nothing changes`)

    for (const bad of [NaN, Infinity]) {
      const gs = make()
      gs[1][3] = bad
      const out = kernels.sync.clipGradNorm({ grads: gs, maxNorm: 1 })
      t.ok(Number.isNaN(bad) ? Number.isNaN(out) : out === Infinity, `${isa}: a ${bad} gradient gives a ${bad} norm`)
      gs[1][3] = orig[1][3]
      t.same(gs.map((g) => Array.from(g)), orig.map((g) => Array.from(g)), `${isa}: and leaves the gradients untouched`)
    }
  })
})

t.test('bad arguments throw typed errors naming the argument', async (t) => {
  const n = 10
  const adam = () => ({ params: new Float32Array(n), grads: new Float32Array(n), m: new Float32Array(n), v: new Float32Array(n), lr: 1e-3, step: 1 })
  const a = (o: Record<string, unknown>) => () => kernels.sync.adamwStep({ ...adam(), ...o } as kernels.AdamwStepOptions)
  t.doesNotThrow(a({}))
  t.throws(a({ grads: new Float32Array(9) }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /adamwStep: 'grads' has 9 elements, expected params.length = 10/ })
  t.throws(a({ m: new Float64Array(n) }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /'m' must be a Float32Array, got Float64Array/ })
  t.throws(a({ lr: undefined }), { name: 'TypeError', message: /'lr' must be a number, got undefined/ })
  t.throws(a({ lr: -1 }), { name: 'RangeError', message: /'lr' must be in \[0, inf\], got -1/ })
  t.throws(a({ beta1: 1 }), { name: 'RangeError', message: /'beta1' must be in \[0, 1\), got 1/ })
  t.throws(a({ beta2: -0.1 }), { name: 'RangeError', message: /'beta2' must be in/ })
  t.throws(a({ eps: -1e-8 }), { name: 'RangeError', message: /'eps' must be in/ })
  t.throws(a({ weightDecay: -1 }), { name: 'RangeError', message: /'weightDecay' must be in/ })
  t.throws(a({ step: 0 }), { name: 'RangeError', message: /'step' must be in \[1,/ })
  t.throws(a({ step: 1.5 }), { name: 'RangeError', message: /'step' must be an integer/ })
  t.throws(a({ paramsBf16: new Float32Array(n) }), { name: 'TypeError', message: /'paramsBf16' must be a Uint16Array/ })
  t.throws(a({ paramsBf16: new Uint16Array(n + 1) }), { name: 'RangeError', message: /'paramsBf16' has 11 elements/ })
  const shared = new Float32Array(2 * n)
  t.throws(a({ params: shared.subarray(0, n), m: shared.subarray(n - 1, 2 * n - 1) }), { name: 'RangeError', message: /'params' and 'm' must not share memory/ })

  const q8 = () => ({
    params: new Float32Array(n), grads: new Float32Array(n), m: new Uint8Array(n), v: new Uint8Array(n),
    mAbsmax: new Float32Array(1), vAbsmax: new Float32Array(1), lr: 1e-3, step: 1,
  })
  const b = (o: Record<string, unknown>) => () => kernels.sync.adamw8bitStep({ ...q8(), ...o } as kernels.Adamw8bitStepOptions)
  t.doesNotThrow(b({}))
  t.throws(b({ m: new Float32Array(n) }), { name: 'TypeError', message: /adamw8bitStep: 'm' must be a Uint8Array, got Float32Array/ })
  t.throws(b({ v: new Uint8Array(n - 1) }), { name: 'RangeError', message: /'v' has 9 elements/ })
  t.throws(b({ blockSize: 4 }), { name: 'RangeError', message: /'mAbsmax' has 1 elements, expected ceil\(params.length \/ blockSize\) = 3/ })
  t.throws(b({ blockSize: 0 }), { name: 'RangeError', message: /'blockSize' must be in \[1, 65536\]/ })
  t.throws(b({ vAbsmax: new Float32Array(2) }), { name: 'RangeError', message: /'vAbsmax' has 2 elements/ })

  const s = (o: Record<string, unknown>) => () => kernels.sync.sgdStep({ params: new Float32Array(n), grads: new Float32Array(n), lr: 0.1, ...o } as kernels.SgdStepOptions)
  t.doesNotThrow(s({}))
  t.throws(s({ momentum: 0.9 }), { name: 'TypeError', message: /sgdStep: 'buffer' is required when momentum is not 0/ })
  t.throws(s({ momentum: 0.9, buffer: new Float32Array(3) }), { name: 'RangeError', message: /'buffer' has 3 elements/ })
  t.throws(s({ nesterov: true }), { name: 'RangeError', message: /'nesterov' needs a momentum above 0/ })
  t.throws(s({ momentum: -0.5 }), { name: 'RangeError', message: /'momentum' must be in/ })

  const qz = (o: Record<string, unknown>) => () => kernels.sync.quantizeBlockwise({ input: new Float32Array(n), codes: new Uint8Array(n), absmax: new Float32Array(1), ...o } as kernels.QuantizeBlockwiseOptions)
  t.doesNotThrow(qz({}))
  t.throws(qz({ codes: new Int8Array(n) }), { name: 'TypeError', message: /'codes' must be a Uint8Array, got Int8Array/ })
  t.throws(qz({ signed: 1 }), { name: 'TypeError', message: /'signed' must be a boolean/ })
  t.throws(() => kernels.sync.dequantizeBlockwise({ codes: new Uint8Array(n), absmax: new Float32Array(1), output: new Float32Array(n - 1) }), { name: 'RangeError', message: /'output' has 9 elements/ })

  const g = new Float32Array(8)
  t.throws(() => kernels.sync.gradNorm({ grads: g } as unknown as kernels.GradNormOptions), { name: 'TypeError', message: /gradNorm: 'grads' must be an Array of Float32Arrays, got Float32Array/ })
  t.throws(() => kernels.sync.gradNorm({ grads: [g, new Float64Array(2)] } as unknown as kernels.GradNormOptions), { name: 'TypeError', message: /'grads\[1\]' must be a Float32Array, got Float64Array/ })
  t.throws(() => kernels.sync.gradNorm({ grads: [new Float32Array(3), g.subarray(0, 4), g.subarray(3, 8)] }), { name: 'RangeError', message: /'grads\[1\]' and 'grads\[2\]' must not share memory/ })
  t.throws(() => kernels.sync.clipGradNorm({ grads: [g, g] , maxNorm: 1 }), { name: 'RangeError', message: /'grads\[0\]' and 'grads\[1\]' must not share memory/ })
  t.doesNotThrow(() => kernels.sync.gradNorm({ grads: [g.subarray(0, 4), g.subarray(4, 8), g.subarray(4, 4)] }), 'adjacent views and empty views are fine')
  t.throws(() => kernels.sync.clipGradNorm({ grads: [g], maxNorm: -1 }), { name: 'RangeError', message: /'maxNorm' must be in/ })
  t.throws(() => kernels.sync.clipGradNorm({ grads: [g] } as unknown as kernels.ClipGradNormOptions), { name: 'TypeError', message: /'maxNorm' must be a number/ })
  await t.rejects(kernels.adamwStep({ ...adam(), step: 0 }), { name: 'RangeError', message: /'step'/ })
})

t.test('the async forms give the same results', async (t) => {
  const n = 3001
  const g = randomF32(n, 61, 1)
  const p1 = randomF32(n, 62, 1), p2 = Float32Array.from(p1)
  const st = () => ({ m: new Uint8Array(n), v: new Uint8Array(n), mAbsmax: new Float32Array(12), vAbsmax: new Float32Array(12) })
  const s1 = st(), s2 = st()
  const pr = kernels.adamw8bitStep({ params: p1, grads: g, ...s1, lr: 1e-3, step: 1 })
  t.type(pr, Promise)
  await pr
  kernels.sync.adamw8bitStep({ params: p2, grads: g, ...s2, lr: 1e-3, step: 1 })
  t.same(Array.from(p1), Array.from(p2))
  t.same(Array.from(s1.m), Array.from(s2.m))
})
