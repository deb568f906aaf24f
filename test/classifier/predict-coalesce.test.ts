// predict's coalescing (issue 17): concurrent predict(text) calls share inference runs and give
// exactly what one batched predict gives; a caller's abort; the queue limit; non-finite scores
// are a typed error instead of a NaN label.
import t from 'tap'

import { ErnieClassifier } from '../../lib/index'
import { readTsv, TINY, TRAIN } from '../helpers/classifier-helpers'

const train = readTsv(TRAIN)
const data = train.texts.slice(0, 40).map((text, i) => ({ text, label: train.labels[i] }))
const texts = train.texts.slice(100, 400)

/** Counts the base model's forward calls and the rows they ran. */
function countForward(clf: ErnieClassifier): { calls: number; rows: number } {
  const model = clf.model!
  const forward = model.forward.bind(model)
  const count = { calls: 0, rows: 0 }
  model.forward = async (input, options) => {
    const r = await forward(input, options)
    count.calls++
    count.rows += r.shape[0]
    return r
  }
  return count
}

let clf: ErnieClassifier
t.before(async () => {
  clf = new ErnieClassifier({ model: TINY, method: 'head', maxLength: 32 })
  await clf.fit(data, { epochs: 1 })
})
t.teardown(() => clf.dispose())

t.test('300 concurrent single predicts equal one batched predict, in a few forward passes', async (t) => {
  const count = countForward(clf)
  const batched = await clf.predict(texts, { batchSize: 32 })
  const passes = count.calls
  count.calls = count.rows = 0
  const single = await Promise.all(texts.map((text) => clf.predict(text, { batchSize: 32 })))
  t.same(single, batched, 'the same labels and scores, text by text')
  t.equal(count.rows, texts.length, 'every text ran once')
  // one run of the 300 texts, as the batched call: its forward passes of at most 32
  t.equal(count.calls, passes, `${count.calls} forward passes for ${texts.length} calls, as for one call`)
  t.ok(passes >= Math.ceil(texts.length / 32) && passes <= 20, `${passes} passes: batches of up to 32`)
})

t.test('a small maxBatch splits the calls into runs of that many texts', async (t) => {
  const sizes: number[] = []
  clf.setBatching({ maxBatch: 64, onBatch: (n) => sizes.push(n) })
  t.teardown(() => clf.setBatching({}))
  const batched = await clf.predict(texts.slice(0, 150))
  const single = await Promise.all(texts.slice(0, 150).map((text) => clf.predict(text)))
  t.same(single, batched)
  t.same(sizes, [64, 64, 22, 64, 64, 22], 'the array call and the single calls, each in runs of 64, 64, 22')
  t.throws(() => clf.setBatching({ maxBatch: 0 }), { code: 'ERR_OUT_OF_RANGE' })
  t.throws(() => clf.setBatching({ onBatch: 3 as unknown as () => void }), { code: 'ERR_INVALID_ARG_TYPE' })
})

t.test('the queue limit refuses calls past it with ERR_QUEUE_FULL; the others are answered', async (t) => {
  clf.setBatching({ maxBatch: 8, maxQueue: 20 })
  t.teardown(() => clf.setBatching({}))
  const results = await Promise.allSettled(texts.slice(0, 50).map((text) => clf.predict(text)))
  const refused = results.filter((r) => r.status === 'rejected')
  t.ok(refused.length > 0 && refused.length < 50, `${refused.length} of 50 refused`)
  for (const r of refused) t.match((r as PromiseRejectedResult).reason, { code: 'ERR_QUEUE_FULL' })
  t.equal(clf.queuedTexts, 0, 'nothing left waiting')
})

t.test('abort: a queued caller leaves with an AbortError, the others get their answers', async (t) => {
  const reference = await clf.predict(texts.slice(0, 10))
  const controller = new AbortController()
  const calls = texts.slice(0, 10).map((text, i) => clf.predict(text, { signal: i === 3 ? controller.signal : undefined }))
  controller.abort()
  const results = await Promise.allSettled(calls)
  t.match(results[3], { status: 'rejected', reason: { name: 'AbortError', code: 'ABORT_ERR' } })
  results.forEach((r, i) => {
    if (i !== 3) t.same(r, { status: 'fulfilled', value: reference[i] }, `call ${i} answered`)
  })
})

t.test('NaN weights: predict is ERR_NUMERIC naming the text, never a NaN score', async (t) => {
  const broken = new ErnieClassifier({ model: TINY, method: 'head', maxLength: 32 })
  t.teardown(() => broken.dispose())
  await broken.fit(data, { epochs: 1 })
  // the first row of each forward pass comes out NaN, as from weights that diverged
  const model = broken.model!
  const forward = model.forward.bind(model)
  model.forward = async (input, options) => {
    const r = await forward(input, options)
    for (const k of ['pooled', 'headLogits'] as const) r[k]?.fill(NaN, 0, r[k]!.length / r.shape[0])
    return r
  }
  await t.rejects(broken.predict('好'), { code: 'ERR_NUMERIC', message: /the text got non-finite class scores/ })
  await t.rejects(broken.predict(['好', '坏']), { code: 'ERR_NUMERIC', message: /^predict: texts\[[01]\] got non-finite/ })
})
