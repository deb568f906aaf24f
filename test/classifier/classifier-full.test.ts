// ErnieClassifier, method 'full': every weight of a tiny randomly initialised ERNIE-4.5
// (the ernie-tiny fixture) plus a linear head, fine-tuned on 2000 ChnSentiCorp reviews. It must
// learn (well above always guessing the majority class on held-out data), and a save / load
// round trip must give the same predictions; the saved directory holds its report.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier } from '../../lib/classifier/index'
import { DEV, labelEntropy, majorityShare, ODD_TEXTS, readTsv, tempDir, TEST, TINY, TRAIN } from '../helpers/classifier-helpers'

t.test('full fine-tuning learns sentiment and survives save / load', async (t) => {
  const dir = tempDir(t)
  const clf = new ErnieClassifier({ model: TINY, method: 'full', maxLength: 64, truncation: 'head_tail' })
  t.teardown(() => clf.dispose())
  const progress: number[] = []
  const result = await clf.fit(TRAIN, { epochs: 2, learningRate: 2e-3, batchSize: 32, evalData: DEV, onProgress: (p) => progress.push(p.step) })

  t.equal(result.method, 'full')
  t.equal(result.stopReason, 'completed')
  t.equal(result.steps, 2 * Math.ceil(2000 / 32))
  t.equal(result.history.length, result.steps, 'one history entry per step')
  t.same(progress, result.history.map((h) => h.step), 'onProgress once per step')
  t.equal(result.evalHistory.length, 2, 'evaluated once per epoch')
  t.same(clf.labels, ['negative', 'positive'], 'numeric 0/1 labels become negative/positive')
  t.same(result.data.train.classCounts, { negative: 1003, positive: 997 })
  const first = result.history.slice(0, 10).reduce((a, h) => a + h.loss, 0) / 10
  const last = result.history.slice(-10).reduce((a, h) => a + h.loss, 0) / 10
  t.ok(last < first * 0.7, `training loss falls: ${first.toFixed(3)} -> ${last.toFixed(3)}`)

  // Held out, against what ignoring the text gives: always the majority class (accuracy), the
  // labels' own frequencies (loss).
  const dev = readTsv(DEV)
  t.ok(result.metrics!.accuracy >= majorityShare(dev.labels) + 0.08, `dev accuracy ${result.metrics!.accuracy} (always-majority: ${majorityShare(dev.labels)})`)
  t.ok(result.metrics!.loss < labelEntropy(dev.labels) - 0.05, `dev loss ${result.metrics!.loss.toFixed(3)} (the labels' entropy: ${labelEntropy(dev.labels).toFixed(3)})`)
  const test = readTsv(TEST)
  const m = await clf.evaluate(TEST)
  t.comment(`full: dev accuracy ${result.metrics!.accuracy.toFixed(3)}, test accuracy ${m.accuracy.toFixed(3)}, macro-F1 ${m.macroF1.toFixed(3)} (always-majority ${majorityShare(test.labels)}), ${result.seconds.toFixed(1)} s`)
  t.ok(m.accuracy >= majorityShare(test.labels) + 0.15, `test accuracy ${m.accuracy} well above ${majorityShare(test.labels)}`)
  t.ok(m.macroF1 >= 0.65, `test macro-F1 ${m.macroF1}`)
  t.equal(m.count, 200)
  t.equal(m.confusion.flat().reduce((a, b) => a + b, 0), 200, 'the confusion matrix counts every example')
  t.equal(m.accuracy, (m.confusion[0][0] + m.confusion[1][1]) / 200)
  t.same(
    m.labels.map((l) => m.perClass[l].support),
    [test.labels.filter((y) => y === 0).length, test.labels.filter((y) => y === 1).length],
  )

  // predictions agree with the evaluation, and are pipeline-shaped
  const preds = await clf.predict(test.texts)
  t.equal(preds.filter((p, i) => p.label === ['negative', 'positive'][test.labels[i]]).length / 200, m.accuracy)
  for (const p of preds.slice(0, 5)) {
    t.ok(Math.abs(p.scores.negative + p.scores.positive - 1) < 1e-5, 'scores sum to 1')
    t.equal(p.score, p.scores[p.label], 'score is the chosen label’s')
    t.ok(p.score >= 0.5)
  }
  const single = await clf.predict(test.texts[3])
  t.same(single, preds[3], 'a single text gives the same as in a batch')
  const odd = await clf.predict(ODD_TEXTS)
  t.equal(odd.length, ODD_TEXTS.length, 'emoji-only, whitespace-only, empty and over-long texts are predicted')
  t.ok(odd.every((p) => Number.isFinite(p.score)))

  // save / load
  const out = path.join(dir, 'clf')
  await clf.save(out)
  for (const f of ['classifier.json', 'head.safetensors', 'report.html', 'tokenizer.model', 'config.json', 'model.safetensors'])
    t.ok(fs.existsSync(path.join(out, f)), `saved ${f}`)
  const meta = JSON.parse(fs.readFileSync(path.join(out, 'classifier.json'), 'utf8'))
  t.equal(meta.method, 'full')
  t.same(meta.base.kind, 'saved', 'full fine-tuning saves the trained model itself')
  t.equal(meta.base.trainedFrom, path.resolve(TINY))
  t.equal(meta.training.steps, result.steps)
  t.equal(meta.metrics.accuracy, result.metrics!.accuracy)
  const report = fs.readFileSync(path.join(out, 'report.html'), 'utf8')
  t.match(report, /<svg[^>]*aria-label="Loss by step"/, 'report: a loss chart')
  t.match(report, /<svg[^>]*aria-label="Accuracy by step"/, 'report: an accuracy chart')
  t.match(report, /<table class="confusion">/, 'report: the confusion matrix')
  t.notMatch(report, /<script|src="http/, 'report: self-contained')

  await t.rejects(ErnieClassifier.load(out, { model: TINY }), { code: 'ERR_BASE_MODEL', message: /trained its model's own weights/ }, 'a fine-tuned model cannot be swapped for its base')
  const loaded = await ErnieClassifier.load(out)
  t.teardown(() => loaded.dispose())
  t.equal(loaded.method, 'full')
  t.same(await loaded.predict(test.texts), preds, 'identical predictions after load')
  t.same(await loaded.predict(ODD_TEXTS), odd)
  const again = await loaded.evaluate(TEST)
  t.same({ ...again, skipped: undefined }, { ...m, skipped: undefined }, 'identical evaluation after load')
  const other = path.join(dir, 'other')
  fs.mkdirSync(other)
  fs.writeFileSync(path.join(other, 'notes.txt'), 'mine')
  await t.rejects(loaded.save(other), { code: 'ERR_EXISTS' }, 'save refuses to replace a directory that is not a classifier')
  t.ok(fs.existsSync(path.join(other, 'notes.txt')), '... and leaves it alone')
  await t.rejects(loaded.save(path.join(other, 'notes.txt')), { code: 'ERR_EXISTS' }, 'or a file')
  await loaded.save(out)
  t.same(await (await ErnieClassifier.load(out)).predict(test.texts.slice(0, 3)), preds.slice(0, 3), 'saving over a saved classifier replaces it')
})
