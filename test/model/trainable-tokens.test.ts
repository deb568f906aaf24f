// Trainable token rows beside LoRA (PEFT's trainable_token_indices): the rows' gradients against
// the float64 oracle (test/helpers/oracle.ts) on the tied fixtures at every (ISA, precision), and
// against central differences of the engine's own loss on f32 models, tied and untied; a few
// training steps on text with new tokens change exactly those rows; PEFT's files (names from
// PEFT's source, written here by hand) load; save -> load and merge reproduce the adapter's outputs.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { ErnieModel, LoraAdapter, MemoryTensors, bf16ToF32, mapWeights, randomTensors, resolveConfig } from '../../lib/model/index'
import { Trainer, LmTask } from '../../lib/train/index'
import { saveSafetensors } from '../../lib/io/safetensors'
import type { ModelConfig } from '../../lib/model/config'
import { forEachIsaAndPrecision, readSafetensorsForTest, relErr, rng, roundBf16 } from '../helpers/helpers'
import * as oracle from '../helpers/oracle'
import { FIXTURES, LOSS_FLOOR, cached, fixture, goldenInput, lossErr, oraclePrecision, withinBound, type FixtureName } from '../helpers/precision-helpers'
import { TINY } from '../helpers/trainer-helpers'

// PEFT's names (peft/tuners/trainable_tokens/layer.py: the TrainableTokensLayer's parameter
// `trainable_tokens_delta`, wrapped as `token_adapter` by peft/utils/other.py's TrainableTokensWrapper).
const EMBED_ROWS = 'base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta'
const HEAD_ROWS = 'base_model.model.lm_head.token_adapter.trainable_tokens_delta'

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-tokens-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

/** Rows `ids` of a [rows, H] array. */
function rowsOf(table: ArrayLike<number>, ids: readonly number[], H: number): Float64Array {
  const out = new Float64Array(ids.length * H)
  ids.forEach((id, j) => {
    for (let c = 0; c < H; c++) out[j * H + c] = table[id * H + c]
  })
  return out
}

/** The two most frequent real tokens of the golden batch, and a token it does not hold (its row gets the head's gradient alone). */
function chosenIds(name: FixtureName): number[] {
  const { batch } = fixture(name)
  const counts = new Map<number, number>()
  for (let i = 0; i < batch.inputIds.length; i++) if (batch.attentionMask![i]) counts.set(batch.inputIds[i], (counts.get(batch.inputIds[i]) ?? 0) + 1)
  const frequent = [...counts].sort((a, b) => b[1] - a[1]).slice(0, 2).map(([id]) => id)
  let absent = 5990
  while (counts.has(absent)) absent++
  return [...frequent, absent]
}

for (const name of ['ernie-tiny', 'qwen3-tiny'] as const) {
  t.test(`${name}: the token rows' gradient (lookup + tied head) matches float64, at every precision`, async (t) => {
    const f = fixture(name)
    const H = f.config.hidden_size
    const ids = chosenIds(name)
    const model = await ErnieModel.fromPretrained(path.join(FIXTURES, name), { tokenizer: false })
    const { input } = goldenInput(name)
    const baseBefore = (await model.forward(input)).hidden!
    // The golden LoRA, and rows moved away from the model's so that the adapter's table matters.
    const moved = new Float32Array(ids.length * H).map((_, i) => Math.fround(f.weights.get('model.embed_tokens.weight')![ids[Math.floor(i / H)] * H + (i % H)] + 0.05 * Math.sin(i)))
    const golden = readSafetensorsForTest(path.join(FIXTURES, name, 'golden.safetensors'))
    const adapter = LoraAdapter.fromTensors(model, { r: 4, alpha: 8, trainableTokenIndices: ids }, (n) => {
      if (n === EMBED_ROWS) return { shape: [ids.length, H], data: moved }
      const g = golden.get(`lora.${n}`)
      return g && { shape: g.shape, data: g.raw as Float32Array }
    })
    t.same([...adapter.shapeOf(EMBED_ROWS)], [ids.length, H])
    // The oracle's model: the embedding (the tied head) with the rows the engine reads, the
    // adapter's rounded to the checkpoint's bf16.
    const embed = Float64Array.from(f.weights.get('model.embed_tokens.weight')!)
    ids.forEach((id, j) => {
      for (let c = 0; c < H; c++) embed[id * H + c] = roundBf16(moved[j * H + c])
    })
    const weights: oracle.Weights = new Map(f.weights)
    weights.set('model.embed_tokens.weight', embed)
    const run = (p: oracle.Precision) => cached(`tokens|${name}|${p.name}`, () => oracle.lossAndGrad(f.config, weights, f.batch, { adapter: f.adapter, precision: p }))
    const exact = run(oracle.exact)
    const want = rowsOf(exact.grads.get('model.embed_tokens.weight')!, ids, H)
    await forEachIsaAndPrecision(async (isa, precision) => {
      const p = oraclePrecision(isa, precision)
      const ref = run(p)
      const what = `${isa} ${precision} (oracle ${p.name})`
      const { loss, grads } = await model.lossAndGrad(input, { adapter, precision })
      withinBound(t, `${what} loss`, lossErr(loss, exact.loss), lossErr(ref.loss, exact.loss), LOSS_FLOOR)
      withinBound(t, `${what} token rows' gradient`, relErr(grads.get(EMBED_ROWS)!, want), relErr(rowsOf(ref.grads.get('model.embed_tokens.weight')!, ids, H), want))
      t.notOk(grads.has('model.embed_tokens.weight'), 'no [vocab, hidden] gradient')
    })
    t.same((await model.forward(input)).hidden!, baseBefore, 'the model without the adapter computes what it did: its own table is untouched')
    adapter.dispose()
    await model.dispose()
  })
}

/** A model holding f32 weights (no bf16 rounding of the rows), for central differences of its own loss. */
function f32Model(config: ModelConfig | Record<string, unknown>, tensors: Map<string, { shape: number[]; data: Float32Array | Uint16Array }>): ErnieModel {
  const cfg = resolveConfig(config)
  const f32 = new Map([...tensors].map(([n, v]) => [n, { shape: v.shape, data: v.data instanceof Float32Array ? v.data : bf16ToF32(v.data) }]))
  const source = new MemoryTensors('f32 model', f32)
  return new ErnieModel({ config: cfg, weights: mapWeights(cfg, source), source })
}

function fixtureTensors(name: FixtureName) {
  const map = new Map<string, { shape: number[]; data: Float32Array | Uint16Array }>()
  for (const [k, v] of readSafetensorsForTest(path.join(FIXTURES, name, 'model.safetensors'))) map.set(k, { shape: v.shape, data: v.raw as Uint16Array })
  return map
}

const UNTIED = { ...TINY, tie_word_embeddings: false }

const cases = [
  { what: 'ernie-tiny (tied head), f32 weights', make: () => f32Model(JSON.parse(fs.readFileSync(path.join(FIXTURES, 'ernie-tiny', 'config.json'), 'utf8')), fixtureTensors('ernie-tiny')), indices: [5, 17, 5990] as number[] | Record<string, number[]> },
  { what: 'a random untied model, f32 weights', make: () => f32Model(UNTIED, randomTensors(resolveConfig(UNTIED), { seed: 4, std: 0.3 }).tensors), indices: { embed_tokens: [5, 17, 200], lm_head: [17, 9, 201] } },
]

for (const c of cases) {
  t.test(`${c.what}: the rows' gradients equal central differences of the loss, and the rows of the full gradient`, async (t) => {
    const model = c.make()
    const H = model.config.hidden_size
    const adapter = LoraAdapter.create(model, { r: 4, trainableTokenIndices: c.indices, seed: 2 })
    // B away from zero, so the LoRA path carries gradient too
    for (const [n, v] of adapter.tensors) if (n.includes('lora_B')) v.forEach((_, i) => (v[i] = 0.05 * Math.cos(i + n.length)))
    const rowNames = [...adapter.tensors.keys()].filter((n) => n.endsWith('trainable_tokens_delta'))
    t.same(rowNames, Array.isArray(c.indices) ? [EMBED_ROWS] : [EMBED_ROWS, HEAD_ROWS], 'PEFT names; a tied head has no rows of its own')
    // Each chosen token appears (some twice); 5990 / 200 / 201 never do.
    const ids = [[5, 9, 17, 5, 33, 17, 42, 7, 11], [17, 3, 9, 9, 5, 60, 17, 2, 8]]
    const input = { inputIds: ids }
    const { loss, grads } = await model.lossAndGrad(input, { adapter, precision: 'fp32' })
    const full = await model.lossAndGrad(input, { adapter, trainBase: true, precision: 'fp32' })
    t.equal(full.loss, loss, 'the same loss with and without the base gradients')
    const tables: [string, string, number[]][] = Array.isArray(c.indices)
      ? [[EMBED_ROWS, 'model.embed_tokens.weight', c.indices]]
      : [[EMBED_ROWS, 'model.embed_tokens.weight', c.indices.embed_tokens], [HEAD_ROWS, 'lm_head.weight', c.indices.lm_head]]
    for (const [rows, table, chosen] of tables) {
      // Two summation orders of the same f32 products (the chosen rows' own product, the whole
      // table's): a few f32 roundings apart.
      const err = relErr(grads.get(rows)!, rowsOf(full.grads.get(table)!, chosen, H))
      t.ok(err < 1e-6, `${rows}: the rows of ${table}'s full gradient (${err.toExponential(2)})`)
    }
    // DPO's per-row weighted loss: its head part goes to the rows too.
    const targets = Int32Array.from(ids.flat(), (_, i) => (i % 9 < 8 ? ids.flat()[i + 1] : -1))
    const objective = { kind: 'weightedRows' as const, targets, rowWeights: Float64Array.from([0.7, -1.3]) }
    const rowsDpo = await model.lossAndGrad(input, { adapter, precision: 'fp32', objective })
    const fullDpo = await model.lossAndGrad(input, { adapter, trainBase: true, precision: 'fp32', objective })
    for (const [rows, table, chosen] of tables) {
      const err = relErr(rowsDpo.grads.get(rows)!, rowsOf(fullDpo.grads.get(table)!, chosen, H))
      t.ok(err < 1e-6, `weightedRows objective: ${rows} = the rows of ${table}'s full gradient (${err.toExponential(2)})`)
    }
    for (const name of rowNames) {
      const rows = adapter.tensors.get(name)!
      const g = grads.get(name)!
      // The directional derivative along a random unit direction u, against (L(x + eps u) - L(x - eps u)) / 2 eps.
      const r = rng(name.length)
      const u = Float64Array.from(rows, () => r() - 0.5)
      const norm = Math.hypot(...u)
      u.forEach((_, i) => (u[i] /= norm))
      const analytic = g.reduce((s, gi, i) => s + gi * u[i], 0)
      const at = async (step: number) => {
        const saved = Float32Array.from(rows)
        rows.forEach((_, i) => (rows[i] += step * u[i]))
        const l = (await model.loss(input, { adapter, precision: 'fp32' })).loss
        rows.set(saved)
        return l
      }
      const central = async (eps: number) => ((await at(eps)) - (await at(-eps))) / (2 * eps)
      // Richardson's extrapolation of central differences at eps and eps / 2 cancels their eps^2
      // truncation error; what is left is the loss's rounding: with each loss within delta (four
      // f32 ulps of L, 2^-22 L), the estimate is within 3 delta / eps.
      const eps = 2e-2
      const numeric = (4 * (await central(eps / 2)) - (await central(eps))) / 3
      const noise = (3 * 2 ** -22 * loss) / eps
      const allowed = 1e-4 * Math.abs(analytic) + noise
      t.ok(Math.abs(numeric - analytic) <= allowed, `${name}: analytic ${analytic.toExponential(6)}, numeric ${numeric.toExponential(6)} (allowed ${allowed.toExponential(1)})`)
      t.ok(Math.abs(analytic) > 20 * noise, `the derivative (${analytic.toExponential(2)}) stands well above the rounding noise (${noise.toExponential(1)})`)
    }
    adapter.dispose()
    await model.dispose()
  })
}

t.test('on the checked backend (a device-like memory wall) the rows\' gradients are the CPU\'s', async (t) => {
  for (const [config, indices] of [[TINY, [5, 9]], [UNTIED, { embed_tokens: [5, 9], lm_head: [9, 11] }]] as const) {
    const run = async () => {
      const model = ErnieModel.random(config, { seed: 3, std: 0.3 })
      const adapter = LoraAdapter.create(model, { r: 2, trainableTokenIndices: indices as never, seed: 1 })
      const r = await model.lossAndGrad({ inputIds: [[5, 9, 3, 5, 11, 9, 4]] }, { adapter, precision: 'fp32' })
      adapter.dispose()
      await model.dispose()
      return r.grads
    }
    const cpu = await run()
    process.env.ERNIE_CHECKED_BACKEND = '1'
    let checked: Map<string, Float32Array>
    try {
      checked = await run()
    } finally {
      delete process.env.ERNIE_CHECKED_BACKEND
    }
    for (const [name, g] of cpu) if (name.endsWith('trainable_tokens_delta')) t.same(checked.get(name), g, `${config.tie_word_embeddings ? 'tied' : 'untied'} ${name}`)
  }
})

t.test('a few LoRA steps on text with new tokens change exactly their rows; save -> load and merge reproduce the adapter', async (t) => {
  const dir = path.join(FIXTURES, 'ernie-tiny')
  const grown = () => ErnieModel.fromPretrained(dir, { tokenizer: false, resizeTokenEmbeddings: 6018 })
  const model = await grown()
  const H = model.config.hidden_size
  const [open, close] = [6016, 6017] // the markers the grown vocabulary adds
  const embedBefore = Uint16Array.from(model.weights.embed.data as Uint16Array)
  const adapter = LoraAdapter.create(model, { r: 4, alpha: 8, trainableTokenIndices: [open, close], seed: 7 })
  const initial = Float32Array.from(adapter.tensors.get(EMBED_ROWS)!)
  t.same(initial, bf16ToF32(embedBefore.slice(open * H, (close + 1) * H)), 'the rows start as the model\'s (the grown rows)')
  const r = rng(11)
  const train = Array.from({ length: 16 }, () => ({ inputIds: [open, ...Array.from({ length: 6 }, () => 100 + Math.floor(r() * 50)), close, open] }))
  const task = new LmTask(model, { train, adapter })
  const out = await new Trainer(task, { batchSize: 4, learningRate: 2e-2, schedule: 'constant', maxSteps: 12, outputDir: path.join(tmp, 'run'), saveSteps: 12 }).train()
  t.ok(out.finalLoss < out.lossHistory[0], `the loss falls (${out.lossHistory[0].toFixed(3)} -> ${out.finalLoss.toFixed(3)})`)
  const trained = adapter.tensors.get(EMBED_ROWS)!
  t.ok(relErr(trained, initial) > 1e-3, `the rows trained (moved ${relErr(trained, initial).toExponential(2)})`)
  t.same(model.weights.embed.data, embedBefore, 'the model\'s own embedding is untouched')
  // the Trainer's checkpoint is a PEFT directory holding the rows
  const ckpt = out.checkpoints.at(-1)!
  const saved = readSafetensorsForTest(path.join(ckpt, 'adapter_model.safetensors')).get(EMBED_ROWS)!
  t.same([saved.dtype, saved.shape], ['F32', [2, H]])
  t.same(saved.raw, trained, 'the checkpoint holds the trained rows')

  const probe = { inputIds: [[open, 120, 130, close, open, 140], [7, open, 9, close, 11, 12]] }
  const withAdapter = (await model.forward(probe, { output: ['logits'], adapter, precision: 'fp32' })).logits!

  // save -> load: PEFT's config and names, the same outputs
  await adapter.save(path.join(tmp, 'adapter'))
  const config = JSON.parse(fs.readFileSync(path.join(tmp, 'adapter', 'adapter_config.json'), 'utf8'))
  t.same(config.trainable_token_indices, { embed_tokens: [open, close] })
  const other = await grown()
  const loaded = await LoraAdapter.load(path.join(tmp, 'adapter'), other)
  t.same(loaded.tensors.get(EMBED_ROWS), trained)
  t.same((await other.forward(probe, { output: ['logits'], adapter: loaded, precision: 'fp32' })).logits, withAdapter, 'the loaded adapter gives the same logits')

  // merge: the rows, rounded to the checkpoint's bf16, replace exactly the two new rows
  const bare = LoraAdapter.create(other, { r: 4, trainableTokenIndices: [open, close] })
  bare.tensors.get(EMBED_ROWS)!.set(trained) // the trained rows with a LoRA that does nothing (B = 0)
  const rowsOn = (await other.forward(probe, { output: ['logits'], adapter: bare, precision: 'fp32' })).logits!
  await other.mergeAdapter(bare)
  const merged = other.weights.embed.data as Uint16Array
  const changed = new Set<number>()
  for (let i = 0; i < merged.length; i++) if (merged[i] !== embedBefore[i]) changed.add(Math.floor(i / H))
  t.same([...changed].sort(), [open, close], 'the merged embedding differs from the base in the two new rows only')
  t.same(bf16ToF32(merged.slice(open * H, (close + 1) * H)), trained.map(roundBf16), 'those rows are the trained ones, rounded to bf16')
  t.same((await other.forward(probe, { output: ['logits'], precision: 'fp32' })).logits, rowsOn, 'the merged model computes what the adapter did (at fp32: the same products)')
  for (const a of [adapter, loaded, bare]) a.dispose()
  await other.dispose()
  await model.dispose()
})

t.test("PEFT's files, written by hand: the list form and an untied head's rows load back", async (t) => {
  const model = ErnieModel.random(UNTIED, { seed: 5, std: 0.3 })
  const H = model.config.hidden_size
  const write = async (name: string, indices: unknown, tensors: Record<string, number[][]>) => {
    const d = path.join(tmp, name)
    fs.mkdirSync(d, { recursive: true })
    const config = { peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 2, lora_alpha: 4, target_modules: ['q_proj'], trainable_token_indices: indices }
    fs.writeFileSync(path.join(d, 'adapter_config.json'), JSON.stringify(config))
    const all: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {}
    for (let l = 0; l < TINY.num_hidden_layers; l++) {
      all[`base_model.model.model.layers.${l}.self_attn.q_proj.lora_A.weight`] = { dtype: 'F32', shape: [2, H], data: new Float32Array(2 * H).fill(0.01) }
      all[`base_model.model.model.layers.${l}.self_attn.q_proj.lora_B.weight`] = { dtype: 'F32', shape: [64, 2], data: new Float32Array(128) }
    }
    for (const [n, rows] of Object.entries(tensors)) all[n] = { dtype: 'F32', shape: [rows.length, H], data: Float32Array.from(rows.flat()) }
    await saveSafetensors(path.join(d, 'adapter_model.safetensors'), all, { format: 'pt' })
    return d
  }
  const row = (k: number) => Array.from({ length: H }, (_, c) => Math.fround(Math.sin(k * 7 + c) * 0.3))
  const list = await LoraAdapter.load(await write('list', [10, 12], { [EMBED_ROWS]: [row(1), row(2)] }), model)
  t.same(list.trainableTokens, { embed_tokens: [10, 12], lm_head: [], tiedHead: false }, 'a list names the input embedding')
  t.same(Array.from(list.tensors.get(EMBED_ROWS)!), [...row(1), ...row(2)])
  const both = await LoraAdapter.load(await write('dict', { 'model.embed_tokens': [10], lm_head: [12, 13] }, { [EMBED_ROWS]: [row(3)], [HEAD_ROWS]: [row(4), row(5)] }), model)
  t.same(both.trainableTokens, { embed_tokens: [10], lm_head: [12, 13], tiedHead: false })
  // The head's rows are what the logits read: token 12's logit at each position is h . row(4),
  // the row as the model's bf16 table holds it, from the forward's own final hidden states h.
  const f = await model.forward({ inputIds: [[3, 10, 4]] }, { output: ['hidden', 'logits'], adapter: both, precision: 'fp32' })
  const V = model.config.vocab_size
  for (let p = 0; p < 3; p++) {
    const h = f.hidden!.subarray(p * H, (p + 1) * H)
    const want = row(4).reduce((s, w, c) => s + roundBf16(w) * h[c], 0)
    t.ok(Math.abs(f.logits![p * V + 12] - want) <= 1e-5 * (1 + Math.abs(want)), `position ${p}: logit of 12 = h . its trained head row`)
  }
  // what PEFT's config says must be in the file
  await t.rejects(LoraAdapter.load(await write('missing', [10, 12], {}), model), { code: 'ERR_ADAPTER', message: /missing tensor "base_model\.model\.model\.embed_tokens\.token_adapter\.trainable_tokens_delta"/ })
  await t.rejects(LoraAdapter.load(await write('short', [10, 12], { [EMBED_ROWS]: [row(1)] }), model), { code: 'ERR_ADAPTER', message: /has shape \[1, 64\], its 2 token ids need \[2, 64\]/ })
  await t.rejects(LoraAdapter.load(await write('extra', [10], { [EMBED_ROWS]: [row(1)], [HEAD_ROWS]: [row(2)] }), model), { code: 'ERR_ADAPTER', message: /lm_head\.token_adapter\.trainable_tokens_delta" is not a LoRA matrix/ })
  await t.rejects(LoraAdapter.load(await write('bad-id', [10, 999], { [EMBED_ROWS]: [row(1), row(2)] }), model), { message: /adapter_config\.json: trainableTokenIndices\[1\] = 999 is not a token id of the vocabulary \[0, 256\)/ })
  list.dispose()
  both.dispose()
  await model.dispose()
})

t.test('bad trainableTokenIndices are typed errors naming the fault', async (t) => {
  const tied = ErnieModel.random(TINY, { seed: 1 })
  const untied = ErnieModel.random(UNTIED, { seed: 1 })
  t.throws(() => LoraAdapter.create(tied, { trainableTokenIndices: [3, 3] }), { name: 'RangeError', message: /names token 3 twice/ })
  t.throws(() => LoraAdapter.create(tied, { trainableTokenIndices: [256] }), { name: 'RangeError', message: /trainableTokenIndices\[0\] = 256 is not a token id of the vocabulary \[0, 256\)/ })
  t.throws(() => LoraAdapter.create(tied, { trainableTokenIndices: [] }), { name: 'TypeError', message: /non-empty array/ })
  t.throws(() => LoraAdapter.create(tied, { trainableTokenIndices: { lm_head: [3] } }), { name: 'RangeError', message: /LM head is its embedding \(tied\)/ })
  t.throws(() => LoraAdapter.create(untied, { trainableTokenIndices: { 'model.norm': [3] } as never }), { name: 'RangeError', message: /names "model\.norm"; only embed_tokens and lm_head/ })
  t.throws(() => LoraAdapter.create({ config: tied.config }, { trainableTokenIndices: [3] }), { name: 'TypeError', message: /needs the model's weights/ })
  // An adapter without token rows is as before: no tables, no rows in its files.
  const plain = LoraAdapter.create(tied, { r: 2 })
  t.same(plain.trainableTokens.embed_tokens, [])
  t.notOk('trainable_token_indices' in plain.peftConfig())
  plain.dispose()
  await tied.dispose()
  await untied.dispose()
})
