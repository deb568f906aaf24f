// The TS <-> native boundary (lib/addon-types.ts, lib/native.ts): the loaded addon has exactly
// the exports AddonBinding declares, each of its declared kind, and an addon that lacks some
// (a stale build) is refused when it loads, with an error that names them, not at first call.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { EXPORTS } from '../../lib/addon-types'
import { checkBinding, native } from '../../lib/native'

const ROOT = path.join(__dirname, '..', '..')

t.test('the loaded addon exports what AddonBinding declares, no more and no less', (t) => {
  t.same(Object.keys(native).sort(), Object.keys(EXPORTS).sort(), 'every export declared, every declared export there')
  for (const [name, kind] of Object.entries(EXPORTS)) t.equal(typeof (native as unknown as Record<string, unknown>)[name], kind, `${name} is a ${kind}`)
  t.end()
})

t.test('an addon without some exports, or with one of another kind, is refused naming each', (t) => {
  const stale: Record<string, unknown> = { ...native, KvCache: 1 }
  delete stale.gemm
  delete stale.fillNormalSync
  t.throws(() => checkBinding(stale, '/somewhere/ernie.node'), {
    name: 'ErnieError',
    code: 'ERR_ERNIE_NATIVE_LOAD',
    message: /^ernie-sentiment: the native addon \/somewhere\/ernie\.node does not match .*it lacks gemm, fillNormalSync; of another kind: KvCache \(a number, expected a function\)\. Rebuild it/,
  })
  t.throws(() => checkBinding(undefined, 'x.node'), { code: 'ERR_ERNIE_NATIVE_LOAD', message: /it lacks supportedIsas, activeIsa, .*cudaBenchmarkSync, classifierHead, classifierHeadSync, projections\./ })
  t.equal(checkBinding(native, 'x.node'), native, 'a complete addon passes as it is')
  t.end()
})

t.test('a stale addon named by ERNIE_ADDON fails at load, before any call', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-stale-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  // The real addon less two exports, as a build from older sources would be.
  const fake = path.join(dir, 'stale.js')
  const real = (require('node-gyp-build') as { resolve(dir: string): string }).resolve(ROOT)
  fs.writeFileSync(fake, `const { gemm, Model, ...rest } = require(${JSON.stringify(real)})\nmodule.exports = rest\n`)
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'))
  const script = `try { require(${JSON.stringify(path.join(ROOT, 'lib', 'index'))}); console.log('loaded') } catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })) }`
  const r = spawnSync(process.execPath, [...loader, '-e', script], { encoding: 'utf8', env: { ...process.env, ERNIE_ADDON: fake } })
  t.equal(r.status, 0, r.stderr)
  const e = JSON.parse(r.stdout.trim().split('\n').pop()!)
  t.equal(e.name, 'ErnieError')
  t.equal(e.code, 'ERR_ERNIE_NATIVE_LOAD')
  t.match(e.message, `the native addon ${fake} does not match`)
  t.match(e.message, /it lacks Model, gemm\./)
  t.end()
})
