// node dist/bench/predict-burst.js [--lib DIR] [--count N]
// Issue 17's measure of predict's coalescing: N (default 6000) concurrent predict(text) calls on
// the bundled model with a fresh head (the 1,200 ChnSentiCorp test reviews, repeated), against
// one predict of the same N texts: total seconds of each, and the longest event-loop block while
// the concurrent calls run (perf_hooks.monitorEventLoopDelay, 10 ms resolution). --lib DIR
// loads another build's dist/lib (for example main's, to measure before the change).
import * as path from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'

import { bundledDataDir } from '../lib/cli/demo'
import { readDataset } from '../lib/data'
import { flagValue } from './common'

async function main(): Promise<void> {
  const lib = flagValue('--lib')
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { ErnieClassifier } = (lib ? require(path.resolve(lib, 'index.js')) : require('../lib/index')) as typeof import('../lib/index')
  const count = Number(flagValue('--count') ?? 6000)
  const reviews = (await readDataset(path.join(bundledDataDir(), 'test.tsv'))).examples.map((e) => e.text)
  const texts = Array.from({ length: count }, (_, i) => reviews[i % reviews.length])
  const clf = new ErnieClassifier({ method: 'head', maxLength: 160 })
  const train = (await readDataset(path.join(bundledDataDir(), 'train.tsv'))).examples
  await clf.fit(['0', '1'].flatMap((y) => train.filter((e) => String(e.label) === y).slice(0, 2)), { maxSteps: 1 })
  await clf.predict(texts.slice(0, 64)) // warm-up

  let t0 = performance.now()
  await clf.predict(texts)
  const batchedS = (performance.now() - t0) / 1000

  const delay = monitorEventLoopDelay({ resolution: 10 })
  delay.enable()
  t0 = performance.now()
  await Promise.all(texts.map((text) => clf.predict(text)))
  const concurrentS = (performance.now() - t0) / 1000
  delay.disable()
  console.log(
    JSON.stringify({ lib: lib ?? 'this build', calls: count, batched_s: +batchedS.toFixed(2), concurrent_s: +concurrentS.toFixed(2), longest_block_ms: +(delay.max / 1e6).toFixed(0), p99_block_ms: +(delay.percentile(99) / 1e6).toFixed(0) }),
  )
  await clf.dispose()
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
