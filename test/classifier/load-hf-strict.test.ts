// Hugging Face classifier directories that transformers would read differently, or refuse, are
// refused here too (regressions the structural fuzz, test/fuzz/gen-hf-classifier.ts, found):
// id2label and num_labels must agree, ids are written as transformers writes them, class names
// are distinct, problem_type is single-label, the head has two or more rows and nothing else,
// the adapter's head is finite. The directories are built here from the ernie-tiny fixture.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import { ErnieClassifier } from '../../lib/classifier/index'
import { saveSafetensors, type TensorToSave } from '../../lib/io/safetensors'
import { FIXTURES, tempDir } from '../helpers/classifier-helpers'
import { readSafetensorsForTest } from '../helpers/helpers'

const TINY = path.join(FIXTURES, 'ernie-tiny')
const CONFIG = JSON.parse(fs.readFileSync(path.join(TINY, 'config.json'), 'utf8')) as Record<string, unknown>
const H = CONFIG.hidden_size as number
const known = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => 0.5 * Math.sin(0.37 * i + k))

/** A safetensors file's tensors, to write again with others. */
function tensorsOf(file: string): Record<string, TensorToSave> {
  const out: Record<string, TensorToSave> = {}
  for (const [n, v] of readSafetensorsForTest(file)) out[n] = { dtype: v.dtype as TensorToSave['dtype'], shape: v.shape, data: v.raw as Float32Array }
  return out
}

/** An Ernie4_5ForSequenceClassification directory: the fixture's weights, `score`, config.json with `config` over it. */
async function fullDir(t: Parameters<typeof tempDir>[0], config: Record<string, unknown>, score: Record<string, TensorToSave> = { 'score.weight': { dtype: 'F32', shape: [2, H], data: known(2 * H, 1) } }): Promise<string> {
  const d = tempDir(t, 'ernie-hf-strict-')
  fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ ...CONFIG, architectures: ['Ernie4_5ForSequenceClassification'], ...config }))
  for (const f of ['tokenizer.model', 'tokenizer_config.json']) fs.copyFileSync(path.join(TINY, f), path.join(d, f))
  await saveSafetensors(path.join(d, 'model.safetensors'), { ...tensorsOf(path.join(TINY, 'model.safetensors')), ...score })
  return d
}

/** A PEFT SEQ_CLS adapter on ernie-tiny: the fixture adapter's LoRA tensors and `score` in modules_to_save. */
async function peftDir(t: Parameters<typeof tempDir>[0], score: Record<string, TensorToSave>): Promise<string> {
  const d = tempDir(t, 'ernie-hf-strict-')
  const config = JSON.parse(fs.readFileSync(path.join(TINY, 'adapter', 'adapter_config.json'), 'utf8'))
  fs.writeFileSync(path.join(d, 'adapter_config.json'), JSON.stringify({ ...config, task_type: 'SEQ_CLS', modules_to_save: ['score'], base_model_name_or_path: TINY }))
  await saveSafetensors(path.join(d, 'adapter_model.safetensors'), { ...tensorsOf(path.join(TINY, 'adapter', 'adapter_model.safetensors')), ...score })
  return d
}

t.test("config.json's labels: id2label and num_labels agree, ids as transformers writes them, distinct names", async (t) => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ id2label: { 0: 'a', 1: 'a' } }, /id2label names two classes "a"/],
    [{ id2label: { '0.0': 'a', 1: 'b' } }, /id2label must map the ids 0\.\.1 to names/],
    [{ id2label: { 0: 'a', 1: 'b' }, num_labels: 3 }, /num_labels is 3 but id2label names 2 classes/],
    [{ num_labels: '2' }, /num_labels must be a positive integer, got "2"/],
  ]
  for (const [config, message] of cases) {
    const d = await fullDir(t, config)
    await t.rejects(ErnieClassifier.load(d), { code: 'ERR_CLASSIFIER', message: new RegExp(`${path.join(d, 'config.json').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: ${message.source}`) }, JSON.stringify(config))
  }
  // num_labels alone names LABEL_0..: three of them for a two-row head is a disagreement
  await t.rejects(ErnieClassifier.load(await fullDir(t, { num_labels: 3 })), { code: 'ERR_CLASSIFIER', message: /id2label names 3 classes, score\.weight has 2/ })
  const clf = await ErnieClassifier.load(await fullDir(t, { num_labels: 2 }))
  t.same(clf.labels, ['LABEL_0', 'LABEL_1'], 'num_labels 2 alone: transformers names')
  await clf.dispose()
})

t.test('problem_type other than single-label, a one-row head and a head that is not finite are refused', async (t) => {
  for (const type of ['multi_label_classification', 'regression']) {
    const d = await fullDir(t, { problem_type: type })
    await t.rejects(ErnieClassifier.load(d), { code: 'ERR_CLASSIFIER', message: new RegExp(`config\\.json: problem_type "${type}": this package's classifiers are single-label`) }, type)
  }
  const ok = await ErnieClassifier.load(await fullDir(t, { problem_type: 'single_label_classification' }))
  await ok.dispose()
  const inf = known(2 * H, 1)
  inf[72] = Infinity
  const infinite = await fullDir(t, {}, { 'score.weight': { dtype: 'F32', shape: [2, H], data: inf } })
  await t.rejects(ErnieClassifier.load(infinite), { code: 'ERR_CLASSIFIER', message: /model\.safetensors: tensor "score\.weight" holds Infinity at element 72/ }, 'a full checkpoint\'s head holding Infinity')
  const one = await fullDir(t, { id2label: { 0: 'score' } }, { 'score.weight': { dtype: 'F32', shape: [1, H], data: known(H, 2) } })
  await t.rejects(ErnieClassifier.load(one), { code: 'ERR_CLASSIFIER', message: /score\.weight has one row: a regression head/ })
})

t.test("a PEFT adapter's head: weight and bias only, finite", async (t) => {
  const weight = { dtype: 'F32' as const, shape: [2, H], data: known(2 * H, 3) }
  const extra = await peftDir(t, { 'base_model.model.score.weight': weight, 'base_model.model.score.extra': { dtype: 'F32', shape: [2], data: known(2, 4) } })
  await t.rejects(ErnieClassifier.load(extra), { code: 'ERR_CLASSIFIER', message: /adapter_model\.safetensors: tensor "base_model\.model\.score\.extra" is no part of the classification head/ })
  const nan = known(2 * H, 3)
  nan[5] = NaN
  const bad = await peftDir(t, { 'base_model.model.score.weight': { ...weight, data: nan } })
  await t.rejects(ErnieClassifier.load(bad), { code: 'ERR_ADAPTER', message: /adapter_model\.safetensors: tensor "base_model\.model\.score\.weight" holds NaN at element 5/ })
  const clf = await ErnieClassifier.load(await peftDir(t, { 'base_model.model.score.weight': weight }))
  t.equal(clf.method, 'lora', 'the same adapter with weight alone loads')
  await clf.dispose()
})
