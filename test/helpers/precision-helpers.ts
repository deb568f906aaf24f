// Bounds that follow the precision actually computed (README "Precision", ARCHITECTURE.md):
// flash-attention's way, an engine result is held to a small multiple of the error that a
// reference computing at the same precision makes,
//   err(engine vs golden) <= FACTOR * err(reference at the engine's precision vs golden) (+ a floor),
// so that one test holds for 'fp32', 'bf16' and 'auto' on every ISA, and stays tight for each.
// Model tests take the reference from test/helpers/oracle.ts (cached: one oracle run per fixture
// and preset per test file); kernel tests from contractProduct (test/helpers/helpers.ts), per
// product.
import * as path from 'node:path'
import type { Test } from 'tap'
import type { kernels } from '../../lib/index'
import { contractProduct, maskedRelErr, relErr, roundsToBf16 } from './helpers'
import * as oracle from './oracle'

/**
 * How far an engine may be from the golden, in multiples of the same-precision reference's own
 * error: the two make roundings of the same kind and size, so their errors are alike; 3 leaves
 * room for the luck of the draw (the ratios measured in these tests are 0.3 to 1.2) and still
 * fails an engine that computes at a coarser precision than the one asked for (bf16 errors are
 * ~1e4 x f32's).
 */
export const FACTOR = 3

/**
 * The floor of a loss bound, relative: the goldens store the float64 loss as f32 (a relative
 * rounding of up to 2^-24), and the engine's loss is a mean of f32 per-token terms, so an exact
 * oracle and an f32 engine may both sit a few f32 ulps away from it; 2^-22 is four of them.
 * Without it a bound scaled from an oracle error that happens to be ~0 would ask for the
 * impossible.
 */
export const LOSS_FLOOR = 2 ** -22

/**
 * The oracle preset that rounds what (isa, precision) rounds, read off the tests' own statement
 * of the contract (roundsToBf16): 'bf16' -> bf16 (every product), 'fp32' -> fp32, 'auto' ->
 * bf16Weights on avx512bf16 (a product with a bf16-stored weight rounds, f32 x f32 does not),
 * fp32 elsewhere. `weightsBf16: false` is for a model whose weights are held as f32 (an f32
 * mergeAdapter): its hidden states then come from f32 x f32 products only, which round at
 * 'bf16' alone. (The oracle labels every model weight 'bf16', so that case maps to a preset
 * that rounds no weight product unless every product rounds; only hidden states may be compared.)
 */
export function oraclePrecision(isa: kernels.Isa, precision: kernels.Precision, weightsBf16 = true): oracle.Precision {
  if (roundsToBf16(precision, isa, false, false)) return oracle.bf16
  if (weightsBf16 && roundsToBf16(precision, isa, false, true)) return oracle.bf16Weights
  return oracle.fp32
}

/**
 * Asserts err <= FACTOR * scale + floor and says so with both numbers. `scale` is the
 * same-precision reference's error (or difference) for the same quantity.
 */
export function withinBound(t: Test, what: string, err: number, scale: number, floor = 0): boolean {
  const bound = FACTOR * scale + floor
  const ok = err <= bound
  t.ok(ok, `${what}: ${err.toExponential(2)} <= ${FACTOR} x ${scale.toExponential(2)}${floor ? ` + ${floor.toExponential(1)}` : ''}`)
  return ok
}

// ---- the golden fixtures and the oracle's results on them, computed once per test file ----------

export const FIXTURES = path.join(__dirname, '..', 'fixtures')
export type FixtureName = 'ernie-tiny' | 'ernie-tiny-paddle' | 'qwen3-tiny'

const fixtures = new Map<string, oracle.Fixture>()
/** A fixture as the oracle reads it (config, float64 weights, golden batch and tensors, the golden adapter). */
export function fixture(name: FixtureName): oracle.Fixture {
  let f = fixtures.get(name)
  if (!f) fixtures.set(name, (f = oracle.loadFixture(path.join(FIXTURES, name))))
  return f
}

/** The golden batch as the engine takes it ([B, T] typed arrays), and its mask. */
export function goldenInput(name: FixtureName) {
  const { batch } = fixture(name)
  const shape: [number, number] = [batch.batch, batch.seq]
  const mask = Int32Array.from(batch.attentionMask!)
  return { input: { inputIds: { data: Int32Array.from(batch.inputIds), shape }, attentionMask: { data: mask, shape } }, mask, shape }
}

const memo = new Map<string, unknown>()
/** Computes once per key in this process. */
export function cached<T>(key: string, compute: () => T): T {
  if (!memo.has(key)) memo.set(key, compute())
  return memo.get(key) as T
}

/** The oracle's base forward (no adapter) on the golden batch at a preset. */
export function oracleBase(name: FixtureName, p: oracle.Precision) {
  const f = fixture(name)
  return cached(`base|${name}|${p.name}`, () => oracle.forward(f.config, f.weights, f.batch, { precision: p }))
}

/** The oracle's forward, loss and every gradient with the golden adapter, on the golden batch at a preset. */
export function oracleLora(name: FixtureName, p: oracle.Precision) {
  const f = fixture(name)
  return cached(`lora|${name}|${p.name}`, () => oracle.lossAndGrad(f.config, f.weights, f.batch, { precision: p, adapter: f.adapter }))
}

/** ||out - golden|| / ||golden|| over the golden batch's real tokens, rows of `width` values. */
export function goldenErr(name: FixtureName, out: ArrayLike<number>, golden: string, width: number): number {
  const f = fixture(name)
  return maskedRelErr(out, f.golden.get(golden)!, f.batch.attentionMask!, width)
}

/** The relative error of a loss. */
export function lossErr(got: number, want: number): number {
  return Math.abs(got - want) / Math.abs(want)
}

// ---- kernels: references of the contract's products ---------------------------------------------

/** Element (row, p) of a product's operand. */
export type At = (row: number, p: number) => number

/**
 * One product added into C: C[i, j] += scale * sum_p a(i, p) b(j, p), both operands rounded to
 * bf16 (a after its scale) when `round` (from roundsToBf16 for the two operands' storage).
 */
export interface Term {
  k: number
  a: At
  b: At
  scale?: number
  round: boolean
}

/** `exact`: the contract's products summed in float64; `f32`: the same operands summed in f32 (a same-precision reference). */
export interface ContractRef {
  exact: Float64Array
  f32: Float64Array
}

/** C[m, n] = c0 + the terms, as the contract rounds each (contractProduct), exact and f32-summed. */
export function contractRef(m: number, n: number, terms: Term[], c0?: ArrayLike<number>): ContractRef {
  const ref = { exact: new Float64Array(m * n), f32: new Float64Array(m * n) }
  if (c0) for (let i = 0; i < m * n; i++) ref.exact[i] = ref.f32[i] = c0[i]
  const rows = Array.from({ length: m }, (_, i) => i)
  for (const s of terms) contractProduct(rows, n, s.k, s.a, s.b, s.scale ?? 1, s.round, ref)
  return ref
}

function norm(v: ArrayLike<number>): number {
  let s = 0
  for (let i = 0; i < v.length; i++) s += v[i] * v[i]
  return Math.sqrt(s)
}

/**
 * Checks a kernel's output against the contract (gemm.test.ts's bound): its relative error
 * from the exact product of the rounded operands at most 3x the f32 reference's, + 2^-24 (one
 * f32 rounding of the result). `allowance` (absolute, per element) widens it where the contract
 * leaves the product open: an f32 intermediate operand rounded to bf16 (see loss.test.ts).
 * Reports only failures, returning whether it held.
 */
export function checkContract(t: Test, what: string, out: ArrayLike<number>, ref: ContractRef, allowance?: ArrayLike<number>): boolean {
  const err = relErr(out, ref.exact)
  const allow = allowance ? norm(allowance) / (norm(ref.exact) || 1) : 0
  const bound = FACTOR * relErr(ref.f32, ref.exact) + allow + 2 ** -24
  if (err <= bound) return true
  t.fail(`${what}: relative error ${err.toExponential(2)} > ${bound.toExponential(2)} (${FACTOR}x the f32 reference's${allowance ? ` + ${allow.toExponential(1)} for rounded intermediates` : ''} + 2^-24)`)
  return false
}
