// npm run bench:predict [-- --json] [-- --classifier DIR | --model DIR|ID] [-- --batch-size N] [-- --repeats N] [-- --limit N]
// Classifier inference on real text: the 1200 reviews of the bundled ChnSentiCorp test split
// through ErnieClassifier.predict, max length 160 (a saved classifier keeps its own), one
// warm-up pass, then the median of --repeats timed passes (default 3).
//   reviews_per_s, tokens_per_s: the texts' tokens as the classifier encodes them (EOS included,
//   padding not counted); peak_rss_mb: the whole process, loading included.
//   piped_reviews_per_s: `ernie-sentiment predict` with the reviews piped in, one a line (what a
//   shell pipeline gets), over 4 passes of them: the marginal rate between a run of one line and
//   that one, so that starting the process and loading the model are left out.
// --classifier DIR measures a saved classifier. Otherwise a classifier is built on the bundled
// default model (or --model) with a head fitted for one step on 4 reviews, as good as freshly
// initialised: the head is one small matmul on pooled vectors, so its weights do not change the time.
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import { ErnieClassifier, kernels, Tokenizer, type ClassifierJson } from '../lib/index'
import { encodeTexts } from '../lib/classifier/encode'
import { bundledDataDir } from '../lib/cli/demo'
import { readDataset } from '../lib/data'
import { benchPrecision, flagValue, peakRssMb, refuseEmulatedBuild, report, timeIt, type Row } from './common'

const MAX_LENGTH = 160

class UsageError extends Error {}

/** Seconds for the CLI's predict to answer `lines` piped to it, from spawn to exit. */
function pipedPredict(dir: string, lines: readonly string[], batchSize: number): Promise<number> {
  const bin = path.join(__dirname, '..', 'lib', 'cli', 'bin.js')
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint()
    const child = spawn(process.execPath, [bin, 'predict', '--model', dir, '--batch-size', String(batchSize), '--precision', benchPrecision], { stdio: ['pipe', 'ignore', 'inherit'] })
    child.on('error', reject)
    child.on('exit', (code) => (code === 0 ? resolve(Number(process.hrtime.bigint() - t0) / 1e9) : reject(new Error(`ernie-sentiment predict exited with ${code}`))))
    child.stdin.end(lines.map((l) => l.replace(/[\r\n]+/g, ' ')).join('\n') + '\n')
  })
}

function positiveInt(name: string, fallback: number | undefined): number | undefined {
  const v = flagValue(name)
  if (v === undefined) return fallback
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name} must be a positive integer, got ${JSON.stringify(v)}`)
  return n
}

async function main(): Promise<void> {
  refuseEmulatedBuild()
  const classifierDir = flagValue('--classifier')
  const modelArg = flagValue('--model')
  if (classifierDir && modelArg) throw new UsageError('--classifier and --model exclude each other (a saved classifier names its base model)')
  const batchSize = positiveInt('--batch-size', 32)!
  const repeats = positiveInt('--repeats', 3)!
  const limit = positiveInt('--limit', undefined)

  const testFile = path.join(bundledDataDir(), 'test.tsv')
  const texts = (await readDataset(testFile)).examples.map((e) => e.text).slice(0, limit)

  let clf: ErnieClassifier
  let tokenizer: Tokenizer
  let maxLength = MAX_LENGTH
  let truncation: ClassifierJson['truncation'] = 'head'
  let what: string
  if (classifierDir) {
    const meta = JSON.parse(fs.readFileSync(path.join(classifierDir, 'classifier.json'), 'utf8')) as ClassifierJson
    maxLength = meta.maxLength
    truncation = meta.truncation
    clf = await ErnieClassifier.load(classifierDir, { precision: benchPrecision })
    tokenizer = await Tokenizer.fromDirectory(classifierDir)
    what = `saved classifier ${classifierDir} (method ${meta.method}, base ${meta.base.kind} ${meta.base.ref})`
  } else {
    clf = new ErnieClassifier({ model: modelArg, method: 'head', maxLength: MAX_LENGTH, precision: benchPrecision })
    // two reviews of each class for a one-step head fit: the base model is left as it is
    const train = (await readDataset(path.join(bundledDataDir(), 'train.tsv'))).examples
    const pick = ['0', '1'].flatMap((y) => train.filter((e) => String(e.label) === y).slice(0, 2))
    await clf.fit(
      pick.map((e) => ({ text: e.text, label: e.label })),
      { maxSteps: 1 },
    )
    tokenizer = clf.model!.tokenizer!
    what = `${modelArg ?? 'the bundled default model'} with a fresh head (fitted one step on 4 reviews; throughput does not depend on its weights)`
  }
  try {
    const tokens = encodeTexts(tokenizer, texts, { maxLength, truncation, appendEos: true }).reduce((n, row) => n + row.length, 0)
    const seconds = await timeIt(() => clf.predict(texts, { batchSize }), repeats, 1)
    let saved = classifierDir
    if (!saved) await clf.save((saved = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-bench-')), 'classifier')))
    const many = Array.from({ length: 4 }, () => texts).flat()
    const piped = (many.length - 1) / ((await pipedPredict(saved, many, batchSize)) - (await pipedPredict(saved, texts.slice(0, 1), batchSize)))
    if (!classifierDir) fs.rmSync(path.dirname(saved), { recursive: true, force: true })
    const rows: Row[] = [
      { key: 'reviews_per_s', value: texts.length / seconds, unit: 'review/s' },
      { key: 'tokens_per_s', value: tokens / seconds, unit: 'tok/s' },
      { key: 'piped_reviews_per_s', value: piped, unit: 'review/s' },
    ]
    report(`predict: ${texts.length} ChnSentiCorp test reviews (${tokens} tokens), ${what}, batch ${batchSize}, max length ${maxLength} (${kernels.activeIsa()}, ${kernels.numThreads()} threads)`, rows, {
      reviews: texts.length,
      tokens,
      batch_size: batchSize,
      max_length: maxLength,
      method: clf.method ?? 'unknown',
      parameters: clf.model!.numParameters,
      classifier: classifierDir ?? `${modelArg ?? 'bundled default model'} + fresh head`,
      repeats,
      median_s: Number(seconds.toFixed(3)),
      peak_rss_mb: peakRssMb(),
    })
  } finally {
    await clf.dispose()
  }
}

main().catch((e) => {
  const code = (e as { code?: string }).code
  if (code === 'ERR_NO_DEFAULT_MODEL') console.error(`${(e as Error).message}\nbench:predict: pass --model DIR|ID (a base model) or --classifier DIR (a saved classifier)`)
  else if (e instanceof UsageError) console.error(`bench:predict: ${e.message}`)
  else console.error(e)
  process.exit(1)
})
