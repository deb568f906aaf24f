#!/usr/bin/env node
// `npm pack` and `npm publish` run this first (prepack), then `prepare` (tsc), then pack, then
// scripts/postpack.mjs. It removes dist/ and types/, so that `prepare` compiles them afresh and no
// output of a source file deleted or renamed since is packed, and builds the prebuild for this
// platform (scripts/prebuild.mjs) into prebuilds/.
//
// On x64 Linux it also cross-builds the linux-arm64 prebuild and runs the arm64 smoke test on it
// under emulation (npm run test:arm64, test/arm64/arm64.test.ts); the binary is packed only when
// that test passes (a failure fails the pack). Without the tools for it (scripts/arm64-tools.mjs)
// `npm pack` says so and packs without it; `npm publish` refuses.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import { arm64Tools } from './arm64-tools.mjs'

const scripts = path.dirname(fileURLToPath(import.meta.url))
const root = path.join(scripts, '..')
const fail = (message) => {
  console.error(`prepack: ${message}`)
  process.exit(1)
}

for (const dir of ['dist', 'types']) fs.rmSync(path.join(root, dir), { recursive: true, force: true })
const host = spawnSync(process.execPath, [path.join(scripts, 'prebuild.mjs')], { stdio: 'inherit' })
if (host.status !== 0) process.exit(host.status ?? 1)

if (process.platform === 'linux' && process.arch === 'x64') {
  const { missing } = arm64Tools()
  if (missing.length > 0) {
    const why = `no linux-arm64 prebuild: missing ${missing.join('; ')}`
    if (process.env.npm_command === 'publish') fail(`${why}. A published package carries it.`)
    console.warn(`prepack: WARNING: ${why}. This tarball falls back to a source build on linux-arm64.`)
  } else {
    const arm64Dir = path.join(root, 'prebuilds', 'linux-arm64')
    const build = spawnSync(process.execPath, [path.join(scripts, 'prebuild.mjs'), '--arch', 'arm64'], { stdio: 'inherit' })
    if (build.status !== 0) fail('the linux-arm64 cross build failed (see above)')
    const binary = path.join(arm64Dir, 'ernie-sentiment.glibc.node')
    console.log('prepack: the arm64 smoke test on it under qemu-aarch64 (npm run test:arm64)')
    const smoke = spawnSync('npm', ['run', '--silent', 'test:arm64'], { cwd: root, env: { ...process.env, ERNIE_ARM64_ADDON: binary }, encoding: 'utf8', maxBuffer: 64 << 20 })
    const output = `${smoke.stdout}${smoke.stderr}`
    // The summary, the test's timings and any failure.
    console.log(output.split('\n').filter((line) => /^\s*(# |not ok)/.test(line)).join('\n'))
    if (smoke.status !== 0 || /# SKIP/.test(output)) {
      fs.rmSync(arm64Dir, { recursive: true, force: true })
      fail(`the linux-arm64 prebuild did not pass its smoke test (exit ${smoke.status}${/# SKIP/.test(output) ? ', skipped' : ''}): not packed`)
    }
  }
}
