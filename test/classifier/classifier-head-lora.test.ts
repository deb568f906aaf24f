// ErnieClassifier, methods 'head' (frozen base, features computed once, linear or MLP head) and
// 'lora' (adapters + head). A randomly initialised base carries little sentiment in its features
// (a linear head on ernie-tiny's reaches ~0.55, the majority share), so the head tests read
// ernie-tiny first fine-tuned ('full') on the same training reviews, standing in for a
// pre-trained model. LoRA starts from the untouched ernie-tiny: there the adapters must do the
// learning a head alone cannot. Save / load must give the same predictions.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier } from '../../lib/classifier/index'
import { ErnieModel } from '../../lib/model/index'
import { DEV, majorityShare, ODD_TEXTS, readTsv, tempDir, TEST, TINY, TRAIN } from '../helpers/classifier-helpers'

const dir = tempDir(t)
const test = readTsv(TEST)
const common = { maxLength: 64, truncation: 'head_tail' as const }
let baseDir = ''

t.before(async () => {
  const clf = new ErnieClassifier({ model: TINY, method: 'full', ...common })
  await clf.fit(TRAIN, { epochs: 2, learningRate: 2e-3, batchSize: 32 })
  await clf.save(path.join(dir, 'base-clf'))
  await clf.dispose()
  baseDir = path.join(dir, 'base-clf')
})

t.test('head: features computed once, a linear head learns on them', async (t) => {
  const model = await ErnieModel.fromPretrained(baseDir)
  t.teardown(() => model.dispose())
  // count the texts the base runs on: every text once, however many epochs and evaluations
  let rows = 0
  const forward = model.forward.bind(model)
  model.forward = async (input, options) => {
    const r = await forward(input, options)
    rows += r.shape[0]
    return r
  }
  const clf = new ErnieClassifier({ model, method: 'head', ...common })
  const phases = new Set<string>()
  const result = await clf.fit(TRAIN, { epochs: 20, learningRate: 5e-3, batchSize: 64, evalData: DEV, onProgress: (p) => phases.add(p.phase) })
  t.equal(rows, 2000 + 200, `the base ran once per training and evaluation text (${result.steps} steps, ${result.evalHistory.length} evaluations)`)
  t.same([...phases], ['features', 'train'])
  t.equal(result.evalHistory.length, 20)
  t.ok(result.history.at(-1)!.accuracy! > 0.8, `training accuracy at the end ${result.history.at(-1)!.accuracy}`)
  const m = await clf.evaluate(TEST)
  t.comment(`head (linear): test accuracy ${m.accuracy.toFixed(3)}, macro-F1 ${m.macroF1.toFixed(3)} (always-majority ${majorityShare(test.labels)}), fit ${result.seconds.toFixed(1)} s`)
  t.ok(m.accuracy >= 0.7, `test accuracy ${m.accuracy}`)

  const preds = await clf.predict([...test.texts, ...ODD_TEXTS])
  const out = path.join(dir, 'head')
  await clf.save(out)
  const meta = JSON.parse(fs.readFileSync(path.join(out, 'classifier.json'), 'utf8'))
  t.same(meta.base, { ...meta.base, kind: 'path', ref: path.resolve(baseDir) }, 'the base is referenced, not copied')
  t.notOk(fs.existsSync(path.join(out, 'model.safetensors')), 'no model copy for a frozen base')
  t.same(meta.head, { kind: 'linear' })
  const loaded = await ErnieClassifier.load(out)
  t.teardown(() => loaded.dispose())
  t.same(await loaded.predict([...test.texts, ...ODD_TEXTS]), preds, 'identical predictions after load')
  await clf.dispose()
  t.ok(model.forward, 'the caller’s model is not disposed by the classifier')
  await model.forward({ inputIds: [[5, 6]] })
})

t.test('head: a small MLP head', async (t) => {
  const clf = new ErnieClassifier({ model: baseDir, method: 'head', head: { hiddenSize: 16 }, pooling: 'mean', ...common })
  t.teardown(() => clf.dispose())
  const result = await clf.fit(TRAIN, { epochs: 10, learningRate: 3e-3, batchSize: 64 })
  const m = await clf.evaluate(TEST)
  t.comment(`head (MLP 16, mean pooling): test accuracy ${m.accuracy.toFixed(3)}, fit ${result.seconds.toFixed(1)} s`)
  t.ok(m.accuracy >= 0.7, `test accuracy ${m.accuracy}`)
  const out = path.join(dir, 'mlp')
  await clf.save(out)
  const loaded = await ErnieClassifier.load(out)
  t.teardown(() => loaded.dispose())
  t.same(await loaded.predict(test.texts), await clf.predict(test.texts), 'identical predictions after load')
  t.throws(() => new ErnieClassifier({ model: baseDir, method: 'lora', head: { hiddenSize: 16 } }), /an MLP head is for method 'head'/)
})

t.test('lora: adapters and a fresh head learn together, where a head alone cannot', async (t) => {
  const trainLoss = (r: { history: { loss: number }[] }) => r.history.slice(-10).reduce((a, h) => a + h.loss, 0) / 10
  // the reference: a head alone on the same frozen base, trained for longer
  const headOnly = new ErnieClassifier({ model: TINY, method: 'head', ...common })
  const headLoss = trainLoss(await headOnly.fit(TRAIN, { epochs: 20, learningRate: 5e-3, batchSize: 64 }))
  await headOnly.dispose()

  const clf = new ErnieClassifier({ model: TINY, method: 'lora', lora: { r: 16, alpha: 32 }, ...common })
  t.teardown(() => clf.dispose())
  const result = await clf.fit(TRAIN, { epochs: 5, learningRate: 5e-3, batchSize: 32 })
  const m = await clf.evaluate(TEST)
  t.comment(`lora (r 16) on the untouched base: training loss ${trainLoss(result).toFixed(3)} (a head alone ${headLoss.toFixed(3)}), test accuracy ${m.accuracy.toFixed(3)}, fit ${result.seconds.toFixed(1)} s`)
  t.ok(trainLoss(result) < headLoss - 0.15, `training loss ${trainLoss(result).toFixed(3)}, well below a head alone's ${headLoss.toFixed(3)}`)
  t.ok(m.accuracy >= majorityShare(test.labels) + 0.08, `test accuracy ${m.accuracy} (always-majority ${majorityShare(test.labels)})`)

  const preds = await clf.predict([...test.texts, ...ODD_TEXTS])
  const out = path.join(dir, 'lora')
  await clf.save(out)
  const peft = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'))
  t.equal(peft.peft_type, 'LORA')
  t.equal(peft.r, 16)
  t.ok(fs.existsSync(path.join(out, 'adapter_model.safetensors')))
  t.notOk(fs.existsSync(path.join(out, 'model.safetensors')), 'the frozen base is referenced, not copied')

  const loaded = await ErnieClassifier.load(out)
  t.teardown(() => loaded.dispose())
  t.same(await loaded.predict([...test.texts, ...ODD_TEXTS]), preds, 'identical predictions after load')

  // the trained adapter is part of the prediction: without it the same head predicts otherwise
  const noAdapter = await ErnieClassifier.load(out)
  t.teardown(() => noAdapter.dispose())
  const adapter = (noAdapter as unknown as { core: { adapter: { tensors: Map<string, Float32Array> } } }).core.adapter
  let trained = 0
  for (const [name, v] of adapter.tensors)
    if (name.includes('lora_B')) {
      if (v.some((x) => x !== 0)) trained++
      v.fill(0)
    }
  t.ok(trained > 0, `the adapter's B matrices moved from zero (${trained})`)
  const without = await noAdapter.predict(test.texts)
  t.ok(
    without.some((p, i) => Math.abs(p.scores.positive - preds[i].scores.positive) > 1e-4),
    'predictions change without the adapter',
  )
})

t.test('load: another copy of the base, or a wrong one', async (t) => {
  const copy = path.join(dir, 'base-copy')
  fs.cpSync(TINY, copy, { recursive: true })
  const elsewhere = await ErnieClassifier.load(path.join(dir, 'lora'), { model: copy })
  t.teardown(() => elsewhere.dispose())
  const original = await ErnieClassifier.load(path.join(dir, 'lora'))
  t.teardown(() => original.dispose())
  t.same(await elsewhere.predict(test.texts.slice(0, 20)), await original.predict(test.texts.slice(0, 20)), 'the same base from another directory')
  await t.rejects(ErnieClassifier.load(path.join(dir, 'lora'), { model: path.join(__dirname, '..', 'fixtures', 'qwen3-tiny') }), {
    code: 'ERR_BASE_MODEL',
    message: /is not the one this classifier was trained on: modelType "qwen3" \(trained on "ernie4_5"\)/,
  })
  const moved = path.join(dir, 'moved')
  fs.cpSync(path.join(dir, 'lora'), moved, { recursive: true })
  const meta = JSON.parse(fs.readFileSync(path.join(moved, 'classifier.json'), 'utf8'))
  meta.base.ref = path.join(dir, 'no-such-base')
  fs.writeFileSync(path.join(moved, 'classifier.json'), JSON.stringify(meta))
  await t.rejects(ErnieClassifier.load(moved), { code: 'ERR_BASE_MODEL', message: /cannot load the base model .*pass \{ model/ })
  await t.rejects(ErnieClassifier.load(path.join(dir, 'nothing-here')), { code: 'ERR_CLASSIFIER' })
})
