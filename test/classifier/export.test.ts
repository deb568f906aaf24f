// ErnieClassifier.export: a 'lora' classifier written with its adapter merged into the model, in
// the HF layout and ERNIEKit's, loaded back by ErnieClassifier.load. References: the saved
// adapter merged in memory by mergeAdapter on the base (the exported model must equal it
// exactly), the original classifier's predictions (the same labels; scores within the merge's
// rounding: f32 merge within f32 rounding, bf16 within bf16's), the ernie-tiny-paddle fixture's
// header (the Paddle names and shapes).
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier } from '../../lib/classifier/index'
import { ErnieModel, LoraAdapter } from '../../lib/model/index'
import { readSafetensorsForTest } from '../helpers/helpers'
import { FIXTURES, readTsv, tempDir, TEST, TINY, TRAIN } from '../helpers/classifier-helpers'

const root = tempDir(t, 'ernie-clf-export-')
const train = readTsv(TRAIN)
const rows = train.texts.slice(0, 64).map((text, i) => ({ text, label: train.labels[i] }))
const texts = readTsv(TEST).texts.slice(0, 40)
const common = { maxLength: 48, precision: 'fp32' as const }
const saved = path.join(root, 'lora')

/** The largest |a - b| of the class scores of two prediction lists. */
function maxScoreDiff(a: { scores: Record<string, number> }[], b: { scores: Record<string, number> }[]): number {
  let worst = 0
  a.forEach((p, i) => {
    for (const k of Object.keys(p.scores)) worst = Math.max(worst, Math.abs(p.scores[k] - b[i].scores[k]))
  })
  return worst
}

t.before(async () => {
  const clf = new ErnieClassifier({ model: TINY, method: 'lora', lora: { r: 4, alpha: 8 }, ...common })
  await clf.fit(rows, { epochs: 2, learningRate: 5e-3, batchSize: 16 })
  await clf.save(saved)
  await clf.dispose()
})

t.test("a 'lora' classifier exported in both layouts predicts as the original, from a model that is the adapter merged", async (t) => {
  const original = await ErnieClassifier.load(saved)
  t.teardown(() => original.dispose())
  const before = await original.predict(texts)

  // the reference model: the saved adapter merged in memory into the base it was trained on
  const base = await ErnieModel.fromPretrained(TINY)
  t.teardown(() => base.dispose())
  const adapter = await LoraAdapter.load(saved, base, { modulesToSave: ['score'] })
  await base.mergeAdapter(adapter)
  adapter.dispose()
  const input = { inputIds: [[5, 17, 300, 42, 9, 1000, 7, 2], [8, 9, 10, 11, 2, 0, 0, 0]], attentionMask: [[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0, 0]] }
  const reference = (await base.forward(input, { precision: 'fp32' })).hidden!

  const exported: Record<string, Awaited<ReturnType<typeof original.predict>>> = {}
  for (const layout of ['hf', 'paddle'] as const) {
    const out = path.join(root, `export-${layout}`)
    await original.export(out, { layout })
    const meta = JSON.parse(fs.readFileSync(path.join(out, 'classifier.json'), 'utf8'))
    t.equal(meta.method, 'full', `${layout}: runs as 'full'`)
    t.same(meta.exported, { from: 'lora', layout, adapterMerged: true })
    t.same({ kind: meta.base.kind, ref: meta.base.ref }, { kind: 'saved', ref: '.' })
    t.equal(meta.lora, undefined, 'no adapter recorded')
    t.notOk(fs.existsSync(path.join(out, 'adapter_model.safetensors')), 'no adapter file')
    const header = readSafetensorsForTest(path.join(out, 'model.safetensors'))
    if (layout === 'paddle') {
      const fixture = readSafetensorsForTest(path.join(FIXTURES, 'ernie-tiny-paddle', 'model.safetensors'))
      t.same(Object.fromEntries([...header].map(([n, v]) => [n, v.shape])), Object.fromEntries([...fixture].map(([n, v]) => [n, v.shape])), "paddle: the fixture's names and shapes, no score")
      t.same(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).architectures, ['Ernie4_5_ForCausalLM'])
    } else {
      t.same(header.get('score.weight')?.shape, [2, 64], 'hf: score.weight beside the merged weights')
      t.same(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).architectures, ['Ernie4_5ForSequenceClassification'])
    }
    t.same(fs.readFileSync(path.join(out, 'head.safetensors')), fs.readFileSync(path.join(saved, 'head.safetensors')), 'the same head')

    const model = await ErnieModel.fromPretrained(out)
    const hidden = (await model.forward(input, { precision: 'fp32' })).hidden!
    let d = 0
    for (let i = 0; i < hidden.length; i++) d = Math.max(d, Math.abs(hidden[i] - reference[i]))
    t.equal(d, 0, `${layout}: the exported model is the adapter merged by mergeAdapter (max |hidden diff| ${d})`)
    await model.dispose()

    const loaded = await ErnieClassifier.load(out)
    exported[layout] = await loaded.predict(texts)
    t.equal(loaded.method, 'full')
    await loaded.dispose()
    const diff = maxScoreDiff(exported[layout], before)
    t.comment(`${layout} export (bf16 merge) vs the original: max |score diff| ${diff.toExponential(2)}`)
    t.same(exported[layout].map((p) => p.label), before.map((p) => p.label), `${layout}: the same labels`)
    // the merged weights are rounded to bf16 once (relative 2^-9): scores move by far less than 1e-2
    t.ok(diff < 1e-2, `${layout}: scores within bf16 rounding of the original (${diff.toExponential(2)})`)
  }
  t.same(exported.paddle, exported.hf, 'the two layouts predict identically')

  // an f32 merge leaves only f32 rounding between the merged and the unmerged computation
  const f32 = path.join(root, 'export-f32')
  await original.export(f32, { dtype: 'f32' })
  const loaded = await ErnieClassifier.load(f32)
  const after = await loaded.predict(texts)
  await loaded.dispose()
  const diff = maxScoreDiff(after, before)
  t.comment(`hf export (f32 merge) vs the original: max |score diff| ${diff.toExponential(2)}`)
  t.same(after.map((p) => p.label), before.map((p) => p.label), 'f32 merge: the same labels')
  t.ok(diff < 1e-5, `f32 merge: scores within f32 rounding of the original (${diff.toExponential(2)})`)
})

t.test("a 'head' classifier exports with its base model copied, predicting exactly as before; Qwen3 has no Paddle form", async (t) => {
  const qwen = path.join(FIXTURES, 'qwen3-tiny')
  const clf = new ErnieClassifier({ model: qwen, method: 'head', ...common })
  t.teardown(() => clf.dispose())
  await clf.fit(rows, { epochs: 3, learningRate: 5e-3, batchSize: 16 })
  const before = await clf.predict(texts)
  const out = path.join(root, 'head-hf')
  await clf.export(out)
  const meta = JSON.parse(fs.readFileSync(path.join(out, 'classifier.json'), 'utf8'))
  t.same([meta.method, meta.exported, meta.base.kind], ['head', { from: 'head', layout: 'hf', adapterMerged: false }, 'saved'])
  t.ok(fs.existsSync(path.join(out, 'model.safetensors')), 'the base model is in the directory')
  const loaded = await ErnieClassifier.load(out)
  t.teardown(() => loaded.dispose())
  t.same(await loaded.predict(texts), before, 'identical predictions (no merge: the same weights)')
  const paddle = path.join(root, 'head-paddle')
  await t.rejects(clf.export(paddle, { layout: 'paddle' }), { code: 'ERR_UNSUPPORTED_MODEL', message: /export: the ERNIEKit \/ Paddle layout is ERNIE-4\.5's; a qwen3 model has none/ })
  t.notOk(fs.existsSync(paddle), 'nothing written')
  await t.rejects(new ErnieClassifier({ model: qwen }).export(path.join(root, 'untrained')), { code: 'ERR_NOT_TRAINED' })
})
