// Bounded reads of small files (lib/io/read.ts): config.json, tokenizer files and the shard index
// are read only when they are regular files under their kind's size cap. /dev/zero, /dev/urandom,
// a FIFO or a directory in their place is a typed error naming the file, at once, instead of
// unbounded memory or a process that never returns.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import t, { type Test } from 'tap'
import { Tokenizer, io, readConfig } from '../../lib/index'

const ROOT = path.join(__dirname, '..', '..')
const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'ernie-tiny')
const posix = process.platform !== 'win32'

function modelCopy(t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-read-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  for (const f of ['config.json', 'tokenizer.model', 'tokenizer_config.json']) fs.copyFileSync(path.join(FIXTURE, f), path.join(dir, f))
  return dir
}

function replaceWith(dir: string, name: string, target: string): string {
  const file = path.join(dir, name)
  fs.rmSync(file, { force: true })
  fs.symlinkSync(target, file)
  return file
}

t.test('a regular file under its cap reads whole, byte for byte', async (t) => {
  const file = path.join(FIXTURE, 'tokenizer.model')
  const want = fs.readFileSync(file)
  t.same(await io.readSmallFile(file, 'tokenizer.model'), want)
  t.same(io.readSmallFileSync(file, 'tokenizer.model'), want)
  const dir = modelCopy(t)
  fs.writeFileSync(path.join(dir, 'empty.json'), '')
  t.equal((await io.readSmallFile(path.join(dir, 'empty.json'), 'config')).length, 0)
})

t.test('/dev/zero and /dev/urandom in place of each file: ERR_NOT_A_FILE naming it', { skip: !posix && 'no /dev' }, async (t) => {
  for (const device of ['/dev/zero', '/dev/urandom']) {
    for (const name of ['tokenizer.model', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json']) {
      const dir = modelCopy(t)
      const file = replaceWith(dir, name, device)
      await t.rejects(Tokenizer.fromDirectory(dir), { name: 'FileError', code: 'ERR_NOT_A_FILE', path: file, message: `${file}: is a character device, not a regular file` }, `${name} -> ${device}`)
    }
    const dir = modelCopy(t)
    const file = replaceWith(dir, 'config.json', device)
    t.throws(() => readConfig(dir), { name: 'FileError', code: 'ERR_NOT_A_FILE', path: file }, `config.json -> ${device}`)
    await t.rejects(io.readSmallFile(device, 'config'), { code: 'ERR_NOT_A_FILE' })
  }
})

t.test('a FIFO in place of config.json or tokenizer.model: an error at once (in a child, so a regression fails instead of hanging)', { skip: !posix && 'no FIFOs' }, async (t) => {
  const dir = modelCopy(t)
  for (const name of ['config.json', 'tokenizer.model']) {
    fs.rmSync(path.join(dir, name))
    const r = spawnSync('mkfifo', [path.join(dir, name)])
    // coreutils' mkfifo is on every POSIX machine this runs on: its absence fails, it is no reason to skip
    if (r.status !== 0) return t.fail(`mkfifo ${name}: ${r.error?.message ?? r.stderr}`)
  }
  const script = `
    const { Tokenizer, readConfig } = require(${JSON.stringify(path.join(ROOT, 'lib', 'index'))})
    const out = {}
    try { readConfig(${JSON.stringify(dir)}) } catch (e) { out.config = { name: e.name, code: e.code, path: e.path, message: e.message } }
    Tokenizer.fromDirectory(${JSON.stringify(dir)}, { prefer: 'tokenizer.model' }).then(
      () => console.log(JSON.stringify(out)),
      (e) => { out.tokenizer = { name: e.name, code: e.code, path: e.path }; console.log(JSON.stringify(out)) },
    )
  `
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'))
  const r = spawnSync(process.execPath, [...loader, '-e', script], { encoding: 'utf8', timeout: 120_000 })
  t.equal(r.signal, null, 'the child was not killed by the timeout')
  t.equal(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout)
  const config = path.join(dir, 'config.json')
  t.same(out.config, { name: 'FileError', code: 'ERR_NOT_A_FILE', path: config, message: `${config}: is a FIFO, not a regular file` })
  t.same(out.tokenizer, { name: 'FileError', code: 'ERR_NOT_A_FILE', path: path.join(dir, 'tokenizer.model') })
})

t.test('a file past its kind\'s cap: ERR_FILE_TOO_LARGE before a byte is read', async (t) => {
  const dir = modelCopy(t)
  const limits = io.FILE_SIZE_LIMITS
  t.equal(limits.config, 1024 * 1024)
  t.equal(limits['tokenizer.json'], 64 * 1024 * 1024)
  // Sparse files: the size is what counts, nothing is allocated.
  const config = path.join(dir, 'config.json')
  fs.truncateSync(config, limits.config + 1)
  t.throws(() => readConfig(dir), { name: 'FileError', code: 'ERR_FILE_TOO_LARGE', path: config, message: `${config}: is ${limits.config + 1} bytes, past the 1 MiB limit for a config file` })
  const json = path.join(dir, 'tokenizer.json')
  fs.writeFileSync(json, '')
  fs.truncateSync(json, limits['tokenizer.json'] + 1)
  await t.rejects(Tokenizer.fromDirectory(dir), { code: 'ERR_FILE_TOO_LARGE', path: json, message: /past the 64 MiB limit for a tokenizer.json file/ })
  fs.truncateSync(json, 0)
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), '')
  fs.truncateSync(path.join(dir, 'tokenizer_config.json'), limits['tokenizer-config'] + 1)
  await t.rejects(Tokenizer.fromDirectory(dir), { code: 'ERR_FILE_TOO_LARGE', path: path.join(dir, 'tokenizer_config.json') })
})

t.test('a directory in place of a file: EISDIR naming it; a missing optional file is still optional', async (t) => {
  const dir = modelCopy(t)
  fs.mkdirSync(path.join(dir, 'tokenizer.json'))
  await t.rejects(Tokenizer.fromDirectory(dir), { name: 'FileError', code: 'EISDIR', path: path.join(dir, 'tokenizer.json') })
  fs.rmdirSync(path.join(dir, 'tokenizer.json'))
  const tok = await Tokenizer.fromDirectory(dir)
  t.equal(tok.kind, 'sentencepiece', 'no tokenizer.json, special_tokens_map.json or added_tokens.json: fine')
  fs.rmSync(path.join(dir, 'config.json'))
  t.throws(() => readConfig(dir), { code: 'ERR_MODEL_NOT_FOUND' })
})
