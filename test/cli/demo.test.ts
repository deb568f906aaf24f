// `ernie-sentiment demo` end to end on the tiny fixture model and the first rows of the bundled
// ChnSentiCorp: exit codes, the printed numbers against an evaluation of the saved classifier,
// the saved directory, and, from a copy of the package without weights or with a cut-down data
// set, the missing-default-model error and that the data comes from the package itself.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import { ErnieClassifier, type Prediction } from '../../lib/classifier/index'
import { DEMO, DEMO_FIT_DEFAULTS } from '../../lib/cli/demo'
import { helpText } from '../../lib/cli/settings'
import { readTsv, runCli, runMain, tempDir, TINY } from '../helpers/classifier-helpers'

const ROOT = path.join(__dirname, '..', '..')
const BUNDLED = path.join(ROOT, 'data', 'chnsenticorp')
const dir = tempDir(t, 'ernie-demo-')
const NAMES = ['negative', 'positive']
// small enough for a few seconds: 64 training reviews, 40 of dev and of test, short texts
const QUICK = ['--base', TINY, '--train-limit', '64', '--test-limit', '40', '--epochs', '1', '--batch-size', '16', '--max-length', '48']

const run = (args: string[], bin?: string) => runCli(args, { bin, cwd: ROOT })

const inProcess = runMain

function counts(labels: number[]): Record<string, number> {
  return { negative: labels.filter((y) => y === 0).length, positive: labels.filter((y) => y === 1).length }
}

function first(file: string, n: number): { texts: string[]; labels: number[] } {
  const all = readTsv(file)
  return { texts: all.texts.slice(0, n), labels: all.labels.slice(0, n) }
}

t.test('the demo trains, evaluates, shows and saves (--json)', async (t) => {
  const out = path.join(dir, 'json')
  const r = await run(['demo', ...QUICK, '--out', out, '--json'])
  t.equal(r.code, 0, `exit 0 (${r.stderr.slice(-400)})`)
  const res = JSON.parse(r.stdout)
  const train = first(path.join(BUNDLED, 'train.tsv'), 64)
  const dev = first(path.join(BUNDLED, 'dev.tsv'), 40)
  const test = first(path.join(BUNDLED, 'test.tsv'), 40)
  t.same(
    res.data,
    {
      train: { source: path.join(BUNDLED, 'train.tsv'), examples: 64, classCounts: counts(train.labels) },
      dev: { source: path.join(BUNDLED, 'dev.tsv'), examples: 40, classCounts: counts(dev.labels) },
      test: { source: path.join(BUNDLED, 'test.tsv'), examples: 40, classCounts: counts(test.labels) },
    },
    'the bundled splits, cut to the limits',
  )
  t.equal(res.method, DEMO_FIT_DEFAULTS.method)
  t.equal(res.fit.steps, 64 / 16, 'one epoch of 16-review steps')
  t.equal(res.fit.stopReason, 'completed')
  t.ok(res.fit.seconds > 0)
  t.equal(res.fit.dev.count, 40, 'dev evaluated during fit')

  t.ok(fs.existsSync(path.join(out, 'classifier.json')), 'the classifier is saved')
  t.match(fs.readFileSync(path.join(out, 'report.html'), 'utf8'), /<svg/, 'with its report')
  t.equal(res.out, out)
  t.equal(res.report, path.join(out, 'report.html'))

  const loaded = await ErnieClassifier.load(out)
  t.teardown(() => loaded.dispose())
  const again = await loaded.evaluate(test.texts.map((text, i) => ({ text, label: test.labels[i] })))
  t.equal(res.test.accuracy, again.accuracy, 'the printed accuracy is the saved classifier’s on the same rows')
  t.equal(res.test.macroF1, again.macroF1)
  t.same(res.test.confusion, again.confusion)
  t.equal(res.test.count, 40)

  // the settings in force: the flags given, DEMO_FIT_DEFAULTS for the rest
  const saved = JSON.parse(fs.readFileSync(path.join(out, 'classifier.json'), 'utf8'))
  t.equal(saved.maxLength, 48)
  t.equal(saved.pooling, DEMO_FIT_DEFAULTS.pooling)
  t.equal(saved.training.options.learningRate, DEMO_FIT_DEFAULTS.learningRate)
  t.equal(saved.training.options.warmupRatio, DEMO_FIT_DEFAULTS.warmupRatio)
  t.equal(saved.training.options.batchSize, 16)

  t.equal(res.samples.length, 6)
  const want = (await loaded.predict(res.samples.map((s: { text: string }) => s.text))) as Prediction[]
  res.samples.forEach((s: { text: string; gold: string; label: string; score: number }, i: number) => {
    const row = test.texts.indexOf(s.text)
    t.ok(row >= 0, 'a test review')
    t.equal(s.gold, NAMES[test.labels[row]], 'its gold label')
    t.equal(s.label, want[i].label, 'the saved classifier’s prediction')
    t.equal(s.score, want[i].score)
  })
  t.same(
    [...new Set(res.samples.map((s: { gold: string }) => s.gold))].sort(),
    NAMES,
    'both classes shown',
  )
})

t.test('the demo as text: sizes, progress, metrics, predictions and a default out dir', async (t) => {
  const r = await inProcess(['demo', ...QUICK])
  t.equal(r.code, 0, r.stderr.slice(-400))
  const out = /^saved the classifier to (.+)$/m.exec(r.stdout)?.[1]
  t.ok(out, 'the out dir is printed')
  t.teardown(() => fs.rmSync(out!, { recursive: true, force: true }))
  t.ok(out!.startsWith(os.tmpdir()), 'under os.tmpdir()')
  t.ok(fs.existsSync(path.join(out!, 'classifier.json')) && fs.existsSync(path.join(out!, 'report.html')))
  t.match(r.stdout, new RegExp(`^report: ${out!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/report\\.html$`, 'm'))

  const test = first(path.join(BUNDLED, 'test.tsv'), 40)
  const c = counts(test.labels)
  t.match(r.stdout, new RegExp(`^ChnSentiCorp \\(bundled\\): train 64 \\(\\d+ negative / \\d+ positive\\), dev 40 \\(\\d+ negative / \\d+ positive\\), test 40 \\(${c.negative} negative / ${c.positive} positive\\)$`, 'm'))
  t.match(r.stdout, /^fit: 4 steps, 1\.00 epochs in 0:\d\d \(\d+\.\d s wall\)/m, 'the wall time of fit')

  const loaded = await ErnieClassifier.load(out!)
  t.teardown(() => loaded.dispose())
  const m = await loaded.evaluate(test.texts.map((text, i) => ({ text, label: test.labels[i] })))
  const correct = m.confusion[0][0] + m.confusion[1][1]
  t.match(r.stdout, `accuracy  ${m.accuracy.toFixed(4)}  (${correct}/40, `, 'the accuracy line matches an evaluation of the saved classifier')
  t.match(r.stdout, `macro-F1  ${m.macroF1.toFixed(4)}\n`)
  t.match(r.stdout, `negative  ${String(m.confusion[0][0]).padStart(10)}${String(m.confusion[0][1]).padStart(10)}\n`, 'the confusion matrix')
  const table = r.stdout.slice(r.stdout.indexOf('test predictions (6):')).split('\n')
  t.match(table[1], /^gold +predicted +score +text$/)
  for (const line of table.slice(2, 8)) t.match(line, /^(negative|positive) +(negative|positive)( ✗)? +[01]\.\d{3} +\S/, 'gold, predicted, score, text')

  const progress = r.stderr.trim().split('\n')
  t.match(progress.at(-1), /^train {2}step 4\/4 {2}epoch 1\.00 .* eval acc \d\.\d{3} f1 \d\.\d{3} {2}ETA 0:00$/, 'plain progress lines when not on a terminal')
})

t.test('--help and usage errors', async (t) => {
  const help = await inProcess(['demo', '--help'])
  t.equal(help.code, 0)
  t.equal(help.stdout, helpText(DEMO))
  for (const flag of ['--base', '--method', '--epochs', '--batch-size', '--lr', '--max-length', '--out', '--train-limit', '--test-limit', '--json']) t.match(help.stdout, `\n  ${flag} `)
  t.match((await inProcess(['--help'])).stdout, /\n {2}demo {6}/, 'listed in the main help')
  const notEmpty = path.join(dir, 'busy')
  fs.mkdirSync(notEmpty)
  fs.writeFileSync(path.join(notEmpty, 'notes.txt'), 'mine')
  const cases: Array<[string[], RegExp]> = [
    [['demo', '--epochs', '0'], /--epochs must be a positive number/],
    [['demo', '--train-limit', '0'], /--train-limit must be an integer >= 1/],
    [['demo', '--method', 'svm'], /--method must be one of head, lora, full, generative/],
    [['demo', 'extra'], /unexpected argument "extra"/],
    [['demo', '--out', notEmpty], /--out: .*busy holds other files and no classifier\.json/],
  ]
  for (const [args, message] of cases) {
    const r = await inProcess(args)
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`)
    t.match(r.stderr, message)
    t.match(r.stderr, /Run 'ernie-sentiment demo --help' for usage/)
  }
  t.equal(fs.readdirSync(notEmpty).join(), 'notes.txt', 'nothing written over')
})

// A copy of the package as it ships before the default model's weights exist (lib, the native
// build, the tokenizer only), with a cut-down ChnSentiCorp of its own.
function packageCopy(root: string): string {
  fs.mkdirSync(root)
  fs.writeFileSync(path.join(root, 'package.json'), JSON.stringify({ name: 'ernie-sentiment', version: '0.0.0' }))
  for (const shipped of ['lib', 'chat-templates']) fs.cpSync(path.join(ROOT, shipped), path.join(root, shipped), { recursive: true })
  fs.copyFileSync(path.join(ROOT, 'tsconfig.json'), path.join(root, 'tsconfig.json'))
  for (const linked of ['node_modules', 'build']) fs.symlinkSync(path.join(ROOT, linked), path.join(root, linked))
  const model = path.join(root, 'models', 'ernie-4.5-tiny-zh')
  fs.mkdirSync(model, { recursive: true })
  for (const f of ['tokenizer.model', 'tokenizer_config.json']) fs.copyFileSync(path.join(ROOT, 'models', 'ernie-4.5-tiny-zh', f), path.join(model, f))
  const data = path.join(root, 'data', 'chnsenticorp')
  fs.mkdirSync(data, { recursive: true })
  for (const [split, n] of [['train', 30], ['dev', 12], ['test', 10]] as const) {
    const lines = fs.readFileSync(path.join(BUNDLED, `${split}.tsv`), 'utf8').split('\n')
    fs.writeFileSync(path.join(data, `${split}.tsv`), lines.slice(0, n + 1).join('\n') + '\n')
  }
  return root
}

t.test('a package without the default model: exit 1 and ERR_NO_DEFAULT_MODEL; its own data otherwise', async (t) => {
  const pkg = packageCopy(path.join(dir, 'pkg'))
  const bin = path.join(pkg, 'lib', 'cli', 'bin.ts')
  t.notOk(fs.existsSync(path.join(pkg, 'models', 'ernie-4.5-tiny-zh', 'config.json')), 'no weights in the copy')
  const never = path.join(dir, 'never')
  const r = await run(['demo', '--out', never], bin)
  t.equal(r.code, 1, 'exit 1')
  t.equal(r.stdout, '', 'nothing on stdout')
  t.match(r.stderr, /^ernie-sentiment: \[ERR_NO_DEFAULT_MODEL\] ErnieClassifier: no model given, and this package has no bundled default model \(.*models[/\\]ernie-4\.5-tiny-zh\).*; for the demo, name a base model with --base DIR\|ID\n$/)
  t.notOk(fs.existsSync(never), 'nothing saved')

  const ok = await run(['demo', '--base', TINY, '--epochs', '1', '--max-length', '32', '--out', path.join(dir, 'pkg-out'), '--json', '--quiet'], bin)
  t.equal(ok.code, 0, ok.stderr.slice(-400))
  const res = JSON.parse(ok.stdout)
  t.same(
    [res.data.train.examples, res.data.dev.examples, res.data.test.examples],
    [30, 12, 10],
    'the package reads the splits it ships, nothing else',
  )
  t.equal(res.data.train.source, path.join(fs.realpathSync(pkg), 'data', 'chnsenticorp', 'train.tsv'))
})
