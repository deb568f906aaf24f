// report.html after a long run. A run of more than about 100k steps could not be saved: the loss
// chart took Math.min(...points) (a RangeError past ~100k arguments) and smoothed the loss by
// slicing a window at every step (O(steps x window)), and save() writes the report.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier } from '../../lib/index'
import { smooth } from '../../lib/classifier/report'
import { DEV, readTsv, savedTinyClassifier } from '../helpers/classifier-helpers'

const dev = readTsv(DEV)
const DATA = dev.texts.slice(0, 8).map((text, i) => ({ text, label: dev.labels[i] }))

t.test('a classifier whose training ran 300,000 steps saves, with a report of bounded size', async (t) => {
  const { dir, saved, clf } = await savedTinyClassifier(t, DATA)
  await clf.dispose()
  const file = path.join(saved, 'classifier.json')
  const meta = JSON.parse(fs.readFileSync(file, 'utf8'))
  const N = 300_000
  meta.training.history = Array.from({ length: N }, (_, i) => ({ step: i + 1, loss: 2 * Math.exp(-i / N) + 0.1 * Math.sin(i), learningRate: 1e-4 }))
  meta.training.history[1234].loss = null // a diverged step, as JSON writes NaN
  meta.training.steps = N
  fs.writeFileSync(file, JSON.stringify(meta))

  const loaded = await ErnieClassifier.load(saved)
  const again = path.join(dir, 'again')
  await loaded.save(again)
  await loaded.dispose()
  const html = fs.readFileSync(path.join(again, 'report.html'), 'utf8')
  const paths = [...html.matchAll(/<path d="([^"]*)"/g)].map((m) => m[1])
  t.ok(paths.length >= 1, 'the loss is drawn')
  for (const d of paths) t.ok(d.split(' ').length <= 2001, `a line of ${d.split(' ').length} points (at most 2000 and the last)`)
  t.ok(html.length < 1_000_000, `report.html is ${html.length} characters`)
  t.match(html, /train loss \(mean of 7500\)/, 'the loss is averaged over N / 40 steps')
})

t.test('smooth is the moving average over the window, NaN where the window holds a non-finite loss', async (t) => {
  const n = 5000, window = 37
  const points: Array<[number, number]> = Array.from({ length: n }, (_, i) => [i, Math.sin(i * 0.37) * 3 + i * 1e-3])
  points[2000][1] = NaN
  points[3000][1] = Infinity
  const got = smooth(points, window)
  t.equal(got.length, n)
  let worst = 0
  for (let i = 0; i < n; i++) {
    const slice = points.slice(Math.max(0, i - window + 1), i + 1).map(([, y]) => y)
    if (slice.some((y) => !Number.isFinite(y))) {
      if (!Number.isNaN(got[i][1])) t.fail(`point ${i}: ${got[i][1]}, expected NaN`)
      continue
    }
    const want = slice.reduce((a, y) => a + y, 0) / slice.length
    worst = Math.max(worst, Math.abs(got[i][1] - want))
    if (got[i][0] !== i) t.fail(`point ${i} moved to ${got[i][0]}`)
  }
  t.ok(worst < 1e-9, `largest difference from the sum of each window ${worst.toExponential(2)}`)
  t.equal(smooth(points, 1), points, 'a window of 1 leaves the points as they are')
})
