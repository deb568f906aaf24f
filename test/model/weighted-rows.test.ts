// Per-sequence log-probabilities and the per-row weighted loss behind DPO (Objective
// 'weightedRows'), through the whole model, against the float64 oracle (test/helpers/oracle.ts
// weightedRows): forward's rowLogProbs, the step's own rowLogProbs and loss, and the gradient of
// every LoRA A/B and base weight, on every (ISA, precision), each within FACTOR x the error of the
// oracle simulating that precision (test/helpers/precision-helpers.ts).
import t from 'tap'
import * as path from 'node:path'
import { ErnieModel, LoraAdapter } from '../../lib/model/index'
import { forEachIsaAndPrecision, relErr } from '../helpers/helpers'
import { exact, weightedRows, type OracleAdapter } from '../helpers/oracle'
import { FACTOR, FIXTURES, LOSS_FLOOR, cached, fixture, goldenInput, lossErr, oraclePrecision, withinBound, type FixtureName } from '../helpers/precision-helpers'
import type * as oracle from '../helpers/oracle'

/** Each row scores its real tokens from position 4 on (a prompt of 4 tokens, then the answer). */
function answerTargets(name: FixtureName): Int32Array {
  const { batch } = fixture(name)
  const { batch: B, seq: T, inputIds, attentionMask } = batch
  const targets = new Int32Array(B * T).fill(-1)
  for (let b = 0; b < B; b++)
    for (let t = 3; t + 1 < T; t++) if (attentionMask![b * T + t + 1]) targets[b * T + t] = inputIds[b * T + t + 1]
  return targets
}

// Opposite signs, as DPO's chosen and rejected rows get.
const ROW_WEIGHTS = Float64Array.from([0.7, -1.3])

function oracleRows(name: FixtureName, p: oracle.Precision) {
  const f = fixture(name)
  return cached(`rows|${name}|${p.name}`, () => weightedRows(f.config, f.weights, f.batch, answerTargets(name), ROW_WEIGHTS, { precision: p, adapter: f.adapter }))
}

function adapterOf(model: ErnieModel, a: OracleAdapter): LoraAdapter {
  return LoraAdapter.fromTensors(model, { r: 4, alpha: 8 }, (n) => {
    const v = a.tensors.get(n)
    return v && { shape: n.includes('lora_A') ? [4, v.length / 4] : [v.length / 4, 4], data: Float32Array.from(v) }
  })
}

for (const name of ['ernie-tiny', 'qwen3-tiny'] as const) {
  t.test(`${name}: sequence log-probabilities and the weighted-rows gradient match float64, at every precision`, async (t) => {
    const model = await ErnieModel.fromPretrained(path.join(FIXTURES, name))
    const adapter = adapterOf(model, fixture(name).adapter!)
    const { input, shape } = goldenInput(name)
    const targets = answerTargets(name)
    const want = oracleRows(name, exact)
    t.ok(want.rowLogProbs.every((x) => x < -10), `the oracle's log-probabilities: ${[...want.rowLogProbs].map((x) => x.toFixed(4)).join(', ')}`)
    await forEachIsaAndPrecision(async (isa, precision) => {
      const p = oraclePrecision(isa, precision)
      const ref = oracleRows(name, p)
      const what = `${isa} ${precision} (oracle ${p.name})`
      const scale = relErr(ref.rowLogProbs, want.rowLogProbs)
      const fwd = await model.forward(input, { output: [], targets: { data: targets, shape }, adapter, precision })
      withinBound(t, `${what} forward rowLogProbs`, relErr(fwd.rowLogProbs!, want.rowLogProbs), scale, LOSS_FLOOR)

      const rowLogProbs = new Float64Array(2)
      const objective = { kind: 'weightedRows' as const, targets, rowWeights: ROW_WEIGHTS, rowLogProbs }
      const { loss, count, grads } = await model.lossAndGrad(input, { adapter, trainBase: true, objective, precision })
      t.same([...rowLogProbs], [...fwd.rowLogProbs!], `${what}: the step's forward scores the rows as forward does`)
      t.equal(count, targets.filter((y) => y >= 0).length, `${what}: count is the scored tokens`)
      withinBound(t, `${what} loss ${loss} vs ${want.loss}`, lossErr(loss, want.loss), lossErr(ref.loss, want.loss), LOSS_FLOOR)
      let worst = 0, worstName = ''
      for (const [n, g] of want.grads) {
        const err = grads.has(n) ? relErr(grads.get(n)!, g) : Infinity
        const s = relErr(ref.grads.get(n)!, g)
        if (err / s > worst) [worst, worstName] = [err / s, n]
        if (!(err <= FACTOR * s)) t.fail(`${what} ${n}: relative error ${err.toExponential(2)} > ${FACTOR} x ${s.toExponential(2)}`)
      }
      t.ok(want.grads.size > 20, `${what}: ${want.grads.size} gradient tensors checked; worst ${worst.toFixed(2)} x the oracle's error, at ${worstName}`)
    })
    adapter.dispose()
    await model.dispose()
  })
}

t.test('forwardOnly: the step\'s forward with its dropout masks, no gradient', async (t) => {
  const name = 'ernie-tiny'
  const model = await ErnieModel.fromPretrained(path.join(FIXTURES, name))
  const tensors = (n: string) => {
    const v = fixture(name).adapter!.tensors.get(n)
    return v && { shape: n.includes('lora_A') ? [4, v.length / 4] : [v.length / 4, 4], data: Float32Array.from(v) }
  }
  const dropped = LoraAdapter.fromTensors(model, { r: 4, alpha: 8, dropout: 0.3 }, tensors)
  const { input, shape } = goldenInput(name)
  const targets = answerTargets(name)
  const rows = () => ({ kind: 'weightedRows' as const, targets, rowWeights: ROW_WEIGHTS, rowLogProbs: new Float64Array(2) })
  const plain = (await model.forward(input, { output: [], targets: { data: targets, shape }, adapter: dropped })).rowLogProbs!
  const scored = rows()
  const grads = new Map<string, Float32Array>()
  const first = await model.lossAndGrad(input, { adapter: dropped, objective: scored, dropoutSeed: 7, forwardOnly: true, grads })
  t.equal(grads.size, 0, 'no gradient buffer is made')
  const stepped = rows()
  const step = await model.lossAndGrad(input, { adapter: dropped, objective: stepped, dropoutSeed: 7 })
  t.same([...scored.rowLogProbs], [...stepped.rowLogProbs], 'the same log-probabilities as the step with the same seed')
  t.equal(first.loss, step.loss, 'and the same loss')
  t.notSame([...scored.rowLogProbs], [...plain], 'dropout applied: not the inference forward')
  const other = rows()
  await model.lossAndGrad(input, { adapter: dropped, objective: other, dropoutSeed: 8, forwardOnly: true })
  t.notSame([...other.rowLogProbs], [...scored.rowLogProbs], 'another seed, other masks')
  dropped.dispose()
  await model.dispose()
})

t.test('weightedRows: bad arguments are typed errors', async (t) => {
  const model = await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny'))
  const { input } = goldenInput('ernie-tiny')
  const targets = answerTargets('ernie-tiny')
  const call = (o: Record<string, unknown>) => model.lossAndGrad(input, { trainBase: true, objective: { kind: 'weightedRows', targets, rowWeights: ROW_WEIGHTS, ...o } as never })
  await t.rejects(call({ rowWeights: new Float64Array(3) }), { name: 'RangeError', message: /rowWeights.*batch/ })
  await t.rejects(call({ rowWeights: Float64Array.from([1, NaN]) }), { name: 'RangeError', message: /rowWeights.*finite/ })
  await t.rejects(call({ rowWeights: new Float32Array(2) }), { name: 'TypeError', message: /rowWeights.*Float64Array/ })
  await t.rejects(call({ targets: Int32Array.from(targets, (y, i) => (i === 5 ? 6016 : y)) }), { name: 'RangeError', message: /targets.*6016.*vocabulary/ })
  await model.dispose()
})
