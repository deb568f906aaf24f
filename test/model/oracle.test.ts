// The float64 oracle of the whole decoder (test/helpers/oracle.ts) against the fixtures'
// independent Python float64 goldens, plus the checks the goldens cannot make (padding side, packed
// documents, central differences), and a report of what its precision simulation does: the
// error of each simulated precision against the goldens, which engine tests will scale into
// their bounds (err(engine) <= 3 * err(oracle at the same precision)).
import t from 'tap'
import * as path from 'node:path'
import {
  PRECISIONS, bf16, bf16Weights, exact, forward, fp32, loadFixture, loss, lossAndGrad, loraName, mat, matmul,
  rmsnorm, rmsnormBackward, rope, swiglu, swigluBackward, weightName,
  type Fixture, type OracleBatch, type Precision,
} from '../helpers/oracle'
import { lastTokenRows, maskedRelErr, numericGrad, randomF32, relErr, rng } from '../helpers/helpers'
import { refRmsnorm, refRmsnormBackward, refRope, refSwiglu } from '../helpers/reference'

const FIXTURES = path.join(__dirname, '..', 'fixtures')
const MODELS = ['ernie-tiny', 'qwen3-tiny'] as const
const fixtures = new Map<string, Fixture>(MODELS.map((name) => [name, loadFixture(path.join(FIXTURES, name))]))
const fixture = (name: string) => fixtures.get(name)!

/** The relative error of each output the goldens have (norm-wise: ||out - golden|| / ||golden||), for one precision. */
interface Errors {
  /** base.hidden, base.logits, lora.hidden, lora.logits (masked positions only), lora.loss, and the gradients. */
  of: Record<'hidden' | 'logits' | 'lora.hidden' | 'lora.logits' | 'loss' | 'grads' | 'worst grad', number>
  /** The gradient tensor with the largest error ('worst grad'). */
  worstGradName: string
  /** Golden gradients the oracle does not give. */
  missingGrads: string[]
}

function errorsAgainstGolden(f: Fixture, precision: Precision): Errors {
  const { config: c, weights, adapter, batch, golden } = f
  const mask = batch.attentionMask!
  const g = (name: string) => golden.get(name)!
  const base = forward(c, weights, batch, { precision })
  const lora = lossAndGrad(c, weights, batch, { precision, adapter })
  // The gradients: each tensor's error, and all of them taken as one vector.
  let worst = 0, worstGradName = '', num = 0, den = 0
  const missingGrads: string[] = []
  for (const [name, want] of golden) {
    if (!name.startsWith('grad.')) continue
    const got = lora.grads.get(name.slice('grad.'.length))
    if (!got) {
      missingGrads.push(name)
      continue
    }
    const e = relErr(got, want)
    if (e > worst) (worst = e), (worstGradName = name.slice('grad.'.length))
    for (let i = 0; i < want.length; i++) (num += (got[i] - want[i]) ** 2), (den += want[i] ** 2)
  }
  const of = {
    hidden: maskedRelErr(base.hidden, g('base.hidden'), mask, c.hidden_size),
    logits: maskedRelErr(base.logits, g('base.logits'), mask, c.vocab_size),
    'lora.hidden': maskedRelErr(lora.hidden, g('lora.hidden'), mask, c.hidden_size),
    'lora.logits': maskedRelErr(lora.logits, g('lora.logits'), mask, c.vocab_size),
    loss: Math.abs(lora.loss - g('lora.loss')[0]) / Math.abs(g('lora.loss')[0]),
    grads: Math.sqrt(num / den),
    'worst grad': worst,
  }
  return { of, worstGradName, missingGrads }
}

const fmt = (e: Errors) => Object.entries(e.of).map(([k, v]) => `${k} ${v.toExponential(2)}`).join(', ') + ` (${e.worstGradName})`

// ---- the oracle's pieces agree with test/helpers/reference.ts ----------------------------------

t.test('exact mode: RMSNorm, RoPE and SwiGLU agree with the kernel references of test/helpers/reference.ts', async (t) => {
  const rows = 6, dim = 32, eps = 1e-5
  const x = Float64Array.from(randomF32(rows * dim, 1)), w = Float64Array.from(randomF32(dim, 2)), dy = Float64Array.from(randomF32(rows * dim, 3))
  const norm = rmsnorm(mat(rows, dim, x), w, eps, exact)
  t.ok(relErr(norm.y.data, refRmsnorm(x, w, rows, dim, eps).y) < 1e-14, 'rmsnorm')
  const back = rmsnormBackward(mat(rows, dim, dy), mat(rows, dim, x), w, norm.rstd, exact)
  const ref = refRmsnormBackward(dy, x, w, rows, dim, eps)
  t.ok(relErr(back.dx.data, ref.dx) < 1e-13 && relErr(back.dw, ref.dw) < 1e-13, 'rmsnorm backward')
  const positions = Int32Array.from([0, 1, 2, 7, 30, 5])
  for (const pairing of ['adjacent', 'half'] as const) {
    const out = rope(mat(rows, dim, x), positions, 16, 10000, pairing, false, exact)
    t.ok(relErr(out.data, refRope(x, positions, 2, 16, 10000, pairing)) < 1e-14, `rope ${pairing}`)
    t.ok(relErr(rope(out, positions, 16, 10000, pairing, true, exact).data, x) < 1e-14, `rope ${pairing} inverse`)
  }
  const up = Float64Array.from(randomF32(rows * dim, 4))
  const sw = refSwiglu(x, up, dy)
  t.ok(relErr(swiglu(mat(rows, dim, x), mat(rows, dim, up), exact).data, sw.out) < 1e-14, 'swiglu')
  const swb = swigluBackward(mat(rows, dim, dy), mat(rows, dim, x), mat(rows, dim, up), exact)
  t.ok(relErr(swb.dgate.data, sw.dgate) < 1e-14 && relErr(swb.dup.data, sw.dup) < 1e-14, 'swiglu backward')
})

t.test('matmul: bf16 rounds both operands (nearest even) where the precision says; f32 accumulates in f32', async (t) => {
  // 1 + 2^-9 is halfway between the bf16 neighbours 1 and 1 + 2^-8: it rounds to even, 1.
  const a = mat(1, 2, Float64Array.from([1 + 2 ** -9, 2 ** -30]))
  const b = mat(1, 2, Float64Array.from([1, 1]))
  t.equal(matmul(a, 'f32', b, 'f32', exact).data[0], 1 + 2 ** -9 + 2 ** -30, 'exact: float64')
  t.equal(matmul(a, 'f32', b, 'f32', fp32).data[0], 1 + 2 ** -9, 'fp32: 2^-30 lost in the f32 accumulator')
  t.equal(matmul(a, 'f32', b, 'f32', bf16).data[0], 1, 'bf16: 1 + 2^-9 rounded to 1 (and 2^-30 lost in f32)')
  t.equal(matmul(a, 'f32', b, 'f32', bf16Weights).data[0], 1 + 2 ** -9, 'bf16Weights: an f32 x f32 product is not rounded to bf16')
  t.equal(matmul(a, 'f32', b, 'bf16', bf16Weights).data[0], 1, 'bf16Weights: a product with a bf16-stored operand is')
})

// ---- exact mode against the goldens -------------------------------------------------------------

for (const name of MODELS) {
  t.test(`${name}: exact mode matches the float64 goldens (hidden, logits, loss, every gradient)`, async (t) => {
    const e = errorsAgainstGolden(fixture(name), exact)
    t.comment(`exact vs golden: ${fmt(e)}`)
    t.same(e.missingGrads, [], 'the oracle gives every gradient the golden has')
    // The goldens are float64 results stored as f32: a few 1e-8 is their own rounding.
    for (const [what, err] of Object.entries(e.of)) t.ok(err < 1e-6, `${what}: ${err.toExponential(2)} < 1e-6`)
  })
}

t.test('ernie-tiny-paddle: the Paddle layout converts to ernie-tiny\'s weights, and matches its golden', async (t) => {
  const paddle = loadFixture(path.join(FIXTURES, 'ernie-tiny-paddle'))
  const hf = fixture('ernie-tiny')
  t.same([...paddle.weights.keys()].sort(), [...hf.weights.keys()].sort(), 'the same HF names')
  t.same([...hf.weights].filter(([name, v]) => relErr(paddle.weights.get(name)!, v) !== 0).map(([name]) => name), [], 'the same values')
  const out = forward(paddle.config, paddle.weights, paddle.batch)
  t.ok(maskedRelErr(out.hidden, paddle.golden.get('base.hidden')!, paddle.batch.attentionMask!, paddle.config.hidden_size) < 1e-6, 'base.hidden')
})

// ---- what the goldens do not cover ----------------------------------------------------------------

/** The golden batch with its labels made explicit: input ids, -100 at padding. */
function withLabels(batch: OracleBatch): OracleBatch {
  const labels = Int32Array.from(batch.inputIds, (id, i) => (batch.attentionMask![i] ? id : -100))
  return { ...batch, labels }
}

/** The golden batch left-padded: each row's real tokens moved to its end. Labels -100 at padding and at each row's first token. */
function leftPadded(batch: OracleBatch): { batch: OracleBatch; shift: number[] } {
  const { batch: B, seq: T } = batch
  const ids = new Int32Array(B * T), mask = new Int32Array(B * T), labels = new Int32Array(B * T).fill(-100)
  const shift: number[] = []
  for (let b = 0; b < B; b++) {
    let n = 0
    while (n < T && batch.attentionMask![b * T + n]) n++
    shift.push(T - n)
    for (let t = 0; t < n; t++) {
      const to = b * T + T - n + t
      ids[to] = batch.inputIds[b * T + t]
      mask[to] = 1
      // The first real token follows padding: nothing real predicts it (right padding has no such position).
      if (t > 0) labels[to] = ids[to]
    }
  }
  return { batch: { batch: B, seq: T, inputIds: ids, attentionMask: mask, labels }, shift }
}

/** The largest relative error of any one tensor of `a` against the same-named tensor of `b`. */
function gradsRelErr(a: Map<string, Float64Array>, b: Map<string, Float64Array>): number {
  let worst = 0
  for (const [name, v] of b) worst = Math.max(worst, relErr(a.get(name)!, v))
  return worst
}

for (const name of MODELS) {
  t.test(`${name}: left padding gives right padding's hidden states, loss and gradients`, async (t) => {
    const { config: c, weights, adapter, batch } = fixture(name)
    const H = c.hidden_size, T = batch.seq
    const right = lossAndGrad(c, weights, withLabels(batch), { adapter })
    const { batch: left, shift } = leftPadded(batch)
    const out = lossAndGrad(c, weights, left, { adapter })
    // Every real token's hidden state, row by row, moved by its row's shift.
    const moved = new Float64Array(right.hidden.length)
    for (let b = 0; b < batch.batch; b++)
      for (let t2 = 0; t2 + shift[b] < T; t2++) {
        const from = (b * T + t2 + shift[b]) * H
        moved.set(out.hidden.subarray(from, from + H), (b * T + t2) * H)
      }
    t.ok(maskedRelErr(moved, right.hidden, batch.attentionMask!, H) < 1e-14, 'every real token')
    const lastErr = relErr(lastTokenRows(out.hidden, left.attentionMask!, batch.batch, T, H), lastTokenRows(right.hidden, batch.attentionMask!, batch.batch, T, H))
    t.ok(lastErr < 1e-14, `last tokens: ${lastErr.toExponential(2)}`)
    t.equal(out.count, right.count, 'as many predicted tokens')
    t.ok(Math.abs(out.loss - right.loss) < 1e-13, `loss ${out.loss} vs ${right.loss}`)
    t.ok(gradsRelErr(out.grads, right.grads) < 1e-12, 'every gradient')
    // The same batch without labels counts the padding position before each first token (its target is real).
    t.equal(loss(c, weights, { ...left, labels: undefined }, { adapter }).count, right.count + 1, 'without labels: one more target in the left-padded row')
  })

  t.test(`${name}: packed documents (segment ids) behave as separate sequences`, async (t) => {
    const { config: c, weights, adapter, batch } = fixture(name)
    const H = c.hidden_size, T = batch.seq
    // Document A: 9 tokens of golden row 0; document B: 12 tokens of row 1; then 3 padding.
    const docA = Array.from(batch.inputIds).slice(0, 9)
    const docB = Array.from(batch.inputIds).slice(T, T + 12)
    const ids = Int32Array.from([...docA, ...docB, 0, 0, 0])
    const mask = Int32Array.from(ids, (_, i) => (i < 21 ? 1 : 0))
    const segmentIds = Int32Array.from(ids, (_, i) => (i < 9 ? 0 : 1)) // padding continues the last segment
    const labels = Int32Array.from(ids, (id, i) => (i === 9 || i >= 21 ? -100 : id)) // B's first token has no predictor
    const packed = lossAndGrad(c, weights, { batch: 1, seq: T, inputIds: ids, attentionMask: mask, segmentIds, labels }, { adapter })
    const alone = (doc: number[]) => lossAndGrad(c, weights, { batch: 1, seq: doc.length, inputIds: doc }, { adapter })
    const a = alone(docA), b = alone(docB)
    t.ok(relErr(packed.hidden.subarray(0, 9 * H), a.hidden) < 1e-14, 'document A\'s hidden states')
    t.ok(relErr(packed.hidden.subarray(9 * H, 21 * H), b.hidden) < 1e-14, 'document B\'s, its positions restarting at 0')
    t.equal(packed.count, a.count + b.count, 'each document\'s own next-token targets')
    t.ok(Math.abs(packed.loss * packed.count - (a.loss * a.count + b.loss * b.count)) < 1e-11, 'loss: the documents\' summed losses')
    // Mean-loss gradients: packed = (count_A grad_A + count_B grad_B) / count.
    let worst = 0
    for (const [n, g] of packed.grads) {
      const want = a.grads.get(n)!.map((x, i) => (x * a.count + b.grads.get(n)![i] * b.count) / packed.count)
      worst = Math.max(worst, relErr(g, want))
    }
    t.ok(worst < 1e-12, `every gradient: the documents' gradients, weighted (${worst.toExponential(2)})`)
  })

  t.test(`${name}: gradients pass a central-difference check (exact mode)`, async (t) => {
    const { config: c, weights, adapter, batch } = fixture(name)
    const r = rng(name.length)
    const lossOf = () => loss(c, weights, batch, { adapter }).loss
    const { grads } = lossAndGrad(c, weights, batch, { adapter })
    const tensor = (n: string) => weights.get(n) ?? adapter!.tensors.get(n)!
    const H = c.hidden_size
    // [parameter, coordinate]: random ones, and two of the embedding: in the row of a token of the
    // batch (lookup and head) and in a row of no token (the head alone).
    const coords: [string, number][] = [
      ['model.embed_tokens.weight', batch.inputIds[5] * H + Math.floor(r() * H)],
      ['model.embed_tokens.weight', 5990 * H + 3],
    ]
    const names = [weightName(0, 'k'), weightName(1, 'down'), 'model.layers.1.post_attention_layernorm.weight', 'model.norm.weight', loraName(0, 'q', 'A'), loraName(1, 'gate', 'B')]
    if (c.model_type === 'qwen3') names.push('model.layers.0.self_attn.k_norm.weight')
    for (const n of names) coords.push([n, Math.floor(r() * tensor(n).length)])
    for (const [n, i] of coords) {
      // numericGrad perturbs the one-element view, i.e. the parameter itself, and restores it.
      const num = numericGrad(tensor(n).subarray(i, i + 1), lossOf, 1e-4)[0]
      const ana = grads.get(n)![i]
      t.ok(Math.abs(num - ana) <= 1e-6 * Math.abs(ana) + 1e-9, `${n}[${i}]: analytic ${ana.toExponential(6)}, numeric ${num.toExponential(6)}`)
    }
  })
}

// ---- the precision simulation --------------------------------------------------------------------

for (const name of MODELS) {
  t.test(`${name}: the simulated precisions' errors against the goldens`, async (t) => {
    const errors = new Map<Precision, Errors>()
    for (const p of [fp32, bf16, bf16Weights]) {
      const e = errorsAgainstGolden(fixture(name), p)
      errors.set(p, e)
      t.comment(`${p.name.padEnd(11)} vs golden: ${fmt(e)}`)
    }
    // Each output is off by its precision's rounding: fp32 ~1e-7 .. 1e-6, bf16 ~1e-3 .. 1e-2. The
    // loss, a mean of 37 terms, is far more accurate than the rest; only its order is checked.
    const band = (p: Precision, lo: number, hi: number) => {
      for (const [what, err] of Object.entries(errors.get(p)!.of))
        if (what !== 'loss') t.ok(err > lo && err < hi, `${p.name} ${what}: ${lo} < ${err.toExponential(2)} < ${hi}`)
    }
    band(fp32, 1e-8, 1e-5)
    band(bf16, 1e-4, 5e-2)
    band(bf16Weights, 1e-4, 5e-2)
    const lossErr = (p: Precision) => errors.get(p)!.of.loss
    t.ok(lossErr(fp32) < 1e-6, `fp32 loss ${lossErr(fp32).toExponential(2)} < 1e-6`)
    for (const p of [bf16, bf16Weights])
      t.ok(lossErr(p) > 10 * lossErr(fp32) && lossErr(p) < 1e-3, `${p.name} loss ${lossErr(p).toExponential(2)}: above 10 x fp32's, below 1e-3`)
    // Without an adapter the two bf16 presets differ only in attention's products (f32 x f32):
    // bf16 rounds them, bf16Weights does not.
    t.not(errors.get(bf16)!.of.hidden, errors.get(bf16Weights)!.of.hidden, 'base forward: bf16 rounds attention, bf16Weights not')
    t.not(errors.get(bf16)!.of['lora.hidden'], errors.get(bf16Weights)!.of['lora.hidden'], 'LoRA: bf16Weights keeps the f32 x f32 products')
  })
}

t.test('PRECISIONS names the four presets', async (t) => {
  t.same(Object.keys(PRECISIONS), ['exact', 'fp32', 'bf16', 'bf16Weights'])
  for (const [k, p] of Object.entries(PRECISIONS)) t.equal(p.name, k)
})
