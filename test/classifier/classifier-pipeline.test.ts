// pipeline('sentiment-analysis', dir): transformers.js's text-classification shape over a saved
// classifier. The expectations come from the classifier trained here (its own predict, in memory,
// before saving), sorted and cut in the test: one text gives [{ label, score }], an array of
// texts one { label, score } each for topK 1 and one array each otherwise, topK null all labels.
import t, { type Test } from 'tap'
import * as path from 'node:path'

import { ErnieClassifier, pipeline, type LabelScore } from '../../lib/index'
import { readTsv, tempDir, TRAIN } from '../helpers/classifier-helpers'

const dir = tempDir(t)
const saved = path.join(dir, 'three-classes')
const train = readTsv(TRAIN)
// three classes, so that topK 2 is neither one label nor all of them
const classOf = (text: string, label: number) => (text.length < 40 ? 'short' : label === 1 ? 'positive' : 'negative')
const data = train.texts.slice(0, 300).map((text, i) => ({ text, label: classOf(text, train.labels[i]) }))
const texts = ['这家酒店的服务很好', '房间很脏，不推荐', train.texts[500], train.texts[501], '']
let expected: Array<Record<string, number>> = []

t.before(async () => {
  const clf = new ErnieClassifier({ method: 'head', maxLength: 64 })
  await clf.fit(data, { epochs: 5 })
  expected = (await clf.predict(texts)).map((p) => p.scores)
  await clf.save(saved)
  await clf.dispose()
})

/** The test's own ranking of one text's scores, best first. */
const ranked = (scores: Record<string, number>): LabelScore[] => Object.entries(scores).map(([label, score]) => ({ label, score })).sort((a, b) => b.score - a.score)

function sameScores(t: Test, got: LabelScore[], want: LabelScore[], what: string): void {
  t.same(
    got.map((x) => Object.keys(x).sort()),
    want.map(() => ['label', 'score']),
    `${what}: { label, score } only`,
  )
  t.same(
    got.map((x) => x.label),
    want.map((x) => x.label),
    `${what}: labels, best first`,
  )
  got.forEach((x, i) => t.ok(Math.abs(x.score - want[i].score) < 1e-6, `${what}: ${x.label} score ${x.score} against ${want[i].score}`))
}

t.test('no classifier is bundled: the model directory is required', async (t) => {
  const noModel = pipeline as unknown as (task: string) => Promise<unknown>
  await t.rejects(noModel('sentiment-analysis'), { name: 'ErnieError', code: 'ERR_NO_DEFAULT_CLASSIFIER', message: /bundles a base model .*not a trained classifier/ })
  await t.rejects(pipeline('translation' as 'sentiment-analysis', saved), { code: 'ERR_OUT_OF_RANGE', message: /'sentiment-analysis' or 'text-classification'/ })
})

t.test('one text, an array, topK 1, k and null', async (t) => {
  const pipe = await pipeline('sentiment-analysis', saved)
  t.teardown(() => pipe.dispose())
  t.equal(pipe.task, 'sentiment-analysis')
  t.same(pipe.classifier.labels, ['negative', 'positive', 'short'])

  const one = await pipe(texts[0])
  t.equal(one.length, 1, 'one text, topK 1: an array of one')
  sameScores(t, one, ranked(expected[0]).slice(0, 1), 'one text')

  const batch = (await pipe(texts)) as LabelScore[]
  t.equal(batch.length, texts.length, 'an array, topK 1: one { label, score } per text, not nested')
  batch.forEach((x, i) => sameScores(t, [x], ranked(expected[i]).slice(0, 1), `text ${i}`))

  sameScores(t, await pipe(texts[1], { topK: 2 }), ranked(expected[1]).slice(0, 2), 'topK 2')
  const all = await pipe(texts[2], { topK: null })
  sameScores(t, all, ranked(expected[2]), 'topK null')
  t.ok(Math.abs(all.reduce((s, x) => s + x.score, 0) - 1) < 1e-6, 'all the labels: the probabilities sum to 1')

  const nested = (await pipe(texts, { topK: null })) as LabelScore[][]
  t.equal(nested.length, texts.length, 'an array, topK null: one array per text')
  nested.forEach((labels, i) => sameScores(t, labels, ranked(expected[i]), `text ${i}, topK null`))
  const capped = (await pipe(texts.slice(0, 2), { topK: 7 })) as LabelScore[][]
  t.same(
    capped.map((l) => l.length),
    [3, 3],
    'topK above the number of classes gives them all',
  )
  const single = (await pipe([texts[3]], { topK: 2 })) as LabelScore[][]
  sameScores(t, single[0], ranked(expected[3]).slice(0, 2), 'an array of one, topK 2: nested')
})

t.test('bad call options are typed errors; dispose frees the classifier', async (t) => {
  const pipe = await pipeline('text-classification', saved)
  await t.rejects(pipe(texts[0], { topK: 0 }), { code: 'ERR_OUT_OF_RANGE', message: /topK must be a positive integer or null/ })
  await t.rejects(pipe(texts[0], { topK: 1.5 }), { code: 'ERR_OUT_OF_RANGE' })
  await t.rejects(pipe(texts[0], { top_k: 2 } as never), { code: 'ERR_INVALID_ARG_TYPE', message: /topK/ })
  await t.rejects(pipe(42 as unknown as string), { code: 'ERR_INVALID_ARG_TYPE' })
  await pipe.dispose()
  await t.rejects(pipe(texts[0]), { name: 'ErnieError', code: 'ERR_DISPOSED' })
})
