// The `ernie-sentiment` command line: train / eval / predict as subprocesses (exit codes, --json
// output parsed, predict from arguments and from stdin), --help and usage errors, and the
// progress output on a TTY and through a pipe.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier } from '../../lib/classifier/index'
import { ProgressReporter } from '../../lib/cli/progress'
import { DEV, labelEntropy, majorityShare, readTsv, runCli, runMain, tempDir, TEST, TINY, TRAIN } from '../helpers/classifier-helpers'

const dir = tempDir(t)
const out = path.join(dir, 'clf')

const run = (args: string[], input?: string) => runCli(args, { input })

const inProcess = runMain

t.test('train, eval and predict as commands', async (t) => {
  const train = await run(['train', '--data', TRAIN, '--eval', DEV, '--base', TINY, '--method', 'full', '--max-length', '32', '--epochs', '1', '--batch-size', '32', '--lr', '2e-3', '--out', out, '--json'])
  t.equal(train.code, 0, `train exits 0 (${train.stderr.slice(-300)})`)
  const r = JSON.parse(train.stdout)
  t.equal(r.method, 'full')
  t.equal(r.steps, Math.ceil(2000 / 32))
  t.same(r.labels, ['negative', 'positive'])
  // It learned: on dev, a loss below what any text-blind prediction scores (accuracy is checked on
  // test below, whose majority share is lower)
  const dev = readTsv(DEV).labels
  t.ok(r.metrics.loss < labelEntropy(dev), `dev loss ${r.metrics.loss.toFixed(3)} < ${labelEntropy(dev).toFixed(3)}, the labels' entropy`)
  t.equal(r.out, out)
  t.ok(fs.existsSync(r.report), 'the report is written')
  t.match(fs.readFileSync(r.report, 'utf8'), /<svg/)
  const lines = train.stderr.trim().split('\n')
  t.ok(lines.length >= 10 && lines.length <= 40, `piped progress: a line now and then (${lines.length})`)
  t.match(lines.at(-1), /^train  step 63\/63  epoch 1\.00  loss \d\.\d{4}  acc \d\.\d{3}  eval acc \d\.\d{3} f1 \d\.\d{3}  ETA 0:00$/)
  t.notMatch(train.stderr, /\r|\x1b\[/, 'no terminal control codes in a pipe')

  const loaded = await ErnieClassifier.load(out)
  t.teardown(() => loaded.dispose())
  const evalJson = await run(['eval', '--model', out, '--data', TEST, '--json'])
  t.equal(evalJson.code, 0)
  const m = JSON.parse(evalJson.stdout)
  const expected = await loaded.evaluate(TEST)
  t.equal(m.accuracy, expected.accuracy, 'eval --json reports the evaluation')
  const testLabels = readTsv(TEST).labels
  t.ok(m.loss < labelEntropy(testLabels), `test loss ${m.loss.toFixed(3)} < ${labelEntropy(testLabels).toFixed(3)}, the labels' entropy`)
  t.ok(m.accuracy >= majorityShare(testLabels) + 0.08, `test accuracy ${m.accuracy} well above ${majorityShare(testLabels)} (always the majority)`)
  t.same(m.confusion, expected.confusion)
  t.equal(m.macroF1, expected.macroF1)

  const texts = readTsv(TEST).texts.slice(0, 3)
  const fromStdin = await run(['predict', '--model', out], `${texts[0]}\n\n${texts[1]}\r\n${texts[2]}\n`)
  t.equal(fromStdin.code, 0)
  const got = fromStdin.stdout.trim().split('\n').map((l) => JSON.parse(l))
  const want = await loaded.predict(texts)
  t.same(
    got,
    texts.map((text, i) => ({ text, ...want[i] })),
    'one JSON line per stdin line (blank lines skipped)',
  )
  const fromArgs = await run(['predict', '--model', out, '房间很干净', '服务太差'])
  t.equal(fromArgs.code, 0)
  t.same(
    fromArgs.stdout.trim().split('\n').map((l) => JSON.parse(l).text),
    ['房间很干净', '服务太差'],
  )
})

t.test('failures exit non-zero with the reason', async (t) => {
  const bad = path.join(dir, 'bad.tsv')
  fs.writeFileSync(bad, '好\t1\n差\t\n')
  const r = await run(['train', '--data', bad, '--base', TINY, '--out', path.join(dir, 'never'), '--quiet'])
  t.equal(r.code, 1)
  t.equal(r.stderr, `ernie-sentiment: [ERR_DATA] ${bad}:2: missing label\n`)
  t.notOk(fs.existsSync(path.join(dir, 'never')), 'nothing saved')
  const usage = await run(['eval', '--model', out])
  t.equal(usage.code, 2)
  t.match(usage.stderr, /--data is required/)
  const missing = await run(['predict', '--model', path.join(dir, 'nope'), 'x'])
  t.equal(missing.code, 1)
  t.match(missing.stderr, /ERR_CLASSIFIER/)
})

t.test('--help on each command, usage errors', async (t) => {
  for (const cmd of ['train', 'eval', 'predict']) {
    const r = await inProcess([cmd, '--help'])
    t.equal(r.code, 0)
    t.match(r.stdout, new RegExp(`^Usage: ernie-sentiment ${cmd} `))
  }
  t.match((await inProcess(['--help'])).stdout, /Commands:\n {2}train/)
  t.match((await inProcess(['--version'])).stdout, /^\d+\.\d+\.\d+\n$/)
  const cases: Array<[string[], RegExp]> = [
    [[], /Usage: ernie-sentiment <command>/],
    [['fly'], /unknown command "fly"/],
    [['train', '--out', 'x'], /--data is required/],
    [['train', '--data', TRAIN, '--out', 'x', '--method', 'svm'], /--method must be one of head, lora, full, generative/],
    [['train', '--data', TRAIN, '--out', 'x', '--epochs', '0'], /--epochs must be a positive number/],
    [['train', '--data', TRAIN, '--out', 'x', '--adam-beta2', '1'], /--adam-beta2 must be a number in \[0, 1\)/],
    [['train', '--data', TRAIN, '--out', 'x', '--optimizer', 'lion'], /--optimizer must be one of adamw, adamw8bit, sgd/],
    [['train', '--data', TRAIN, '--out', 'x', '--lora-target-modules', 'q_proj,wq'], /--lora-target-modules must be a list of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj/],
    [['train', '--data', TRAIN, '--out', 'x', '--frobnicate'], /^ernie-sentiment: unknown option --frobnicate\n/],
    // A slip gets the flag it was probably meant to be; quotes stay balanced.
    [['train', '--data', TRAIN, '--out', 'x', '--epoch', '1'], /^ernie-sentiment: unknown option --epoch; did you mean --epochs\?\n/],
    [['train', '--data', TRAIN, '--out', 'x', '--batchsize=8'], /unknown option --batchsize; did you mean --batch-size\?/],
    [['predict', '--modle', out], /unknown option --modle; did you mean --model\?/],
    [['train', '--data', TRAIN, '--out', 'x', '-e', '1'], /unknown option -e \(the only short option is -h\)/],
    // One meaning per flag: --base a base model, --model a saved classifier.
    [['train', '--data', TRAIN, '--out', 'x', '--model', 'm'], /unknown option --model: a base model is --base DIR\|ID here \(--model names a saved classifier, for eval and predict\)/],
    [['demo', '--model', 'm'], /unknown option --model: a base model is --base DIR\|ID here/],
    [['train', '--data', path.join(dir, 'absent.tsv'), '--out', 'x'], /--data: no such file/],
    [['eval', '--model', out, '--data', TEST, 'extra'], /unexpected argument "extra"/],
    // --out is checked before training starts, so that no finished run is lost at the save.
    [['train', '--data', TRAIN, '--out', out], /--out: .*clf holds a saved classifier; pass --overwrite to replace it/],
    [['train', '--data', TRAIN, '--out', TRAIN], /--out: .*train\.tsv is a file/],
    [['train', '--data', TRAIN, '--out', path.dirname(TRAIN)], /--out: .* holds other files and no classifier\.json/],
  ]
  for (const [args, message] of cases) {
    const r = await inProcess(args)
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`)
    t.match(r.stderr, message)
  }
  const replaced = await inProcess(['train', '--data', TRAIN, '--base', TINY, '--method', 'head', '--max-length', '32', '--out', out, '--overwrite', '--quiet', '--json'])
  t.equal(replaced.code, 0, '--overwrite replaces the saved classifier')
  t.equal(JSON.parse(fs.readFileSync(path.join(out, 'classifier.json'), 'utf8')).method, 'head', 'with the new one')
  t.same([JSON.parse(replaced.stdout).labels, JSON.parse(replaced.stdout).labelsInferred], [['negative', 'positive'], true], 'the classes inferred from the data are reported as such')
  // Checkpoints beside the classifier, the best evaluation's weights put back at the end, and a resume.
  const ck = path.join(dir, 'ck')
  const withCk = ['train', '--data', TRAIN, '--eval', DEV, '--base', TINY, '--method', 'lora', '--max-length', '32', '--max-steps', '4', '--batch-size', '32', '--save-steps', '2', '--eval-steps', '2', '--metric-for-best-model', 'accuracy', '--load-best-model-at-end', '--out', ck, '--quiet', '--json']
  const first = await inProcess(withCk)
  t.equal(first.code, 0, first.stderr)
  t.same(fs.readdirSync(`${ck}.checkpoints`).sort(), ['checkpoint-2', 'checkpoint-4'], 'checkpoints in DIR.checkpoints')
  const again = await inProcess([...withCk, '--resume'])
  t.equal(again.code, 0, again.stderr)
  t.equal(JSON.parse(again.stdout).steps, 4, 'resumed at the last checkpoint: nothing left to train')
  const named = await inProcess(['train', '--data', TRAIN, '--base', TINY, '--method', 'head', '--max-length', '32', '--labels', 'neg,pos', '--out', path.join(dir, 'named'), '--quiet'])
  t.match(named.stdout, /^trained head classifier \(neg, pos\): /, 'classes given are not said to be inferred')
  const text = await inProcess(['eval', '--model', out, '--data', TEST])
  t.equal(text.code, 0)
  t.match(text.stdout, /^accuracy {2}0\.\d{4} {2}\(\d+\/200, [\d.]+%\)\nmacro-F1 {2}0\.\d{4}\nloss {6}\d\.\d{4}\n\nconfusion matrix \(rows: true label, columns: predicted\)\n {12}negative {2}positive\nnegative/)
})

t.test('progress: a redrawn bar on a TTY, occasional lines in a pipe', async (t) => {
  let tty = ''
  const bar = new ProgressReporter({ isTTY: true, columns: 120, write: (s: string) => (tty += s) })
  let piped = ''
  const plain = new ProgressReporter({ write: (s: string) => (piped += s) })
  for (let step = 1; step <= 100; step++) {
    const p = { phase: 'train' as const, step, totalSteps: 100, epoch: step / 50, loss: 1 / step, accuracy: 0.5, etaSeconds: 100 - step, elapsedSeconds: step, ...(step % 50 === 0 ? { eval: { loss: 0.4, accuracy: 0.8, macroF1: 0.79 } } : {}) }
    bar.update(p)
    plain.update(p)
  }
  bar.finishLine()
  t.equal(tty.split('\r\x1b[2K').length - 1, 100, 'the bar is redrawn in place each step')
  t.match(tty, /train \[#{24}\]  step 100\/100  epoch 2\.00  loss 0\.0100  acc 0\.500  eval acc 0\.800 f1 0\.790  ETA 0:00\n$/)
  t.match(tty, /train \[#{12}\.{12}\]  step 50\/100/)
  const lines = piped.trim().split('\n')
  t.ok(lines.length >= 20 && lines.length <= 22, `about one line per 5% (${lines.length})`)
  t.match(lines[lines.length - 1], /^train  step 100\/100 .* ETA 0:00$/)
})

t.test("the Trainer's optimiser flags reach the run (classifier.json records what it ran with)", async (t) => {
  const dest = path.join(dir, 'optim-flags')
  const args = ['train', '--data', DEV, '--base', TINY, '--method', 'lora', '--max-length', '16', '--max-steps', '4', '--batch-size', '8', '--out', dest, '--quiet']
  const r = await run([...args, '--optimizer', 'adamw8bit', '--adam-beta1', '0.8', '--adam-beta2', '0.95', '--adam-epsilon', '1e-6', '--max-grad-norm', '0.5', '--warmup-ratio', '0.5'])
  t.equal(r.code, 0, r.stderr)
  const s = JSON.parse(fs.readFileSync(path.join(dest, 'classifier.json'), 'utf8')).training.settings
  t.equal(s.optimizer, 'adamw8bit')
  t.same(s.adam, { beta1: 0.8, beta2: 0.95, epsilon: 1e-6 })
  t.equal(s.maxGradNorm, 0.5)
  t.equal(s.warmupSteps, 2, 'a warmup ratio of 0.5 over 4 steps')

  const lora = path.join(dir, 'lora-flags')
  const r2 = await run([...args.slice(0, -3), '--out', lora, '--quiet', '--optimizer', 'sgd', '--momentum', '0.9', '--lora-target-modules', 'q_proj,v_proj', '--use-rslora', '--lora-dropout', '0.1', '--lora-r', '4'])
  t.equal(r2.code, 0, r2.stderr)
  const s2 = JSON.parse(fs.readFileSync(path.join(lora, 'classifier.json'), 'utf8')).training.settings
  t.match(s2, { optimizer: 'sgd', momentum: 0.9, lora: { r: 4, dropout: 0.1, targetModules: ['q_proj', 'v_proj'], useRslora: true } })
  t.notOk('adam' in s2, 'no Adam settings for SGD')
  const adapter = JSON.parse(fs.readFileSync(path.join(lora, 'adapter_config.json'), 'utf8'))
  t.match(adapter, { r: 4, lora_dropout: 0.1, use_rslora: true })
  t.same([...adapter.target_modules].sort(), ['q_proj', 'v_proj'])
})
