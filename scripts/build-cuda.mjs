#!/usr/bin/env node
// `npm run build:cuda`: the addon with the CUDA backend (CMake, -DERNIE_CUDA=ON, sm_80 and
// sm_90), then put where the package loads it from (build/Release/ernie.node, where node-gyp's
// CPU-only build of `npm install` would be). Needs the CUDA toolkit (nvcc) and CMake >= 3.18.
// ptxas prints each kernel's registers and spills as it goes; scripts/check-cuda.sh checks them.
//   ERNIE_BUILD_JOBS=n   parallel compile jobs (default 1)
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import { createRequire } from 'node:module'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const jobs = process.env.ERNIE_BUILD_JOBS ?? '1'
let cmakeJs
try {
  cmakeJs = path.join(path.dirname(createRequire(path.join(root, 'package.json')).resolve('cmake-js/package.json')), 'bin', 'cmake-js')
} catch {
  console.error('build:cuda: cmake-js not found: install it (npm install --no-save cmake-js) and run again')
  process.exit(1)
}
const args = [cmakeJs, 'compile', '--out', 'build-cuda', '--CDERNIE_CUDA=ON', '--parallel', jobs]
console.log(`> node ${args.map((a) => path.relative(root, a) || a).join(' ')}`)
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' })
if (r.status !== 0) {
  console.error('build:cuda: the CMake build failed (is the CUDA toolkit installed? nvcc on PATH or CUDACXX set?)')
  process.exit(r.status ?? 1)
}
const built = path.join(root, 'build-cuda', 'Release', 'ernie.node')
const target = path.join(root, 'build', 'Release', 'ernie.node')
fs.mkdirSync(path.dirname(target), { recursive: true })
fs.copyFileSync(built, target)
console.log(`build:cuda: ${path.relative(root, built)} -> ${path.relative(root, target)} (the addon the package loads)`)
