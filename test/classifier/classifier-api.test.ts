// ErnieClassifier's contract beyond learning: options and their errors, bad data through fit and
// evaluate (file, line, problem), labels (numeric, named, multi-class), class weights, truncation,
// the event loop staying free during fit, concurrent predict calls, aborting, busy and disposed
// states. A one-layer random model keeps these fast.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { bundledModelDir, ErnieClassifier } from '../../lib/classifier/index'
import { DataError } from '../../lib/data/index'
import { ErnieModel } from '../../lib/model/index'
import { encodeTexts } from '../../lib/classifier/encode'
import { Tokenizer } from '../../lib/tokenizer/index'
import { readTsv, tempDir, tinyRandomModel, TINY, TRAIN } from '../helpers/classifier-helpers'
import { LoopTurns, readSafetensorsForTest } from '../helpers/helpers'

const dir = tempDir(t)
const train = readTsv(TRAIN)
const small = train.texts.slice(0, 200).map((text, i) => ({ text, label: train.labels[i] }))
function file(name: string, content: string | Buffer): string {
  const p = path.join(dir, name)
  fs.writeFileSync(p, content)
  return p
}
const fast = { model: undefined as unknown as ErnieModel, tokenizer: TINY, method: 'full' as const, maxLength: 32 }
function tiny(extra: Record<string, unknown> = {}, seed = 1): ErnieClassifier {
  return new ErnieClassifier({ ...fast, model: tinyRandomModel(seed), ...extra })
}

t.test('options: errors name the option', async (t) => {
  if (bundledModelDir() === undefined) t.throws(() => new ErnieClassifier(), { code: 'ERR_NO_DEFAULT_MODEL', message: /no model given.*pass \{ model/ })
  else t.doesNotThrow(() => new ErnieClassifier(), 'the bundled model is the default')
  t.throws(() => new ErnieClassifier({ model: TINY, device: 'cuda' as never }), { code: 'ERR_DEVICE', message: /device "cuda" is not available/ })
  t.doesNotThrow(() => new ErnieClassifier({ model: TINY, device: 'cpu' }))
  t.throws(() => new ErnieClassifier({ model: TINY, method: 'svm' as never }), { name: 'RangeError', message: /method must be 'auto' or one of head, lora, full, generative/ })
  t.throws(() => new ErnieClassifier({ model: TINY, pooling: 'max' as never }), /pooling must be 'last', 'mean' or 'first'/)
  t.throws(() => new ErnieClassifier({ model: TINY, maxLength: 1 }), /maxLength must be an integer >= 2/)
  t.throws(() => new ErnieClassifier({ model: TINY, truncation: 'tail' as never }), /truncation must be 'head' or 'head_tail'/)
  t.throws(() => new ErnieClassifier({ model: 42 as never }), { name: 'TypeError', message: /model must be an ErnieModel/ })
  t.throws(() => new ErnieClassifier({ model: TINY, labels: ['only'] }), /at least 2 class names/)
  const noTok = new ErnieClassifier({ model: tinyRandomModel() })
  await t.rejects(noTok.predict('x'), { code: 'ERR_NO_TOKENIZER' })
  const untrained = new ErnieClassifier({ model: TINY })
  t.teardown(() => untrained.dispose())
  await t.rejects(untrained.predict('好'), { code: 'ERR_NOT_TRAINED' })
  await t.rejects(untrained.save(path.join(dir, 'x')), { code: 'ERR_NOT_TRAINED' })
  t.equal(untrained.method, undefined, "the default 'auto' chooses at the first fit")
  await t.rejects(untrained.fit(small, { signal: 'stop' as never }), TypeError)
})

t.test('bad data through fit and evaluate: file, line and problem', async (t) => {
  const clf = tiny({ labels: ['negative', 'positive'] })
  t.teardown(() => clf.dispose())
  const unknown = file('unknown.tsv', '好\tpositive\n差\tnegative\n一般\tmeh\n')
  await t.rejects(clf.fit(unknown), { code: 'ERR_DATA', message: `${unknown}:3: unknown label "meh" (expected one of negative, positive (or 0..1))` })
  const missing = file('missing.jsonl', '{"text": "好", "label": 1}\n{"text": "差"}\n')
  await t.rejects(clf.fit(missing), { message: `${missing}:2: missing field "label"` })
  const empty = file('empty.tsv', '好\t1\n \t0\n')
  await t.rejects(clf.fit(empty), { message: `${empty}:2: empty text (whitespace only)` })
  const utf = file('latin1.tsv', Buffer.concat([Buffer.from('好\t1\n'), Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x09, 0x30, 0x0a])]))
  await t.rejects(clf.fit(utf), { message: `${utf}:2: invalid UTF-8 (byte 0xe9 at byte 4 of the line)` })
  const lonely = file('lonely.tsv', '好\t1\n差\t0\n坏\t0\n')
  await t.rejects(clf.fit(lonely), { message: `${lonely}: too few examples of class "positive": 1 (at least 2 needed)` })
  const evalFile = file('eval.tsv', '好\tpositive\n一般\tneutral\n')
  await t.rejects(clf.fit(small, { evalData: evalFile, maxSteps: 1 }), { message: `${evalFile}:2: label "neutral" never appears in the training data (classes: negative, positive)` })
  await t.rejects(clf.fit([{ text: '好', label: 1 }, { text: '差' } as never]), { message: 'data[1]: missing field "label"' })

  // skipping: counted per problem, nothing silent
  const mixed = file('mixed.tsv', [...small.slice(0, 40).map((e) => `${e.text}\t${e.label}`), '\t1', '没有标签', '一般\tmeh'].join('\n'))
  const r = await clf.fit(mixed, { onInvalid: 'skip', maxSteps: 1, evalData: evalFile })
  t.equal(r.data.train.examples, 40)
  t.same(r.data.train.skipped.reasons, { 'empty text': 1, 'missing field': 1, 'unknown label': 1 })
  t.equal(r.data.eval!.skipped.count, 1)
  t.match(r.data.eval!.skipped.first[0], { where: `${evalFile}:2`, problem: /never appears in the training data/ })

  await t.rejects(clf.evaluate(evalFile), DataError)
  const m = await clf.evaluate(evalFile, { onInvalid: 'skip' })
  t.equal(m.count, 1)
  t.equal(m.skipped.count, 1)
})

t.test('labels: numeric 0/1, names, numbers indexing given names, three classes', async (t) => {
  const numeric = tiny()
  t.teardown(() => numeric.dispose())
  await numeric.fit(small, { maxSteps: 1 })
  t.same(numeric.labels, ['negative', 'positive'])
  t.same(Object.keys((await numeric.predict('好')).scores), ['negative', 'positive'])

  const named = tiny({ labels: ['差评', '好评'] })
  t.teardown(() => named.dispose())
  await named.fit(small, { maxSteps: 1 })
  t.same(Object.keys((await named.predict('好')).scores), ['差评', '好评'], 'numbers index the given names')

  const three = tiny({ method: 'head', labels: ['negative', 'neutral', 'positive'] })
  t.teardown(() => three.dispose())
  // numbers index the given names: 2 is positive here
  const data = [...small.slice(0, 60).map((e) => ({ text: e.text, label: e.label === 1 ? 2 : 0 })), ...small.slice(60, 90).map((e) => ({ text: e.text, label: 'neutral' }))]
  await three.fit(data, { epochs: 2 })
  const p = await three.predict(['好', '差'])
  t.same(Object.keys(p[0].scores), ['negative', 'neutral', 'positive'])
  t.ok(Math.abs(Object.values(p[0].scores).reduce((a, b) => a + b, 0) - 1) < 1e-5)
  await t.rejects(three.fit([{ text: '好', label: 'positive' }, { text: '好', label: 'positive' }], { maxSteps: 1 }), /too few examples of class "negative": 0/)
})

t.test('class weights: balanced weights raise the rare class’s recall', async (t) => {
  const neg = small.filter((e) => e.label === 0)
  const pos = small.filter((e) => e.label === 1).slice(0, 12)
  const data = [...neg, ...pos]
  const recall = async (classWeights?: 'balanced') => {
    const clf = tiny({ method: 'head', pooling: 'mean' }, 3)
    await clf.fit(data, { epochs: 20, learningRate: 1e-2, classWeights })
    const preds = await clf.predict(pos.map((e) => e.text))
    await clf.dispose()
    return preds.filter((p) => p.label === 'positive').length / pos.length
  }
  const plain = await recall()
  const balanced = await recall('balanced')
  t.ok(balanced > plain, `positive recall ${plain} -> ${balanced} with balanced weights (${neg.length} negative, ${pos.length} positive)`)
  const clf = tiny()
  t.teardown(() => clf.dispose())
  await t.rejects(clf.fit(small, { classWeights: [1, 2, 3], maxSteps: 1 }), /classWeights: 3 weights for 2 classes/)
  await t.rejects(clf.fit(small, { classWeights: { neutral: 2 }, maxSteps: 1 }), /classWeights: "neutral" is not a class/)
  await t.rejects(clf.fit(small, { classWeights: [1, -1], maxSteps: 1 }), /weight of "positive" must be a positive number/)
  const r = await clf.fit(small, { classWeights: { positive: 3 }, maxSteps: 2 })
  t.equal(r.steps, 2)
})

t.test('truncation: head keeps the start, head_tail also the end', async (t) => {
  const long = '房间很大，早餐丰富，服务周到。'.repeat(30)
  for (const truncation of ['head', 'head_tail'] as const) {
    const clf = tiny({ truncation, maxLength: 24 })
    await clf.fit(small, { maxSteps: 2, learningRate: 1e-2 })
    const [a, b] = await clf.predict([long, long + '但是空调坏了，非常吵，再也不来了'])
    if (truncation === 'head') t.same(a, b, 'head: a different ending is cut off')
    else t.not(a.scores.positive, b.scores.positive, 'head_tail: the ending is read')
    await clf.dispose()
  }
  const clf = tiny()
  t.teardown(() => clf.dispose())
  await clf.fit(small, { maxSteps: 1 })
  await t.rejects(clf.predict(42 as never), TypeError)
  await t.rejects(clf.predict(['ok', 3 as never]), /texts\[1\] is not a string/)
  await t.rejects(clf.predict('ok', { batchSize: 0 }), RangeError)
  t.same(await clf.predict([]), [])
})

t.test('fit never blocks the event loop: the model runs off the JS thread, and the loop turns every step', async (t) => {
  for (const method of ['full', 'head'] as const) {
    const model = tinyRandomModel()
    const loop = new LoopTurns()
    // Every forward and backward of fit goes through these two methods of the model.
    for (const name of ['forward', 'lossAndGrad'] as const) {
      const call = model[name].bind(model) as (...args: unknown[]) => Promise<unknown>
      Object.assign(model, { [name]: (...args: unknown[]) => loop.track(call(...args)) })
    }
    const atStep: number[] = []
    const clf = new ErnieClassifier({ ...fast, model, method })
    const r = await clf.fit(TRAIN, { epochs: method === 'head' ? 10 : 1, batchSize: 16, onProgress: (p) => p.phase === 'train' && atStep.push(loop.turns) })
    loop.stop()
    const calls = loop.during.length
    const stuck = atStep.filter((n, i) => i > 0 && n === atStep[i - 1]).length
    t.comment(`${method}: ${r.steps} steps, ${calls} model calls, ${loop.interleaved} of them with the loop turning; ${stuck} steps with no turn since the last`)
    t.ok(calls > 0, `${method}: fit ran the model`)
    // A model call that computed on the JS thread would let no turn run while in flight. (Not
    // all of them: a call may finish before a busy machine gives this thread its next turn, and
    // the head's single-threaded forwards, queued two per core on the native lanes, are often
    // answered in the very turn the one before them was: the tiny model computes faster than the
    // JS thread takes the answers.)
    t.ok(loop.interleaved >= calls / (method === 'head' ? 4 : 2), `${method}: the event loop ran while model calls were in flight (${loop.interleaved} of ${calls})`)
    // Each step awaits native work (the gradient norm, the optimiser), so the loop turns between steps.
    t.equal(atStep.length, r.steps)
    t.equal(stuck, 0, `${method}: the loop turned between every two steps`)
    await clf.dispose()
    await model.dispose()
  }
})

t.test('concurrent predict calls', async (t) => {
  const clf = tiny()
  t.teardown(() => clf.dispose())
  await clf.fit(small, { maxSteps: 3, learningRate: 1e-2 })
  const groups = [train.texts.slice(0, 40), train.texts.slice(40, 45), [train.texts[99]], train.texts.slice(100, 170)]
  const sequential = []
  for (const g of groups) sequential.push(await clf.predict(g, { batchSize: 8 }))
  const together = await Promise.all(groups.map((g) => clf.predict(g, { batchSize: 8 })))
  t.same(together, sequential, 'the same results when the calls overlap')
})

t.test('predict pools as the full forward does (last, mean, first), batches running one per core', async (t) => {
  const tok = await Tokenizer.fromDirectory(TINY)
  const texts = [...train.texts.slice(0, 9), '好', '房间很大，早餐丰富，服务周到。'.repeat(5)]
  for (const pooling of ['last', 'mean', 'first'] as const) {
    const model = tinyRandomModel(3)
    const clf = new ErnieClassifier({ model, tokenizer: TINY, method: 'head', maxLength: 32, pooling })
    await clf.fit(small, { maxSteps: 2, learningRate: 1e-1 })
    const preds = await clf.predict(texts, { batchSize: 3 }) // 4 batches: two in flight at once on 2 cores
    const out = path.join(dir, `pool-${pooling}`)
    await clf.save(out)
    const names: string[] = JSON.parse(fs.readFileSync(path.join(out, 'classifier.json'), 'utf8')).labels.names
    const head = readSafetensorsForTest(path.join(out, 'head.safetensors'))
    const W = head.get('classifier.weight')!.raw, bias = head.get('classifier.bias')!.raw
    // the head method standardises features with the training set's statistics
    const mu = head.get('classifier.feature_mean')!.raw, sd = head.get('classifier.feature_std')!.raw
    const H = model.config.hidden_size
    const rows = encodeTexts(tok, texts, { maxLength: 32, truncation: 'head', appendEos: true })
    let worst = 0
    for (const [i, ids] of rows.entries()) {
      // each text alone, no padding, every position's state: pooled here
      const { hidden } = await model.forward({ inputIds: [Array.from(ids)] })
      const pick = pooling === 'last' ? [ids.length - 1] : pooling === 'first' ? [0] : Array.from(ids, (_, k) => k)
      const v = new Float64Array(H)
      for (const r of pick) for (let j = 0; j < H; j++) v[j] += hidden![r * H + j] / pick.length
      for (let j = 0; j < H; j++) v[j] = (v[j] - mu[j]) / sd[j]
      const z = names.map((_, c) => bias[c] + v.reduce((acc, x, j) => acc + x * W[c * H + j], 0))
      const zmax = Math.max(...z)
      const e = z.map((x) => Math.exp(x - zmax))
      const sum = e.reduce((a, b) => a + b, 0)
      names.forEach((name, c) => (worst = Math.max(worst, Math.abs(preds[i].scores[name] - e[c] / sum))))
    }
    t.ok(worst < 1e-5, `${pooling}: largest score difference ${worst.toExponential(2)}`)
    await clf.dispose()
    await model.dispose()
  }
})

t.test('abort stops fit between steps and leaves the classifier usable; busy and disposed states', async (t) => {
  const clf = tiny()
  const controller = new AbortController()
  const r = await clf.fit(small, {
    epochs: 5,
    batchSize: 8,
    signal: controller.signal,
    onProgress: (p) => {
      if (p.step === 3) controller.abort()
    },
  })
  t.equal(r.stopReason, 'aborted')
  t.equal(r.steps, 3, 'stopped after the step that was running')
  const p = await clf.predict(['好', '差'])
  t.equal(p.length, 2, 'predict works after an abort')
  const again = await clf.fit(small, { maxSteps: 2 })
  t.equal(again.stopReason, 'completed', 'and so does another fit')
  const before = await clf.fit(small, { signal: AbortSignal.abort(), maxSteps: 2 })
  t.equal(before.steps, 0, 'an aborted signal stops before the first step')

  const head = tiny({ method: 'head' })
  const hc = new AbortController()
  const hr = await head.fit(TRAIN, { signal: hc.signal, onProgress: (q) => q.phase === 'features' && q.step >= 64 && hc.abort() })
  t.equal(hr.stopReason, 'aborted', 'the head method stops during its feature pass')
  await head.fit(small, { maxSteps: 1 })
  t.equal((await head.predict(['好'])).length, 1)
  await head.dispose()

  // busy
  const running = clf.fit(small, { maxSteps: 20, batchSize: 4 })
  await t.rejects(clf.predict('好'), { code: 'ERR_BUSY' })
  await t.rejects(clf.fit(small), { code: 'ERR_BUSY' })
  await running

  // disposed: a model passed in stays the caller's
  const model = tinyRandomModel()
  const owned = new ErnieClassifier({ ...fast, model })
  await owned.fit(small, { maxSteps: 1 })
  await owned.dispose()
  await t.rejects(owned.predict('好'), { code: 'ERR_DISPOSED' })
  const out = await model.forward({ inputIds: [[5, 6, 7]] })
  t.equal(out.shape[1], 3, 'the caller’s model still works')
  await model.dispose()
  await clf.dispose()
  await clf.dispose()
  t.pass('dispose twice is harmless')
})
