#!/usr/bin/env node
// Run at `npm install` by node-gyp-build (the package's install script names it), and only when
// no binary in prebuilds/ or build/ loads on this machine, just before node-gyp builds the addon
// from source. It checks for what that build needs (python3 for gyp, make, a C++17 compiler) and
// when one is missing says which in one line and fails the install, instead of gyp's Python
// traceback. On Windows node-gyp finds Visual Studio itself and says so when it cannot; only
// Python is checked there.
import { spawnSync } from 'node:child_process'

const windows = process.platform === 'win32'

function runs(command, args) {
  const r = spawnSync(command, args, { stdio: 'ignore', shell: windows, windowsHide: true })
  return r.status === 0
}

// node-gyp's own search order: its --python option (npm_config_python), $PYTHON, python3, python.
const pythons = [process.env.npm_config_python, process.env.PYTHON, 'python3', 'python'].filter(Boolean)
const missing = []
if (!pythons.some((python) => runs(python, ['-c', 'import sys; sys.exit(sys.version_info < (3, 6))'])))
  missing.push('python3 (3.6 or later)')
if (!windows) {
  // gyp's Makefile runs $(CXX), make's default g++, and GNU make (gmake on the BSDs).
  const cxx = process.env.CXX?.trim().split(/\s+/)[0] || 'g++'
  if (!runs(cxx, ['--version'])) missing.push(`a C++17 compiler (${process.env.CXX ? `CXX=${process.env.CXX}` : 'g++'} not found; install g++ or clang++, or set CXX)`)
  const make = /bsd/.test(process.platform) ? 'gmake' : 'make'
  if (!runs(make, ['--version'])) missing.push(make)
}
if (missing.length > 0) {
  console.error(
    `ernie-sentiment: no prebuilt binary loads on ${process.platform}-${process.arch} (Node ${process.versions.node}) and the ` +
      `source build cannot run: missing ${missing.join(', ')}.`,
  )
  process.exit(1)
}
