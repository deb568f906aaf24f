// DPO (lib/train/dpo.ts): the loss and its derivatives against a float64 statement of TRL's
// formulas written here; the model-level gradient of the DPO loss (LoRA tensors; base weights under
// full training) against central differences of the loss made from forward log-probabilities on
// the tiny fixtures, bounded by the float64 oracle's own truncation error and f32 noise; the
// reference computed once; and learning: after DPO on a synthetic preference set whose chosen
// answers differ from the rejected ones by a consistent style, the chosen answers' margin over
// the rejected ones rises on held-out pairs.
import t from 'tap'
import * as path from 'node:path'
import { ErnieModel, LoraAdapter } from '../../lib/model/index'
import { DpoTask, Trainer, dpoPairLoss, resolveDpoLoss, collatePairs, type DpoLossType } from '../../lib/index'
import type { PreferencePair } from '../../lib/train/index'
import { numericGrad, rng } from '../helpers/helpers'
import { exact, fp32, weightedRows, loraName, weightName, type OracleBatch } from '../helpers/oracle'
import { FACTOR, FIXTURES, LOSS_FLOOR, cached, fixture, type FixtureName } from '../helpers/precision-helpers'
import { TINY } from '../helpers/trainer-helpers'

// ---- the loss, in float64, as TRL states it -------------------------------------------------------

/** TRL's losses written out plainly: -log(sigmoid(x)) as log(1 + exp(-x)). */
function trlLoss(type: DpoLossType, beta: number, eps: number, c: number, r: number, rc: number, rr: number): number {
  const z = c - r - (rc - rr)
  if (type === 'ipo') return (z - 1 / (2 * beta)) ** 2
  return (1 - eps) * Math.log(1 + Math.exp(-beta * z)) + eps * Math.log(1 + Math.exp(beta * z))
}

t.test('the loss and its derivatives against float64 formulas and central differences', async (t) => {
  const r = rng(3)
  for (const [type, beta, eps] of [['sigmoid', 0.1, 0], ['sigmoid', 0.5, 0.2], ['ipo', 0.1, 0], ['ipo', 2, 0]] as const) {
    const o = resolveDpoLoss({ loss: type, beta, labelSmoothing: eps })
    for (let k = 0; k < 5; k++) {
      const p = { chosen: -40 * r(), rejected: -40 * r(), refChosen: -40 * r(), refRejected: -40 * r() }
      const l = dpoPairLoss(p, o)
      const f = (c: number, rj: number) => trlLoss(type, beta, eps, c, rj, p.refChosen, p.refRejected)
      const want = f(p.chosen, p.rejected)
      t.ok(Math.abs(l.loss - want) <= 1e-12 * Math.max(1, want), `${type} beta ${beta} eps ${eps}: loss ${l.loss} = ${want}`)
      const h = 1e-5
      const dc = (f(p.chosen + h, p.rejected) - f(p.chosen - h, p.rejected)) / (2 * h)
      const dr = (f(p.chosen, p.rejected + h) - f(p.chosen, p.rejected - h)) / (2 * h)
      t.ok(Math.abs(l.dChosen - dc) <= 1e-7 * Math.max(1, Math.abs(dc)), `d/dchosen ${l.dChosen} vs ${dc}`)
      t.ok(Math.abs(l.dRejected - dr) <= 1e-7 * Math.max(1, Math.abs(dr)), `d/drejected ${l.dRejected} vs ${dr}`)
      t.ok(Math.abs(l.chosenReward - beta * (p.chosen - p.refChosen)) < 1e-12, 'rewards/chosen = beta (logp - ref)')
    }
  }
  // Far out, where a naive log(1 + exp) overflows.
  const far = dpoPairLoss({ chosen: -2000, rejected: 0, refChosen: 0, refRejected: 0 }, resolveDpoLoss({ beta: 1 }))
  t.ok(Math.abs(far.loss - 2000) < 1e-9 && Math.abs(far.dChosen + 1) < 1e-12, `a margin of -2000: loss ${far.loss}, d ${far.dChosen}`)
  t.throws(() => resolveDpoLoss({ loss: 'ipo', labelSmoothing: 0.1 }), { name: 'RangeError', message: /IPO has none/ })
  t.throws(() => resolveDpoLoss({ beta: 0 }), { name: 'RangeError', message: /beta/ })
  t.throws(() => resolveDpoLoss({ loss: 'hinge' as DpoLossType }), { name: 'RangeError', message: /sigmoid, ipo/ })
  t.throws(() => resolveDpoLoss({ labelSmoothing: 0.5 }), { name: 'RangeError', message: /labelSmoothing/ })
})

t.test('collatePairs: chosen rows first, answers scored, prompts and padding not', async (t) => {
  const pair: PreferencePair = { chosen: { inputIds: [5, 6, 7, 8], answerStart: 2 }, rejected: { inputIds: [5, 6, 9], answerStart: 2 } }
  const b = collatePairs([pair], 0, [{ refChosen: -1, refRejected: -2 }])
  t.same(b.shape, [2, 4])
  t.same([...b.inputIds], [5, 6, 7, 8, 5, 6, 9, 0])
  t.same([...b.attentionMask], [1, 1, 1, 1, 1, 1, 1, 0])
  // position t predicts the token at t + 1 when that one is an answer token
  t.same([...b.targets], [-1, 7, 8, -1, -1, 9, -1, -1])
  t.same([...b.answerTokens], [2, 1])
  t.same([...b.reference], [-1, -2])
})

// ---- the model-level gradient against central differences ------------------------------------------

/** Two pairs of token ids: a shared 4-token prompt, answers of 5 and 7 tokens; rows of the fixture's vocabulary. */
function fixturePairs(seed: number): PreferencePair[] {
  const r = rng(seed)
  const ids = (n: number) => Array.from({ length: n }, () => 3 + Math.floor(r() * 5990))
  return [0, 1].map(() => {
    const prompt = ids(4)
    return { chosen: { inputIds: [...prompt, ...ids(5)], answerStart: 4 }, rejected: { inputIds: [...prompt, ...ids(7)], answerStart: 4 } }
  })
}

/** The DPO loss of the pairs from rows' summed log-probabilities ([chosen..., rejected...]), in float64 (TRL's formula, above). */
function dpoLossFromRows(type: DpoLossType, beta: number, eps: number, policy: ArrayLike<number>, ref: ArrayLike<number>, answerTokens: ArrayLike<number>): number {
  const k = policy.length / 2
  let sum = 0
  for (let i = 0; i < k; i++) {
    const n = (row: number) => (type === 'ipo' ? answerTokens[row] : 1)
    sum += trlLoss(type, beta, eps, policy[i] / n(i), policy[k + i] / n(k + i), ref[i] / n(i), ref[k + i] / n(k + i))
  }
  return sum / k
}

/** d(DPO loss)/d(row log-prob), by central differences of the float64 formula (the oracle's row weights). */
function rowDerivatives(lossOf: (rows: Float64Array) => number, rows: Float64Array): Float64Array {
  const v = Float64Array.from(rows)
  return numericGrad(v, () => lossOf(v), 1e-6)
}

interface GradCase {
  name: FixtureName
  type: DpoLossType
  eps: number
  full: boolean
}

for (const c of [
  { name: 'ernie-tiny', type: 'sigmoid', eps: 0.1, full: false },
  { name: 'qwen3-tiny', type: 'ipo', eps: 0, full: false },
  { name: 'ernie-tiny', type: 'ipo', eps: 0, full: true },
  { name: 'qwen3-tiny', type: 'sigmoid', eps: 0, full: true },
] as GradCase[]) {
  const what = `${c.name} ${c.type}${c.eps ? ` (label smoothing ${c.eps})` : ''}, ${c.full ? 'full training' : 'LoRA'}`
  t.test(`${what}: the DPO gradient agrees with central differences of the loss from forward log-probabilities (fp32)`, async (t) => {
    const beta = 0.5
    const f = fixture(c.name)
    const model = await ErnieModel.fromPretrained(path.join(FIXTURES, c.name))
    model.precision = 'fp32'
    const adapter = c.full
      ? undefined
      : LoraAdapter.fromTensors(model, { r: 4, alpha: 8 }, (n) => {
          const v = f.adapter!.tensors.get(n)
          return v && { shape: n.includes('lora_A') ? [4, v.length / 4] : [v.length / 4, 4], data: Float32Array.from(v) }
        })
    const pairs = fixturePairs(c.name.length + (c.full ? 10 : 0))
    const task = await DpoTask.create(model, { train: pairs, adapter, fullTraining: c.full ? { compute: 'f32' } : undefined, beta, loss: c.type, labelSmoothing: c.eps })
    const batch = task.collate([...task.examples()])
    const input = { inputIds: { data: batch.inputIds, shape: batch.shape }, attentionMask: { data: batch.attentionMask, shape: batch.shape } }
    const targets = { data: batch.targets, shape: batch.shape }
    // The reference, from a forward of the model as it was (the base: no adapter; full training has not changed a weight yet).
    const ref = (await model.forward(input, { output: [], targets })).rowLogProbs!
    const lossOfRows = (rows: ArrayLike<number>) => dpoLossFromRows(c.type, beta, c.eps, rows, ref, batch.answerTokens)
    const engineLoss = async () => lossOfRows((await model.forward(input, { output: [], targets, adapter })).rowLogProbs!)

    const grads = new Map([...task.params()].map(([n, p]) => [n, new Float32Array(p.length)]))
    const { loss } = await task.lossAndGrad(batch, grads, { precision: 'fp32' })
    const at0 = await engineLoss()
    t.ok(Math.abs(loss - at0) <= 1e-9 * Math.abs(at0) + 1e-12, `the task's loss ${loss} is the loss of forward's log-probabilities ${at0}`)

    // The float64 oracle on the same rows: its exact gradient (the weighted rows with the DPO
    // loss's row derivatives), the truncation error of a central difference of step h, and the
    // f32 noise of the loss (the fp32 oracle's distance from the exact one).
    const ob: OracleBatch = { batch: batch.shape[0], seq: batch.shape[1], inputIds: batch.inputIds, attentionMask: batch.attentionMask }
    const oracleAdapter = c.full ? undefined : f.adapter
    const oracleRows = (p = exact) => weightedRows(f.config, f.weights, ob, batch.targets, new Float64Array(batch.shape[0]), { precision: p, adapter: oracleAdapter }).rowLogProbs
    const exactRows = oracleRows()
    const oracleRef = weightedRows(f.config, f.weights, ob, batch.targets, new Float64Array(batch.shape[0])).rowLogProbs
    const exactLoss = (rows: ArrayLike<number>) => dpoLossFromRows(c.type, beta, c.eps, rows, oracleRef, batch.answerTokens)
    const rowWeights = rowDerivatives(exactLoss, exactRows).map((x) => -x)
    const exactGrads = weightedRows(f.config, f.weights, ob, batch.targets, rowWeights, { adapter: oracleAdapter }).grads
    const noise = Math.abs(exactLoss(cached(`fp32rows|${what}`, () => oracleRows(fp32))) - exactLoss(exactRows)) + LOSS_FLOOR * Math.abs(exactLoss(exactRows))
    t.comment(`DPO loss ${exactLoss(exactRows).toFixed(6)}; its f32 noise ${noise.toExponential(2)}`)

    const r = rng(c.name.length * 7 + (c.full ? 1 : 0))
    const names = c.full
      ? [weightName(0, 'q'), weightName(1, 'down'), 'model.layers.0.post_attention_layernorm.weight', 'model.norm.weight']
      : [loraName(0, 'q', 'A'), loraName(0, 'v', 'B'), loraName(1, 'gate', 'A'), loraName(1, 'down', 'B')]
    const h = 1e-2
    for (const n of names) {
      const engineParam = task.params().get(n)!
      const oracleParam = c.full ? f.weights.get(n)! : f.adapter!.tensors.get(n)!
      const i = Math.floor(r() * engineParam.length)
      const analytic = grads.get(n)![i]
      // Central differences of the engine's loss at fp32, perturbing the parameter it reads in place.
      const v0 = engineParam[i]
      engineParam[i] = v0 + h
      const up = await engineLoss()
      engineParam[i] = v0 - h
      const down = await engineLoss()
      engineParam[i] = v0
      const fd = (up - down) / (2 * h)
      // The same difference in float64: how far a step of h is from the derivative.
      const o0 = oracleParam[i]
      oracleParam[i] = o0 + h
      const oUp = exactLoss(oracleRows())
      oracleParam[i] = o0 - h
      const oDown = exactLoss(oracleRows())
      oracleParam[i] = o0
      const truncation = Math.abs((oUp - oDown) / (2 * h) - exactGrads.get(n)![i])
      const bound = FACTOR * (noise / h + truncation)
      t.ok(Math.abs(analytic - fd) <= bound, `${n}[${i}]: analytic ${analytic.toExponential(5)}, central difference ${fd.toExponential(5)}: ${Math.abs(analytic - fd).toExponential(2)} <= ${FACTOR} x (noise ${(noise / h).toExponential(2)} + truncation ${truncation.toExponential(2)})`)
      t.ok(Math.abs(analytic) > 10 * bound, `${n}[${i}]: the derivative (${analytic.toExponential(2)}) stands well clear of the bound`)
    }
    adapter?.dispose()
    await model.dispose()
  })
}

// ---- the reference, once -----------------------------------------------------------------------------

/**
 * A synthetic preference set: a random prompt and random content tokens; the chosen answer ends
 * the content with a "polite" closing (tokens 240, 241, 242), the rejected one with a curt one
 * (250, 251). The content and prompts are new in every pair: what generalises is the style.
 */
function stylePairs(n: number, seed: number): PreferencePair[] {
  const r = rng(seed)
  const ids = (k: number) => Array.from({ length: k }, () => 3 + Math.floor(r() * 200))
  return Array.from({ length: n }, () => {
    const prompt = ids(3 + Math.floor(r() * 4))
    const content = ids(2 + Math.floor(r() * 4))
    return {
      chosen: { inputIds: [...prompt, ...content, 240, 241, 242], answerStart: prompt.length },
      rejected: { inputIds: [...prompt, ...content, 250, 251], answerStart: prompt.length },
    }
  })
}

t.test('the reference log-probabilities are computed once, before training, from the frozen base', async (t) => {
  const model = ErnieModel.random(TINY, { seed: 4, std: 0.3 })
  const adapter = LoraAdapter.create(model, { r: 4, alpha: 8, seed: 1 })
  const train = stylePairs(20, 1), heldOut = stylePairs(6, 2)
  const calls: Array<{ adapter: boolean }> = []
  const forward = model.forward.bind(model)
  model.forward = (input, options = {}) => (calls.push({ adapter: options.adapter !== undefined }), forward(input, options))
  const task = await DpoTask.create(model, { train, eval: heldOut, adapter, evalBatchSize: 8 })
  t.same(calls, [{ adapter: false }, { adapter: false }, { adapter: false }, { adapter: false }], 'create: 3 batches of train pairs and 1 of eval pairs, without the adapter')
  // The cache holds the base's log-probabilities of each answer, as a forward of the base gives them.
  const b = collatePairs(train.slice(0, 8), 0)
  const base = (await forward({ inputIds: { data: b.inputIds, shape: b.shape }, attentionMask: { data: b.attentionMask, shape: b.shape } }, { output: [], targets: { data: b.targets, shape: b.shape } })).rowLogProbs!
  t.same(task.trainExamples.slice(0, 8).flatMap((e) => [e.refChosen]), [...base.subarray(0, 8)], 'cached chosen references: the base forward')
  t.same(task.trainExamples.slice(0, 8).flatMap((e) => [e.refRejected]), [...base.subarray(8, 16)], 'cached rejected references')
  const refs = task.trainExamples.map((e) => [e.refChosen, e.refRejected])
  calls.length = 0
  await new Trainer(task, { maxSteps: 6, batchSize: 4, learningRate: 1e-2, evalSteps: 3 }).train()
  t.ok(calls.length > 0 && calls.every((c) => c.adapter), `training and evaluation: ${calls.length} forwards, every one the policy's (with the adapter)`)
  t.same(task.trainExamples.map((e) => [e.refChosen, e.refRejected]), refs, 'the cache is unchanged')
  adapter.dispose()
  await model.dispose()
})

// ---- learning -----------------------------------------------------------------------------------------

for (const [loss, full] of [['sigmoid', false], ['ipo', false], ['sigmoid', true]] as const) {
  t.test(`DPO (${loss}, ${full ? 'full training' : 'LoRA'}) raises the chosen answers' margin on held-out pairs`, async (t) => {
    const model = ErnieModel.random(TINY, { seed: 4, std: 0.3 })
    const adapter = full ? undefined : LoraAdapter.create(model, { r: 8, alpha: 16, seed: 1 })
    const task = await DpoTask.create(model, { train: stylePairs(48, 1), eval: stylePairs(16, 2), adapter, fullTraining: full, loss, beta: 0.1 })
    // The held-out margin of the chosen answers' summed log-probability over the rejected ones'.
    const margin = async () => {
      const m = await task.metricsOf(task.evalExamples)
      return { raw: m['logps/chosen'] - m['logps/rejected'], ...m }
    }
    const before = await margin()
    const result = await new Trainer(task, { maxSteps: 30, batchSize: 8, learningRate: full ? 3e-3 : 1e-2, warmupSteps: 0, evalSteps: 10 }).train()
    const after = await margin()
    const curve = result.evalHistory.map((e) => `step ${e.step}: loss ${e.metrics.loss.toFixed(4)} margin ${e.metrics['rewards/margins'].toFixed(4)} accuracy ${e.metrics['rewards/accuracies'].toFixed(2)}`)
    t.comment(`held out: ${curve.join('; ')}`)
    t.comment(`training loss ${result.lossHistory[0].toFixed(4)} -> ${result.finalLoss.toFixed(4)}; held-out log-prob margin ${before.raw.toFixed(3)} -> ${after.raw.toFixed(3)}`)
    t.ok(after.raw > before.raw + 1, `held-out margin of chosen over rejected rises by more than 1 nat: ${before.raw.toFixed(3)} -> ${after.raw.toFixed(3)}`)
    t.ok(after['rewards/margins'] > 0 && after['rewards/accuracies'] >= 0.9, `held-out rewards/margins ${after['rewards/margins'].toFixed(4)} > 0, accuracy ${after['rewards/accuracies']}`)
    t.ok(after.loss < before.loss, `held-out DPO loss falls: ${before.loss.toFixed(4)} -> ${after.loss.toFixed(4)}`)
    if (!full) t.equal(before['rewards/margins'], 0, 'before training, policy = reference (a fresh adapter changes nothing): margins 0')
    adapter?.dispose()
    await model.dispose()
  })
}
