// Generation with a KV cache against the cache-free forward, and embeddings against the
// hidden states they pool.
import t from 'tap'
import * as path from 'node:path'
import { ErnieModel } from '../lib/index'
import { relErr } from './helpers'

const FIXTURES = path.join(__dirname, 'fixtures')

for (const name of ['ernie-tiny', 'qwen3-tiny']) {
  t.test(`${name}: greedy generation with the KV cache equals argmax of full forwards`, async (t) => {
    const model = await ErnieModel.fromPretrained(path.join(FIXTURES, name))
    const prompt = [5, 77, 300, 1024, 42]
    const steps = 12
    const got = await model.generate(prompt, { maxNewTokens: steps, eosTokenIds: [] })
    // reference: no cache, the whole sequence each step
    const seq = [...prompt]
    const V = model.config.vocab_size
    let worst = 0
    for (let i = 0; i < got.tokens.length; i++) {
      const { logits } = await model.forward({ inputIds: [seq] }, { output: ['logits'] })
      const last = logits!.subarray((seq.length - 1) * V, seq.length * V)
      let best = 0
      for (let j = 1; j < V; j++) if (last[j] > last[best]) best = j
      seq.push(best)
      worst = Math.max(worst, best === got.tokens[i] ? 0 : 1)
    }
    t.same(got.tokens, seq.slice(prompt.length), 'same tokens')
    t.ok(got.tokens.length === steps || got.finishReason !== 'length', `finish: ${got.finishReason}`)
    t.equal(worst, 0)
    await model.dispose()
  })
}

t.test('sampling is seeded; stop strings and bad options', async (t) => {
  const model = await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny'))
  const a = await model.generate([5, 6, 7], { maxNewTokens: 8, temperature: 1.5, topP: 0.9, seed: 3, eosTokenIds: [] })
  const b = await model.generate([5, 6, 7], { maxNewTokens: 8, temperature: 1.5, topP: 0.9, seed: 3, eosTokenIds: [] })
  t.same(a.tokens, b.tokens, 'same seed, same tokens')
  await t.rejects(model.generate([5], { maxNewTokens: 0 }), { name: 'RangeError' })
  await t.rejects(model.generate([5], { topP: 0 }), { name: 'RangeError' })
  await t.rejects(model.generate([], {}), { name: 'RangeError', message: /empty/ })
  await t.rejects(model.generate([99999], {}), { name: 'RangeError', message: /outside the vocabulary/ })
  const text = await model.generate('房间', { maxNewTokens: 4 })
  t.type(text.text, 'string')
  await model.dispose()
})

t.test('embed pools the final hidden states (last, mean, first) and normalises', async (t) => {
  const model = await ErnieModel.fromPretrained(path.join(FIXTURES, 'qwen3-tiny'))
  const texts = ['房间很干净，服务也周到', '太差了', '😀']
  const tok = model.tokenizer!
  const H = model.config.hidden_size
  for (const pooling of ['last', 'mean', 'first'] as const) {
    const vecs = await model.embed(texts, { pooling })
    t.equal(vecs.length, 3)
    for (let i = 0; i < texts.length; i++) {
      const ids = tok.encode(texts[i])
      const { hidden } = await model.forward({ inputIds: [ids] })
      const ref = new Float64Array(H)
      const rows = pooling === 'last' ? [ids.length - 1] : pooling === 'first' ? [0] : ids.map((_, k) => k)
      for (const r of rows) for (let j = 0; j < H; j++) ref[j] += hidden![r * H + j] / rows.length
      t.ok(relErr(vecs[i], ref) < 1e-4, `${pooling} pooling of text ${i} (batched with others)`)
    }
  }
  const unit = await model.embed(texts, { normalize: true })
  for (const v of unit) t.ok(Math.abs(Math.hypot(...v) - 1) < 1e-5, 'unit norm')
  await t.rejects(model.embed(texts, { pooling: 'max' as 'last' }), { name: 'RangeError' })
  await model.dispose()
})
