// What a Linux shared object needs from the system: its machine (from the ELF header), the
// libraries it links (NEEDED) and the newest GLIBC_ symbol version it imports, which is the oldest
// glibc it loads on; the last two read with binutils' objdump (the host's reads other machines'
// ELF files too). scripts/prebuild.mjs checks each prebuild with prebuildProblems; `node
// scripts/elf-deps.mjs FILE [ARCH]` prints { machine, needed, glibc, problems } as JSON (the tests
// in test/package/ and test/arm64/ read it that way).
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import { fileURLToPath } from 'node:url'

/**
 * The libraries a prebuild may link: glibc's own (its dynamic loader among them) and libgcc_s,
 * which every glibc system has (manylinux's policy, less what an addon never needs). libstdc++ is
 * not among them: it is linked statically, since its version differs from one distribution to the next.
 */
export const ALLOWED_LIBRARIES = [
  'libc.so.6', 'libm.so.6', 'libdl.so.2', 'libpthread.so.0', 'librt.so.1', 'libgcc_s.so.1',
  'ld-linux-x86-64.so.2', 'ld-linux-aarch64.so.1',
]

/** The oldest glibc the prebuilds load on (README.md's Install says so): none may import a newer symbol version. */
export const OLDEST_GLIBC = '2.34'

// e_machine values (the ELF specification) of the architectures Node names.
const MACHINES = { 3: 'ia32', 40: 'arm', 62: 'x64', 183: 'arm64' }

/** The architecture the ELF file is for, in Node's names (process.arch): 'x64', 'arm64', ... */
export function elfMachine(file) {
  const header = Buffer.alloc(20)
  const fd = fs.openSync(file, 'r')
  try {
    fs.readSync(fd, header, 0, header.length, 0)
  } finally {
    fs.closeSync(fd)
  }
  if (header.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file} is not an ELF file`)
  const machine = header[5] === 2 ? header.readUInt16BE(18) : header.readUInt16LE(18) // EI_DATA: 2 = big-endian
  return MACHINES[machine] ?? `e_machine ${machine}`
}

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

/** Whether glibc version a ("2.35") is newer than b ("2.34"). */
export function glibcNewer(a, b) {
  const [x, y] = [a, b].map((v) => v.split('.').map(Number))
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) > (y[i] ?? 0)
  return false
}

/** The newest GLIBC_x.y[.z] version among the dynamic symbols the file imports ("2.34"). */
export function newestGlibc(file) {
  const versions = [...objdump('-T', file).matchAll(/\bGLIBC_(\d+(?:\.\d+)+)\b/g)].map((m) => m[1])
  if (versions.length === 0) throw new Error(`${file} imports no GLIBC_ symbol: not a glibc binary?`)
  return versions.reduce((a, b) => (glibcNewer(b, a) ? b : a))
}

/**
 * What keeps a Linux prebuild from shipping, one line each (none: it may ship): an ELF machine other
 * than `arch` (Node's name), a library outside ALLOWED_LIBRARIES, a GLIBC_ version newer than OLDEST_GLIBC.
 */
export function prebuildProblems(file, arch) {
  const problems = []
  const machine = elfMachine(file)
  if (machine !== arch) problems.push(`it is an ELF file for ${machine}, not ${arch}`)
  const foreign = linkedLibraries(file).filter((lib) => !ALLOWED_LIBRARIES.includes(lib))
  if (foreign.length > 0) problems.push(`it links ${foreign.join(', ')}: a prebuild may link only ${ALLOWED_LIBRARIES.join(', ')}`)
  const glibc = newestGlibc(file)
  if (glibcNewer(glibc, OLDEST_GLIBC)) problems.push(`it needs glibc ${glibc}, newer than the ${OLDEST_GLIBC} the prebuilds promise (README.md)`)
  return problems
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [file, arch] = process.argv.slice(2)
  if (!file) {
    console.error('usage: node scripts/elf-deps.mjs FILE.node [ARCH]')
    process.exit(2)
  }
  const facts = { machine: elfMachine(file), needed: linkedLibraries(file), glibc: newestGlibc(file) }
  console.log(JSON.stringify({ ...facts, problems: prebuildProblems(file, arch ?? facts.machine) }))
}
