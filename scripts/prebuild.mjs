#!/usr/bin/env node
// `npm run build:prebuild` (and `npm pack`, through scripts/prepack.mjs): the N-API prebuild for
// this machine's platform, made with prebuildify, in prebuilds/<platform>-<arch>/, where
// node-gyp-build finds it at install and at load. `--arch arm64` cross-compiles the linux-arm64
// one on an x64 Linux machine with Debian's cross toolchain (g++-aarch64-linux-gnu);
// `npm run build:prebuild:arm64` does that. `--out DIR` writes DIR/<platform>-<arch>/ instead
// (test/arm64/arm64.test.ts builds into a temporary directory).
//
// - The build runs in a staging directory, so build/ (a developer's build, a CUDA one among them)
//   stays as it is.
// - On Linux, libstdc++ is linked statically and its symbols kept private (--exclude-libs), so the
//   binary needs only glibc and libgcc_s (which Node itself links); --gc-sections drops the parts of
//   libstdc++ the addon never calls, which would otherwise raise the glibc it needs (std::random_device
//   imports arc4random, glibc 2.36). libgcc stays dynamic: its static unwinder imports
//   _dl_find_object (glibc 2.35). The file is tagged glibc, so that musl systems build from source
//   rather than load it. The build then checks the binary (scripts/elf-deps.mjs): its ELF machine is
//   the architecture asked for, it links only glibc and libgcc_s, and it imports no GLIBC_ symbol
//   version newer than OLDEST_GLIBC (README.md states it; test/package/package.test.ts checks that
//   it still holds); it prints that version.
// - On x64 the kernels are compiled for each x86 ISA into the one binary and chosen at run time
//   (binding.gyp), so the prebuild is generic x86-64: no -march flag. On arm64 the portable
//   kernels alone are built (ARMv8-A: no -march flag either).
//   JOBS=n   parallel compile jobs (default: the CPU count)
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import * as os from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { newestGlibc, prebuildProblems } from './elf-deps.mjs'

// The GNU cross toolchains' prefixes, by target architecture (Debian: g++-aarch64-linux-gnu, g++-x86-64-linux-gnu).
const CROSS_PREFIXES = { arm64: 'aarch64-linux-gnu-', x64: 'x86_64-linux-gnu-' }

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const fail = (message) => {
  console.error(`prebuild: ${message}`)
  process.exit(1)
}

const { arch, out } = parseArgs({
  options: { arch: { type: 'string', default: process.arch }, out: { type: 'string', default: path.join(root, 'prebuilds') } },
}).values
const linux = process.platform === 'linux'
const target = `${process.platform}-${arch}`
const env = { ...process.env, JOBS: process.env.JOBS ?? String(os.availableParallelism()) }
const args = ['--napi', '--strip', '--arch', arch, ...(linux ? ['--tag-libc'] : [])]
if (arch !== process.arch) {
  const prefix = CROSS_PREFIXES[arch]
  if (!linux || !prefix) fail(`cannot cross-build for ${target} here (only Linux x64 <-> arm64, with a GNU cross toolchain)`)
  const compiler = `${prefix}g++`
  if (spawnSync(compiler, ['--version'], { stdio: 'ignore' }).status !== 0)
    fail(`the ${target} cross build needs ${compiler} (Debian/Ubuntu: apt-get install g++-${prefix.slice(0, -1).replaceAll('_', '-')})`)
  // gyp's Makefile takes the target's tools from CC, CXX, LINK and AR.
  Object.assign(env, { CC: `${prefix}gcc`, CXX: compiler, LINK: compiler, AR: `${prefix}ar` })
  args.push('--strip-bin', `${prefix}strip`)
}
if (linux) env.LDFLAGS = `${env.LDFLAGS ?? ''} -static-libstdc++ -Wl,--exclude-libs,ALL -Wl,--gc-sections`.trim()

const staging = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-prebuild-'))
const started = process.hrtime.bigint()
try {
  for (const file of ['binding.gyp', 'package.json']) fs.copyFileSync(path.join(root, file), path.join(staging, file))
  for (const dir of ['native', 'node_modules']) fs.symlinkSync(path.join(root, dir), path.join(staging, dir), 'dir')
  const prebuildify = createRequire(path.join(root, 'package.json')).resolve('prebuildify/bin.js')
  const tools = arch === process.arch ? '' : ` CXX=${env.CXX}`
  console.log(`prebuild: ${target}: prebuildify ${args.join(' ')}${linux ? ` (LDFLAGS=${env.LDFLAGS}${tools})` : ''}, ${env.JOBS} jobs`)
  const r = spawnSync(process.execPath, [prebuildify, ...args], { cwd: staging, env, stdio: 'inherit' })
  if (r.status !== 0) fail('prebuildify failed (see above)')
  fs.rmSync(path.join(out, target), { recursive: true, force: true })
  fs.cpSync(path.join(staging, 'prebuilds'), out, { recursive: true })
} finally {
  fs.rmSync(staging, { recursive: true, force: true })
}
const seconds = (Number(process.hrtime.bigint() - started) / 1e9).toFixed(0)

const platformDir = path.join(out, target)
for (const file of fs.readdirSync(platformDir).filter((f) => f.endsWith('.node'))) {
  const binary = path.join(platformDir, file)
  const size = `${(fs.statSync(binary).size / 1e6).toFixed(2)} MB`
  if (!linux) {
    console.log(`prebuild: ${path.relative(root, binary)} (${size}, built in ${seconds} s)`)
    continue
  }
  const problems = prebuildProblems(binary, arch)
  if (problems.length > 0) fail(`${binary} cannot ship: ${problems.join('; ')}`)
  console.log(`prebuild: ${path.relative(root, binary)} (${arch}, ${size}, built in ${seconds} s) needs glibc ${newestGlibc(binary)} or later`)
}
