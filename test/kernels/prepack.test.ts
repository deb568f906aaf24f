// Pre-packed weights (cpu::PrepackedBf16): on AVX512_BF16 a model packs its bf16 weights once,
// at its first bf16 call, into the panels vdpbf16ps reads, and its products skip packing them.
// The panels hold the very words a product would pack, so every output must be bitwise the same
// as with packing at each call: checked at sizes that are no multiple of any tile (odd K, ragged
// panels), for the forward (few rows and many), generation's decode and LoRA training steps
// (whose backward reads the weights' transposes, packed at the first of them).
import t from 'tap'
import { ErnieModel, kernels, LoraAdapter } from '../../lib/index'
import { nativeModelOptions } from '../../lib/model/model'
import { NativeModel } from '../../lib/native'

const hasBf16Dot = kernels.supportedIsas().includes('avx512bf16')

// hidden 69 (odd K for q, k, v, gate, up), intermediate 1091 (down_proj: K past one bf16 slice of 1024,
// odd), vocab 1001: no multiple of 32
const CONFIG = {
  model_type: 'ernie4_5',
  hidden_size: 69,
  intermediate_size: 1091,
  num_hidden_layers: 2,
  num_attention_heads: 3,
  num_key_value_heads: 1,
  head_dim: 22,
  vocab_size: 1001,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
}

// Where two outputs first differ ('' when bitwise equal): t.same on arrays this large would
// spend minutes rendering the difference.
function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): string {
  if (a.length !== b.length) return `lengths ${a.length} and ${b.length}`
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return `element ${i}: ${a[i]} vs ${b[i]}`
  return ''
}

// The same weights on a native model that packs at every call.
function unpackedTwin(model: ErnieModel): ErnieModel {
  const twin = Object.create(ErnieModel.prototype) as ErnieModel
  Object.assign(twin, model)
  Object.assign(twin, { handle: new NativeModel(nativeModelOptions(model.config, model.weights, model.device, false)), running: new Set() })
  return twin
}

t.test('pre-packed weights give bitwise the outputs of packing at each call', { skip: !hasBf16Dot && 'this CPU has no AVX512_BF16: weights are never pre-packed' }, async (t) => {
  const model = ErnieModel.random(CONFIG, { seed: 3 })
  const twin = unpackedTwin(model)
  t.teardown(async () => {
    twin.handle?.dispose()
    await model.dispose()
  })
  const ids = (B: number, T: number) => ({ data: Int32Array.from({ length: B * T }, (_, i) => (i * 7919 + 5) % 1001), shape: [B, T] as [number, number] })
  for (const precision of ['bf16', 'auto'] as const) {
    for (const [B, T] of [[1, 7], [3, 45], [8, 70]]) {
      const a = await model.forward({ inputIds: ids(B, T) }, { output: ['hidden', 'logits'], precision })
      const b = await twin.forward({ inputIds: ids(B, T) }, { output: ['hidden', 'logits'], precision })
      t.equal(firstDifference(a.hidden!, b.hidden!), '', `${precision} ${B}x${T}: hidden`)
      t.equal(firstDifference(a.logits!, b.logits!), '', `${precision} ${B}x${T}: logits`)
    }
    const g1 = await model.generate([5, 9, 13], { maxNewTokens: 4, precision })
    const g2 = await twin.generate([5, 9, 13], { maxNewTokens: 4, precision })
    t.same(g1.tokens, g2.tokens, `${precision}: generation`)
    // training packs the weights' transposes too (the backward's dy . W), read by products with
    // few rows and, at 8 x 45, by those that share packed blocks between the threads
    const adapter = LoraAdapter.create(model, { r: 4, alpha: 8, seed: 2 })
    for (const [B, T] of [[2, 33], [8, 45]]) {
      const l1 = await model.lossAndGrad({ inputIds: ids(B, T) }, { adapter, precision })
      const l2 = await twin.lossAndGrad({ inputIds: ids(B, T) }, { adapter, precision })
      t.equal(l1.loss, l2.loss, `${precision} ${B}x${T}: LoRA loss`)
      t.same([...l1.grads.keys()], [...l2.grads.keys()], `${precision} ${B}x${T}: the same gradients`)
      for (const [name, g] of l1.grads) t.equal(firstDifference(g, l2.grads.get(name)!), '', `${precision} ${B}x${T}: ${name}`)
    }
    adapter.dispose()
  }
})
