// Backward through the whole model against the fixtures' float64 goldens: the LoRA forward,
// the mean next-token loss, and the gradient of every LoRA A/B and every base weight, on every
// (ISA, precision), each within FACTOR x the error of the float64 oracle (test/helpers/oracle.ts)
// simulating the same precision (test/helpers/precision-helpers.ts).
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { ErnieModel, LoraAdapter, MemoryTensors, mapWeights, resolveConfig } from '../../lib/model/index'
import { forEachIsaAndPrecision, lastTokenRows, maskedRelErr, readSafetensorsForTest, relErr } from '../helpers/helpers'
import { fp32 } from '../helpers/oracle'
import { FACTOR, FIXTURES, LOSS_FLOOR, goldenErr, lossErr, oracleLora, oraclePrecision, withinBound } from '../helpers/precision-helpers'

function load(name: string) {
  const dir = path.join(FIXTURES, name)
  const cfg = resolveConfig(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')))
  const map = new Map<string, { shape: number[]; data: Float32Array | Uint16Array }>()
  for (const [k, v] of readSafetensorsForTest(path.join(dir, 'model.safetensors'))) map.set(k, { shape: v.shape, data: v.raw as Uint16Array })
  const source = new MemoryTensors(name, map)
  const model = new ErnieModel({ config: cfg, weights: mapWeights(cfg, source), source })
  const golden = readSafetensorsForTest(path.join(dir, 'golden.safetensors'))
  const adapter = LoraAdapter.fromTensors(model, { r: 4, alpha: 8 }, (n) => {
    const g = golden.get(`lora.${n}`)
    return g && { shape: g.shape, data: g.raw as Float32Array }
  })
  const ids = golden.get('input_ids')!, mask = golden.get('attention_mask')!
  const [B, T] = ids.shape
  const input = { inputIds: { data: ids.raw as Int32Array, shape: [B, T] as [number, number] }, attentionMask: { data: mask.raw as Int32Array, shape: [B, T] as [number, number] } }
  return { cfg, model, golden, adapter, input, mask: mask.raw }
}

/** Each golden gradient's relative error, by parameter name (those the result lacks: Infinity). */
function gradErrs(golden: Map<string, { raw: ArrayLike<number> }>, grads: ReadonlyMap<string, ArrayLike<number>>): Map<string, number> {
  const out = new Map<string, number>()
  for (const [key, g] of golden) if (key.startsWith('grad.')) out.set(key.slice(5), grads.has(key.slice(5)) ? relErr(grads.get(key.slice(5))!, g.raw) : Infinity)
  return out
}

for (const name of ['ernie-tiny', 'qwen3-tiny'] as const) {
  t.test(`${name}: LoRA forward, loss and every gradient match float64, at every precision`, async (t) => {
    const { cfg, model, golden, adapter, input, mask } = load(name)
    const [B, T] = input.inputIds.shape
    const H = cfg.hidden_size
    const wantLast = lastTokenRows(golden.get('lora.hidden')!.raw, mask, B, T, H)
    const wantLoss = golden.get('lora.loss')!.raw[0]
    // The gradients of an f32 run of the same step, tensor by tensor: f32 level for two runs of it.
    const f32Grads = gradErrs(golden, oracleLora(name, fp32).grads)
    await forEachIsaAndPrecision(async (isa, precision) => {
      const p = oraclePrecision(isa, precision)
      const ref = oracleLora(name, p)
      const what = `${isa} ${precision} (oracle ${p.name})`
      const out = await model.forward(input, { output: ['hidden', 'logits'], adapter, precision })
      withinBound(t, `${what} lora.hidden`, goldenErr(name, out.hidden!, 'lora.hidden', H), goldenErr(name, ref.hidden, 'lora.hidden', H))
      withinBound(t, `${what} lora.logits`, goldenErr(name, out.logits!, 'lora.logits', cfg.vocab_size), goldenErr(name, ref.logits, 'lora.logits', cfg.vocab_size))
      const last = await model.forward(input, { output: ['lastHidden'], adapter, precision })
      const lastScale = relErr(lastTokenRows(ref.hidden, mask, B, T, H), wantLast)
      withinBound(t, `${what} lastHidden with the adapter (pruned last layer) vs lora.hidden`, relErr(last.lastHidden!, wantLast), lastScale)

      const wantErrs = gradErrs(golden, ref.grads)
      const byRecompute: Array<Map<string, Float32Array>> = []
      for (const recompute of [false, true]) {
        const { loss, grads } = await model.lossAndGrad(input, { adapter, trainBase: true, recompute, precision })
        byRecompute.push(grads)
        withinBound(t, `${what} loss ${loss} vs ${wantLoss} (recompute ${recompute})`, lossErr(loss, wantLoss), lossErr(ref.loss, wantLoss), LOSS_FLOOR)
        // Every tensor within 3x the oracle's error on that same tensor (failures named one by one).
        let worst = 0, worstName = ''
        for (const [n, scale] of wantErrs) {
          const err = grads.has(n) ? relErr(grads.get(n)!, golden.get(`grad.${n}`)!.raw) : Infinity
          if (err / scale > worst) [worst, worstName] = [err / scale, n]
          if (!(err <= FACTOR * scale)) t.fail(`${what} ${n} (recompute ${recompute}): relative error ${err.toExponential(2)} > ${FACTOR} x ${scale.toExponential(2)}`)
        }
        t.ok(wantErrs.size > 20, `${what}: ${wantErrs.size} gradient tensors checked (recompute ${recompute}); worst ${worst.toFixed(2)} x the oracle's error, at ${worstName}`)
      }
      // recompute replays each layer's forward: the same products on the same operands, so the
      // gradients agree to f32 level (the fp32 oracle's error on each tensor) at every precision.
      let apart = 0
      for (const [n, scale] of f32Grads) {
        const err = relErr(byRecompute[1].get(n)!, byRecompute[0].get(n)!)
        apart = Math.max(apart, err / scale)
        if (!(err <= FACTOR * scale)) t.fail(`${what} ${n}: recompute changes the gradient by ${err.toExponential(2)} > ${FACTOR} x ${scale.toExponential(2)}`)
      }
      t.ok(apart <= FACTOR, `${what}: recompute gives every gradient within ${apart.toFixed(2)} x f32 level`)
    })
    adapter.dispose()
    await model.dispose()
  })
}

t.test('labels: -100 is ignored, and labels equal to the ids give the default loss', async (t) => {
  const { model, adapter, input, golden } = load('ernie-tiny')
  const ids = golden.get('input_ids')!.raw as Int32Array, mask = golden.get('attention_mask')!.raw as Int32Array
  const labels = Int32Array.from(ids, (v, i) => (mask[i] ? v : -100))
  const a = await model.lossAndGrad(input, { adapter })
  const b = await model.lossAndGrad({ ...input, labels: { data: labels, shape: input.inputIds.shape } }, { adapter })
  t.ok(Math.abs(a.loss - b.loss) < 1e-6, 'same loss')
  t.equal(a.count, b.count)
  // ignoring every label but one: the loss is that token's cross-entropy alone
  const one = new Int32Array(labels.length).fill(-100)
  one[5] = labels[5]
  const c = await model.lossAndGrad({ ...input, labels: { data: one, shape: input.inputIds.shape } }, { adapter })
  t.equal(c.count, 1)
  const logits = (await model.forward(input, { output: ['logits'], adapter })).logits!
  const V = model.config.vocab_size
  const row = logits.subarray(4 * V, 5 * V)
  const mx = row.reduce((m, v) => Math.max(m, v), -Infinity)
  const lse = mx + Math.log(row.reduce((s, v) => s + Math.exp(v - mx), 0))
  t.ok(Math.abs(c.loss - (lse - row[labels[5]])) < 1e-4, `single-token loss ${c.loss}`)
  adapter.dispose()
  await model.dispose()
})

t.test('LoRA dropout: training only, seeded by the batch, recompute-consistent', async (t) => {
  const { model, input, golden, mask, cfg } = load('ernie-tiny')
  const tensors = (n: string) => {
    const g = golden.get(`lora.${n}`)
    return g && { shape: g.shape, data: g.raw as Float32Array }
  }
  const plain = LoraAdapter.fromTensors(model, { r: 4, alpha: 8 }, tensors)
  const dropped = LoraAdapter.fromTensors(model, { r: 4, alpha: 8, dropout: 0.2 }, tensors)
  // inference never drops
  const a = await model.forward(input, { adapter: plain }), b = await model.forward(input, { adapter: dropped })
  t.equal(maskedRelErr(b.hidden!, a.hidden!, mask, cfg.hidden_size), 0, 'forward unaffected by dropout')
  const base = await model.lossAndGrad(input, { adapter: plain })
  const d1 = await model.lossAndGrad(input, { adapter: dropped })
  const d2 = await model.lossAndGrad(input, { adapter: dropped })
  const d3 = await model.lossAndGrad(input, { adapter: dropped, recompute: true })
  const d4 = await model.lossAndGrad(input, { adapter: dropped, dropoutSeed: 99 })
  t.not(d1.loss, base.loss, 'dropout changes the training loss')
  t.equal(d1.loss, d2.loss, 'same batch, same masks')
  t.equal(d3.loss, d1.loss, 'recompute replays the same masks')
  const name = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'
  t.ok(relErr(d3.grads.get(name)!, d1.grads.get(name)!) < 1e-6, 'recompute gives the same gradients')
  t.not(d4.loss, d1.loss, 'another seed, other masks')
  plain.dispose()
  dropped.dispose()
  await model.dispose()
})

t.test('loss() (forward only) equals the loss of lossAndGrad, at every precision', async (t) => {
  const name = 'qwen3-tiny'
  const { model, adapter, input, golden } = load(name)
  const want = golden.get('lora.loss')!.raw[0]
  await forEachIsaAndPrecision(async (isa, precision) => {
    const p = oraclePrecision(isa, precision)
    const a = await model.loss(input, { adapter, precision })
    withinBound(t, `${isa} ${precision} (oracle ${p.name}) loss ${a.loss} vs golden ${want}`, lossErr(a.loss, want), lossErr(oracleLora(name, p).loss, want), LOSS_FLOOR)
    // The same forward and loss as lossAndGrad's: at most f32 level apart.
    const b = await model.lossAndGrad(input, { adapter, precision })
    t.ok(lossErr(a.loss, b.loss) <= LOSS_FLOOR, `${isa} ${precision}: same as lossAndGrad (${a.loss} vs ${b.loss})`)
    t.equal(a.count, b.count)
  })
  adapter.dispose()
  await model.dispose()
})
