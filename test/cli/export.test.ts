// `ernie-sentiment export`: a saved classifier or a PEFT adapter to a merged checkpoint, in the
// HF and the Paddle layout, checked against what the API gives (the in-memory merge, the
// classifier's own predictions); usage errors exit 2, what cannot be exported exits 1 with its code.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier } from '../../lib/classifier/index'
import { ErnieModel, LoraAdapter } from '../../lib/model/index'
import { FIXTURES, readTsv, runMain, tempDir, TEST, TINY, TRAIN } from '../helpers/classifier-helpers'

const dir = tempDir(t, 'ernie-cli-export-')
const ADAPTER = path.join(TINY, 'adapter')
const input = { inputIds: [[5, 17, 300, 42, 9, 1000, 7]] }

t.test('export --adapter: the base with the adapter merged, in both layouts', async (t) => {
  const merged = await ErnieModel.fromPretrained(TINY)
  t.teardown(() => merged.dispose())
  const adapter = await LoraAdapter.load(ADAPTER, merged)
  await merged.mergeAdapter(adapter)
  adapter.dispose()
  const reference = (await merged.forward(input, { precision: 'fp32' })).hidden!
  for (const layout of ['hf', 'paddle']) {
    const out = path.join(dir, `adapter-${layout}`)
    const r = await runMain(['export', '--adapter', ADAPTER, '--base', TINY, '--out', out, '--layout', layout, '--json'])
    t.equal(r.code, 0, `exits 0 (${r.stderr})`)
    t.same(JSON.parse(r.stdout), { out, layout, from: ADAPTER })
    const back = await ErnieModel.fromPretrained(out)
    t.equal(back.weights.layout, layout)
    const hidden = (await back.forward(input, { precision: 'fp32' })).hidden!
    t.ok(hidden.every((x, i) => x === reference[i]), `${layout}: identical hidden states to mergeAdapter's`)
    await back.dispose()
  }
  // without --base: adapter_config.json's base_model_name_or_path
  const copy = path.join(dir, 'adapter-copy')
  fs.cpSync(ADAPTER, copy, { recursive: true })
  const cfgFile = path.join(copy, 'adapter_config.json')
  fs.writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgFile, 'utf8')), base_model_name_or_path: TINY }))
  const r = await runMain(['export', '--adapter', copy, '--out', path.join(dir, 'adapter-nobase')])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /^exported adapter .* \(hf layout\)\n$/)
})

t.test('export --model: a lora classifier, merged, predicts as before', async (t) => {
  const train = readTsv(TRAIN)
  const saved = path.join(dir, 'clf')
  const clf = new ErnieClassifier({ model: TINY, method: 'lora', maxLength: 48, precision: 'fp32' })
  await clf.fit(train.texts.slice(0, 48).map((text, i) => ({ text, label: train.labels[i] })), { epochs: 1, batchSize: 16, learningRate: 5e-3 })
  await clf.save(saved)
  const texts = readTsv(TEST).texts.slice(0, 12)
  const before = await clf.predict(texts)
  await clf.dispose()
  const out = path.join(dir, 'clf-paddle')
  const r = await runMain(['export', '--model', saved, '--out', out, '--layout', 'paddle', '--dtype', 'f32'])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /\(paddle layout, f32 merge\)/)
  const loaded = await ErnieClassifier.load(out)
  t.teardown(() => loaded.dispose())
  const after = await loaded.predict(texts)
  t.same(after.map((p) => p.label), before.map((p) => p.label), 'the same labels')
  t.ok(after.every((p, i) => Math.abs(p.score - before[i].score) < 1e-5), 'scores within f32 rounding (an f32 merge)')
  const again = await runMain(['export', '--model', saved, '--out', out, '--layout', 'paddle'])
  t.equal(again.code, 2, 'a classifier already there is not replaced without --overwrite')
  t.match(again.stderr, /holds a saved classifier; pass --overwrite/)
  t.equal((await runMain(['export', '--model', saved, '--out', out, '--overwrite'])).code, 0, '--overwrite replaces it')
})

t.test('usage errors exit 2; a Qwen3 model in the Paddle layout exits 1 with its code', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['export', '--out', path.join(dir, 'x')], /give --model \(a saved classifier\) or --adapter/],
    [['export', '--model', 'a', '--adapter', 'b', '--out', path.join(dir, 'x')], /give --model \(a saved classifier\) or --adapter/],
    [['export', '--adapter', ADAPTER], /--out is required/],
    [['export', '--adapter', ADAPTER, '--base', TINY, '--out', path.join(dir, 'x'), '--layout', 'onnx'], /--layout must be one of hf, paddle, got "onnx"/],
    [['export', '--adapter', ADAPTER, '--base', TINY, '--out', path.join(dir, 'adapter-hf')], /holds files; pass --overwrite/],
    [['export', '--adapter', ADAPTER, '--base', TINY, '--out', path.join(dir, 'x'), '--dtype', 'f16'], /--dtype must be one of bf16, f32/],
  ]
  for (const [args, message] of cases) {
    const r = await runMain(args)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.stderr, message)
    t.match(r.stderr, /Run 'ernie-sentiment export --help' for usage/)
  }
  const broken = path.join(dir, 'broken-adapter')
  fs.cpSync(ADAPTER, broken, { recursive: true })
  fs.writeFileSync(path.join(broken, 'adapter_config.json'), Buffer.from('{"r": 8, "base_model_name_or_path": "\xff"}', 'latin1'))
  const bad = await runMain(['export', '--adapter', broken, '--out', path.join(dir, 'x')])
  t.equal(bad.code, 1, 'a malformed adapter_config.json is an error of the adapter, not a crash')
  t.match(bad.stderr, /\[ERR_ADAPTER\] .*broken-adapter\/adapter_config\.json: invalid JSON \(not valid UTF-8\)/)
  const qwen = path.join(FIXTURES, 'qwen3-tiny')
  const r = await runMain(['export', '--adapter', path.join(qwen, 'adapter'), '--base', qwen, '--out', path.join(dir, 'qwen'), '--layout', 'paddle'])
  t.equal(r.code, 1)
  t.match(r.stderr, /\[ERR_UNSUPPORTED_MODEL\] exportModel: the ERNIEKit \/ Paddle layout is ERNIE-4\.5's/)
  const help = await runMain(['export', '--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /^Usage: ernie-sentiment export --model DIR --out DIR/)
  t.match((await runMain(['--help'])).stdout, /\n {2}export {4}a classifier or LoRA adapter as a merged checkpoint/)
})

t.test('export and serve read run files: ERNIEKit model_name_or_path is --base, flags over the file', async (t) => {
  const out = path.join(dir, 'from-run-file')
  const runFile = path.join(dir, 'run_export.yaml')
  fs.writeFileSync(runFile, `model_name_or_path: ${TINY}\nadapter: ${ADAPTER}\nout: ${path.join(dir, 'not-this')}\nlayout: paddle\n`)
  const printed = await runMain(['export', runFile, '--out', out, '--print-config'])
  t.equal(printed.code, 0, printed.stderr)
  t.match(printed.stdout, new RegExp(`^base: "${TINY}" +# .*run_export\\.yaml:1: model_name_or_path$`, 'm'))
  t.match(printed.stdout, new RegExp(`^out: "${out}" +# --out$`, 'm'))
  t.notOk(fs.existsSync(out), '--print-config writes nothing')
  const r = await runMain(['export', runFile, '--out', out, '--json'])
  t.equal(r.code, 0, r.stderr)
  t.same(JSON.parse(r.stdout), { out, layout: 'paddle', from: ADAPTER })
  const bad = path.join(dir, 'bad_export.yaml')
  fs.writeFileSync(bad, `adapter: ${ADAPTER}\nlayout: onnx\n`)
  const refused = await runMain(['export', bad, '--out', path.join(dir, 'x')])
  t.equal(refused.code, 2)
  t.match(refused.stderr, /bad_export\.yaml:2: layout must be one of hf, paddle, got "onnx"/)

  const serveFile = path.join(dir, 'serve.yaml')
  fs.writeFileSync(serveFile, `model: [a=${out}, ${TINY}]\nport: 0\nmax-wait-ms: 5\n`)
  const serve = await runMain(['serve', serveFile, '--port', '9000', '--print-config'])
  t.equal(serve.code, 0, serve.stderr)
  t.match(serve.stdout, /^port: 9000 +# --port$/m)
  t.match(serve.stdout, /^max-wait-ms: 5 +# .*serve\.yaml:3: max-wait-ms$/m)
  const twice = await runMain(['serve', '--model', `${TINY}/`, '--model', TINY, '--print-config'])
  t.equal(twice.code, 2)
  t.match(twice.stderr, /--model: two classifiers are named "ernie-tiny"; name them apart with NAME=DIR/)
})
