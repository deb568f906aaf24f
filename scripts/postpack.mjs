#!/usr/bin/env node
// `npm pack` and `npm publish` run this last (postpack): it removes the prebuilds that
// scripts/prepack.mjs built for the tarball, so that a working tree never loads a binary compiled
// from sources that have changed since (node-gyp-build takes prebuilds/ when build/ is missing).
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const prebuilds = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'prebuilds')
for (const entry of fs.readdirSync(prebuilds)) {
  if (entry !== '.gitkeep') fs.rmSync(path.join(prebuilds, entry), { recursive: true, force: true })
}
