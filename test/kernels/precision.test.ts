// The precision as users choose it (README "Precision"): the option, ERNIE_PRECISION, and what
// each layer does with it: the model's calls, the Trainer, the classifier (saved and loaded with
// its record), the command line. The numbers themselves are checked against float64 elsewhere
// (gemm.test.ts, model.test.ts, train-golden.test.ts); here: that the choice reaches the engine.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier, ErnieModel, kernels, LmTask, LoraAdapter, Trainer, precisionInForce } from '../../lib/index'
import { readTsv, runMain, tempDir, tinyRandomModel, TINY, TRAIN } from '../helpers/classifier-helpers'
import { relErr } from '../helpers/helpers'

const bf16Dot = kernels.activeIsa() === 'avx512bf16'
const ids = { data: Int32Array.from({ length: 2 * 20 }, (_, i) => (i * 7919 + 3) % 6016), shape: [2, 20] as [number, number] }

// Runs fn with ERNIE_PRECISION set to `value` (or unset), restoring it after.
async function withEnv<T>(value: string | undefined, fn: () => Promise<T> | T): Promise<T> {
  const saved = process.env.ERNIE_PRECISION
  if (value === undefined) delete process.env.ERNIE_PRECISION
  else process.env.ERNIE_PRECISION = value
  try {
    return await fn()
  } finally {
    if (saved === undefined) delete process.env.ERNIE_PRECISION
    else process.env.ERNIE_PRECISION = saved
  }
}

t.test('a model: the option, ERNIE_PRECISION, per-call overrides; bad values name their source', async (t) => {
  const model = await withEnv(undefined, () => tinyRandomModel(2))
  t.teardown(() => model.dispose())
  t.equal(model.precision, 'auto', "'auto' without option or ERNIE_PRECISION")
  const run = async (precision?: 'fp32' | 'bf16' | 'auto') => (await model.forward({ inputIds: ids }, { precision })).hidden!
  const fp32 = await run('fp32'), bf16 = await run('bf16'), auto = await run('auto')
  const apart = relErr(bf16, fp32)
  t.ok(apart > 1e-5, `fp32 and bf16 compute differently: ${apart.toExponential(2)} apart`)
  if (bf16Dot) {
    // 'auto' rounds the weight products as 'bf16' does, but not attention's (f32 x f32)
    t.ok(relErr(auto, fp32) > 1e-5 && relErr(auto, bf16) > 1e-5, `'auto' is '${precisionInForce('auto')}' for the weight products on ${kernels.activeIsa()}, fp32 for attention: neither fp32 nor bf16 throughout`)
  } else {
    t.same(auto, fp32, `'auto' is '${precisionInForce('auto')}' on ${kernels.activeIsa()}`)
  }
  model.precision = 'fp32'
  t.same(await run(), fp32, 'model.precision is the default of its calls')
  t.same(await run('bf16'), bf16, 'a call overrides it')
  t.throws(() => (model.precision = 'half' as never), { name: 'RangeError', message: /ErnieModel\.precision must be 'fp32', 'bf16' or 'auto', got "half"/ })
  await t.rejects(model.forward({ inputIds: ids }, { precision: 'fp16' as never }), { name: 'RangeError', message: /forward: precision must be/ })
  await withEnv('bf16', async () => {
    const fromEnv = tinyRandomModel(2)
    t.equal(fromEnv.precision, 'bf16', 'ERNIE_PRECISION is the default')
    t.same((await fromEnv.forward({ inputIds: ids })).hidden, bf16, '... and computes bf16')
    await fromEnv.dispose()
  })
  await withEnv('tf32', () => t.throws(() => tinyRandomModel(2), { name: 'RangeError', message: /ERNIE_PRECISION must be 'fp32', 'bf16' or 'auto', got "tf32"/ }))
  t.throws(() => ErnieModel.random(model.config, { precision: 'x' as never }), { message: /random: precision must be/ })
})

t.test("the Trainer's precision reaches its task's steps", async (t) => {
  const model = tinyRandomModel(3)
  t.teardown(() => model.dispose())
  const train = [{ inputIds: Array.from(ids.data.subarray(0, 20)) }]
  // LmTask needs something to train: a fresh adapter per run, lr 0 so nothing moves
  const lossAt = async (precision: 'fp32' | 'bf16') => {
    const adapter = LoraAdapter.create(model, { r: 2, alpha: 4, seed: 1 })
    try {
      const task = new LmTask(model, { train, adapter })
      const result = await new Trainer(task, { maxSteps: 1, learningRate: 0, precision }).train()
      return result.lossHistory[0]
    } finally {
      adapter.dispose()
    }
  }
  const want = async (precision: 'fp32' | 'bf16') => (await model.loss({ inputIds: [train[0].inputIds] }, { precision })).loss
  t.equal(await lossAt('fp32'), await want('fp32'), "precision 'fp32': the step's loss is the model's fp32 loss")
  t.equal(await lossAt('bf16'), await want('bf16'), "precision 'bf16': the bf16 loss")
  t.not(await want('fp32'), await want('bf16'), 'and the two differ')
  t.throws(() => new Trainer(new LmTask(model, { train, adapter: LoraAdapter.create(model, { r: 2 }) }), { precision: 'f16' as never }), { message: /Trainer: precision must be/ })
})

t.test('a classifier saves its precision and the one it trained at, and load restores it', async (t) => {
  const dir = tempDir(t)
  const { texts, labels } = readTsv(TRAIN)
  const data = texts.slice(0, 40).map((text, i) => ({ text, label: labels[i] }))
  const clf = new ErnieClassifier({ model: tinyRandomModel(4), tokenizer: TINY, method: 'full', maxLength: 24, precision: 'fp32' })
  t.teardown(() => clf.dispose())
  t.equal(clf.precision, 'fp32')
  await clf.fit(data, { epochs: 1, batchSize: 20 })
  t.same(clf.trainingRecord!.precision, { requested: 'fp32', inForce: 'fp32', isa: kernels.activeIsa() }, 'the training record')
  await clf.save(path.join(dir, 'clf'))
  const meta = JSON.parse(fs.readFileSync(path.join(dir, 'clf', 'classifier.json'), 'utf8'))
  t.equal(meta.precision, 'fp32', 'classifier.json: precision')
  t.same(meta.training.precision, clf.trainingRecord!.precision, 'classifier.json: training.precision')
  const again = await withEnv(undefined, () => ErnieClassifier.load(path.join(dir, 'clf')))
  t.equal(again.precision, 'fp32', 'load restores the saved precision')
  t.same(await again.predict(texts[0]), await clf.predict(texts[0]), 'and predicts as the saved classifier')
  await again.dispose()
  const other = await ErnieClassifier.load(path.join(dir, 'clf'), { precision: 'bf16' })
  t.equal(other.precision, 'bf16', 'an explicit precision wins')
  await other.dispose()
  const fromEnv = await withEnv('bf16', () => ErnieClassifier.load(path.join(dir, 'clf')))
  t.equal(fromEnv.precision, 'bf16', 'ERNIE_PRECISION wins over the saved one')
  await fromEnv.dispose()
  fs.writeFileSync(path.join(dir, 'clf', 'classifier.json'), JSON.stringify({ ...meta, precision: 'fp8' }))
  await t.rejects(ErnieClassifier.load(path.join(dir, 'clf')), { code: 'ERR_CLASSIFIER', message: /classifier\.json: unknown precision "fp8"/ })
  t.throws(() => new ErnieClassifier({ model: TINY, precision: 'double' as never }), { message: /ErnieClassifier: precision must be/ })
})

t.test('--precision on the command line', async (t) => {
  const r = await runMain(['train', '--data', TRAIN, '--out', '/nonexistent/x', '--precision', 'half'])
  t.equal(r.code, 2, 'a usage error')
  t.match(r.stderr, /--precision must be one of fp32, bf16, auto, got "half"/)
})
