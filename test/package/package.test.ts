// The package as users get it: `npm pack` of this tree, installed from the tarball into fresh apps
// in a temporary directory, with a PATH that holds only node, npm and sh (no compiler, make or
// python3), then used from CommonJS, from an ES module and from TypeScript.
//
// `npm run test:package` runs it, and CI (.ci/run) after the suite; `npm test` does not (package.json
// "tap"."exclude"): it packs the working tree, which rebuilds dist/, types/ and the native prebuild
// (a few minutes), and installs dependencies and TypeScript from the npm registry.
import t, { type Test } from 'tap'
import { spawnSync, type SpawnSyncReturns } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

const ROOT = path.join(__dirname, '..', '..')
const APP_FILES = path.join(__dirname, 'app')
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string }

// The TypeScript versions the shipped types are checked with: the oldest supported (5.2 brought
// the esnext.disposable library the types reference) and the newest published. @types/node at
// the engines floor's major.
const TYPESCRIPT = { oldest: '5.2', newest: 'latest' } as const
const TYPES_NODE = '20'
// Where this machine has a prebuild in the tarball.
const PREBUILT = process.platform === 'linux' && process.arch === 'x64'
// The prebuilds `npm pack` puts in the tarball here: this machine's, and on x64 Linux with the arm64
// tools (scripts/arm64-tools.mjs) the linux-arm64 one, which scripts/prepack.mjs ships only once
// its smoke test under emulation has passed (and without which it packs, saying so).
const arm64Tools = JSON.parse(spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'arm64-tools.mjs')], { encoding: 'utf8' }).stdout) as { missing: string[] }
const PREBUILDS = [
  ...(PREBUILT ? ['linux-x64'] : []),
  ...(PREBUILT && arm64Tools.missing.length === 0 ? ['linux-arm64'] : []),
].map((target) => ({ target, file: `prebuilds/${target}/ernie-sentiment.glibc.node` }))

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-package-'))
t.teardown(() => fs.rmSync(work, { recursive: true, force: true }))

// npm's own entry point, run with this node.
const npmCli = [process.env.npm_execpath, path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js')].find(
  (f) => f && f.endsWith('.js') && fs.existsSync(f),
)

// A PATH with node, npm and sh alone (npm runs scripts with sh): what a machine without build tools offers.
const bareBin = path.join(work, 'bin')
fs.mkdirSync(bareBin)
fs.symlinkSync(process.execPath, path.join(bareBin, 'node'))
if (npmCli) fs.symlinkSync(npmCli, path.join(bareBin, 'npm'))
fs.symlinkSync('/bin/sh', path.join(bareBin, 'sh'))
// The outer npm's settings (npm_config_*) carry over; its script context (npm_lifecycle_*, ...) does not.
const bareEnv: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !k.startsWith('npm_') || k.startsWith('npm_config_')),
)
bareEnv.PATH = bareBin

// Runs a command as a user would. tap puts its module loaders into the NODE_OPTIONS of every child
// this file spawns (they break, among others, TypeScript 7's ES module bin on Node 20): env drops them.
function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = bareEnv): SpawnSyncReturns<string> & { seconds: number } {
  const start = process.hrtime.bigint()
  const r = spawnSync('/usr/bin/env', ['-u', 'NODE_OPTIONS', command, ...args], { cwd, env, encoding: 'utf8', maxBuffer: 64 << 20 })
  return Object.assign(r, { seconds: Number(process.hrtime.bigint() - start) / 1e9 })
}
const npm = (args: string[], cwd: string, env?: NodeJS.ProcessEnv) => run(process.execPath, [npmCli!, ...args, '--no-audit', '--no-fund'], cwd, env)
const tail = (r: SpawnSyncReturns<string>) => `exit ${r.status}${r.error ? ` (${r.error.message})` : ''}\n${(r.stdout + r.stderr).slice(-3000)}`
// Passes when the command exited 0; its output shows only when it did not.
const ran = (t: Test, r: SpawnSyncReturns<string>, what: string) => t.equal(r.status, 0, what, { output: tail(r) })

function freshApp(name: string): string {
  const dir = path.join(work, name)
  fs.mkdirSync(dir)
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }))
  return dir
}

if (!npmCli) {
  t.fail(`npm's npm-cli.js not found (npm_execpath=${process.env.npm_execpath}); run this file with npm run test:package`)
} else {
  // `npm pack` runs prepack (the prebuild), prepare (tsc) and postpack, with this machine's tools.
  const packed = npm(['pack', '--pack-destination', work], ROOT, process.env)
  const tarball = path.join(work, `${pkg.name}-${pkg.version}.tgz`)
  if (packed.status !== 0 || !fs.existsSync(tarball)) {
    t.fail(`npm pack failed: ${tail(packed)}`)
  } else {
    t.comment(`npm pack: ${packed.seconds.toFixed(0)} s, ${fs.statSync(tarball).size} bytes`)
    const extracted = path.join(work, 'extracted')
    fs.mkdirSync(extracted)
    const untar = run('tar', ['-xzf', tarball, '-C', extracted], work, process.env)
    ran(t, untar, 'tar -xzf of the tarball')
    const contents = path.join(extracted, 'package')
    const files = fs.readdirSync(contents, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => path.relative(contents, path.join(e.parentPath, e.name)).split(path.sep).join('/'))
    t.comment(`the tarball holds ${files.length} files`)
    checkContents(files, contents)
    checkInstalls(tarball)
  }
}

function checkContents(files: string[], contents: string): void {
  t.test('the tarball holds what users need', async (t) => {
    const needed = [
      'package.json', 'README.md', 'LICENSE', 'NOTICE',
      'dist/lib/index.js', 'dist/lib/cli/bin.js', 'types/lib/index.d.ts', 'esm/index.mjs', 'esm/index.d.mts',
      'binding.gyp', 'scripts/check-build-tools.mjs',
      'data/chnsenticorp/train.tsv', 'data/chnsenticorp/dev.tsv', 'data/chnsenticorp/test.tsv',
      'recipes/erniekit-sft-lora.yaml', 'recipes/erniekit-sft-full.yaml', 'recipes/qwen3-embedding-head.yaml', 'recipes/qwen3-lora.yaml',
      'models/ernie-4.5-tiny-zh/config.json', 'models/ernie-4.5-tiny-zh/model.safetensors', 'models/ernie-4.5-tiny-zh/tokenizer.model',
      ...PREBUILDS.map((p) => p.file),
    ]
    for (const f of needed) t.ok(files.includes(f), f)
    t.match(fs.readFileSync(path.join(contents, 'LICENSE'), 'utf8'), /Apache License\s+Version 2\.0/, 'LICENSE is the Apache-2.0 text')
  })

  t.test('and nothing users do not need', async (t) => {
    const unwanted = [/^dist\/(bench|examples)\//, /^types\/(bench|examples)\//, /\.map$/, /^test\//, /^lib\//, /^bench\//, /^examples\//, /^native\/check\//, /^\.ci\//, /^prebuilds\/\.gitkeep$/]
    t.same(files.filter((f) => unwanted.some((re) => re.test(f))), [], 'no benchmarks, examples, source maps, tests or TypeScript sources')
    const js = files.filter((f) => /\.(c|m)?js$/.test(f))
    t.same(js.filter((f) => fs.readFileSync(path.join(contents, f), 'utf8').includes('sourceMappingURL')), [], 'no .js points at a source map')
    const dts = files.filter((f) => /\.d\.(m|c)?ts$/.test(f))
    t.same(dts.filter((f) => fs.readFileSync(path.join(contents, f), 'utf8').includes('@internal')), [], 'no @internal declaration is shipped')
    t.same(dts.filter((f) => /\bBuffer\b|NodeJS\./.test(fs.readFileSync(path.join(contents, f), 'utf8'))).filter((f) => !f.startsWith('types/lib/cli/')), [],
      'no Node-only type (Buffer, NodeJS.*) outside the command line\'s own modules')
  })

  t.test('each prebuild is for its architecture and needs glibc alone, at the version README.md states', { skip: PREBUILDS.length === 0 && 'no prebuild for this platform' }, async (t) => {
    if (PREBUILT && arm64Tools.missing.length > 0) t.comment(`no linux-arm64 prebuild expected: missing ${arm64Tools.missing.join('; ')}`)
    t.same(files.filter((f) => f.startsWith('prebuilds/')).sort(), PREBUILDS.map((p) => p.file).sort(), `the prebuilds: ${PREBUILDS.map((p) => p.target).join(', ')}`)
    for (const { target, file } of PREBUILDS) {
      const arch = target.split('-')[1]
      const r = run(process.execPath, [path.join(ROOT, 'scripts', 'elf-deps.mjs'), path.join(contents, file), arch], ROOT, process.env)
      if (!ran(t, r, `scripts/elf-deps.mjs reads ${file}`)) continue
      const { machine, needed, glibc, problems } = JSON.parse(r.stdout) as { machine: string; needed: string[]; glibc: string; problems: string[] }
      t.comment(`${file}: ${machine}, ${fs.statSync(path.join(contents, file)).size} bytes, NEEDED ${needed.join(' ')}, glibc ${glibc}`)
      t.same(problems, [], `${target}: an ELF file for ${arch}, linking glibc's libraries and libgcc_s alone (libstdc++ static), no GLIBC_ version past the promised one`)
      t.ok(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8').includes(`glibc ${glibc} or later`), `README.md says "glibc ${glibc} or later"`)
    }
  })
}

function checkInstalls(tarball: string): void {
  t.test('no compiler, make or python3 is reachable on the bare PATH', async (t) => {
    for (const tool of ['cc', 'c++', 'gcc', 'g++', 'clang', 'clang++', 'make', 'python3', 'python']) {
      const r = spawnSync(tool, ['--version'], { env: bareEnv })
      t.equal((r.error as NodeJS.ErrnoException | undefined)?.code, 'ENOENT', `${tool}: not found`)
    }
  })

  const app = freshApp('app')
  t.test('npm install --ignore-scripts of the tarball, then CommonJS and ES module use', async (t) => {
    const install = npm(['install', '--ignore-scripts', tarball], app)
    if (!ran(t, install, 'npm install --ignore-scripts')) return
    t.comment(`npm install --ignore-scripts: ${install.seconds.toFixed(1)} s`)
    for (const f of fs.readdirSync(APP_FILES)) fs.copyFileSync(path.join(APP_FILES, f), path.join(app, f))

    for (const script of ['smoke.cjs', 'smoke.mjs']) {
      const r = run(process.execPath, [script], app)
      if (!ran(t, r, `node ${script}`)) continue
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as SmokeResult
      checkSmoke(t, script, out)
    }
    const help = run(process.execPath, [path.join(app, 'node_modules', '.bin', 'ernie-sentiment'), '--help'], app)
    ran(t, help, 'the ernie-sentiment command runs (--help)')
  })

  t.test('TypeScript consumers type-check, strict, with the oldest and the newest TypeScript, with and without @types/node', async (t) => {
    const install = npm(['install', '--ignore-scripts', `ts-oldest@npm:typescript@${TYPESCRIPT.oldest}`, `ts-newest@npm:typescript@${TYPESCRIPT.newest}`, `@types/node@${TYPES_NODE}`], app)
    if (!ran(t, install, 'npm install of TypeScript and @types/node')) return
    const consumer = fs.readFileSync(path.join(APP_FILES, 'consumer.ts'), 'utf8')
    for (const ext of ['ts', 'cts', 'mts']) fs.writeFileSync(path.join(app, `consumer.${ext}`), consumer)
    for (const alias of ['ts-oldest', 'ts-newest']) {
      const version = (JSON.parse(fs.readFileSync(path.join(app, 'node_modules', alias, 'package.json'), 'utf8')) as { version: string }).version
      for (const types of [[], ['node']]) {
        const settings = {
          // module nodenext: consumer.cts resolves the exports map's require condition, consumer.mts its import condition
          nodenext: { compilerOptions: { strict: true, noEmit: true, module: 'nodenext', types }, files: ['consumer.cts', 'consumer.mts'] },
          // TypeScript's defaults otherwise (its default target, module and resolution)
          defaults: { compilerOptions: { strict: true, noEmit: true, types }, files: ['consumer.ts'] },
        }
        for (const [name, config] of Object.entries(settings)) {
          const tsconfig = `tsconfig.${alias}.${name}.${types.length}.json`
          fs.writeFileSync(path.join(app, tsconfig), JSON.stringify(config))
          const r = run(process.execPath, [path.join(app, 'node_modules', alias, 'bin', 'tsc'), '-p', tsconfig], app)
          ran(t, r, `TypeScript ${version}, ${name}, ${types.length ? 'with' : 'without'} @types/node: no errors`)
        }
      }
    }
  })

  t.test('npm install of the tarball with its install script: the prebuild loads, nothing compiles', { skip: !PREBUILT && 'no prebuild for this platform' }, async (t) => {
    const scripted = freshApp('app-scripts')
    const install = npm(['install', tarball], scripted)
    if (!ran(t, install, 'npm install (the install script runs)')) return
    t.comment(`npm install (install script run): ${install.seconds.toFixed(1)} s`)
    const installed = path.join(scripted, 'node_modules', pkg.name)
    t.notOk(fs.existsSync(path.join(installed, 'build')), 'no build/ directory: node-gyp never ran')
    const r = run(process.execPath, ['-e', "console.log(typeof require('ernie-sentiment').ErnieClassifier)"], scripted)
    t.equal(r.stdout.trim(), 'function', 'require works', { output: tail(r) })

    // No binary that loads (as on a platform without a prebuild), and no tools for a source build.
    fs.rmSync(path.join(installed, 'prebuilds'), { recursive: true })
    const rebuild = npm(['rebuild', pkg.name], scripted)
    t.not(rebuild.status, 0, 'npm rebuild fails')
    const said = rebuild.stderr.split('\n').filter((line) => line.includes(`${pkg.name}: no prebuilt binary loads`))
    t.equal(said.length, 1, 'one line says why', { output: tail(rebuild) })
    t.match(said[0] ?? '', /missing python3 \(3\.6 or later\), a C\+\+17 compiler \(g\+\+ not found; install g\+\+ or clang\+\+, or set CXX\), make\.$/)
    t.notMatch(rebuild.stderr, /Traceback|gyp ERR/, 'no gyp traceback')
  })
}

interface SmokePrediction {
  label: string
  score: number
  scores: Record<string, number>
}
interface SmokeResult {
  reviews: number
  steps: number
  labels: string[]
  loadedLabels: string[]
  before: SmokePrediction[]
  after: SmokePrediction[]
  saved: string[]
}

function checkSmoke(t: Test, script: string, out: SmokeResult): void {
  t.equal(out.reviews, 200, `${script}: fitted on 200 bundled reviews`)
  t.ok(out.steps > 0, `${script}: ${out.steps} training steps`)
  t.same(out.labels, ['negative', 'positive'], `${script}: the two classes`)
  t.same(out.loadedLabels, out.labels, `${script}: the loaded classifier has the same classes`)
  t.ok(out.saved.includes('classifier.json'), `${script}: save wrote classifier.json (${out.saved.join(', ')})`)
  t.equal(out.before.length, 2, `${script}: two predictions`)
  for (const [i, p] of out.before.entries()) {
    const probs = out.labels.map((l) => p.scores[l])
    t.ok(Math.abs(probs[0] + probs[1] - 1) < 1e-5, `${script}: text ${i}: the class probabilities sum to 1`)
    t.equal(p.label, out.labels[probs[1] > probs[0] ? 1 : 0], `${script}: text ${i}: the label is the likelier class`)
    t.equal(p.score, Math.max(...probs), `${script}: text ${i}: the score is its probability`)
    t.ok(Math.abs(out.after[i].scores.positive - p.scores.positive) < 1e-6, `${script}: text ${i}: the loaded classifier predicts what the saved one did`)
  }
}
