// The op cases of the backend-ops table (test/kernels/backend-ops.test.ts runs them on every backend
// present; test/arm64/arm64.test.ts on the linux-arm64 prebuild under emulation), as ggml's
// tests/test-backend-ops.cpp: ONE table of op cases (CASES: shapes with tails, GQA 1/2/4, padding
// and packed documents, f32 and bf16 weights, accumulate flags), each able to run on a backend
// (`run`) and to state what its outputs must be (`expect`), and the check of one case's outputs
// (checkOutputs). A module, not a test file, so that both can import it.
//
// Each case is held to the float64 reference of its op (test/helpers/reference.ts), never to
// another backend, within the bound the precision computed allows: FACTOR times the error of a
// reference computing at that precision (test/helpers/precision-helpers.ts, "same-precision
// references"), + a floor of a few f32 roundings:
//   relErr(result, float64) <= FACTOR * relErr(same-precision reference, float64) + 2^-22.
// The ops with a `precision` option (gemm, attention, LoRA, cross-entropy) run at 'fp32' and
// 'bf16' on the CPU backends, at 'bf16' on CUDA (which computes every product in bf16); the row
// ops and optimisers are f32 everywhere.
//
// Outputs that are written start NaN-filled, so an unwritten element fails; outputs that are
// added to (gemm's C with accumulate, LoRA's dA and dB, rmsnorm's dweight, the embedding's
// dtable, cross-entropy's dweight, AdamW's params and moments) start from random values and
// are checked by their increment (result - start) against the reference's, so a kernel that
// never writes them fails. The 8-bit AdamW state is checked dequantised, against the float64
// moments, within half the map's step at each value (the nearest code).
import type { Test } from 'tap'
import type { KernelDevice } from '../../lib/device'
import { kernels } from '../../lib/index'
import { firstNaN, nanFilled, randomF32, refGemm, relErr, rng, toBf16, toBf16Bits, valuesOf } from '../helpers/helpers'
import {
  FACTOR,
  adamw8bitAt,
  adamwAt,
  arith,
  attentionAt,
  crossEntropyAt,
  embeddingBackwardAt,
  gemmAt,
  loraAt,
  rmsnormAt,
  ropeAt,
  swigluAt,
  type At,
  type OpPrecision,
} from '../helpers/precision-helpers'
import {
  MAP_S,
  MAP_U,
  kvSize,
  loraKeep,
  lseSize,
  qSize,
  refAdamw,
  refAdamw8bit,
  refAttentionBackward,
  refAttentionForward,
  refCrossEntropy,
  refEmbedding,
  refEmbeddingBackward,
  refLoraBackward,
  refLoraForward,
  refQuantize,
  refRmsnorm,
  refRmsnormBackward,
  refRope,
  refSwiglu,
  type AdamHyper,
  type AttentionShape,
  type Pairing,
} from '../helpers/reference'

// ================================================================ the harness

/** What a backend runs a case at: its device, and the precision of the case's matrix products. */
export interface Target {
  device: KernelDevice
  precision: OpPrecision
}

/**
 * The floor of a bound, relative: a few f32 roundings of the result (4 ulps). A result is made in
 * several f32 steps; over a few elements (a 1 x 1 product, one SwiGLU element) the same-precision
 * reference may be luckily exact where the backend is a rounding or two away.
 */
const FLOOR = 2 ** -22

/**
 * One output's expectation. `golden`: the float64 reference (an increment, for an output added
 * to). `same`: the same-precision reference; the output is held to FACTOR x its error + `floor`
 * (default FLOOR). Without `same` the output must equal `golden` (up to `floor`, default 0).
 * `tol`: instead, |output - golden| <= tol per element. Infinities in `golden` must be matched.
 */
export interface Expect {
  golden: ArrayLike<number>
  same?: ArrayLike<number>
  floor?: number
  tol?: ArrayLike<number>
}

/**
 * A row of the table: an op on given inputs. `products`: how the precision of its matrix
 * products is chosen ('option': its `precision` option, each the backend offers; 'none': an f32
 * op). `run` calls the op on a backend and returns its outputs by name; `expect` gives each
 * output's expectation at a precision.
 */
export interface OpCase {
  op: string
  name: string
  products: 'option' | 'none'
  run(at: Target): Record<string, ArrayLike<number>>
  expect(precision: OpPrecision): Record<string, Expect>
}

// A case whose inputs are made once (when first run) and whose expectations are computed once
// per precision.
function opCase<I>(
  op: string,
  name: string,
  products: OpCase['products'],
  make: () => I,
  run: (x: I, at: Target) => Record<string, ArrayLike<number>>,
  expect: (x: I, precision: OpPrecision) => Record<string, Expect>,
): OpCase {
  let inputs: I | undefined
  const expects = new Map<OpPrecision, Record<string, Expect>>()
  const x = () => (inputs ??= make())
  return {
    op,
    name,
    products,
    run: (at) => run(x(), at),
    expect: (p) => {
      let e = expects.get(p)
      if (!e) expects.set(p, (e = expect(x(), p)))
      return e
    },
  }
}

let SEED = 1
const nextSeed = () => (SEED += 16)

const f = Math.fround
/** result - start, for an output added to. */
const increment = (result: ArrayLike<number>, start: ArrayLike<number>) => Float64Array.from(result, (v, i) => v - start[i])
/** A same-precision reference's result added to a start in f32, as an increment (the rounding of that addition included). */
const addedTo = (start: ArrayLike<number>, value: ArrayLike<number>) => Float64Array.from(value, (v, i) => f(start[i] + v) - start[i])
const bf16If = (bf16: boolean | undefined, a: Float32Array) => (bf16 ? toBf16(a) : a)
const wName = (bf16: boolean | undefined) => (bf16 ? 'bf16' : 'f32')
/** Element (r, p) of a logical [rows, k] operand stored plain or transposed ([k, rows]). */
const accessor = (values: ArrayLike<number>, rows: number, k: number, transposed: boolean): At =>
  transposed ? (r, p) => values[p * rows + r] : (r, p) => values[r * k + p]
/** The elements of `a` at `idx`. */
const pick = (a: ArrayLike<number>, idx: number[]) => Float64Array.from(idx, (i) => a[i])

// ================================================================ the ops

// ---- gemm: C (+)= alpha sum_s scale_s A_s B_s^T
interface GemmSpec {
  m: number
  n: number
  k: number
  aLayout?: 'mk' | 'km'
  bLayout?: 'nk' | 'kn'
  aBf16?: boolean
  bBf16?: boolean
  alpha?: number
  accumulate?: boolean
  /** A second K-segment (f32 x f32), LoRA's fused form. */
  second?: { k: number; scale: number }
}

function gemm(s: GemmSpec): OpCase {
  const seed = nextSeed()
  const { m, n } = s
  const name = `${m}x${n}x${s.k} ${s.aLayout ?? 'mk'}/${s.bLayout ?? 'nk'} a:${wName(s.aBf16)} b:${wName(s.bBf16)}` +
    `${s.alpha !== undefined ? ` alpha ${s.alpha}` : ''}${s.second ? ` + segment k ${s.second.k} scale ${s.second.scale}` : ''}${s.accumulate ? ', accumulate' : ''}`
  return opCase('gemm', name, 'option', () => {
    const segments: kernels.GemmSegment[] = [{ a: bf16If(s.aBf16, randomF32(m * s.k, seed)), b: bf16If(s.bBf16, randomF32(n * s.k, seed + 1)), k: s.k, aLayout: s.aLayout, bLayout: s.bLayout }]
    if (s.second) segments.push({ a: randomF32(m * s.second.k, seed + 2), b: randomF32(n * s.second.k, seed + 3), k: s.second.k, scale: s.second.scale })
    return { segments, c0: s.accumulate ? randomF32(m * n, seed + 4) : undefined }
  }, (x, at) => {
    const c = x.c0 ? Float32Array.from(x.c0) : nanFilled(m * n)
    kernels.sync.gemm({ c, m, n, segments: x.segments, alpha: s.alpha, accumulate: s.accumulate, precision: at.precision, device: at.device })
    return { C: x.c0 ? increment(c, x.c0) : c }
  }, (x, p) => {
    const alpha = s.alpha ?? 1
    const segs = x.segments.map((g) => ({ k: g.k, a: accessor(valuesOf(g.a), m, g.k, g.aLayout === 'km'), b: accessor(valuesOf(g.b), n, g.k, g.bLayout === 'kn'), scale: g.scale }))
    const golden = new Float64Array(m * n)
    for (const g of segs) refGemm(m, n, g.k, g.a, g.b).forEach((v, i) => (golden[i] += alpha * (g.scale ?? 1) * v))
    const same = gemmAt(arith(p), m, n, segs, alpha)
    return { C: { golden, same: x.c0 ? addedTo(x.c0, same) : same } }
  })
}

// ---- attention, forward and backward
function attentionInputs(s: AttentionShape, seed: number) {
  // q spread wider than k, so that some rows' softmax is peaked rather than near uniform
  return { q: randomF32(qSize(s), seed, 2), k: randomF32(kvSize(s), seed + 1), v: randomF32(kvSize(s), seed + 2), dout: randomF32(qSize(s), seed + 3) }
}

function describeAttention(s: AttentionShape): string {
  const masks = `${s.keyMask ? ', padding' : ''}${s.keyStart ? ', packed documents' : ''}${s.scale !== undefined ? `, scale ${s.scale}` : ''}`
  return `batch ${s.batch}, tq ${s.tq}, tk ${s.tk}, heads ${s.heads}/${s.kvHeads} (GQA ${s.heads / s.kvHeads}), head dim ${s.headDim}${masks}`
}

// Indices into out of the rows that see no key (padding, or a keyStart past the causal limit): out 0, lse -inf there.
function emptyRowElements(s: AttentionShape): number[] {
  const idx: number[] = []
  for (let b = 0; b < s.batch; b++)
    for (let i = 0; i < s.tq; i++) {
      let any = false
      for (let j = 0; j <= i + s.tk - s.tq && !any; j++) any = (!s.keyMask || s.keyMask[b * s.tk + j] !== 0) && (!s.keyStart || j >= s.keyStart[b * s.tq + i])
      if (!any) for (let h = 0; h < s.heads; h++) for (let d = 0; d < s.headDim; d++) idx.push(((b * s.tq + i) * s.heads + h) * s.headDim + d)
    }
  return idx
}

function attentionForwardRun(s: AttentionShape, x: ReturnType<typeof attentionInputs>, at: Target) {
  const out = nanFilled(qSize(s)), lse = nanFilled(lseSize(s))
  kernels.sync.attentionForward({ ...s, q: x.q, k: x.k, v: x.v, out, lse, precision: at.precision, device: at.device })
  return { out, lse }
}

function attentionForward(s: AttentionShape): OpCase {
  const seed = nextSeed()
  const empty = emptyRowElements(s)
  return opCase('attentionForward', describeAttention(s), 'option', () => attentionInputs(s, seed), (x, at) => {
    const { out, lse } = attentionForwardRun(s, x, at)
    return { out, lse, ...(empty.length ? { 'out of the rows that see no key': pick(out, empty) } : {}) }
  }, (x, p) => {
    const golden = refAttentionForward(s, x.q, x.k, x.v)
    const same = attentionAt(arith(p), s, x.q, x.k, x.v)
    return {
      out: { golden: golden.out, same: same.out },
      lse: { golden: golden.lse, same: same.lse },
      ...(empty.length ? { 'out of the rows that see no key': { golden: new Float64Array(empty.length) } } : {}),
    }
  })
}

function attentionBackward(s: AttentionShape): OpCase {
  const seed = nextSeed()
  return opCase('attentionBackward', describeAttention(s), 'option', () => attentionInputs(s, seed), (x, at) => {
    const { out, lse } = attentionForwardRun(s, x, at)
    const dq = nanFilled(qSize(s)), dk = nanFilled(kvSize(s)), dv = nanFilled(kvSize(s))
    kernels.sync.attentionBackward({ ...s, q: x.q, k: x.k, v: x.v, out, lse, dout: x.dout, dq, dk, dv, precision: at.precision, device: at.device })
    return { dq, dk, dv }
  }, (x, p) => {
    const golden = refAttentionBackward(s, x.q, x.k, x.v, x.dout)
    const same = attentionAt(arith(p), s, x.q, x.k, x.v, x.dout)
    return { dq: { golden: golden.dq, same: same.dq }, dk: { golden: golden.dk, same: same.dk }, dv: { golden: golden.dv, same: same.dv } }
  })
}

// ---- LoRA: y (+)= x W^T + s (xd A^T) B^T, and its backward
interface LoraSpec {
  m: number
  n: number
  k: number
  r: number
  bf16?: boolean
  dropout?: number
  /** The forward adds to y; the backward adds to dx. */
  accumulate?: boolean
}

const DROPOUT_SEED = 77

function loraInputs(s: LoraSpec, seed: number) {
  const { m, n, k, r } = s
  return {
    x: randomF32(m * k, seed),
    weight: bf16If(s.bf16, randomF32(n * k, seed + 1, 0.5)),
    loraA: randomF32(r * k, seed + 2, 0.5),
    loraB: randomF32(n * r, seed + 3, 0.5),
    dout: randomF32(m * n, seed + 4),
    start: randomF32(m * Math.max(n, k), seed + 5), // y or dx, added to
    dA0: randomF32(r * k, seed + 6, 0.5),
    dB0: randomF32(n * r, seed + 7, 0.5),
  }
}

// The problem as both references take it: dropout's mask on the f32 dropout value, as the kernels draw it.
function loraProblem(s: LoraSpec, x: ReturnType<typeof loraInputs>) {
  const { m, n, k, r } = s
  const p = f(s.dropout ?? 0)
  const keep = s.dropout ? (i: number) => loraKeep(BigInt(DROPOUT_SEED), i, p) : undefined
  const xs = valuesOf(x.x)
  const base = { m, n, k, r, scale: 16 / r, x: xs, w: valuesOf(x.weight), a: valuesOf(x.loraA), b: valuesOf(x.loraB) }
  return {
    golden: { ...base, xd: keep ? xs.map((v, i) => (keep(i) ? v / (1 - p) : 0)) : undefined },
    keep,
    keepScale: keep ? 1 / (1 - p) : 1,
    at: { ...base, keep, keepScale: f(1 / f(1 - p)) },
  }
}

function loraCall(s: LoraSpec, x: ReturnType<typeof loraInputs>, at: Target) {
  return { m: s.m, n: s.n, k: s.k, rank: s.r, scale: 16 / s.r, x: x.x, weight: x.weight, loraA: x.loraA, loraB: x.loraB, dropout: s.dropout, seed: DROPOUT_SEED, precision: at.precision, device: at.device }
}

const describeLora = (s: LoraSpec) => `m ${s.m}, n ${s.n}, k ${s.k}, rank ${s.r}, W ${wName(s.bf16)}${s.dropout ? `, dropout ${s.dropout}` : ''}`

function loraForward(s: LoraSpec): OpCase {
  const seed = nextSeed()
  const { m, n, r } = s
  return opCase('loraForward', `${describeLora(s)}${s.accumulate ? ', accumulate' : ''}`, 'option', () => loraInputs(s, seed), (x, at) => {
    const y0 = x.start.subarray(0, m * n)
    const u = nanFilled(m * r), out = s.accumulate ? Float32Array.from(y0) : nanFilled(m * n)
    kernels.sync.loraForward({ ...loraCall(s, x, at), u, out, accumulate: s.accumulate })
    return { u, y: s.accumulate ? increment(out, y0) : out }
  }, (x, p) => {
    const pr = loraProblem(s, x)
    const golden = refLoraForward(pr.golden)
    const same = loraAt(arith(p), pr.at)
    return { u: { golden: golden.u, same: same.u }, y: { golden: golden.y, same: s.accumulate ? addedTo(x.start, same.y) : same.y } }
  })
}

function loraBackward(s: LoraSpec): OpCase {
  const seed = nextSeed()
  const { m, k, r } = s
  return opCase('loraBackward', `${describeLora(s)}${s.accumulate ? ', dx accumulates' : ''}`, 'option', () => loraInputs(s, seed), (x, at) => {
    const call = loraCall(s, x, at)
    const u = nanFilled(m * r)
    kernels.sync.loraForward({ ...call, u, out: new Float32Array(s.m * s.n) })
    const dx0 = x.start.subarray(0, m * k)
    const dx = s.accumulate ? Float32Array.from(dx0) : nanFilled(m * k)
    const dA = Float32Array.from(x.dA0), dB = Float32Array.from(x.dB0)
    kernels.sync.loraBackward({ ...call, u, dout: x.dout, dx, dxAccumulate: s.accumulate, dA, dB })
    return { dx: s.accumulate ? increment(dx, dx0) : dx, dA: increment(dA, x.dA0), dB: increment(dB, x.dB0) }
  }, (x, p) => {
    const pr = loraProblem(s, x)
    const golden = refLoraBackward(pr.golden, x.dout, pr.keep, pr.keepScale)
    const same = loraAt(arith(p), pr.at, x.dout)
    return {
      dx: { golden: golden.dx, same: s.accumulate ? addedTo(x.start, same.dx!) : same.dx! },
      dA: { golden: golden.dA, same: addedTo(x.dA0, same.dA!) },
      dB: { golden: golden.dB, same: addedTo(x.dB0, same.dB!) },
    }
  })
}

// ---- RMSNorm
interface RmsSpec {
  rows: number
  dim: number
  bf16?: boolean
  /** Forward: out === x. Backward: dx accumulates. */
  inPlace?: boolean
  accumulate?: boolean
}
const EPS = 1e-6

function rmsInputs(s: RmsSpec, seed: number) {
  const n = s.rows * s.dim
  return { x: randomF32(n, seed, 2), weight: bf16If(s.bf16, randomF32(s.dim, seed + 1, 1.5)), dout: randomF32(n, seed + 2), dx0: randomF32(n, seed + 3), dw0: randomF32(s.dim, seed + 4) }
}
const describeRms = (s: RmsSpec) => `rows ${s.rows} x dim ${s.dim}, weight ${wName(s.bf16)}${s.inPlace ? ', in place' : ''}${s.accumulate ? ', dx accumulates' : ''}`

function rmsnormForward(s: RmsSpec): OpCase {
  const seed = nextSeed()
  const { rows, dim } = s
  return opCase('rmsnormForward', describeRms(s), 'none', () => rmsInputs(s, seed), (x, at) => {
    const out = s.inPlace ? Float32Array.from(x.x) : nanFilled(rows * dim)
    const rstd = nanFilled(rows)
    kernels.sync.rmsnormForward({ x: s.inPlace ? out : x.x, weight: x.weight, rows, dim, eps: EPS, out, rstd, device: at.device })
    return { y: out, rstd }
  }, (x) => {
    const golden = refRmsnorm(x.x, valuesOf(x.weight), rows, dim, EPS)
    const same = rmsnormAt(x.x, valuesOf(x.weight), rows, dim, EPS)
    return { y: { golden: golden.y, same: same.y }, rstd: { golden: golden.rstd, same: same.rstd } }
  })
}

function rmsnormBackward(s: RmsSpec): OpCase {
  const seed = nextSeed()
  const { rows, dim } = s
  return opCase('rmsnormBackward', describeRms(s), 'none', () => rmsInputs(s, seed), (x, at) => {
    const rstd = nanFilled(rows)
    kernels.sync.rmsnormForward({ x: x.x, weight: x.weight, rows, dim, eps: EPS, out: new Float32Array(rows * dim), rstd, device: at.device })
    const dx = s.accumulate ? Float32Array.from(x.dx0) : nanFilled(rows * dim)
    const dweight = Float32Array.from(x.dw0)
    kernels.sync.rmsnormBackward({ dout: x.dout, x: x.x, weight: x.weight, rstd, rows, dim, dx, accumulate: s.accumulate, dweight, device: at.device })
    return { dx: s.accumulate ? increment(dx, x.dx0) : dx, dweight: increment(dweight, x.dw0) }
  }, (x) => {
    const golden = refRmsnormBackward(x.dout, x.x, valuesOf(x.weight), rows, dim, EPS)
    const same = rmsnormAt(x.x, valuesOf(x.weight), rows, dim, EPS, x.dout)
    return {
      dx: { golden: golden.dx, same: s.accumulate ? addedTo(x.dx0, same.dx) : same.dx },
      dweight: { golden: golden.dw, same: addedTo(x.dw0, same.dw) },
    }
  })
}

// ---- RoPE
interface RopeSpec {
  rows: number
  heads: number
  headDim: number
  pairing: Pairing
  theta: number
  /** Rotated in place (out / dx omitted). */
  inPlace?: boolean
}

function ropeInputs(s: RopeSpec, seed: number) {
  const r = rng(seed)
  const positions = Int32Array.from({ length: s.rows }, (_, i) => (i === 0 ? 0 : Math.floor(r() * 5000)))
  return { positions, x: randomF32(s.rows * s.heads * s.headDim, seed + 1) }
}
const describeRope = (s: RopeSpec) => `${s.pairing}, ${s.rows} rows x ${s.heads} heads x ${s.headDim}, theta ${s.theta}${s.inPlace ? ', in place' : ''}`

function rope(op: 'ropeForward' | 'ropeBackward', s: RopeSpec): OpCase {
  const seed = nextSeed()
  const inverse = op === 'ropeBackward'
  return opCase(op, describeRope(s), 'none', () => ropeInputs(s, seed), (x, at) => {
    const common = { positions: x.positions, heads: s.heads, headDim: s.headDim, theta: s.theta, pairing: s.pairing, device: at.device }
    const out = s.inPlace ? Float32Array.from(x.x) : nanFilled(x.x.length)
    if (inverse) kernels.sync.ropeBackward({ ...common, ...(s.inPlace ? { dout: out } : { dout: x.x, dx: out }) })
    else kernels.sync.ropeForward({ ...common, ...(s.inPlace ? { x: out } : { x: x.x, out }) })
    return { [inverse ? 'dx' : 'out']: out }
  }, (x) => ({
    [inverse ? 'dx' : 'out']: {
      golden: refRope(x.x, x.positions, s.heads, s.headDim, s.theta, s.pairing, inverse),
      same: ropeAt(x.x, x.positions, s.heads, s.headDim, s.theta, s.pairing, inverse),
    },
  }))
}

// ---- SwiGLU: split (gate, up) or fused (gateUp rows) layouts
type SwigluSpec = { n: number } | { rows: number; dim: number }

function swigluInputs(s: SwigluSpec, seed: number) {
  const n = 'n' in s ? s.n : s.rows * s.dim
  const gate = randomF32(n, seed, 6), up = randomF32(n, seed + 1, 2), dout = randomF32(n, seed + 2)
  if ('n' in s) return { gate, up, dout }
  const gateUp = new Float32Array(2 * n)
  for (let r = 0; r < s.rows; r++) {
    gateUp.set(gate.subarray(r * s.dim, (r + 1) * s.dim), 2 * r * s.dim)
    gateUp.set(up.subarray(r * s.dim, (r + 1) * s.dim), (2 * r + 1) * s.dim)
  }
  return { gate, up, dout, gateUp }
}
const describeSwiglu = (s: SwigluSpec) => ('n' in s ? `split, ${s.n} elements` : `fused, ${s.rows} rows x ${s.dim}`)

function swigluForward(s: SwigluSpec): OpCase {
  const seed = nextSeed()
  return opCase('swigluForward', describeSwiglu(s), 'none', () => swigluInputs(s, seed), (x, at) => {
    const out = nanFilled(x.gate.length)
    if (x.gateUp && 'rows' in s) kernels.sync.swigluForward({ gateUp: x.gateUp, rows: s.rows, dim: s.dim, out, device: at.device })
    else kernels.sync.swigluForward({ gate: x.gate, up: x.up, out, device: at.device })
    return { out }
  }, (x) => ({ out: { golden: refSwiglu(x.gate, x.up).out, same: swigluAt(x.gate, x.up).out } }))
}

function swigluBackward(s: SwigluSpec): OpCase {
  const seed = nextSeed()
  // [rows, 2 dim]: each row's dgate, then its dup
  const fuse = (dgate: ArrayLike<number>, dup: ArrayLike<number>, rows: number, dim: number) => {
    const out = new Float64Array(2 * rows * dim)
    for (let r = 0; r < rows; r++)
      for (let j = 0; j < dim; j++) {
        out[2 * r * dim + j] = dgate[r * dim + j]
        out[(2 * r + 1) * dim + j] = dup[r * dim + j]
      }
    return out
  }
  return opCase('swigluBackward', describeSwiglu(s), 'none', () => swigluInputs(s, seed), (x, at): Record<string, Float32Array> => {
    if (x.gateUp && 'rows' in s) {
      const dgateUp = nanFilled(x.gateUp.length)
      kernels.sync.swigluBackward({ dout: x.dout, gateUp: x.gateUp, rows: s.rows, dim: s.dim, dgateUp, device: at.device })
      return { dgateUp }
    }
    const dgate = nanFilled(x.gate.length), dup = nanFilled(x.gate.length)
    kernels.sync.swigluBackward({ dout: x.dout, gate: x.gate, up: x.up, dgate, dup, device: at.device })
    return { dgate, dup }
  }, (x): Record<string, Expect> => {
    const golden = refSwiglu(x.gate, x.up, x.dout), same = swigluAt(x.gate, x.up, x.dout)
    if ('rows' in s) return { dgateUp: { golden: fuse(golden.dgate, golden.dup, s.rows, s.dim), same: fuse(same.dgate, same.dup, s.rows, s.dim) } }
    return { dgate: { golden: golden.dgate, same: same.dgate }, dup: { golden: golden.dup, same: same.dup } }
  })
}

// ---- embedding
interface EmbeddingSpec {
  vocab: number
  dim: number
  n: number
  bf16?: boolean
}

function embeddingInputs(s: EmbeddingSpec, seed: number) {
  const r = rng(seed)
  const ids = Int32Array.from({ length: s.n }, () => Math.floor(r() * s.vocab))
  ids[0] = s.vocab - 1 // the last row
  if (s.n > 2) ids[s.n - 1] = ids[1] = 0 // a repeated id, and the first row
  return { ids, table: bf16If(s.bf16, randomF32(s.vocab * s.dim, seed + 1)), dout: randomF32(s.n * s.dim, seed + 2), dtable0: randomF32(s.vocab * s.dim, seed + 3) }
}
const describeEmbedding = (s: EmbeddingSpec) => `${s.n} ids (repeated) of vocab ${s.vocab}, dim ${s.dim}${s.bf16 !== undefined ? `, table ${wName(s.bf16)}` : ''}`

function embeddingForward(s: EmbeddingSpec): OpCase {
  const seed = nextSeed()
  return opCase('embeddingForward', describeEmbedding(s), 'none', () => embeddingInputs(s, seed), (x, at) => {
    const out = nanFilled(s.n * s.dim)
    kernels.sync.embeddingForward({ ids: x.ids, table: x.table, vocab: s.vocab, dim: s.dim, out, device: at.device })
    return { 'out (rows copied exactly)': out }
  }, (x) => ({ 'out (rows copied exactly)': { golden: refEmbedding(x.ids, valuesOf(x.table), s.dim) } }))
}

function embeddingBackward(s: EmbeddingSpec): OpCase {
  const seed = nextSeed()
  // Elements of the rows no id names: the backward must leave them exactly.
  const untouched = (ids: Int32Array) => {
    const used = new Set(ids)
    const idx: number[] = []
    for (let v = 0; v < s.vocab; v++) if (!used.has(v)) for (let j = 0; j < s.dim; j++) idx.push(v * s.dim + j)
    return idx
  }
  return opCase('embeddingBackward', describeEmbedding(s), 'none', () => embeddingInputs(s, seed), (x, at) => {
    const dtable = Float32Array.from(x.dtable0)
    kernels.sync.embeddingBackward({ ids: x.ids, dout: x.dout, dtable, vocab: s.vocab, dim: s.dim, device: at.device })
    const inc = increment(dtable, x.dtable0)
    return { dtable: inc, 'rows of absent ids': pick(inc, untouched(x.ids)) }
  }, (x) => ({
    dtable: { golden: refEmbeddingBackward(x.ids, x.dout, s.vocab, s.dim), same: increment(embeddingBackwardAt(x.ids, x.dout, x.dtable0, s.dim), x.dtable0) },
    'rows of absent ids': { golden: new Float64Array(untouched(x.ids).length) },
  }))
}

// ---- cross-entropy through the head
interface CeSpec {
  T: number
  H: number
  V: number
  bf16?: boolean
  chunk?: number
  rowTile?: number
  /** The fraction of rows without a target (-100 or -1). */
  ignored: number
  gradScale?: number
  /** Whether dweight is asked for (added to). */
  dweight: boolean
  /** Trainable token rows: dweight's rows of these ids alone, added to dRows. */
  rows?: number[]
}

/** Rows `ids` of a [.., width] array. */
const rowsOf = (values: ArrayLike<number>, ids: readonly number[], width: number) =>
  Float64Array.from({ length: ids.length * width }, (_, i) => values[ids[Math.floor(i / width)] * width + (i % width)])

function ceInputs(s: CeSpec, seed: number) {
  const r = rng(seed)
  const targets = Int32Array.from({ length: s.T }, () => (r() < s.ignored ? (r() < 0.5 ? -100 : -1) : Math.floor(r() * s.V)))
  return { hidden: randomF32(s.T * s.H, seed + 1, 1.5), weight: bf16If(s.bf16, randomF32(s.V * s.H, seed + 2)), targets, dweight0: randomF32(s.V * s.H, seed + 3, 0.05), drows0: randomF32((s.rows?.length ?? 0) * s.H, seed + 4, 0.05) }
}

function crossEntropy(s: CeSpec): OpCase {
  const seed = nextSeed()
  const { T, H, V } = s
  const name = `tokens ${T}, hidden ${H}, vocab ${V}, head ${wName(s.bf16)}, chunk ${s.chunk ?? 'default'}, row tile ${s.rowTile ?? 'default'}, ${Math.round(s.ignored * 100)}% ignored` +
    `${s.gradScale !== undefined ? `, gradScale ${s.gradScale}` : ''}${s.dweight ? ', dweight added to' : ', no dweight'}${s.rows ? `, dweight rows ${s.rows.join(' ')} alone` : ''}`
  const ignoredRows = (targets: Int32Array) => {
    const idx: number[] = []
    for (let i = 0; i < T; i++) if (targets[i] < 0) for (let c = 0; c < H; c++) idx.push(i * H + c)
    return idx
  }
  return opCase('crossEntropy', name, 'option', () => ceInputs(s, seed), (x, at) => {
    const dhidden = nanFilled(T * H)
    const dweight = s.dweight ? Float32Array.from(x.dweight0) : undefined
    const dRows = s.rows ? Float32Array.from(x.drows0) : undefined
    const rowIds = s.rows ? Int32Array.from(s.rows) : undefined
    const res = kernels.sync.crossEntropy({ hidden: x.hidden, weight: x.weight, targets: x.targets, tokens: T, hiddenSize: H, vocab: V, chunk: s.chunk, rowTile: s.rowTile, dhidden, dweight, rowIds, dRows, gradScale: s.gradScale, precision: at.precision, device: at.device })
    return {
      loss: [res.loss],
      lossSum: [res.lossSum],
      count: [res.count],
      dhidden,
      'dhidden of the ignored rows': pick(dhidden, ignoredRows(x.targets)),
      ...(dweight ? { dweight: increment(dweight, x.dweight0) } : {}),
      ...(dRows ? { dRows: increment(dRows, x.drows0) } : {}),
    }
  }, (x, p) => {
    const golden = refCrossEntropy(x.hidden, valuesOf(x.weight), x.targets, T, H, V, s.gradScale)
    const same = crossEntropyAt(arith(p), x.hidden, valuesOf(x.weight), x.targets, T, H, V, s.gradScale)
    // The loss sums f32 terms (each row's log-sum-exp and target logit): a few f32 roundings of their size may remain.
    const lossFloor = golden.lossSum ? (2 ** -22 * same.terms) / Math.abs(golden.lossSum) : 0
    return {
      loss: { golden: [golden.loss], same: [same.loss], floor: lossFloor },
      lossSum: { golden: [golden.lossSum], same: [same.lossSum], floor: lossFloor },
      count: { golden: [golden.count] },
      dhidden: { golden: golden.dhidden, same: same.dhidden },
      'dhidden of the ignored rows': { golden: new Float64Array(ignoredRows(x.targets).length) },
      ...(s.dweight ? { dweight: { golden: golden.dweight, same: addedTo(x.dweight0, same.dweight) } } : {}),
      ...(s.rows ? { dRows: { golden: rowsOf(golden.dweight, s.rows, H), same: addedTo(x.drows0, rowsOf(same.dweight, s.rows, H)) } } : {}),
    }
  })
}

// ---- AdamW and 8-bit AdamW
const HYPER: AdamHyper = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 }

/** The elements whose paramsBf16 is not the updated param rounded to bf16. */
function bf16Mismatches(params: Float32Array, bf16: Uint16Array): number[] {
  let bad = 0
  for (let i = 0; i < params.length; i++) if (bf16[i] !== toBf16Bits(params[i])) bad++
  return [bad]
}

function adamwStep(s: { n: number; step: number }): OpCase {
  const seed = nextSeed()
  const { n, step } = s
  return opCase('adamwStep', `${n} params, step ${step}, a non-zero state`, 'none', () => ({
    p0: randomF32(n, seed), g: randomF32(n, seed + 1, 0.5), m0: randomF32(n, seed + 2, 0.1), v0: randomF32(n, seed + 3, 0.1).map((v) => v * v),
  }), (x, at) => {
    const params = Float32Array.from(x.p0), m = Float32Array.from(x.m0), v = Float32Array.from(x.v0)
    const paramsBf16 = new Uint16Array(n).fill(0x7fc1)
    kernels.sync.adamwStep({ params, grads: x.g, m, v, paramsBf16, step, ...HYPER, device: at.device })
    return { params: increment(params, x.p0), m: increment(m, x.m0), v: increment(v, x.v0), 'paramsBf16 != bf16(params)': bf16Mismatches(params, paramsBf16) }
  }, (x) => {
    const p = Float64Array.from(x.p0), m = Float64Array.from(x.m0), v = Float64Array.from(x.v0)
    refAdamw(p, x.g, m, v, HYPER, step)
    const same = adamwAt(x.p0, x.g, x.m0, x.v0, HYPER, step)
    return {
      params: { golden: increment(p, x.p0), same: increment(same.p, x.p0) },
      m: { golden: increment(m, x.m0), same: increment(same.m, x.m0) },
      v: { golden: increment(v, x.v0), same: increment(same.v, x.v0) },
      'paramsBf16 != bf16(params)': { golden: [0] },
    }
  })
}

function adamw8bitStep(s: { n: number; blockSize: number; step: number; fresh?: boolean }): OpCase {
  const seed = nextSeed()
  const { n, blockSize, step } = s
  const blocks = Math.ceil(n / blockSize)
  const name = `${n} params, blocks of ${blockSize} (the last ${n - (blocks - 1) * blockSize}), step ${step}, ${s.fresh ? 'a fresh (zero) state' : 'a random state, its first block zero'}`
  return opCase('adamw8bitStep', name, 'none', () => {
    const r = rng(seed)
    const codes = () => Uint8Array.from({ length: n }, () => (s.fresh ? 0 : Math.floor(r() * 256)))
    const absmax = (lo: number, hi: number) => Float32Array.from({ length: blocks }, (_, b) => (s.fresh || b === 0 ? 0 : lo + (hi - lo) * r()))
    return { p0: randomF32(n, seed + 1), g: randomF32(n, seed + 2, 0.5), m: { codes: codes(), absmax: absmax(0.01, 0.1) }, v: { codes: codes(), absmax: absmax(1e-4, 1e-2) } }
  }, (x, at) => {
    const params = Float32Array.from(x.p0)
    const m = Uint8Array.from(x.m.codes), v = Uint8Array.from(x.v.codes)
    const mAbsmax = Float32Array.from(x.m.absmax), vAbsmax = Float32Array.from(x.v.absmax)
    const paramsBf16 = new Uint16Array(n).fill(0x7fc1)
    kernels.sync.adamw8bitStep({ params, grads: x.g, m, v, mAbsmax, vAbsmax, blockSize, paramsBf16, step, ...HYPER, device: at.device })
    const dequantised = (codes: Uint8Array, absmax: Float32Array, map: Float64Array) => Float64Array.from(codes, (c, i) => map[c] * absmax[Math.floor(i / blockSize)])
    return {
      params: increment(params, x.p0),
      'm (dequantised)': dequantised(m, mAbsmax, MAP_S),
      'v (dequantised)': dequantised(v, vAbsmax, MAP_U),
      mAbsmax,
      vAbsmax,
      'paramsBf16 != bf16(params)': bf16Mismatches(params, paramsBf16),
    }
  }, (x) => {
    const p = Float64Array.from(x.p0)
    const ref = refAdamw8bit(p, x.g, x.m, x.v, blockSize, HYPER, step)
    const same = adamw8bitAt(x.p0, x.g, x.m, x.v, blockSize, HYPER, step)
    // The nearest code's value lies within half the map's step of the moment (times the block's
    // absmax); f32 rounding of the moment, its absmax and q may add a few ulps of it.
    const tol = (moment: Float64Array, absmax: Float64Array, map: Float64Array) =>
      refQuantize(moment, absmax, blockSize, map).halfStep.map((h, i) => h * (1 + 2 ** -20) + 2 ** -20 * Math.abs(moment[i]))
    return {
      params: { golden: increment(p, x.p0), same: increment(same.p, x.p0) },
      'm (dequantised)': { golden: ref.m1, tol: tol(ref.m1, ref.mAbs, MAP_S) },
      'v (dequantised)': { golden: ref.v1, tol: tol(ref.v1, ref.vAbs, MAP_U) },
      mAbsmax: { golden: ref.mAbs, same: same.mAbs },
      vAbsmax: { golden: ref.vAbs, same: same.vAbs },
      'paramsBf16 != bf16(params)': { golden: [0] },
    }
  })
}

// ================================================================ the table of cases

// keyMask [batch, tk]: batch row b's real keys are [spans[b][0], spans[b][1]).
function paddingMask(batch: number, tk: number, spans: [number, number][]): Uint8Array {
  const mask = new Uint8Array(batch * tk)
  spans.forEach(([lo, hi], b) => mask.fill(1, b * tk + lo, b * tk + hi))
  return mask
}
// keyStart for packed documents of the given lengths in each batch row (tq = tk).
function packedStarts(t: number, docs: number[][]): Int32Array {
  const starts = new Int32Array(docs.length * t)
  docs.forEach((lengths, b) => {
    let j = 0
    for (const len of lengths) {
      starts.fill(j, b * t + j, b * t + j + len)
      j += len
    }
  })
  return starts
}

const ATTENTION_SHAPES: AttentionShape[] = [
  { batch: 1, tq: 1, tk: 1, heads: 1, kvHeads: 1, headDim: 5 },
  { batch: 1, tq: 37, tk: 37, heads: 2, kvHeads: 2, headDim: 24 },
  { batch: 2, tq: 45, tk: 45, heads: 4, kvHeads: 2, headDim: 40 },
  { batch: 1, tq: 7, tk: 70, heads: 8, kvHeads: 2, headDim: 17 }, // queries over a KV cache
  // right-padded; left-padded (its first 9 rows see no key); all padding
  { batch: 3, tq: 33, tk: 33, heads: 4, kvHeads: 1, headDim: 24, keyMask: paddingMask(3, 33, [[0, 20], [9, 33], [0, 0]]) },
  // packed documents (a one-token one first), the last document of batch row 1 padded at its end
  { batch: 2, tq: 50, tk: 50, heads: 2, kvHeads: 1, headDim: 64, keyStart: packedStarts(50, [[1, 20, 29], [30, 20]]), keyMask: paddingMask(2, 50, [[0, 50], [0, 44]]) },
  { batch: 1, tq: 67, tk: 67, heads: 2, kvHeads: 1, headDim: 128, scale: 0.3 },
]

export const CASES: OpCase[] = [
  gemm({ m: 1, n: 1, k: 1 }),
  gemm({ m: 37, n: 45, k: 29, bBf16: true }),
  gemm({ m: 19, n: 33, k: 70, aLayout: 'km', bLayout: 'kn', aBf16: true }),
  gemm({ m: 7, n: 130, k: 13, aLayout: 'km', aBf16: true, bBf16: true }),
  gemm({ m: 131, n: 67, k: 300, bBf16: true }),
  gemm({ m: 250, n: 33, k: 40, bLayout: 'kn', bBf16: true }), // two of CUDA's 128-row tiles, the last ragged
  gemm({ m: 130, n: 260, k: 64, aBf16: true, bBf16: true }), // bf16 'mk' / 'nk' with K % 8 = 0: CUDA reads them in place
  gemm({ m: 40, n: 17, k: 1100, bBf16: true }),
  gemm({ m: 53, n: 70, k: 91, bBf16: true, alpha: 0.5, accumulate: true, second: { k: 5, scale: 3 } }),
  gemm({ m: 2, n: 3, k: 0 }),
  gemm({ m: 2, n: 3, k: 0, accumulate: true }),

  ...ATTENTION_SHAPES.map(attentionForward),
  ...ATTENTION_SHAPES.map(attentionBackward),

  loraForward({ m: 1, n: 1, k: 1, r: 1 }),
  loraForward({ m: 37, n: 29, k: 51, r: 4, bf16: true }),
  loraForward({ m: 45, n: 70, k: 33, r: 8, accumulate: true }),
  loraForward({ m: 19, n: 33, k: 41, r: 5, bf16: true, dropout: 0.25 }),
  loraForward({ m: 130, n: 70, k: 300, r: 16, bf16: true }),
  loraBackward({ m: 1, n: 1, k: 1, r: 1 }),
  loraBackward({ m: 37, n: 29, k: 51, r: 4, bf16: true }),
  loraBackward({ m: 45, n: 70, k: 33, r: 8, accumulate: true }),
  loraBackward({ m: 19, n: 33, k: 41, r: 5, bf16: true, dropout: 0.25 }),
  loraBackward({ m: 130, n: 70, k: 300, r: 16, bf16: true }),

  rmsnormForward({ rows: 1, dim: 7 }),
  rmsnormForward({ rows: 37, dim: 130, bf16: true }),
  rmsnormForward({ rows: 44, dim: 128 }), // Qwen3's q/k norm: 11 tokens x 4 heads
  rmsnormForward({ rows: 5, dim: 1027, bf16: true, inPlace: true }),
  rmsnormBackward({ rows: 1, dim: 7 }),
  rmsnormBackward({ rows: 37, dim: 130, bf16: true, accumulate: true }),
  rmsnormBackward({ rows: 44, dim: 128 }),
  rmsnormBackward({ rows: 5, dim: 1027, bf16: true }),

  rope('ropeForward', { rows: 19, heads: 3, headDim: 10, pairing: 'adjacent', theta: 500000 }),
  rope('ropeForward', { rows: 9, heads: 2, headDim: 130, pairing: 'half', theta: 1000000 }),
  rope('ropeForward', { rows: 7, heads: 1, headDim: 2, pairing: 'half', theta: 10000, inPlace: true }),
  rope('ropeBackward', { rows: 19, heads: 3, headDim: 10, pairing: 'half', theta: 500000 }),
  rope('ropeBackward', { rows: 9, heads: 2, headDim: 130, pairing: 'adjacent', theta: 1000000, inPlace: true }),

  swigluForward({ n: 37 }),
  swigluForward({ n: 1000 }),
  swigluForward({ rows: 7, dim: 130 }),
  swigluForward({ rows: 1, dim: 1 }),
  swigluBackward({ n: 37 }),
  swigluBackward({ n: 1000 }),
  swigluBackward({ rows: 7, dim: 130 }),

  embeddingForward({ vocab: 50, dim: 33, n: 8, bf16: false }),
  embeddingForward({ vocab: 53, dim: 130, n: 77, bf16: true }),
  embeddingBackward({ vocab: 50, dim: 33, n: 8 }),
  embeddingBackward({ vocab: 41, dim: 1027, n: 77 }),

  crossEntropy({ T: 45, H: 40, V: 300, chunk: 128, rowTile: 16, ignored: 0.2, dweight: true }),
  crossEntropy({ T: 45, H: 40, V: 300, chunk: 128, rowTile: 16, ignored: 0.2, dweight: true, bf16: true }),
  crossEntropy({ T: 7, H: 9, V: 50, chunk: 16, ignored: 0.3, dweight: true }),
  crossEntropy({ T: 40, H: 33, V: 129, chunk: 128, rowTile: 13, ignored: 0, dweight: true, bf16: true }),
  crossEntropy({ T: 33, H: 20, V: 77, chunk: 20, ignored: 0.2, gradScale: 0.5, dweight: false, bf16: true }),
  // trainable token rows, in several vocab chunks (first, last, a chunk's edges), beside dweight or alone
  crossEntropy({ T: 45, H: 40, V: 300, chunk: 128, rowTile: 16, ignored: 0.2, dweight: true, rows: [299, 0, 127, 128, 200] }),
  crossEntropy({ T: 40, H: 33, V: 129, chunk: 64, rowTile: 13, ignored: 0.1, dweight: false, bf16: true, rows: [5, 64, 128] }),
  crossEntropy({ T: 5, H: 6, V: 9, ignored: 1, dweight: true }),

  adamwStep({ n: 1000, step: 3 }),
  adamwStep({ n: 37, step: 1 }),

  adamw8bitStep({ n: 1000, blockSize: 256, step: 5 }),
  adamw8bitStep({ n: 333, blockSize: 61, step: 2 }),
  adamw8bitStep({ n: 37, blockSize: 256, step: 1, fresh: true }),
]

// ================================================================ checking a case

/** The precisions a case runs at on a backend offering `precisions`. */
export function precisionsOf(c: OpCase, b: { precisions: OpPrecision[] }): OpPrecision[] {
  return c.products === 'option' ? b.precisions : ['fp32']
}

/** Whether `got` meets `e`, and the numbers that say so. */
function compare(got: ArrayLike<number> | undefined, e: Expect): { ok: boolean; text: string } {
  if (!got) return { ok: false, text: 'not returned' }
  if (got.length !== e.golden.length) return { ok: false, text: `${got.length} elements, expected ${e.golden.length}` }
  const nan = firstNaN(got)
  if (nan >= 0) return { ok: false, text: `element ${nan} not written (NaN)` }
  const finite: number[] = []
  for (let i = 0; i < got.length; i++) {
    if (Number.isFinite(e.golden[i])) finite.push(i)
    else if (got[i] !== e.golden[i]) return { ok: false, text: `element ${i} is ${got[i]}, expected ${e.golden[i]}` }
  }
  if (e.tol) {
    let worst = 0, at = -1
    for (const i of finite) {
      const ratio = Math.abs(got[i] - e.golden[i]) / e.tol[i]
      if (!(ratio <= 1) && at < 0) at = i
      if (ratio > worst) worst = ratio
    }
    if (at >= 0) return { ok: false, text: `element ${at} is ${got[at]}, expected ${e.golden[at]} within ${e.tol[at].toExponential(2)}` }
    return { ok: true, text: `within ${worst.toFixed(2)} of its tolerance` }
  }
  const g = pick(e.golden, finite)
  const err = relErr(pick(got, finite), g)
  const scale = e.same ? relErr(pick(e.same, finite), g) : 0
  const bound = FACTOR * scale + (e.floor ?? (e.same ? FLOOR : 0))
  const text = `${err.toExponential(2)} <= ${bound.toExponential(2)}`
  return err <= bound ? { ok: true, text } : { ok: false, text: `relative error ${err.toExponential(2)} > ${bound.toExponential(2)} (${FACTOR} x the same-precision reference's ${scale.toExponential(2)} + floor)` }
}

/** The case's name at a precision, as the tests report it. */
export function caseName(c: OpCase, precision: OpPrecision): string {
  return `${c.name}${c.products === 'option' ? ` @${precision}` : ''}`
}

/** Checks a case's outputs `got` (run at `precision`) against its expectations: one pass, or a failure per output that misses. */
export function checkOutputs(t: Test, c: OpCase, precision: OpPrecision, got: Record<string, ArrayLike<number>>): void {
  const what = caseName(c, precision)
  const passed: string[] = []
  let ok = true
  for (const [output, e] of Object.entries(c.expect(precision))) {
    const r = compare(got[output], e)
    if (r.ok) passed.push(`${output} ${r.text}`)
    else {
      ok = false
      t.fail(`${what}: ${output}: ${r.text}`)
    }
  }
  if (ok) t.pass(`${what}: ${passed.join('; ')}`)
}
