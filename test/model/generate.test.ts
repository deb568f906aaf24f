// Generation with a KV cache against the cache-free forward (greedy, with and without a LoRA
// adapter); stopping at stop strings, EOS ids and an abort signal, each against an unstopped
// run; sampled tokens' frequencies against the forward's softmax (temperature, top-p, top-k);
// top-k 1 against greedy; the repetition penalty against the forward's logits penalised here; and
// embeddings against the hidden states they pool.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { ErnieModel, kernels, LoraAdapter } from '../../lib/index'
import { relErr } from '../helpers/helpers'
import { tempDir } from '../helpers/classifier-helpers'
import { TINY, tinyModel } from '../helpers/trainer-helpers'

const FIXTURES = path.join(__dirname, '..', 'fixtures')

/** Greedy continuation without a cache: the whole sequence through forward, argmax of the last logits, each step. */
async function greedyReference(model: ErnieModel, prompt: number[], steps: number, adapter?: LoraAdapter): Promise<number[]> {
  const seq = [...prompt]
  const V = model.config.vocab_size
  for (let i = 0; i < steps; i++) {
    const { logits } = await model.forward({ inputIds: [seq] }, { output: ['logits'], adapter })
    const last = logits!.subarray((seq.length - 1) * V, seq.length * V)
    let best = 0
    for (let j = 1; j < V; j++) if (last[j] > last[best]) best = j
    seq.push(best)
  }
  return seq.slice(prompt.length)
}

for (const name of ['ernie-tiny', 'qwen3-tiny']) {
  t.test(`${name}: greedy generation with the KV cache equals argmax of full forwards`, async (t) => {
    const model = await ErnieModel.fromPretrained(path.join(FIXTURES, name))
    const prompt = [5, 77, 300, 1024, 42]
    const got = await model.generate(prompt, { maxNewTokens: 12, eosTokenIds: [] })
    t.equal(got.finishReason, 'length')
    t.same(got.tokens, await greedyReference(model, prompt, 12), 'same tokens')
    await model.dispose()
  })
}

t.test('generation with a LoRA adapter equals argmax of full forwards through the adapter', async (t) => {
  const model = await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny'))
  const adapter = await LoraAdapter.load(path.join(FIXTURES, 'ernie-tiny', 'adapter'), model)
  const prompt = [5, 77, 300, 1024, 42]
  const got = await model.generate(prompt, { maxNewTokens: 12, adapter })
  t.same(got.tokens, await greedyReference(model, prompt, 12, adapter), 'same tokens')
  t.not(got.tokens.join(), (await model.generate(prompt, { maxNewTokens: 12 })).tokens.join(), 'the adapter changes them')
  adapter.dispose()
  await model.dispose()
})

t.test('stop strings, EOS ids and an abort signal end generation where an unstopped run says', async (t) => {
  const model = await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny'))
  const tok = model.tokenizer!
  const full = await model.generate('房间很干净', { maxNewTokens: 30 })
  t.equal(full.finishReason, 'length')

  // stop: the first piece, from the middle on, that reads cleanly and is new to the text
  const m = full.tokens.findIndex((id, i) => {
    const piece = tok.decode([id])
    return i >= 5 && piece.trim().length > 0 && !piece.includes('\ufffd') && !tok.decode(full.tokens.slice(0, i)).includes(piece)
  })
  t.ok(m > 0, 'the unstopped text has a piece to stop at')
  const stop = tok.decode([full.tokens[m]])
  const stopped = await model.generate('房间很干净', { maxNewTokens: 30, stop: ['never-generated', stop] })
  t.equal(stopped.finishReason, 'stop')
  t.equal(stopped.text, full.text.slice(0, full.text.indexOf(stop)), `the text is cut before ${JSON.stringify(stop)}`)
  t.same(stopped.tokens, full.tokens.slice(0, m + 1), 'the tokens end with the one that completed it')
  const unmatched = await model.generate('房间很干净', { maxNewTokens: 30, stop: ['never-generated'] })
  t.same([unmatched.finishReason, unmatched.tokens], ['length', full.tokens], 'a stop string that never appears changes nothing')

  // EOS: the first token that differs from the first, named an end-of-sequence id
  const k = full.tokens.findIndex((id) => id !== full.tokens[0])
  t.ok(k > 0)
  const eos = await model.generate('房间很干净', { maxNewTokens: 30, eosTokenIds: [full.tokens[k]] })
  t.equal(eos.finishReason, 'eos')
  t.same(eos.tokens, full.tokens.slice(0, k), 'the tokens before it, without it')

  // abort: already aborted, nothing; aborted on the loop's first turn, during the first decode
  // steps, a shorter prefix of the same tokens
  const none = await model.generate('房间很干净', { maxNewTokens: 30, signal: AbortSignal.abort() })
  t.same([none.finishReason, none.tokens], ['aborted', []])
  const controller = new AbortController()
  setImmediate(() => controller.abort())
  const aborted = await model.generate('房间很干净', { maxNewTokens: 30, signal: controller.signal })
  t.equal(aborted.finishReason, 'aborted')
  t.ok(aborted.tokens.length >= 1 && aborted.tokens.length < full.tokens.length, `stopped after ${aborted.tokens.length} tokens`)
  t.same(aborted.tokens, full.tokens.slice(0, aborted.tokens.length), 'a prefix of the unstopped run')
  await model.dispose()
})

// Upper quantile of the chi-square distribution with df degrees of freedom (Wilson-Hilferty; z = 3.72: p = 1e-4).
function chiSquareCritical(df: number, z = 3.72): number {
  const a = 2 / (9 * df)
  return df * (1 - a + z * Math.sqrt(a)) ** 3
}

t.test('sampling draws tokens with the softmax probabilities at the temperature, within top-p', async (t) => {
  // A random model with a small vocabulary, and no tokenizer: thousands of one-token draws are quick.
  const model = tinyModel()
  const prompt = [5, 77, 200, 31, 42]
  const V = model.config.vocab_size
  const { logits } = await model.forward({ inputIds: [prompt] }, { output: ['logits'] })
  const last = Array.from(logits!.subarray((prompt.length - 1) * V))
  const draws = 1000
  let seed = 0
  // One thread: each draw is a tiny decode, and waking a pool for it costs more than it saves.
  const threads = kernels.numThreads()
  kernels.setNumThreads(1)
  t.teardown(() => kernels.setNumThreads(threads))
  for (const { temperature, nucleus } of [
    { temperature: 0.7, nucleus: V },
    { temperature: 2, nucleus: 4 },
  ]) {
    // reference: softmax(logits / T) in float64; top-p keeps the `nucleus` most likely tokens,
    // with topP halfway between the mass of the first nucleus-1 and that of the first nucleus
    const mx = Math.max(...last)
    const w = last.map((x) => Math.exp((x - mx) / temperature))
    const total = w.reduce((a, b) => a + b, 0)
    const order = [...w.keys()].sort((a, b) => w[b] - w[a])
    const mass = (n: number) => order.slice(0, n).reduce((a, i) => a + w[i] / total, 0)
    const topP = nucleus === V ? 1 : (mass(nucleus - 1) + mass(nucleus)) / 2
    const kept = order.slice(0, nucleus)
    const expected = new Map(kept.map((i) => [i, (w[i] / total / mass(nucleus)) * draws]))

    const counts = new Map<number, number>()
    for (let i = 0; i < draws; i++) {
      const [token] = (await model.generate(prompt, { maxNewTokens: 1, temperature, topP, seed: seed++ })).tokens
      counts.set(token, (counts.get(token) ?? 0) + 1)
    }
    const outside = [...counts.keys()].filter((i) => !expected.has(i))
    t.same(outside, [], `T=${temperature}, topP=${topP.toFixed(3)}: every draw is among the ${nucleus} most likely tokens`)
    // Pearson's chi-square over the tokens expected at least 5 times each, the rest pooled.
    const cells: [number, number][] = [[0, 0]]
    for (const [i, e] of expected) {
      const o = counts.get(i) ?? 0
      if (e >= 5) cells.push([o, e])
      else (cells[0][0] += o), (cells[0][1] += e)
    }
    const used = cells[0][1] >= 5 ? cells : cells.slice(1)
    const chi2 = used.reduce((a, [o, e]) => a + (o - e) ** 2 / e, 0)
    const critical = chiSquareCritical(used.length - 1)
    const tv = 0.5 * [...expected].reduce((a, [i, e]) => a + Math.abs((counts.get(i) ?? 0) - e), 0) / draws
    t.ok(chi2 < critical, `T=${temperature}: chi-square ${chi2.toFixed(1)} < ${critical.toFixed(1)} (${used.length} cells, p = 1e-4); total variation ${tv.toFixed(3)}`)
  }
  await t.rejects(model.generate([5], { maxNewTokens: 0 }), { name: 'RangeError' })
  await t.rejects(model.generate([5], { topP: 0 }), { name: 'RangeError' })
  await t.rejects(model.generate([5], { temperature: -1 }), { name: 'RangeError' })
  await t.rejects(model.generate([], {}), { name: 'RangeError', message: /empty/ })
  await t.rejects(model.generate([99999], {}), { name: 'RangeError', message: /outside the vocabulary/ })
  const a = await model.generate(prompt, { maxNewTokens: 8, temperature: 1.5, topP: 0.9, seed: 3 })
  const b = await model.generate(prompt, { maxNewTokens: 8, temperature: 1.5, topP: 0.9, seed: 3 })
  t.same(a.tokens, b.tokens, 'same seed, same tokens')
  await model.dispose()
})

t.test('sampling never picks the embedding rows past the tokenizer’s vocabulary', async (t) => {
  // A random model with twice the rows of ernie-tiny's tokenizer: at a high temperature about
  // every other draw would land past the 6000 tokens.
  const dir = tempDir(t, 'ernie-gen-')
  const random = ErnieModel.random({ ...TINY, vocab_size: 12032 }, { seed: 1 })
  await random.save(dir)
  await random.dispose()
  for (const f of ['tokenizer.model', 'tokenizer_config.json']) fs.copyFileSync(path.join(FIXTURES, 'ernie-tiny', f), path.join(dir, f))
  const model = await ErnieModel.fromPretrained(dir)
  const r = await model.generate([5, 6, 7], { maxNewTokens: 40, temperature: 50, seed: 1, eosTokenIds: [] })
  t.equal(r.tokens.length, 40)
  t.ok(Math.max(...r.tokens) < model.tokenizer!.vocabSize, `largest id ${Math.max(...r.tokens)} (the tokenizer has ${model.tokenizer!.vocabSize})`)
  t.type(r.text, 'string')
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

for (const name of ['ernie-tiny', 'qwen3-tiny']) {
  t.test(`${name}: top-k 1 samples the greedy tokens, at any temperature and seed`, async (t) => {
    const model = await ErnieModel.fromPretrained(path.join(FIXTURES, name))
    const greedy = await model.generate('房间很干净', { maxNewTokens: 16, eosTokenIds: [] })
    for (const [temperature, seed] of [[1, 0], [5, 1], [0.3, 2]]) {
      const r = await model.generate('房间很干净', { maxNewTokens: 16, eosTokenIds: [], temperature, topK: 1, seed })
      t.same(r.tokens, greedy.tokens, `T=${temperature}, seed ${seed}`)
    }
    await model.dispose()
  })
}

t.test('top-k sampling draws among the k most likely tokens only, with their softmax probabilities', async (t) => {
  const model = tinyModel()
  const prompt = [5, 77, 200, 31, 42]
  const V = model.config.vocab_size
  const { logits } = await model.forward({ inputIds: [prompt] }, { output: ['logits'] })
  const last = Array.from(logits!.subarray((prompt.length - 1) * V))
  const threads = kernels.numThreads()
  kernels.setNumThreads(1)
  t.teardown(() => kernels.setNumThreads(threads))
  // the reference: softmax(logits / T) in float64 over the k largest logits
  const k = 5, temperature = 3, draws = 1000
  const order = [...last.keys()].sort((a, b) => last[b] - last[a])
  const kept = order.slice(0, k)
  t.ok(last[order[k - 1]] > last[order[k]], 'the k-th and (k+1)-th logits differ')
  const w = kept.map((i) => Math.exp((last[i] - last[order[0]]) / temperature))
  const total = w.reduce((a, b) => a + b, 0)
  const counts = new Map<number, number>()
  for (let seed = 0; seed < draws; seed++) {
    const [token] = (await model.generate(prompt, { maxNewTokens: 1, temperature, topK: k, seed })).tokens
    counts.set(token, (counts.get(token) ?? 0) + 1)
  }
  t.same([...counts.keys()].filter((i) => !kept.includes(i)), [], `every draw is among the ${k} largest logits of forward`)
  const chi2 = kept.reduce((a, i, j) => a + ((counts.get(i) ?? 0) - (w[j] / total) * draws) ** 2 / ((w[j] / total) * draws), 0)
  const critical = chiSquareCritical(k - 1)
  t.ok(chi2 < critical, `chi-square ${chi2.toFixed(1)} < ${critical.toFixed(1)} (${k} cells, p = 1e-4)`)
  // without the limit, the same temperature goes well past the k tokens
  const wide = new Set<number>()
  for (let seed = 0; seed < 200; seed++) wide.add((await model.generate(prompt, { maxNewTokens: 1, temperature, seed })).tokens[0])
  t.ok([...wide].some((i) => !kept.includes(i)), `without topK, ${wide.size} distinct tokens`)
  await model.dispose()
})

/**
 * Greedy with CTRL's repetition penalty, without a cache: each step's logits from a full forward,
 * in float64, those of the tokens already in the sequence divided by the penalty when positive
 * and multiplied by it otherwise, then the argmax over the tokenizer's vocabulary.
 */
async function penalizedGreedyReference(model: ErnieModel, prompt: number[], steps: number, penalty: number): Promise<{ tokens: number[]; signs: Set<number> }> {
  const seq = [...prompt]
  const V = model.config.vocab_size
  const pickable = model.tokenizer?.vocabSize ?? V
  const signs = new Set<number>()
  for (let i = 0; i < steps; i++) {
    const { logits } = await model.forward({ inputIds: [seq] }, { output: ['logits'] })
    const last = Float64Array.from(logits!.subarray((seq.length - 1) * V, seq.length * V))
    for (const id of new Set(seq)) {
      signs.add(Math.sign(last[id]))
      last[id] = last[id] > 0 ? last[id] / penalty : last[id] * penalty
    }
    let best = 0
    for (let j = 1; j < pickable; j++) if (last[j] > last[best]) best = j
    seq.push(best)
  }
  return { tokens: seq.slice(prompt.length), signs }
}

for (const name of ['ernie-tiny', 'qwen3-tiny']) {
  t.test(`${name}: the repetition penalty as a full-forward reference applies it`, async (t) => {
    const model = await ErnieModel.fromPretrained(path.join(FIXTURES, name))
    const prompt = model.tokenizer!.encode('房间很干净，房间很干净，房间')
    const plain = await model.generate(prompt, { maxNewTokens: 16, eosTokenIds: [] })
    const signs = new Set<number>()
    for (const penalty of [1.5, 0.8]) {
      const ref = await penalizedGreedyReference(model, prompt, 16, penalty)
      for (const s of ref.signs) signs.add(s)
      const got = await model.generate(prompt, { maxNewTokens: 16, eosTokenIds: [], repetitionPenalty: penalty })
      t.same(got.tokens, ref.tokens, `penalty ${penalty}: the reference's tokens`)
      t.not(got.tokens.join(), plain.tokens.join(), `penalty ${penalty} changes the greedy tokens`)
    }
    t.same([...signs].sort(), [-1, 1], 'the penalised logits held positive and negative ones (divided and multiplied)')
    await model.dispose()
  })
}
