// What a Linux shared object needs from the system, read with binutils' objdump: the libraries it
// links (NEEDED) and the newest GLIBC_ symbol version it imports, which is the oldest glibc it
// loads on. scripts/prepack.mjs checks the prebuild with it; `node scripts/elf-deps.mjs FILE`
// prints { needed, glibc } as JSON (test/package/ reads it that way).
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

function objdump(flag, file) {
  try {
    return execFileSync('objdump', [flag, file], { encoding: 'utf8', maxBuffer: 64 << 20 })
  } catch (err) {
    throw new Error(`objdump ${flag} ${file} failed (binutils installed?): ${err.message}`)
  }
}

/** The NEEDED entries of the dynamic section: the shared libraries the file links. */
export function linkedLibraries(file) {
  return [...objdump('-p', file).matchAll(/^\s*NEEDED\s+(\S+)/gm)].map((m) => m[1])
}

/** The newest GLIBC_x.y[.z] version among the dynamic symbols the file imports ("2.34"). */
export function newestGlibc(file) {
  const versions = [...objdump('-T', file).matchAll(/\bGLIBC_(\d+(?:\.\d+)+)\b/g)].map((m) => m[1])
  if (versions.length === 0) throw new Error(`${file} imports no GLIBC_ symbol: not a glibc binary?`)
  const parts = (v) => v.split('.').map(Number)
  const newer = (a, b) => {
    const [x, y] = [parts(a), parts(b)]
    for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) > (y[i] ?? 0)
    return false
  }
  return versions.reduce((a, b) => (newer(b, a) ? b : a))
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2]
  if (!file) {
    console.error('usage: node scripts/elf-deps.mjs FILE.node')
    process.exit(2)
  }
  console.log(JSON.stringify({ needed: linkedLibraries(file), glibc: newestGlibc(file) }))
}
