// AbortSignal on predict, evaluate and load (an AbortError, the classifier still usable), and the
// hub options of ErnieClassifier and ErnieClassifier.load reaching the model's resolution, against
// a fake hub on 127.0.0.1 (test/helpers/hub-server.ts) serving the ernie-tiny fixture.
import t from 'tap'
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'

import type { DownloadProgress } from '../../lib/hub'
import { ErnieClassifier } from '../../lib/index'
import { startFakeHub, type FakeRepo } from '../helpers/hub-server'
import { readTsv, tempDir, TINY, TRAIN } from '../helpers/classifier-helpers'

// Hermetic: no HF_* variable of the machine running the tests leaks in.
const savedEnv = { ...process.env }
for (const k of Object.keys(process.env)) if (/^(HF_|HUGGING|TRANSFORMERS_OFFLINE|XDG_CACHE_HOME)/.test(k)) delete process.env[k]
const dir = tempDir(t)
process.env.HF_HOME = path.join(dir, 'hf-home')
t.teardown(() => {
  process.env = savedEnv
})

const train = readTsv(TRAIN)
const data = train.texts.slice(0, 60).map((text, i) => ({ text, label: train.labels[i] }))
const texts = train.texts.slice(100, 300)
const saved = path.join(dir, 'clf')
const repo: FakeRepo = {
  id: 'test-org/ernie-tiny',
  sha: createHash('sha1').update('tiny').digest('hex'),
  files: Object.fromEntries(['config.json', 'model.safetensors', 'tokenizer.model', 'tokenizer_config.json'].map((f) => [f, fs.readFileSync(path.join(TINY, f))])),
}
const abortError = { name: 'AbortError', code: 'ABORT_ERR' }

t.before(async () => {
  const clf = new ErnieClassifier({ model: TINY, method: 'head', maxLength: 32 })
  await clf.fit(data, { epochs: 2 })
  await clf.save(saved)
  await clf.dispose()
})

/** Counts the base model's forward calls; `onCall` runs on each (set it per case). */
function watchForward(clf: ErnieClassifier): { calls: number; onCall: () => void } {
  const model = clf.model!
  const forward = model.forward.bind(model)
  const watch = { calls: 0, onCall: () => undefined as void }
  model.forward = async (input, options) => {
    watch.calls++
    watch.onCall()
    return forward(input, options)
  }
  return watch
}

/** A signal that fires at the first forward call from now on. */
function abortAtFirstForward(watch: { calls: number; onCall: () => void }): AbortSignal {
  const controller = new AbortController()
  watch.calls = 0
  watch.onCall = () => controller.abort()
  return controller.signal
}

t.test('predict and evaluate: aborted before they start, or between batches; the classifier stays usable', async (t) => {
  const clf = await ErnieClassifier.load(saved)
  t.teardown(() => clf.dispose())
  const reference = await clf.predict(texts, { batchSize: 4 })
  const referenceEval = await clf.evaluate(data, { batchSize: 4 })
  const watch = watchForward(clf)

  await t.rejects(clf.predict(texts, { batchSize: 4, signal: AbortSignal.abort() }), abortError, 'predict, aborted before')
  await t.rejects(clf.evaluate(data, { signal: AbortSignal.abort() }), abortError, 'evaluate, aborted before')
  t.equal(watch.calls, 0, 'no forward pass ran')

  await t.rejects(clf.predict(texts, { batchSize: 4, signal: abortAtFirstForward(watch) }), { ...abortError, message: 'predict: aborted' })
  t.ok(watch.calls >= 1 && watch.calls < texts.length / 4, `predict stopped after ${watch.calls} of ${texts.length / 4} batches (those running when it fired)`)
  await t.rejects(clf.evaluate(data, { batchSize: 4, signal: abortAtFirstForward(watch) }), { ...abortError, message: 'evaluate: aborted' })
  t.ok(watch.calls >= 1 && watch.calls < data.length / 4, `evaluate stopped after ${watch.calls} of ${data.length / 4} batches`)

  watch.onCall = () => undefined
  t.same(await clf.predict(texts, { batchSize: 4 }), reference, 'predict afterwards: the same predictions')
  t.same(await clf.evaluate(data, { batchSize: 4 }), referenceEval, 'evaluate afterwards: the same report')
  await t.rejects(clf.predict('x', { signal: {} as AbortSignal }), { code: 'ERR_INVALID_ARG_TYPE', message: /signal must be an AbortSignal/ })
})

t.test('the generative method stops between batches too', async (t) => {
  const clf = new ErnieClassifier({ model: TINY, method: 'generative', maxLength: 48 })
  t.teardown(() => clf.dispose())
  await clf.fit(data.slice(0, 20), { maxSteps: 1 })
  const watch = watchForward(clf)
  await t.rejects(clf.predict(texts, { batchSize: 4, signal: abortAtFirstForward(watch) }), abortError)
  t.ok(watch.calls >= 1 && watch.calls < texts.length / 2, `stopped after ${watch.calls} of ${texts.length / 2} batches`)
  watch.onCall = () => undefined
  t.equal((await clf.predict(texts.slice(0, 3))).length, 3, 'usable afterwards')
})

t.test('hub options reach the model resolution: cacheDir, onProgress, token, revision, offline', async (t) => {
  const hub = await startFakeHub([repo])
  t.teardown(() => hub.close())
  const cacheDir = path.join(dir, 'cache')
  const events: DownloadProgress[] = []
  const clf = new ErnieClassifier({ model: repo.id, method: 'head', maxLength: 32, endpoint: hub.endpoint, cacheDir, onProgress: (p) => events.push(p) })
  t.teardown(() => clf.dispose())
  await clf.fit(data, { epochs: 1 })
  const snapshot = path.join(cacheDir, 'models--test-org--ernie-tiny', 'snapshots', repo.sha)
  t.ok(fs.existsSync(path.join(snapshot, 'model.safetensors')), 'downloaded into cacheDir, in the HF layout')
  t.same([...new Set(events.filter((e) => e.status === 'done').map((e) => e.file))].sort(), Object.keys(repo.files).sort(), 'onProgress saw each file done')
  t.notOk(fs.existsSync(process.env.HF_HOME!), 'nothing went to the default cache')
  await clf.save(path.join(dir, 'from-hub'))

  // offline, from the cache: the hub is not asked
  const asked = hub.requests.length
  const offline = await ErnieClassifier.load(path.join(dir, 'from-hub'), { offline: true, cacheDir, model: repo.id })
  t.equal((await offline.predict(texts.slice(0, 2))).length, 2)
  await offline.dispose()
  t.equal(hub.requests.length, asked, 'offline: no request to the hub')

  const empty = path.join(dir, 'empty-cache')
  const missing = { name: 'HubError', code: 'ERR_HUB_OFFLINE_MISSING', message: new RegExp(`${empty.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} holds no snapshot of ${repo.id}`) }
  const offlineClf = new ErnieClassifier({ model: repo.id, offline: true, cacheDir: empty })
  t.teardown(() => offlineClf.dispose())
  await t.rejects(offlineClf.fit(data), missing, 'the constructor: offline with an empty cacheDir')
  await t.rejects(ErnieClassifier.load(saved, { model: repo.id, offline: true, cacheDir: empty }), missing, 'load: offline with an empty cacheDir')
  await t.rejects(
    ErnieClassifier.load(saved, { model: repo.id, endpoint: hub.endpoint, cacheDir: empty, revision: 'v9' }),
    { code: 'ERR_HUB_NOT_FOUND', message: /revision 'v9'/ },
    'load: the revision is asked for',
  )

  const gated = await startFakeHub([repo], { token: 'secret' })
  t.teardown(() => gated.close())
  await t.rejects(ErnieClassifier.load(saved, { model: repo.id, endpoint: gated.endpoint, cacheDir: path.join(dir, 'gated-0'), token: false }), { code: 'ERR_HUB_AUTH' })
  const withToken = await ErnieClassifier.load(saved, { model: repo.id, endpoint: gated.endpoint, cacheDir: path.join(dir, 'gated-1'), token: 'secret' })
  await withToken.dispose()
  t.ok(gated.requests.some((r) => r.authorization === 'Bearer secret'), 'the token was sent')

  t.throws(() => new ErnieClassifier({ cacheDir: 5 as unknown as string }), { code: 'ERR_INVALID_ARG_TYPE', message: /cacheDir must be a directory path/ })
  await t.rejects(ErnieClassifier.load(saved, { offline: 'yes' as unknown as boolean }), { code: 'ERR_INVALID_ARG_TYPE', message: /load: offline must be true or false/ })
})

t.test('load: aborted before it starts, or while the base model downloads', async (t) => {
  await t.rejects(ErnieClassifier.load(saved, { signal: AbortSignal.abort() }), abortError)
  const hub = await startFakeHub([repo], { slow: true })
  t.teardown(() => hub.close())
  const controller = new AbortController()
  const cacheDir = path.join(dir, 'abort-cache')
  await t.rejects(
    ErnieClassifier.load(saved, {
      model: repo.id,
      endpoint: hub.endpoint,
      cacheDir,
      signal: controller.signal,
      onProgress: (p) => p.file === 'model.safetensors' && p.status === 'downloading' && controller.abort(),
    }),
    { ...abortError, message: 'load: aborted' },
  )
  t.notOk(fs.existsSync(path.join(cacheDir, 'models--test-org--ernie-tiny', 'snapshots', repo.sha, 'model.safetensors')), 'the weights were not completed')
  const clf = await ErnieClassifier.load(saved, { model: repo.id, endpoint: hub.endpoint, cacheDir })
  t.equal((await clf.predict(texts.slice(0, 2))).length, 2, 'a later load completes the download')
  await clf.dispose()
})
