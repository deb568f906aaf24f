// Backward through the whole model against the fixtures' float64 goldens: the LoRA forward,
// the mean next-token loss, and the gradient of every LoRA A/B and every base weight.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { ErnieModel, LoraAdapter, MemoryTensors, mapWeights, resolveConfig } from '../lib/model/index'
import { lastTokenRows, maskedRelErr, readSafetensorsForTest, relErr } from './helpers'

const FIXTURES = path.join(__dirname, 'fixtures')

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

for (const name of ['ernie-tiny', 'qwen3-tiny']) {
  t.test(`${name}: LoRA forward, loss and every gradient match float64`, async (t) => {
    const { cfg, model, golden, adapter, input, mask } = load(name)
    const out = await model.forward(input, { output: ['hidden', 'logits'], adapter })
    t.ok(maskedRelErr(out.hidden!, golden.get('lora.hidden')!.raw, mask, cfg.hidden_size) < 1e-4, 'lora.hidden')
    t.ok(maskedRelErr(out.logits!, golden.get('lora.logits')!.raw, mask, cfg.vocab_size) < 1e-4, 'lora.logits')
    const [B, T] = input.inputIds.shape
    const last = await model.forward(input, { output: ['lastHidden'], adapter })
    const lastErr = relErr(last.lastHidden!, lastTokenRows(golden.get('lora.hidden')!.raw, mask, B, T, cfg.hidden_size))
    t.ok(lastErr < 1e-4, `lastHidden with the adapter (pruned last layer) vs lora.hidden: ${lastErr.toExponential(2)}`)

    for (const recompute of [false, true]) {
      const { loss, grads } = await model.lossAndGrad(input, { adapter, trainBase: true, recompute })
      const want = golden.get('lora.loss')!.raw[0]
      t.ok(Math.abs(loss - want) / Math.abs(want) < 1e-5, `loss ${loss} vs ${want} (recompute ${recompute})`)
      let worst = 0, worstName = '', checked = 0
      for (const [key, g] of golden) {
        if (!key.startsWith('grad.')) continue
        const name = key.slice(5)
        const got = grads.get(name)
        if (!got) {
          t.fail(`no gradient for ${name}`)
          continue
        }
        const err = relErr(got, g.raw)
        checked++
        if (err > worst) [worst, worstName] = [err, name]
        if (!(err < 1e-2)) t.fail(`${name}: relative error ${err.toExponential(2)}`)
      }
      t.ok(checked > 20, `${checked} gradient tensors checked (recompute ${recompute}); worst ${worst.toExponential(2)} at ${worstName}`)
      t.ok(worst < 1e-3, 'every gradient within 1e-3 (f32 activations)')
    }
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

t.test('loss() (forward only) equals the loss of lossAndGrad', async (t) => {
  const { model, adapter, input, golden } = load('qwen3-tiny')
  const a = await model.loss(input, { adapter })
  const want = golden.get('lora.loss')!.raw[0]
  t.ok(Math.abs(a.loss - want) / want < 1e-5, `loss ${a.loss} vs golden ${want}`)
  const b = await model.lossAndGrad(input, { adapter })
  t.ok(Math.abs(a.loss - b.loss) < 1e-9, 'same as lossAndGrad')
  t.equal(a.count, b.count)
  adapter.dispose()
  await model.dispose()
})
