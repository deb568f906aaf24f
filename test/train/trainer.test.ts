// The Trainer on a tiny random decoder: LoRA and full fine-tuning fit 32 sequences, 8-bit AdamW
// trains, runs are deterministic for a seed, accumulation equals a larger batch, AbortSignal and
// early stopping stop the loop, progress events, data order and batching.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { ErnieModel, LoraAdapter } from '../../lib/model/index'
import { collateLm, createSchedule, epochBatches, LmTask, Trainer, type TrainProgress } from '../../lib/train/index'
import { setNumThreads } from '../../lib/kernels/index'
import { forEachIsaAndPrecision, maskedRelErr, relErr, toBf16 } from '../helpers/helpers'
import { exact as exactPreset, fp32, lossAndGrad, readConfig, readWeights, type OracleBatch, type Precision as OraclePrecision } from '../helpers/oracle'
import { FACTOR, LOSS_FLOOR, cached, goldenErr, goldenInput, lossErr, oracleBase, oraclePrecision, withinBound } from '../helpers/precision-helpers'
import type { Precision } from '../../lib/index'
import { TINY, tinyModel, tokenData } from '../helpers/trainer-helpers'

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
  for (const name of ['ernie-tiny', 'ernie-tiny-paddle', 'qwen3-tiny'] as const) {
    const model = await ErnieModel.fromPretrained(path.join(__dirname, '..', 'fixtures', name), { tokenizer: false })
    const { input, mask } = goldenInput(name)
    const V = model.config.vocab_size
    const before = new Map<string, Float32Array>()
    await forEachIsaAndPrecision(async (isa, precision) => {
      before.set(`${isa} ${precision}`, (await model.forward(input, { output: ['logits'], precision })).logits!)
    })
    const masters = model.enableFullTraining()
    t.equal(masters.size, [...model.trainableWeights.keys()].length)
    t.ok(masters.has('model.layers.1.mlp.down_proj.weight') && masters.has('model.norm.weight'), `${name}: masters under HF names`)
    t.equal(masters.has('lm_head.weight'), !model.config.tie_word_embeddings, `${name}: lm_head only when untied`)
    // The bf16 copies the engine now reads hold the checkpoint's bf16 values, stored as bf16
    // again: the same products on the same operands, so the same logits to f32 level (the fp32
    // oracle's error on them) at every precision, and still the golden's.
    const f32Level = goldenErr(name, oracleBase(name, fp32).logits, 'base.logits', V)
    await forEachIsaAndPrecision(async (isa, precision) => {
      const p = oraclePrecision(isa, precision)
      const after = (await model.forward(input, { output: ['logits'], precision })).logits!
      withinBound(t, `${name} ${isa} ${precision}: same logits`, maskedRelErr(after, before.get(`${isa} ${precision}`)!, mask, V), f32Level)
      withinBound(t, `${name} ${isa} ${precision} (oracle ${p.name}): logits vs golden`, goldenErr(name, after, 'base.logits', V), goldenErr(name, oracleBase(name, p).logits, 'base.logits', V))
    })
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

  const paddle = await ErnieModel.fromPretrained(path.join(__dirname, '..', 'fixtures', 'ernie-tiny-paddle'), { tokenizer: false })
  const hf = await ErnieModel.fromPretrained(path.join(__dirname, '..', 'fixtures', 'ernie-tiny'), { tokenizer: false })
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

t.test('gradient accumulation 2 x 4 equals batch 8 (token-weighted), at every precision', async (t) => {
  // After several AdamW steps two runs drift apart chaotically once one bf16 rounding flips (a
  // near-zero gradient element changes sign, and AdamW moves it by the full learning rate), so
  // the comparison is of what is well defined: one step's gradient. One SGD step at learning
  // rate 1 from B = 0 (PEFT's init) without clipping leaves B = -dL/dB (and A as it was: its
  // gradient is 0 while B is 0). Each run's gradient is held to the oracle's exact one within
  // 3x the oracle's error on the same computation (one batch of 8, or two of 4 combined as the
  // trainer combines them) at the same preset.
  const data = tokenData(32)
  const bigIdx = epochBatches(32, 8, 42, 0)[0]
  const microIdx = epochBatches(32, 4, 42, 0).slice(0, 2)
  t.same([...microIdx[0], ...microIdx[1]], bigIdx, 'the first step sees the same 8 examples either way')
  const items = microIdx.map((idx) => collateLm(idx.map((i) => data[i]), 0).lossItems)
  // micro-batches of unequal token counts: averaging the two means would not match
  t.not(items[0], items[1], `the first step's micro-batches hold ${items[0]} and ${items[1]} loss tokens`)

  // The oracle: the tiny model's weights (as saved), the adapter's A (seeded) and zero B.
  const model0 = tinyModel()
  const adapter0 = LoraAdapter.create(model0, { r: 8, alpha: 16, seed: 3 })
  const dir = path.join(tmp, 'accumulation-model')
  await model0.save(dir)
  const config = readConfig(dir)
  const weights = readWeights(dir, config)
  const oracleAdapter = { scale: adapter0.scale, tensors: new Map([...adapter0.tensors].map(([n, v]) => [n, Float64Array.from(v)])) }
  const bNames = [...adapter0.tensors.keys()].filter((n) => n.includes('lora_B'))
  adapter0.dispose()
  await model0.dispose()
  const oracleBatch = (idx: number[]): OracleBatch => {
    const b = collateLm(idx.map((i) => data[i]), 0)
    return { batch: b.shape[0], seq: b.shape[1], inputIds: b.inputIds, attentionMask: b.attentionMask, labels: b.labels }
  }
  const oracleStep = (batch: OracleBatch, p: OraclePrecision) => lossAndGrad(config, weights, batch, { precision: p, adapter: oracleAdapter })
  const exact = cached('accumulation|exact', () => oracleStep(oracleBatch(bigIdx), exactPreset))
  const oracleAt = (p: OraclePrecision) =>
    cached(`accumulation|${p.name}`, () => {
      const big = oracleStep(oracleBatch(bigIdx), p)
      // the trainer's combination, in f32 as it does it: (g1 n1 / n2 + g2) n2 / (n1 + n2)
      const [g1, g2] = microIdx.map((idx) => oracleStep(oracleBatch(idx), p))
      const rd = p.f32 ? Math.fround : (x: number) => x
      const total = items[0] + items[1]
      const acc = new Map(bNames.map((n) => [n, Float64Array.from(g1.grads.get(n)!, (x, i) => rd(rd(rd(x * (items[0] / items[1])) + g2.grads.get(n)![i]) * (items[1] / total)))]))
      return { big, acc }
    })

  const run = async (batchSize: number, accumulation: number, precision: Precision) => {
    const { trainer, adapter, model } = loraRun({ maxSteps: 1, batchSize, gradientAccumulationSteps: accumulation, optimizer: 'sgd', learningRate: 1, maxGradNorm: 0, precision })
    const aBefore = [...adapter.tensors].filter(([n]) => n.includes('lora_A')).map(([, v]) => v.slice())
    const r = await trainer.train()
    const aAfter = [...adapter.tensors].filter(([n]) => n.includes('lora_A')).map(([, v]) => v)
    const grads = new Map(bNames.map((n) => [n, Float64Array.from(adapter.tensors.get(n)!, (x) => -x)]))
    const aKept = aAfter.every((v, i) => v.every((x, j) => x === aBefore[i][j]))
    adapter.dispose()
    await model.dispose()
    return { r, grads, aKept }
  }

  await forEachIsaAndPrecision(async (isa, precision) => {
    const p = oraclePrecision(isa, precision)
    const what = `${isa} ${precision} (oracle ${p.name})`
    const ref = oracleAt(p)
    const big = await run(8, 1, precision), acc = await run(4, 2, precision), again = await run(4, 2, precision)
    t.equal(acc.r.tokens, big.r.tokens, `${what}: the same examples per step`)
    t.ok(big.aKept && acc.aKept, `${what}: A unchanged (its gradient is 0 at B = 0)`)
    // The same per-token losses (f32), weighted in double: f32 level apart.
    t.ok(lossErr(acc.r.lossHistory[0], big.r.lossHistory[0]) <= LOSS_FLOOR, `${what}: the step's loss ${acc.r.lossHistory[0]} vs ${big.r.lossHistory[0]}`)
    withinBound(t, `${what}: the step's loss vs the oracle's exact one`, lossErr(big.r.lossHistory[0], exact.loss), lossErr(ref.big.loss, exact.loss), LOSS_FLOOR)
    for (const [label, got, oracleGrads] of [['batch 8', big.grads, ref.big.grads], ['2 x 4', acc.grads, ref.acc]] as const) {
      let worst = 0
      for (const n of bNames) {
        const want = exact.grads.get(n)!
        const err = relErr(got.get(n)!, want), scale = relErr(oracleGrads.get(n)!, want)
        worst = Math.max(worst, err / scale)
        if (!(err <= FACTOR * scale)) t.fail(`${what} ${label} ${n}: ${err.toExponential(2)} > ${FACTOR} x ${scale.toExponential(2)}`)
      }
      t.ok(worst <= FACTOR, `${what} ${label}: every B gradient within ${worst.toFixed(2)} x the oracle's error`)
    }
    t.same(again.grads, acc.grads, `${what}: the same run twice gives the same step`)
  })
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
