// The linux-arm64 prebuild, checked on an x64 Linux machine: cross-compiled (scripts/prebuild.mjs
// --arch arm64), read as an ELF file, then loaded by an arm64 Node running under QEMU's user-mode
// emulator (qemu-aarch64), where it must compute what the x64 suite holds the engine to: every
// case of the backend-ops table (test/kernels/op-cases.ts) and, on the tiny fixtures, the forward
// and the LoRA loss and gradients against their float64 goldens, each within FACTOR x the error of
// a reference computing at the same precision. The engine runs under emulation (test/arm64/probe.ts);
// the references are computed here, natively.
//
// `npm run test:arm64` runs it; `npm test` does not (package.json "tap"."exclude"): it needs a cross
// toolchain, QEMU and an arm64 Node (scripts/arm64-tools.mjs says which and how to get them) and
// skips, naming what is missing, without them. scripts/prepack.mjs runs it on the binary it is
// about to pack (ERNIE_ARM64_ADDON) and ships that binary only when it passes.
//   ERNIE_ARM64_ADDON=FILE   check FILE instead of building one into a temporary directory
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { relErr } from '../helpers/helpers'
import { FACTOR, LOSS_FLOOR, fixture, goldenErr, lossErr, oracleBase, oracleLora, oraclePrecision, withinBound } from '../helpers/precision-helpers'
import { CASES, caseName, checkOutputs, precisionsOf } from '../kernels/op-cases'
import { CPU, MODEL_FIXTURES, MODEL_PRECISIONS, type ProbeResult } from './probe'
import { reviver } from './wire'

const ROOT = path.join(__dirname, '..', '..')
const script = (name: string) => path.join(ROOT, 'scripts', name)

interface Arm64Tools {
  compiler: string | null
  qemu: string | null
  sysroot: string | null
  node: string | null
  missing: string[]
}

// Runs a command to its end; tap's loaders stay out of the child's NODE_OPTIONS.
function run(command: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  const childEnv = { ...process.env, ...env }
  delete childEnv.NODE_OPTIONS
  const start = process.hrtime.bigint()
  const r = spawnSync(command, args, { cwd: ROOT, env: childEnv, encoding: 'utf8', maxBuffer: 64 << 20 })
  return Object.assign(r, { seconds: Number(process.hrtime.bigint() - start) / 1e9, output: `exit ${r.status}\n${(r.stdout + r.stderr).slice(-4000)}` })
}

const explicitAddon = process.env.ERNIE_ARM64_ADDON
const tools = JSON.parse(run(process.execPath, [script('arm64-tools.mjs')]).stdout) as Arm64Tools
// The compiler is needed only to build the binary here.
const missing = tools.missing.filter((m) => !(explicitAddon && m.includes('cross compiler')))
const skip =
  process.platform !== 'linux' || process.arch !== 'x64'
    ? `this machine is ${process.platform}-${process.arch}: the emulated arm64 run is for x64 Linux (on arm64 Linux the suite itself runs natively)`
    : missing.length > 0
      ? `missing tools (not hardware): ${missing.join('; ')}`
      : false

t.test('the linux-arm64 prebuild under qemu-aarch64', { skip }, async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-arm64-'))
  t.teardown(() => fs.rmSync(work, { recursive: true, force: true }))

  let addon = explicitAddon && path.resolve(explicitAddon)
  if (!addon) {
    const build = run(process.execPath, [script('prebuild.mjs'), '--arch', 'arm64', '--out', work])
    if (!t.equal(build.status, 0, 'scripts/prebuild.mjs --arch arm64 builds it', { output: build.output })) return
    t.comment(`cross build: ${build.seconds.toFixed(0)} s`)
    addon = path.join(work, 'linux-arm64', 'ernie-sentiment.glibc.node')
  }
  t.comment(`checking ${addon} (${(fs.statSync(addon).size / 1e6).toFixed(2)} MB)`)

  const elf = run(process.execPath, [script('elf-deps.mjs'), addon, 'arm64'])
  if (t.equal(elf.status, 0, 'scripts/elf-deps.mjs reads it', { output: elf.output })) {
    const facts = JSON.parse(elf.stdout) as { machine: string; needed: string[]; glibc: string; problems: string[] }
    t.equal(facts.machine, 'arm64', 'an AArch64 ELF file')
    t.same(facts.problems, [], `links ${facts.needed.join(', ')} (glibc's and libgcc_s alone), needs glibc ${facts.glibc}`)
  }

  // The probe and lib/ as JavaScript, transpiled without a type check (what ts-node does for tap,
  // done here because TypeScript itself would run under emulation there).
  const out = path.join(work, 'js')
  const tsconfig = path.join(work, 'tsconfig.json')
  fs.writeFileSync(tsconfig, JSON.stringify({
    extends: path.join(ROOT, 'tsconfig.json'),
    compilerOptions: { rootDir: ROOT, outDir: out, declaration: false, declarationDir: null, noCheck: true, typeRoots: [path.join(ROOT, 'node_modules', '@types')] },
    include: [],
    files: [path.join(__dirname, 'probe.ts')],
  }))
  const tsc = run(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', tsconfig])
  if (!t.equal(tsc.status, 0, 'the probe transpiles', { output: tsc.output })) return
  // Its package root (lib/native.ts looks for package.json) and dependencies.
  fs.symlinkSync(path.join(ROOT, 'package.json'), path.join(out, 'package.json'))
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(out, 'node_modules'), 'dir')

  // The probe runs while the references are computed here.
  const resultFile = path.join(work, 'result.json')
  // DISABLE_V8_COMPILE_CACHE: a module that caches V8 code in the shared /tmp directory (ts-node's
  // v8-compile-cache-lib) would write arm64 code there that the host's Node then crashes reading.
  const env: NodeJS.ProcessEnv = { ...process.env, ERNIE_ADDON: addon, DISABLE_V8_COMPILE_CACHE: '1' }
  delete env.NODE_OPTIONS
  const started = process.hrtime.bigint()
  const probe = new Promise<{ code: number | null; output: string }>((resolve) => {
    const child = spawn(tools.qemu!, ['-L', tools.sysroot!, tools.node!, path.join(out, 'test', 'arm64', 'probe.js'), resultFile, path.join(ROOT, 'test', 'fixtures')], { env })
    let output = ''
    child.stdout.on('data', (d) => (output += d))
    child.stderr.on('data', (d) => (output += d))
    child.on('close', (code) => resolve({ code, output: output.slice(-4000) }))
  })
  for (const c of CASES) for (const precision of precisionsOf(c, CPU)) c.expect(precision)
  for (const name of MODEL_FIXTURES) for (const precision of MODEL_PRECISIONS) oracleLora(name, oraclePrecision('generic', precision))
  const { code, output } = await probe
  if (!t.equal(code, 0, 'the probe ran to its end under qemu-aarch64', { output })) return
  t.comment(`the probe under qemu-aarch64: ${(Number(process.hrtime.bigint() - started) / 1e9).toFixed(0)} s`)
  const result = JSON.parse(fs.readFileSync(resultFile, 'utf8'), reviver) as ProbeResult

  t.same([result.platform, result.arch], ['linux', 'arm64'], `the emulated Node is linux-arm64 (${result.node})`)
  t.same(result.isas, ['generic'], 'the binary holds the portable kernels alone')
  t.equal(result.activeIsa, 'generic', 'and runs them')

  t.test('every backend-ops case on the CPU, at each precision', async (t) => {
    const expected = CASES.flatMap((c, index) => precisionsOf(c, CPU).map((precision) => `${index} ${precision}`))
    t.same(result.cases.map((r) => `${r.index} ${r.precision}`), expected, `the probe ran all ${expected.length} case runs`)
    for (const r of result.cases) {
      const c = CASES[r.index]
      if (r.error) t.fail(`${c.op} ${caseName(c, r.precision)}: threw ${r.error}`)
      else checkOutputs(t, c, r.precision, r.outputs!)
    }
  })

  t.test('the tiny fixtures: forward, LoRA loss and every gradient against the float64 goldens', async (t) => {
    t.equal(result.models.length, MODEL_FIXTURES.length * MODEL_PRECISIONS.length, 'each fixture at each precision')
    for (const m of result.models) {
      const { config, golden } = fixture(m.fixture)
      const p = oraclePrecision('generic', m.precision)
      const what = `${m.fixture} ${m.precision} (oracle ${p.name})`
      const base = oracleBase(m.fixture, p)
      withinBound(t, `${what} hidden`, goldenErr(m.fixture, m.hidden, 'base.hidden', config.hidden_size), goldenErr(m.fixture, base.hidden, 'base.hidden', config.hidden_size))
      withinBound(t, `${what} logits`, goldenErr(m.fixture, m.logits, 'base.logits', config.vocab_size), goldenErr(m.fixture, base.logits, 'base.logits', config.vocab_size))
      const lora = oracleLora(m.fixture, p)
      const wantLoss = golden.get('lora.loss')![0]
      withinBound(t, `${what} LoRA loss ${m.loraLoss} vs ${wantLoss}`, lossErr(m.loraLoss, wantLoss), lossErr(lora.loss, wantLoss), LOSS_FLOOR)
      // Every gradient tensor within FACTOR x the oracle's error on that tensor (failures named one by one).
      let checked = 0, worst = 0, worstName = ''
      for (const [key, g] of golden) {
        if (!key.startsWith('grad.')) continue
        const name = key.slice('grad.'.length)
        const scale = relErr(lora.grads.get(name)!, g)
        const err = m.grads[name] ? relErr(m.grads[name], g) : Infinity
        checked++
        if (err / scale > worst) [worst, worstName] = [err / scale, name]
        if (!(err <= FACTOR * scale)) t.fail(`${what} ${name}: relative error ${err.toExponential(2)} > ${FACTOR} x ${scale.toExponential(2)}`)
      }
      t.ok(checked > 20 && worst <= FACTOR, `${what}: ${checked} gradient tensors, the worst ${worst.toFixed(2)} x the oracle's error (${worstName})`)
    }
  })
})
