#!/usr/bin/env node
// `npm pack` and `npm publish` run this first (prepack), then `prepare` (tsc), then pack, then
// scripts/postpack.mjs. It removes dist/ and types/, so that `prepare` compiles them afresh and no
// output of a source file deleted or renamed since is packed, and builds the prebuild for this
// platform (scripts/prebuild.mjs) into prebuilds/.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const scripts = path.dirname(fileURLToPath(import.meta.url))
for (const dir of ['dist', 'types']) fs.rmSync(path.join(scripts, '..', dir), { recursive: true, force: true })
const r = spawnSync(process.execPath, [path.join(scripts, 'prebuild.mjs')], { stdio: 'inherit' })
process.exit(r.status ?? 1)
