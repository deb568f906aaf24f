#!/usr/bin/env node
// `npm run build:prebuild` (and `npm pack`, through scripts/prepack.mjs): the N-API prebuild for
// this machine's platform and architecture, made with prebuildify, in prebuilds/<platform>-<arch>/,
// where node-gyp-build finds it at install and at load.
//
// - The build runs in a staging directory, so build/ (a developer's build, a CUDA one among them)
//   stays as it is.
// - On Linux, libstdc++ is linked statically and its symbols kept private (--exclude-libs), so the
//   binary needs only glibc and libgcc_s (which Node itself links); --gc-sections drops the parts of
//   libstdc++ the addon never calls, which would otherwise raise the glibc it needs (std::random_device
//   imports arc4random, glibc 2.36). libgcc stays dynamic: its static unwinder imports
//   _dl_find_object (glibc 2.35). The file is tagged glibc, so that musl systems build from source
//   rather than load it. The build then checks that libstdc++ is not linked dynamically and prints
//   the newest GLIBC_ symbol version the binary needs (README.md states it;
//   test/package/package.test.ts checks that it still holds).
// - The kernels are compiled for each x86 ISA into the one binary and chosen at run time
//   (binding.gyp), so the prebuild is generic x86-64: no -march flag.
//   JOBS=n   parallel compile jobs (default: the CPU count)
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import * as os from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

import { linkedLibraries, newestGlibc } from './elf-deps.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const fail = (message) => {
  console.error(`prebuild: ${message}`)
  process.exit(1)
}

const staging = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-prebuild-'))
try {
  for (const file of ['binding.gyp', 'package.json']) fs.copyFileSync(path.join(root, file), path.join(staging, file))
  for (const dir of ['native', 'node_modules']) fs.symlinkSync(path.join(root, dir), path.join(staging, dir), 'dir')
  const prebuildify = createRequire(path.join(root, 'package.json')).resolve('prebuildify/bin.js')
  const linux = process.platform === 'linux'
  const args = [prebuildify, '--napi', '--strip', ...(linux ? ['--tag-libc'] : [])]
  const env = { ...process.env, JOBS: process.env.JOBS ?? String(os.availableParallelism()) }
  if (linux) env.LDFLAGS = `${env.LDFLAGS ?? ''} -static-libstdc++ -Wl,--exclude-libs,ALL -Wl,--gc-sections`.trim()
  console.log(`prebuild: prebuildify ${args.slice(1).join(' ')}${linux ? ` (LDFLAGS=${env.LDFLAGS})` : ''}, ${env.JOBS} jobs`)
  const r = spawnSync(process.execPath, args, { cwd: staging, env, stdio: 'inherit' })
  if (r.status !== 0) fail('prebuildify failed (see above)')
  fs.rmSync(path.join(root, 'prebuilds', `${process.platform}-${process.arch}`), { recursive: true, force: true })
  fs.cpSync(path.join(staging, 'prebuilds'), path.join(root, 'prebuilds'), { recursive: true })
} finally {
  fs.rmSync(staging, { recursive: true, force: true })
}

const platformDir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`)
for (const file of fs.readdirSync(platformDir).filter((f) => f.endsWith('.node'))) {
  const binary = path.join(platformDir, file)
  const size = `${(fs.statSync(binary).size / 1e6).toFixed(2)} MB`
  if (process.platform !== 'linux') {
    console.log(`prebuild: ${path.relative(root, binary)} (${size})`)
    continue
  }
  if (linkedLibraries(binary).some((lib) => lib.startsWith('libstdc++.so'))) fail(`${binary} still links libstdc++ dynamically`)
  console.log(`prebuild: ${path.relative(root, binary)} (${size}) needs glibc ${newestGlibc(binary)} or later`)
}
