// Fits that survive: checkpoints in outputDir, a stopped fit resumed to the same weights as one
// never stopped, the best evaluation restored at the end, a directory of another run's
// checkpoints refused before training.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { ErnieClassifier } from '../../lib/classifier/index'
import { listCheckpoints } from '../../lib/train/index'
import { DEV, readTsv, tempDir, TINY, TRAIN } from '../helpers/classifier-helpers'

const dir = tempDir(t)
const rows = (file: string, n: number) => {
  const { texts, labels } = readTsv(file)
  return texts.slice(0, n).map((text, i) => ({ text, label: labels[i] }))
}
const train = rows(TRAIN, 96)
const dev = rows(DEV, 48)
const texts = dev.map((r) => r.text)
const ctor = { model: TINY, method: 'lora' as const, maxLength: 32, seed: 5 }
const fitOptions = { maxSteps: 6, batchSize: 16, learningRate: 2e-3 }

t.test('a fit stopped after a checkpoint and resumed ends with the weights of one never stopped', async (t) => {
  const whole = new ErnieClassifier(ctor)
  t.teardown(() => whole.dispose())
  await whole.fit(train, fitOptions)
  const want = await whole.predict(texts)

  const outputDir = path.join(dir, 'stopped')
  const stop = new AbortController()
  const first = new ErnieClassifier(ctor)
  const r1 = await first.fit(train, { ...fitOptions, outputDir, saveSteps: 3, signal: stop.signal, onProgress: (p) => p.phase === 'train' && p.step === 3 && stop.abort() })
  await first.dispose()
  t.equal(r1.stopReason, 'aborted')
  t.same(listCheckpoints(outputDir).map((c) => c.step), [3], 'the checkpoint of step 3 is on disk')

  // A new process would start here: a fresh classifier, everything else from the checkpoint.
  await t.rejects(new ErnieClassifier(ctor).fit(train, { ...fitOptions, outputDir, saveSteps: 3 }), { code: 'ERR_EXISTS', message: /holds checkpoints of another run; pass resume: true/ }, 'not overwritten without resume')
  const resumed = new ErnieClassifier(ctor)
  t.teardown(() => resumed.dispose())
  const r2 = await resumed.fit(train, { ...fitOptions, outputDir, saveSteps: 3, resume: true })
  t.equal(r2.steps, 6)
  t.same(r2.resumedFrom, { step: 3, checkpoint: path.join(outputDir, 'checkpoint-3') }, 'it continued from the checkpoint of step 3')
  const got = await resumed.predict(texts)
  t.same(got, want, 'identical predictions (scores included) to the uninterrupted fit')
})

t.test('loadBestModelAtEnd: the weights of the best evaluation, whose checkpoint pruning keeps', async (t) => {
  const outputDir = path.join(dir, 'best')
  const clf = new ErnieClassifier(ctor)
  t.teardown(() => clf.dispose())
  const r = await clf.fit(train, { ...fitOptions, evalData: dev, evalSteps: 2, metricForBestModel: 'accuracy', loadBestModelAtEnd: true, outputDir, saveSteps: 2, saveTotalLimit: 1 })
  const accuracies = r.evalHistory.map((e) => e.accuracy)
  const bestAt = r.evalHistory[accuracies.indexOf(Math.max(...accuracies))].step
  const steps = listCheckpoints(outputDir).map((c) => c.step)
  t.ok(steps.includes(bestAt) && steps.includes(6), `checkpoints ${steps.join(', ')}: the best (${bestAt}) and the latest`)
  const m = await clf.evaluate(dev)
  t.equal(m.accuracy, Math.max(...accuracies), 'the classifier scores what the best evaluation scored')
  await t.rejects(new ErnieClassifier(ctor).fit(train, { loadBestModelAtEnd: true }), { message: /loadBestModelAtEnd needs evalData/ })
  t.ok(fs.existsSync(outputDir))
})
