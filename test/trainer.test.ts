// The Trainer on a tiny random decoder: LoRA and full fine-tuning fit 32 sequences, 8-bit AdamW
// trains, runs are deterministic for a seed, accumulation equals a larger batch, AbortSignal and
// early stopping stop the loop, progress events, data order and batching.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { ErnieModel, LoraAdapter } from '../lib/model/index'
import { collateLm, createSchedule, epochBatches, LmTask, Trainer, type TrainProgress } from '../lib/train/index'
import { setNumThreads } from '../lib/kernels/index'
import { relErr, toBf16 } from './helpers'
import { TINY, tinyModel, tokenData } from './trainer-helpers'

setNumThreads(1)
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-trainer-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

function loraRun(options: ConstructorParameters<typeof Trainer>[1] & { data?: number; adapterSeed?: number }) {
  const model = tinyModel()
  const adapter = LoraAdapter.create(model, { r: 8, alpha: 16, seed: options.adapterSeed ?? 3 })
  const task = new LmTask(model, { train: tokenData(options.data ?? 32), eval: tokenData(8, 99), adapter })
  return { model, adapter, task, trainer: new Trainer(task, { batchSize: 8, learningRate: 1e-2, schedule: 'constant', ...options }) }
}

t.test('LoRA: a small model fits 32 sequences to near-zero loss', async (t) => {
  const { trainer, adapter, model } = loraRun({ maxSteps: 160 })
  const r = await trainer.train()
  t.equal(r.steps, 160)
  t.equal(r.stopReason, 'completed')
  t.equal(r.lossHistory.length, 160)
  t.ok(r.lossHistory[0] > 3, `starts high (${r.lossHistory[0].toFixed(3)})`)
  t.ok(r.finalLoss < 0.1, `final loss ${r.finalLoss.toFixed(4)} < 0.1`)
  t.equal(r.epoch, 40, '160 steps of 4 batches per epoch: 40 epochs')
  t.equal(r.tokens, 40 * tokenData(32).reduce((a, e) => a + e.inputIds.length, 0), 'every token counted once per epoch')
  adapter.dispose()
  await model.dispose()
})

t.test('full fine-tuning (bf16 compute, fp32 masters) fits the same data; frozen weights stay put', async (t) => {
  const model = tinyModel()
  const frozenBefore = model.weights.layers[0].q.data.slice()
  const task = new LmTask(model, { train: tokenData(32), fullTraining: { freeze: [/layers\.0\.self_attn\.q_proj/] } })
  t.notOk(model.trainableWeights.has('model.layers.0.self_attn.q_proj.weight'), 'the frozen weight has no master')
  t.ok(model.trainableWeights.has('model.layers.1.self_attn.q_proj.weight'))
  t.ok(model.trainableWeights.has('model.embed_tokens.weight'))
  t.equal(model.computeWeights.size, model.trainableWeights.size, 'a bf16 copy for each master')
  const r = await new Trainer(task, { batchSize: 8, learningRate: 3e-3, schedule: 'constant', maxSteps: 150 }).train()
  t.ok(r.finalLoss < 0.1, `final loss ${r.finalLoss.toFixed(4)} < 0.1 (from ${r.lossHistory[0].toFixed(3)})`)
  t.same(model.weights.layers[0].q.data, frozenBefore, 'the frozen projection did not change')
  const master = model.trainableWeights.get('model.layers.1.mlp.up_proj.weight')!
  const copy = model.computeWeights.get('model.layers.1.mlp.up_proj.weight')!
  t.equal(model.weights.layers[1].up.data, copy, 'the engine reads the bf16 copy')
  t.same(Array.from(copy), Array.from(toBf16(master)), 'the copy is the master rounded to bf16')
  // no gradient buffer for the frozen weight
  const { grads } = await model.lossAndGrad({ inputIds: [[3, 4, 5, 6]] }, { trainBase: true })
  t.notOk(grads.has('model.layers.0.self_attn.q_proj.weight'))
  t.equal(grads.size, model.trainableWeights.size)

  // the trained model saves as a standalone checkpoint with the same outputs
  const dir = path.join(tmp, 'full-save')
  await model.save(dir)
  const back = await ErnieModel.fromPretrained(dir)
  const input = { inputIds: [tokenData(1)[0].inputIds as number[]] }
  const [a, b] = [await model.forward(input), await back.forward(input)]
  t.same(Array.from(b.hidden!), Array.from(a.hidden!), 'reloaded checkpoint gives the same hidden states')
  t.throws(() => model.enableFullTraining(), { code: 'ERR_STATE' })
  await back.dispose()
  await model.dispose()
})

t.test('enableFullTraining keeps the outputs: HF and Paddle layouts, Qwen3 q/k norms, untied heads', async (t) => {
  for (const name of ['ernie-tiny', 'ernie-tiny-paddle', 'qwen3-tiny']) {
    const model = await ErnieModel.fromPretrained(path.join(__dirname, 'fixtures', name), { tokenizer: false })
    const input = { inputIds: [[5, 17, 200, 3, 99, 1000, 42]] }
    const before = await model.forward(input, { output: ['hidden', 'logits'] })
    const masters = model.enableFullTraining()
    t.equal(masters.size, [...model.trainableWeights.keys()].length)
    t.ok(masters.has('model.layers.1.mlp.down_proj.weight') && masters.has('model.norm.weight'), `${name}: masters under HF names`)
    t.equal(masters.has('lm_head.weight'), !model.config.tie_word_embeddings, `${name}: lm_head only when untied`)
    const after = await model.forward(input, { output: ['hidden', 'logits'] })
    const err = relErr(after.logits!, before.logits!)
    t.ok(err < 1e-5, `${name}: same logits (${err.toExponential(2)})`)
    // the master of a projection is its [out, in] matrix, whatever the checkpoint layout
    const q = masters.get('model.layers.0.self_attn.q_proj.weight')!
    t.equal(q.length, model.config.num_attention_heads * model.config.head_dim * model.config.hidden_size)
    await model.dispose()
  }
  const untied = ErnieModel.random({ ...TINY, tie_word_embeddings: false }, { seed: 4 })
  const input = { inputIds: [[5, 17, 200, 3]] }
  const before = await untied.forward(input, { output: ['logits'] })
  untied.enableFullTraining({ freeze: [/embed_tokens/] })
  t.ok(untied.trainableWeights.has('lm_head.weight') && !untied.trainableWeights.has('model.embed_tokens.weight'), 'untied: the head trains, the frozen embedding does not')
  t.equal(relErr((await untied.forward(input, { output: ['logits'] })).logits!, before.logits!), 0, 'untied: same logits')
  const { grads } = await untied.lossAndGrad(input, { trainBase: true })
  t.ok(grads.get('lm_head.weight')!.some((x) => x !== 0) && !grads.has('model.embed_tokens.weight'), 'untied: a head gradient, no embedding gradient')
  await untied.dispose()

  const paddle = await ErnieModel.fromPretrained(path.join(__dirname, 'fixtures', 'ernie-tiny-paddle'), { tokenizer: false })
  const hf = await ErnieModel.fromPretrained(path.join(__dirname, 'fixtures', 'ernie-tiny'), { tokenizer: false })
  paddle.enableFullTraining()
  hf.enableFullTraining()
  for (const [n, w] of hf.trainableWeights) {
    const p = paddle.trainableWeights.get(n)!
    t.ok(Buffer.from(p.buffer).equals(Buffer.from(w.buffer)), `${n}: the Paddle checkpoint's master equals the HF one`)
  }
  await paddle.dispose()
  await hf.dispose()
})

t.test('8-bit AdamW trains the tiny model (blockwise state on the large tensors)', async (t) => {
  const model = tinyModel()
  const task = new LmTask(model, { train: tokenData(32), fullTraining: { compute: 'f32' } })
  t.equal(model.computeWeights.size, 0, 'f32 compute: the engine reads the masters')
  t.equal(model.weights.embed.data, model.trainableWeights.get('model.embed_tokens.weight'))
  const r = await new Trainer(task, { batchSize: 8, learningRate: 3e-3, schedule: 'cosine', warmupSteps: 5, maxSteps: 120, optimizer: 'adamw8bit' }).train()
  t.ok(r.finalLoss < 0.2, `final loss ${r.finalLoss.toFixed(4)} < 0.2 (from ${r.lossHistory[0].toFixed(3)})`)
  t.equal(r.skippedSteps, 0)
  await model.dispose()
})

t.test('deterministic for a seed; another seed changes the order and the curve', async (t) => {
  const run = async (seed: number) => {
    const { trainer, adapter, model } = loraRun({ maxSteps: 12, seed, groupByLength: true })
    const r = await trainer.train()
    const state = [...adapter.tensors.values()].map((x) => Buffer.from(x.buffer))
    adapter.dispose()
    await model.dispose()
    return { r, state }
  }
  const a = await run(7), b = await run(7), c = await run(8)
  t.same(b.r.lossHistory, a.r.lossHistory, 'same seed: identical loss curve')
  t.ok(a.state.every((x, i) => x.equals(b.state[i])), 'same seed: identical adapter')
  t.notSame(c.r.lossHistory, a.r.lossHistory, 'another seed: another curve')
})

t.test('gradient accumulation 2 x 4 equals batch 8 (token-weighted)', async (t) => {
  const norms = (events: TrainProgress[]) => events.map((e) => e.gradNorm)
  const run = async (batchSize: number, accumulation: number) => {
    const events: TrainProgress[] = []
    const { trainer, adapter, model } = loraRun({ maxSteps: 8, batchSize, gradientAccumulationSteps: accumulation, learningRate: 5e-3, onProgress: (e) => events.push(e) })
    const r = await trainer.train()
    const params = [...adapter.tensors.values()].map((x) => x.slice())
    adapter.dispose()
    await model.dispose()
    return { r, events, params }
  }
  const big = await run(8, 1), acc = await run(4, 2), equal = await run(4, 2)
  t.equal(acc.r.steps, 8)
  t.equal(acc.r.tokens, big.r.tokens, 'the same examples per step')
  const lossErr = relErr(acc.r.lossHistory, big.r.lossHistory)
  t.ok(lossErr < 1e-5, `loss curves agree: ${lossErr.toExponential(2)}`)
  const normErr = relErr(norms(acc.events), norms(big.events))
  t.ok(normErr < 1e-5, `gradient norms agree: ${normErr.toExponential(2)}`)
  const paramErr = relErr(acc.params.flatMap((x) => Array.from(x)), big.params.flatMap((x) => Array.from(x)))
  t.ok(paramErr < 1e-4, `parameters agree after 8 steps: ${paramErr.toExponential(2)}`)
  t.same(equal.r.lossHistory, acc.r.lossHistory)
  // micro-batches of unequal token counts: averaging the two means would not match
  const first = epochBatches(32, 4, 42, 0)
  const items = first.slice(0, 2).map((idx) => collateLm(idx.map((i) => tokenData(32)[i]), 0).lossItems)
  t.not(items[0], items[1], `the first step's micro-batches hold ${items[0]} and ${items[1]} loss tokens`)
})

t.test('AbortSignal stops between steps and returns what was done', async (t) => {
  const controller = new AbortController()
  const { trainer, model, adapter } = loraRun({ maxSteps: 50, onProgress: (e) => e.step === 3 && controller.abort(), signal: controller.signal })
  const r = await trainer.train()
  t.equal(r.stopReason, 'aborted')
  t.equal(r.steps, 3)
  t.equal(r.lossHistory.length, 3)
  const pre = new AbortController()
  pre.abort()
  const again = await new Trainer(trainer.task, { signal: pre.signal, maxSteps: 5 }).train()
  t.equal(again.steps, 0)
  t.equal(again.stopReason, 'aborted')
  t.ok(Number.isNaN(again.finalLoss))
  adapter.dispose()
  await model.dispose()
})

t.test('evaluation and early stopping with patience', async (t) => {
  // scripted metrics: improve, improve, then worse three times
  const { task, model, adapter } = loraRun({})
  const script = [1, 0.5, 0.6, 0.7, 0.8, 0.9]
  let calls = 0
  task.evaluate = async () => ({ loss: script[calls++] })
  const events: TrainProgress[] = []
  const r = await new Trainer(task, { maxSteps: 20, evalSteps: 2, earlyStoppingPatience: 2, learningRate: 1e-3, onProgress: (e) => events.push(e) }).train()
  t.equal(r.stopReason, 'earlyStopping')
  t.equal(r.steps, 8, 'evaluations at steps 2, 4, 6, 8: the 4th is the second without improvement')
  t.equal(r.bestMetric, 0.5)
  t.equal(r.bestStep, 4)
  t.same(r.evalHistory.map((e) => e.step), [2, 4, 6, 8])
  t.same(events.filter((e) => e.metrics).map((e) => e.step), [2, 4, 6, 8], 'metrics arrive with the progress event')

  // greater is better for accuracy-like metrics
  calls = 0
  const acc = [0.5, 0.7, 0.6, 0.65, 0.9]
  task.evaluate = async () => ({ accuracy: acc[calls++], loss: 0 })
  const r2 = await new Trainer(task, { maxSteps: 10, evalSteps: 1, earlyStoppingPatience: 2, metricForBestModel: 'accuracy' }).train()
  t.equal(r2.steps, 4)
  t.equal(r2.bestMetric, 0.7)

  // the real evaluation: token-weighted loss and perplexity on the eval set
  delete (task as { evaluate?: unknown }).evaluate
  const m = await LmTask.prototype.evaluate.call(task)
  t.ok(m.loss > 0 && Math.abs(m.perplexity - Math.exp(m.loss)) < 1e-9 * m.perplexity, `eval loss ${m.loss.toFixed(3)}`)
  let sum = 0, count = 0
  for (const e of tokenData(8, 99)) {
    const one = await model.loss({ inputIds: [e.inputIds as number[]] }, { adapter })
    sum += one.loss * one.count
    count += one.count
  }
  t.ok(Math.abs(m.loss - sum / count) < 1e-5, 'equals the token-weighted mean over examples')
  adapter.dispose()
  await model.dispose()
})

t.test('progress events: step, epoch, loss, lr, grad norm, tokens/s, ETA', async (t) => {
  const events: TrainProgress[] = []
  const { trainer, model, adapter } = loraRun({ maxSteps: 6, schedule: 'linear', warmupSteps: 2, learningRate: 1e-2, onProgress: (e) => events.push(e) })
  const r = await trainer.train()
  const sched = createSchedule({ kind: 'linear', lr: 1e-2, totalSteps: 6, warmupSteps: 2 })
  t.same(events.map((e) => e.step), [1, 2, 3, 4, 5, 6])
  t.same(events.map((e) => e.lr), [0, 1, 2, 3, 4, 5].map((s) => sched.at(s)), 'lr of each step from the schedule')
  t.same(events.map((e) => e.loss), r.lossHistory)
  t.same(events.map((e) => e.epoch), [0.25, 0.5, 0.75, 1, 1.25, 1.5])
  t.ok(events.every((e) => e.gradNorm > 0 && e.tokensPerSecond > 0 && e.totalSteps === 6 && e.elapsedSeconds > 0))
  t.equal(events[5].etaSeconds, 0)
  t.ok(events[0].etaSeconds > 0)
  adapter.dispose()
  await model.dispose()
  const solo = loraRun({ maxSteps: 1, schedule: 'linear', warmupSteps: 1 })
  await solo.trainer.train()
  t.ok([...solo.adapter.tensors].filter(([n]) => n.includes('lora_B')).every(([, x]) => x.every((v) => v === 0)), 'warmup step 0 has lr 0: B stays zero')
  solo.adapter.dispose()
  await solo.model.dispose()
})

t.test('data order: every example once per epoch; length grouping cuts padding', async (t) => {
  const data = tokenData(200, 11)
  const lengths = data.map((e) => e.inputIds.length)
  for (const grouped of [false, true]) {
    const batches = epochBatches(200, 8, 1, 0, grouped ? lengths : undefined)
    t.same(batches.flat().sort((a, b) => a - b), Array.from({ length: 200 }, (_, i) => i), `each index once (grouped ${grouped})`)
    t.same(batches, epochBatches(200, 8, 1, 0, grouped ? lengths : undefined), 'a function of (seed, epoch)')
    t.notSame(batches, epochBatches(200, 8, 1, 1, grouped ? lengths : undefined), 'another epoch, another order')
  }
  const padding = (batches: number[][]) => batches.reduce((s, b) => s + b.length * Math.max(...b.map((i) => lengths[i])) - b.reduce((a, i) => a + lengths[i], 0), 0)
  const plain = padding(epochBatches(200, 8, 1, 0)), grouped = padding(epochBatches(200, 8, 1, 0, lengths))
  t.ok(grouped < plain / 3, `padding tokens: ${grouped} grouped vs ${plain} shuffled`)
})

t.test('LmTask: right padding, masks, -100 labels, loss items', async (t) => {
  const b = collateLm([{ inputIds: [5, 6, 7] }, { inputIds: [8, 9], labels: [-100, 9] }, { inputIds: [1, 2, 3, 4, 5] }], 0, 4)
  t.same(b.shape, [3, 4])
  t.same(Array.from(b.inputIds), [5, 6, 7, 0, 8, 9, 0, 0, 1, 2, 3, 4])
  t.same(Array.from(b.attentionMask), [1, 1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 1])
  t.same(Array.from(b.labels), [5, 6, 7, -100, -100, 9, -100, -100, 1, 2, 3, 4])
  t.equal(b.tokens, 9)
  t.equal(b.lossItems, 2 + 1 + 3)
  const model = tinyModel()
  const adapter = LoraAdapter.create(model, { r: 2 })
  const task = new LmTask(model, { train: tokenData(4), adapter })
  const r = await task.lossAndGrad(b, new Map())
  t.equal(r.count, b.lossItems, 'the engine counts the same loss tokens')
  t.throws(() => new LmTask(model, { train: tokenData(4) }), { message: /nothing to train/ })
  t.throws(() => new LmTask(model, { train: [{ inputIds: [1, 256] }], adapter }), { name: 'RangeError', message: /train\[0\]\.inputIds\[1\] = 256/ })
  t.throws(() => new LmTask(model, { train: [{ inputIds: [1, 2], labels: [1] }], adapter }), { message: /labels has 1 entries/ })
  t.throws(() => new LmTask(model, { train: [{ inputIds: [] }], adapter }), TypeError)
  t.throws(() => new Trainer(task, { batchSize: 0 }), RangeError)
  t.throws(() => new Trainer(task, { gradientAccumulationSteps: 1.5 }), RangeError)
  t.throws(() => new Trainer(task, { earlyStoppingPatience: 2 }), RangeError)
  t.throws(() => new Trainer(task, { saveSteps: 5 }), { message: /need outputDir/ })
  t.throws(() => new Trainer(task, { learningRate: -1 }), RangeError)
  t.throws(() => new Trainer({ ...task, evaluate: undefined, examples: () => [], params: task.params, collate: task.collate, lossAndGrad: task.lossAndGrad }, { evalSteps: 1 }), TypeError)
  await t.rejects(new Trainer({ examples: () => [], params: () => task.params(), collate: (x) => x, lossAndGrad: async () => ({ loss: 0 }) }).train(), { message: /no training examples/ })
  adapter.dispose()
  await model.dispose()
})
