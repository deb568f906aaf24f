// The README's classifier example is examples/sentiment.ts, verbatim, and it runs.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { tempDir } from '../helpers/classifier-helpers'

const root = path.join(__dirname, '..', '..')
const file = path.join(root, 'examples', 'sentiment.ts')

t.test('the README shows examples/sentiment.ts', async (t) => {
  const code = fs.readFileSync(file, 'utf8').split('\n').slice(2).join('\n').trim().replace("from '../lib/index'", "from 'ernie-sentiment'")
  t.ok(fs.readFileSync(path.join(root, 'README.md'), 'utf8').includes('```ts\n' + code + '\n```'), 'README.md holds the example as it is')
})

t.test('examples/sentiment.ts runs', async (t) => {
  const out = path.join(tempDir(t), 'clf')
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'))
  const r = spawnSync(process.execPath, [...loader, file, out], { cwd: root, encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /step 63\/63: dev accuracy 0\.\d{3}/)
  t.match(r.stdout, /test accuracy 0\.\d{3}, macro-F1 0\.\d{3}/)
  t.ok(fs.existsSync(path.join(out, 'report.html')))
})
