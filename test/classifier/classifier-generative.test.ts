// ErnieClassifier, method 'generative': ERNIEKit's SFT recipe, where the model learns to answer
// a prompt with the label word ({src: [review], tgt: [answer]} JSON Lines) and predicts by
// scoring each label's answer tokens. Trained in full on the tiny random ernie-tiny; it must
// learn, and save / load must give the same predictions.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier } from '../../lib/classifier/index'
import { DEFAULT_PROMPT } from '../../lib/classifier/encode'
import { ErnieModel } from '../../lib/model/index'
import { Tokenizer } from '../../lib/tokenizer/index'
import { majorityShare, ODD_TEXTS, readTsv, tempDir, TEST, TINY, TRAIN, DEV } from '../helpers/classifier-helpers'

const dir = tempDir(t)
const WORDS = ['差评', '好评'] // label 0, label 1

// the fixture slice as ERNIEKit SFT files
function toErnieKit(tsv: string, name: string): string {
  const { texts, labels } = readTsv(tsv)
  const file = path.join(dir, name)
  fs.writeFileSync(file, texts.map((text, i) => JSON.stringify({ src: [text], tgt: [WORDS[labels[i]]] })).join('\n') + '\n')
  return file
}

t.test('generative (full): learns to answer with the label word', async (t) => {
  const train = toErnieKit(TRAIN, 'sft-train.jsonl')
  const dev = toErnieKit(DEV, 'sft-dev.jsonl')
  const test = toErnieKit(TEST, 'sft-test.jsonl')
  const clf = new ErnieClassifier({ model: TINY, method: 'generative', maxLength: 64, truncation: 'head_tail' })
  t.teardown(() => clf.dispose())
  const result = await clf.fit(train, { epochs: 2, learningRate: 2e-3, batchSize: 32, evalData: dev })
  t.same(clf.labels, ['好评', '差评'], 'the classes are the answers found in tgt (sorted)')
  const m = await clf.evaluate(test)
  const truth = readTsv(TEST).labels
  t.comment(`generative (full): dev accuracy ${result.metrics!.accuracy.toFixed(3)}, test accuracy ${m.accuracy.toFixed(3)}, macro-F1 ${m.macroF1.toFixed(3)} (always-majority ${majorityShare(truth)}), fit ${result.seconds.toFixed(1)} s`)
  t.ok(m.accuracy >= 0.7, `test accuracy ${m.accuracy}`)
  t.equal(result.evalHistory.length, 2)

  const texts = [...readTsv(TEST).texts.slice(0, 50), ...ODD_TEXTS]
  const preds = await clf.predict(texts)
  for (const p of preds) t.ok(Math.abs(p.scores['好评'] + p.scores['差评'] - 1) < 1e-5, 'the answers’ scores are a distribution')
  const out = path.join(dir, 'gen')
  await clf.save(out)
  const meta = JSON.parse(fs.readFileSync(path.join(out, 'classifier.json'), 'utf8'))
  t.same(meta.generative.labelWords, { 好评: '好评', 差评: '差评' })
  t.equal(meta.generative.tuning, 'full', 'a model under 100M parameters is trained in full')
  t.ok(fs.existsSync(path.join(out, 'model.safetensors')))
  t.notOk(fs.existsSync(path.join(out, 'head.safetensors')), 'no classification head')
  const loaded = await ErnieClassifier.load(out)
  t.teardown(() => loaded.dispose())
  t.same(await loaded.predict(texts), preds, 'identical predictions after load')

  // The scores again, here: each answer's log-probability after the prompt, from the saved
  // model's full logits (one text at a time, no padding), normalised over the answers.
  const model = await ErnieModel.fromPretrained(out, { tokenizer: false })
  t.teardown(() => model.dispose())
  const tok = await Tokenizer.fromDirectory(out)
  const [prefix, suffix] = DEFAULT_PROMPT.replace('{labels}', clf.labels.join('/')).split('{text}').map((part) => tok.encode(part))
  const answers = clf.labels.map((w) => [...tok.encode(w), tok.eosTokenId!])
  const V = model.config.vocab_size
  // texts that fit whole in maxLength 64 beside the prompt and the longest answer (no truncation)
  const room = 64 - prefix.length - suffix.length - Math.max(...answers.map((a) => a.length))
  const whole = texts.map((text, i) => ({ text, i, ids: tok.encode(text) })).filter((x) => x.ids.length > 0 && x.ids.length <= room)
  t.ok(whole.length >= 5, `${whole.length} texts fit whole`)
  let worst = 0
  for (const { ids, i } of whole.slice(0, 8)) {
    const prompt = [...prefix, ...ids, ...suffix]
    const logp = []
    for (const a of answers) {
      const { logits } = await model.forward({ inputIds: [[...prompt, ...a]] }, { output: ['logits'] })
      let sum = 0
      a.forEach((id, j) => {
        const row = logits!.subarray((prompt.length - 1 + j) * V, (prompt.length + j) * V)
        const max = row.reduce((m, x) => Math.max(m, x), -Infinity)
        sum += row[id] - max - Math.log(row.reduce((acc, x) => acc + Math.exp(x - max), 0))
      })
      logp.push(sum)
    }
    const top = Math.max(...logp)
    const z = logp.reduce((acc, x) => acc + Math.exp(x - top), 0)
    clf.labels.forEach((name, c) => (worst = Math.max(worst, Math.abs(preds[i].scores[name] - Math.exp(logp[c] - top) / z))))
  }
  t.ok(worst < 1e-4, `scores against the answers' log-probabilities from full logits: largest difference ${worst.toExponential(2)}`)
})

t.test('generative (lora) with label words and a custom prompt: trains, saves the adapter, round-trips', async (t) => {
  const clf = new ErnieClassifier({
    model: TINY,
    method: 'generative',
    tuning: 'lora',
    labelWords: { negative: '差评', positive: '好评' },
    prompt: '{text}\n这是{labels}？',
    maxLength: 64,
  })
  t.teardown(() => clf.dispose())
  const result = await clf.fit(TRAIN, { maxSteps: 4, learningRate: 1e-3, batchSize: 8 })
  t.equal(result.steps, 4)
  t.same(clf.labels, ['negative', 'positive'])
  const texts = readTsv(TEST).texts.slice(0, 20)
  const preds = await clf.predict(texts)
  t.ok(preds.every((p) => p.label === 'negative' || p.label === 'positive'))
  const out = path.join(dir, 'gen-lora')
  await clf.save(out)
  t.ok(fs.existsSync(path.join(out, 'adapter_model.safetensors')))
  t.notOk(fs.existsSync(path.join(out, 'model.safetensors')), 'the base is referenced')
  const loaded = await ErnieClassifier.load(out)
  t.teardown(() => loaded.dispose())
  t.same(await loaded.predict(texts), preds, 'identical predictions after load')
})

t.test('generative: answers must differ, the prompt must hold {text}', async (t) => {
  const same = new ErnieClassifier({ model: TINY, method: 'generative', labelWords: { negative: '好', positive: '好' } })
  t.teardown(() => same.dispose())
  await t.rejects(same.fit(TRAIN, { maxSteps: 1 }), { code: 'ERR_PROMPT', message: /encode to the same tokens/ })
  const noText = new ErnieClassifier({ model: TINY, method: 'generative', prompt: '情感：' })
  t.teardown(() => noText.dispose())
  await t.rejects(noText.fit(TRAIN, { maxSteps: 1 }), { code: 'ERR_PROMPT', message: /must contain \{text\} exactly once/ })
  const unknown = new ErnieClassifier({ model: TINY, method: 'generative', labelWords: { neutral: '中性' } })
  t.teardown(() => unknown.dispose())
  await t.rejects(unknown.fit(TRAIN, { maxSteps: 1 }), /labelWords: "neutral" is not a class/)
})
