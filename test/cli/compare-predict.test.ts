// compare (several classifiers side by side: a table on a terminal, JSON lines when piped) and
// predict's stdin: lines answered as they come (a batch goes when full, or soon after it could
// start when not), so that a line is answered before the next one is written.
import t from 'tap'
import { spawn } from 'node:child_process'
import * as path from 'node:path'
import { PassThrough, Readable } from 'node:stream'

import { ErnieClassifier, type Prediction } from '../../lib/classifier/index'
import { main } from '../../lib/cli/main'
import { answerLines } from '../../lib/cli/stdin-lines'
import { readTsv, tempDir, TINY, TRAIN } from '../helpers/classifier-helpers'

const dir = tempDir(t, 'ernie-compare-')
const headDir = path.join(dir, 'head')
const mlpDir = path.join(dir, 'mlp')
const texts = ['房间很干净，服务也周到', '太吵了，再也不来', '一般般']

/** main() with its own streams: stdin from `input`, stdout a terminal or not. */
async function runWith(args: string[], options: { input?: string; tty?: boolean } = {}) {
  let stdout = ''
  let stderr = ''
  const code = await main(args, {
    stdout: { write: (s: string) => (stdout += s), isTTY: options.tty === true },
    stderr: { write: (s: string) => (stderr += s) },
    stdin: Readable.from([options.input ?? '']),
  })
  return { code, stdout, stderr }
}

let head: ErnieClassifier
let mlp: ErnieClassifier

t.before(async () => {
  // Two small classifiers on the tiny fixture model: a linear head and an MLP head.
  const train = readTsv(TRAIN)
  const data = train.texts.slice(0, 300).map((text, i) => ({ text, label: train.labels[i] }))
  head = new ErnieClassifier({ model: TINY, method: 'head', maxLength: 32 })
  await head.fit(data, { epochs: 5 })
  await head.save(headDir)
  mlp = new ErnieClassifier({ model: TINY, method: 'head', maxLength: 32, head: { hiddenSize: 8 }, seed: 7 })
  await mlp.fit(data, { epochs: 5 })
  await mlp.save(mlpDir)
})
t.teardown(async () => {
  await head.dispose()
  await mlp.dispose()
})

t.test('compare: JSON lines when piped, one per text, each classifier by name', async (t) => {
  const r = await runWith(['compare', '--model', `linear=${headDir}`, '--model', mlpDir, ...texts])
  t.equal(r.code, 0, r.stderr)
  const want = { linear: await head.predict(texts), [mlpDir]: await mlp.predict(texts) }
  t.same(
    r.stdout.trim().split('\n').map((l) => JSON.parse(l)),
    texts.map((text, i) => ({ text, predictions: { linear: want.linear[i], [mlpDir]: want[mlpDir][i] } })),
  )
  const stdin = await runWith(['compare', '--model', `a=${headDir}`, '--model', `b=${mlpDir}`], { input: `${texts[0]}\n\n${texts[1]}\n` })
  t.same(
    stdin.stdout.trim().split('\n').map((l) => JSON.parse(l).text),
    texts.slice(0, 2),
    'stdin lines (blank ones skipped)',
  )
})

t.test('compare: a table per text on a terminal', async (t) => {
  const r = await runWith(['compare', '--model', `linear=${headDir}`, '--model', `mlp=${mlpDir}`, texts[0], texts[1]], { tty: true })
  t.equal(r.code, 0, r.stderr)
  const rows = (name: string, p: Prediction) => [name, p.label, p.scores.negative.toFixed(3), p.scores.positive.toFixed(3)]
  const [h, m] = [await head.predict(texts[0]), await mlp.predict(texts[0])]
  const lines = r.stdout.split('\n')
  t.equal(lines[0], texts[0], 'the text, then its table')
  t.same(lines[1].trim().split(/\s+/), ['model', 'label', 'negative', 'positive'])
  t.same(lines[2].trim().split(/\s+/), rows('linear', h))
  t.same(lines[3].trim().split(/\s+/), rows('mlp', m))
  t.equal(lines[4], texts[1])
  t.equal(lines.length, 9, 'two tables of three lines, and the final newline')
  // the score columns line up, right-aligned under their headers
  t.equal(lines[2].length, lines[1].length)
  t.equal(lines[3].length, lines[1].length)
  const json = await runWith(['compare', '--json', '--model', headDir, texts[0]], { tty: true })
  t.same(Object.keys(JSON.parse(json.stdout).predictions), [headDir], '--json: JSON lines on a terminal too')
})

t.test('compare: usage errors', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['compare', 'x'], /--model is required\n/],
    [['compare', '--model', `a=${headDir}`, '--model', `a=${mlpDir}`, 'x'], /--model: two classifiers are named "a"; name them apart with NAME=DIR/],
    [['compare', '--model', headDir, '--model', headDir, 'x'], /two classifiers are named ".*head"/],
    [['compare', '--modle', headDir], /unknown option --modle; did you mean --model\?/],
    [['compare', '--model', headDir, '--batch-size', '0', 'x'], /--batch-size must be an integer >= 1, got "0"/],
  ]
  for (const [args, message] of cases) {
    const r = await runWith(args)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.stderr, message)
  }
})

t.test('stdin batches: at most batch-size lines, answered in input order', async (t) => {
  for (const flushMs of [50, 0]) {
    const input = new PassThrough()
    const batches: string[][] = []
    const written: string[] = []
    const done = answerLines(input, { batchSize: 3, flushMs }, async (lines) => (batches.push(lines), lines.map((l) => l.toUpperCase())), (out) => written.push(out))
    input.write('a\nb\r\n\nc\nd\ne\n')
    input.end()
    await done
    t.same(batches, [['a', 'b', 'c'], ['d', 'e']], `flushMs ${flushMs}: one chunk of five lines, batches of at most three`)
    t.same(written, ['A', 'B', 'C', 'D', 'E'])
  }
})

t.test('stdin: a line is answered before the next is written', async (t) => {
  for (const flushMs of [50, 0]) {
    const input = new PassThrough()
    let onWrite: (out: string) => void = () => {}
    const batches: string[][] = []
    const done = answerLines(input, { batchSize: 32, flushMs }, async (lines) => (batches.push(lines), lines), (out) => onWrite(out))
    for (const line of ['first', 'second']) {
      const written = new Promise<string>((resolve) => (onWrite = resolve))
      input.write(line + '\n')
      t.equal(await written, line, `flushMs ${flushMs}: "${line}" answered with input still open`)
    }
    input.end()
    await done
    t.same(batches, [['first'], ['second']], 'each alone')
  }
})

t.test('stdin: a failed batch fails the whole; an interrupt ends the input, what was read is answered', async (t) => {
  const failing = new PassThrough()
  const failed = answerLines(failing, { batchSize: 2, flushMs: 0 }, async () => { throw new Error('no model') }, () => t.fail('nothing written'))
  failing.write('a\n')
  await t.rejects(failed, { message: 'no model' })

  const input = new PassThrough()
  const controller = new AbortController()
  const written: string[] = []
  let onWrite: () => void = () => {}
  const first = new Promise<void>((resolve) => (onWrite = resolve))
  const done = answerLines(input, { batchSize: 32, flushMs: 0 }, async (lines) => lines, (out) => (written.push(out), onWrite()), controller.signal)
  input.write('one\n')
  await first
  controller.abort()
  await done
  t.same(written, ['one'], 'resolved with the input still open')
})

/** The CLI in a child process with piped stdin; `lines()` resolves with each stdout line as it arrives. */
function spawnCli(args: string[]) {
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'))
  const child = spawn(process.execPath, [...loader, path.join(__dirname, '..', '..', 'lib', 'cli', 'bin.ts'), ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  let buffered = ''
  let stderr = ''
  const waiting: Array<(line: string) => void> = []
  const ready: string[] = []
  child.stderr.on('data', (d) => (stderr += d))
  child.stdout.on('data', (d) => {
    buffered += d
    for (let at = buffered.indexOf('\n'); at >= 0; at = buffered.indexOf('\n')) {
      const line = buffered.slice(0, at)
      buffered = buffered.slice(at + 1)
      const w = waiting.shift()
      if (w) w(line)
      else ready.push(line)
    }
  })
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve))
  return {
    child,
    stderr: () => stderr,
    exited,
    /** The next stdout line, or undefined if the process ends first. */
    nextLine: () => (ready.length > 0 ? Promise.resolve(ready.shift()) : Promise.race([new Promise<string>((resolve) => waiting.push(resolve)), exited.then(() => undefined)])),
  }
}

const GUARD_MS = 60_000

t.test('predict in a child process: each piped line answered before the next is written', async (t) => {
  for (const extra of [[], ['--interactive']]) {
    const cli = spawnCli(['predict', '--model', headDir, ...extra])
    for (const text of texts) {
      cli.child.stdin.write(text + '\n')
      // A guard against waiting for ever, not a bound on speed: with no answer after a minute,
      // stdin is closed (an answer only then would come from the end of input, and fails below).
      let closed = false
      const guard = setTimeout(() => ((closed = true), cli.child.stdin.end()), GUARD_MS)
      const line = await cli.nextLine()
      clearTimeout(guard)
      t.ok(line !== undefined && !closed, `${extra.join(' ') || 'piped'}: an answer while stdin is still open (${cli.stderr()})`)
      if (closed) return void cli.child.kill()
      const got = JSON.parse(line!)
      t.same(got, { text, ...(await head.predict(text)) })
    }
    cli.child.stdin.end()
    t.equal(await cli.exited, 0, cli.stderr())
  }
})
