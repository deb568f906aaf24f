#!/usr/bin/env node
// `npm run fuzz -- --count N [--seed S] [--jobs J] [--batch B] [--reports FILE]`: the suite's
// structural fuzz runner (test/fuzz/) for longer runs, on the TypeScript sources as the tests run
// them (tap's TypeScript loader). Prints counts by family and outcome; exits 1 on a failure.
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const child = spawn(process.execPath, ['--import=@tapjs/typescript/import', join(root, 'test', 'fuzz', 'cli.ts'), ...process.argv.slice(2)], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' },
})
child.on('close', (code, signal) => process.exit(signal ? 1 : (code ?? 1)))
