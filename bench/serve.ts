// npm run bench:serve [-- --json] [-- --concurrency N] [-- --repeats N]
// The HTTP server under load, on loopback: the bundled model with a fresh head (as bench:predict
// builds it), the 1200 bundled ChnSentiCorp test reviews, max length 160, forward batch 32; a
// client process (bench/serve-client.ts) holds --concurrency keep-alive connections (default 64),
// one review per request. One warm-up pass, then the median of --repeats passes (default 3):
// reviews/s, p50 and p99 latency, errors, the texts per inference run (how requests coalesced)
// and the share of the cores the client process took. Then the same reviews through one predict
// call in this process (what bench:predict measures), for the ratio.
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import { createServer, ErnieClassifier, kernels } from '../lib/index'
import { bundledDataDir } from '../lib/cli/demo'
import { readDataset } from '../lib/data'
import { benchPrecision, flagValue, peakRssMb, refuseEmulatedBuild, report, timeIt } from './common'

const MAX_LENGTH = 160
const BATCH = 32

interface ClientResult {
  requests: number
  seconds: number
  p50_ms: number
  p99_ms: number
  errors: number
  cpu_s: number
}

function runClients(url: string, concurrency: number, file: string): Promise<ClientResult> {
  // compiled beside this file (dist/bench/serve-client.js)
  const child = spawn(process.execPath, [path.join(__dirname, 'serve-client.js'), url, String(concurrency), file], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  return new Promise((resolve, reject) =>
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`the client process exited with ${code}`)))),
  )
}

async function main(): Promise<void> {
  refuseEmulatedBuild()
  const concurrency = Number(flagValue('--concurrency') ?? 64)
  const repeats = Number(flagValue('--repeats') ?? 3)
  const texts = (await readDataset(path.join(bundledDataDir(), 'test.tsv'))).examples.map((e) => e.text)
  const clf = new ErnieClassifier({ method: 'head', maxLength: MAX_LENGTH, precision: benchPrecision })
  const train = (await readDataset(path.join(bundledDataDir(), 'train.tsv'))).examples
  await clf.fit(['0', '1'].flatMap((y) => train.filter((e) => String(e.label) === y).slice(0, 2)).map((e) => ({ text: e.text, label: e.label })), { maxSteps: 1 })
  const server = createServer(clf, { batchSize: BATCH })
  const { port } = await server.listen(0, '127.0.0.1')
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-bench-serve-')), 'texts.json')
  fs.writeFileSync(file, JSON.stringify(texts))
  try {
    const url = `http://127.0.0.1:${port}/v1/classify`
    await runClients(url, concurrency, file) // warm-up
    const runs: ClientResult[] = []
    for (let i = 0; i < repeats; i++) runs.push(await runClients(url, concurrency, file))
    // Texts per inference run, over all passes (the warm-up included): how well requests coalesced.
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    const histogram = (what: string) => Number(new RegExp(`^ernie_batch_texts_${what}\\{[^}]*\\} (\\S+)$`, 'm').exec(metrics)?.[1])
    const textsPerRun = histogram('sum') / histogram('count')
    runs.sort((a, b) => a.seconds - b.seconds)
    const median = runs[Math.floor(runs.length / 2)]
    const errors = runs.reduce((n, r) => n + r.errors, 0)
    await server.close()
    const predictSeconds = await timeIt(() => clf.predict(texts, { batchSize: BATCH }), repeats, 1)
    const served = texts.length / median.seconds
    const direct = texts.length / predictSeconds
    report(
      `serve: ${texts.length} ChnSentiCorp test reviews, one per request, ${concurrency} keep-alive clients in another process, the bundled model with a fresh head, batch ${BATCH}, max length ${MAX_LENGTH} (${kernels.activeIsa()}, ${kernels.numThreads()} threads); predict: the same reviews in one call`,
      [
        { key: 'serve_reviews_per_s', value: served, unit: 'review/s' },
        { key: 'predict_reviews_per_s', value: direct, unit: 'review/s' },
        { key: 'serve_over_predict', value: served / direct, unit: 'x' },
        { key: 'p50_ms', value: median.p50_ms, unit: 'ms' },
        { key: 'p99_ms', value: median.p99_ms, unit: 'ms' },
        { key: 'errors', value: errors, unit: 'requests' },
        { key: 'texts_per_run', value: textsPerRun, unit: 'texts' },
        // of the machine's cores over the timed pass: what the load generator took from the server here
        { key: 'client_cpu_share', value: median.cpu_s / (median.seconds * os.cpus().length), unit: 'of the cores' },
      ],
      { reviews: texts.length, concurrency, repeats, batch_size: BATCH, max_length: MAX_LENGTH, peak_rss_mb: peakRssMb() },
    )
  } finally {
    fs.rmSync(path.dirname(file), { recursive: true, force: true })
    await clf.dispose()
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
