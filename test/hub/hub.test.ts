// resolveModel against a fake hub on 127.0.0.1 (test/helpers/hub-server.ts): the HF cache layout,
// offline use, resume after a dropped connection, rejection of corrupted bytes, tokens, progress,
// abort.
import t from 'tap'
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { HubError, resolveModel, type DownloadProgress } from '../../lib/hub'
import { openSafetensors, saveSafetensors, type TensorToSave } from '../../lib/io/safetensors'
import { gitBlobSha1, startFakeHub, type FakeRepo } from '../helpers/hub-server'

// Hermetic: no HF_* variable of the machine running the tests leaks in.
const savedEnv = { ...process.env }
for (const k of Object.keys(process.env)) if (/^(HF_|HUGGING|TRANSFORMERS_OFFLINE|XDG_CACHE_HOME)/.test(k)) delete process.env[k]
process.env.HF_HOME = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-hf-home-'))
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-hub-'))
t.teardown(() => {
  fs.rmSync(root, { recursive: true, force: true })
  fs.rmSync(process.env.HF_HOME!, { recursive: true, force: true })
  process.env = savedEnv
})

const fixture = path.join(__dirname, '..', 'fixtures', 'ernie-tiny')
const read = (f: string) => fs.readFileSync(path.join(fixture, f))
const sha = (s: string) => createHash('sha1').update(s).digest('hex')
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')

const plain: FakeRepo = {
  id: 'test-org/ernie-tiny',
  sha: sha('plain'),
  files: {
    'config.json': read('config.json'),
    'model.safetensors': read('model.safetensors'),
    'tokenizer.model': read('tokenizer.model'),
    'tokenizer_config.json': read('tokenizer_config.json'),
    'golden.safetensors': read('golden.safetensors'), // in the repo, not needed: never fetched
    'README.md': Buffer.from('# ernie-tiny\n'),
  },
}
const expectedFiles = ['config.json', 'model.safetensors', 'tokenizer.model', 'tokenizer_config.json']
const lfsFiles = new Set(['model.safetensors', 'tokenizer.model'])

let counter = 0
const freshCache = () => path.join(root, `cache-${counter++}`)

// The sharded repo: ernie-tiny's tensors split over two files and an index.
async function shardedRepo(): Promise<FakeRepo> {
  const dir = path.join(root, 'shards')
  fs.mkdirSync(dir, { recursive: true })
  using st = openSafetensors(path.join(fixture, 'model.safetensors'))
  const names = Object.keys(st.tensors).sort()
  const shards: Record<string, TensorToSave>[] = [{}, {}]
  const weightMap: Record<string, string> = {}
  names.forEach((name, i) => {
    const info = st.tensors[name]
    shards[i % 2][name] = { dtype: info.dtype, shape: info.shape, data: st.view(name) }
    weightMap[name] = `model-0000${(i % 2) + 1}-of-00002.safetensors`
  })
  const files: Record<string, Buffer> = {
    'config.json': read('config.json'),
    'tokenizer.model': read('tokenizer.model'),
    'model.safetensors.index.json': Buffer.from(JSON.stringify({ metadata: {}, weight_map: weightMap })),
  }
  for (const i of [0, 1]) {
    const name = `model-0000${i + 1}-of-00002.safetensors`
    await saveSafetensors(path.join(dir, name), shards[i])
    files[name] = fs.readFileSync(path.join(dir, name))
  }
  return { id: 'test-org/ernie-tiny-sharded', sha: sha('sharded'), files }
}

function checkLayout(t: Asserts, cache: string, repo: FakeRepo, snapshot: string, files: string[]) {
  const storage = path.join(cache, `models--${repo.id.replace('/', '--')}`)
  t.equal(snapshot, path.join(storage, 'snapshots', repo.sha), 'resolves to snapshots/<commit>')
  t.equal(fs.readFileSync(path.join(storage, 'refs', 'main'), 'utf8'), repo.sha, 'refs/main holds the commit, no newline')
  t.same(fs.readdirSync(snapshot).sort(), [...files].sort(), 'exactly the model files')
  for (const f of files) {
    const link = path.join(snapshot, f)
    t.ok(fs.lstatSync(link).isSymbolicLink(), `${f} is a symlink`)
    const etag = lfsFiles.has(f) || f.endsWith('.safetensors') ? sha256(repo.files[f]) : gitBlobSha1(repo.files[f])
    t.equal(fs.readlinkSync(link), path.join('..', '..', 'blobs', etag), `${f} -> ../../blobs/<etag> (sha256 for LFS, git sha1 otherwise)`)
    t.ok(fs.readFileSync(link).equals(repo.files[f]), `${f} has the repo's bytes`)
  }
  t.same(fs.readdirSync(path.join(storage, 'blobs')).filter((b) => b.endsWith('.incomplete')), [], 'no partial download left')
}
interface Asserts {
  ok(v: unknown, msg?: string): unknown
  equal(a: unknown, b: unknown, msg?: string): unknown
  same(a: unknown, b: unknown, msg?: string): unknown
}

t.test('a fresh download lands in the HF cache layout; a second resolve needs no server', async (t) => {
  const hub = await startFakeHub([plain])
  const cache = freshCache()
  const events: DownloadProgress[] = []
  const snapshot = await resolveModel(plain.id, { cacheDir: cache, endpoint: hub.endpoint, onProgress: (p) => events.push({ ...p }) })
  checkLayout(t, cache, plain, snapshot, expectedFiles)
  for (const f of ['golden.safetensors', 'README.md']) t.equal(hub.downloads(f).length, 0, `${f} is not fetched`)
  for (const f of expectedFiles) t.equal(hub.downloads(f).length, 1, `${f} fetched once`)
  t.ok(hub.requests.some((r) => r.path === `/api/models/${plain.id}/revision/main`), 'revision resolved through the API')

  // Progress: per file, increasing, ending at the total, then 'done'.
  for (const f of expectedFiles) {
    const mine = events.filter((e) => e.file === f)
    const size = plain.files[f].length
    t.ok(mine.length >= 2, `${f}: progress reported`)
    t.ok(mine.every((e, i) => i === 0 || e.loaded >= mine[i - 1].loaded), `${f}: loaded never decreases`)
    t.ok(mine.every((e) => e.total === size && e.repo === plain.id))
    t.same(mine[mine.length - 1], { repo: plain.id, file: f, loaded: size, total: size, status: 'done' })
  }
  t.ok(events.filter((e) => e.file === 'model.safetensors' && e.status === 'downloading').length > 2, 'several progress steps for the weights')

  // Everything cached: online, nothing is downloaded again.
  const again: DownloadProgress[] = []
  t.equal(await resolveModel(plain.id, { cacheDir: cache, endpoint: hub.endpoint, onProgress: (p) => again.push(p) }), snapshot)
  for (const f of expectedFiles) t.equal(hub.downloads(f).length, 1, `${f} not fetched again`)
  t.ok(again.length === expectedFiles.length && again.every((e) => e.status === 'cached'), 'reported as cached')

  await hub.close()
  t.equal(await resolveModel(plain.id, { cacheDir: cache, endpoint: hub.endpoint }), snapshot, 'server gone: the cached snapshot')
  t.equal(await resolveModel(plain.id, { cacheDir: cache, endpoint: hub.endpoint, offline: true }), snapshot, 'offline option')
  process.env.HF_HUB_OFFLINE = '1'
  try {
    t.equal(await resolveModel(plain.id, { cacheDir: cache, endpoint: 'http://127.0.0.1:9' }), snapshot, 'HF_HUB_OFFLINE=1')
  } finally {
    delete process.env.HF_HUB_OFFLINE
  }
  t.equal(await resolveModel(plain.id, { cacheDir: cache, revision: plain.sha, endpoint: 'http://127.0.0.1:9' }), snapshot, 'a cached commit needs no network')
  const down = await startFakeHub([plain], { unavailable: true })
  try {
    t.equal(await resolveModel(plain.id, { cacheDir: cache, endpoint: down.endpoint }), snapshot, 'a hub answering 503: the cached snapshot')
    await t.rejects(resolveModel(plain.id, { cacheDir: freshCache(), endpoint: down.endpoint }), {
      code: 'ERR_HUB_NETWORK',
      message: /answered HTTP 503, and .* holds no snapshot of test-org\/ernie-tiny/,
    })
  } finally {
    await down.close()
  }
  using st = openSafetensors(snapshot)
  t.same(st.tensors['model.embed_tokens.weight'].shape, [6016, 64], 'the snapshot opens as a checkpoint')
})

t.test('HF_HUB_CACHE, HF_ENDPOINT and HF_HOME are honoured', async (t) => {
  const hub = await startFakeHub([plain])
  t.teardown(() => hub.close())
  const cache = freshCache()
  process.env.HF_HUB_CACHE = cache
  process.env.HF_ENDPOINT = hub.endpoint
  try {
    const snapshot = await resolveModel(plain.id)
    checkLayout(t, cache, plain, snapshot, expectedFiles)
  } finally {
    delete process.env.HF_HUB_CACHE
    delete process.env.HF_ENDPOINT
  }
  // Without HF_HUB_CACHE: HF_HOME/hub.
  process.env.HF_ENDPOINT = hub.endpoint
  try {
    const snapshot = await resolveModel(plain.id)
    t.equal(snapshot, path.join(process.env.HF_HOME!, 'hub', 'models--test-org--ernie-tiny', 'snapshots', plain.sha))
  } finally {
    delete process.env.HF_ENDPOINT
  }
})

t.test('offline with files missing says what is missing', async (t) => {
  const cache = freshCache()
  await t.rejects(resolveModel(plain.id, { cacheDir: cache, offline: true }), {
    code: 'ERR_HUB_OFFLINE_MISSING',
    message: new RegExp(`offline.*${cache}.*test-org/ernie-tiny.*revision 'main'`),
  })
  const hub = await startFakeHub([plain, await shardedRepo()])
  const sharded = await shardedRepo()
  const snapshot = await resolveModel(plain.id, { cacheDir: cache, endpoint: hub.endpoint })
  const shardedSnapshot = await resolveModel(sharded.id, { cacheDir: cache, endpoint: hub.endpoint })
  await hub.close()
  fs.rmSync(path.join(snapshot, 'model.safetensors'))
  await t.rejects(resolveModel(plain.id, { cacheDir: cache, offline: true }), {
    code: 'ERR_HUB_OFFLINE_MISSING',
    message: /lacks model\.safetensors \(or model\.safetensors\.index\.json and its shards\)/,
  })
  await t.rejects(resolveModel(plain.id, { cacheDir: cache, endpoint: hub.endpoint }), {
    code: 'ERR_HUB_NETWORK',
    message: /could not be reached \(ECONNREFUSED\).*lacks model\.safetensors/,
  })
  fs.rmSync(path.join(shardedSnapshot, 'model-00002-of-00002.safetensors'))
  fs.rmSync(path.join(shardedSnapshot, 'config.json'))
  await t.rejects(resolveModel(sharded.id, { cacheDir: cache, offline: true }), {
    code: 'ERR_HUB_OFFLINE_MISSING',
    message: /lacks config\.json, model-00002-of-00002\.safetensors$/,
  })
})

t.test('a sharded checkpoint: the index, then every shard it names', async (t) => {
  const sharded = await shardedRepo()
  const hub = await startFakeHub([sharded])
  t.teardown(() => hub.close())
  const cache = freshCache()
  const snapshot = await resolveModel(sharded.id, { cacheDir: cache, endpoint: hub.endpoint })
  checkLayout(t, cache, sharded, snapshot, Object.keys(sharded.files))
  using set = openSafetensors(snapshot)
  using whole = openSafetensors(path.join(fixture, 'model.safetensors'))
  t.same(Object.keys(set.tensors).sort(), Object.keys(whole.tensors).sort())
})

t.test('a dropped connection resumes with a Range request', async (t) => {
  const hub = await startFakeHub([plain], { dropOnce: ['model.safetensors', 'config.json'] })
  t.teardown(() => hub.close())
  const cache = freshCache()
  const events: DownloadProgress[] = []
  const snapshot = await resolveModel(plain.id, { cacheDir: cache, endpoint: hub.endpoint, onProgress: (p) => events.push({ ...p }) })
  checkLayout(t, cache, plain, snapshot, expectedFiles)
  for (const f of ['model.safetensors', 'config.json']) {
    const gets = hub.downloads(f)
    t.equal(gets.length, 2, `${f}: fetched twice`)
    t.equal(gets[0].range, undefined, 'first from the start')
    const from = Number(/^bytes=(\d+)-$/.exec(gets[1].range ?? '')?.[1])
    t.ok(from > 0 && from < plain.files[f].length, `${f}: then from byte ${from}`)
    const mine = events.filter((e) => e.file === f)
    t.ok(mine.every((e, i) => i === 0 || e.loaded >= mine[i - 1].loaded), `${f}: progress never goes back`)
  }
})

t.test('an interrupted run leaves a partial file the next run resumes', async (t) => {
  const cache = freshCache()
  const first = await startFakeHub([plain], { dropOnce: ['model.safetensors'] })
  await t.rejects(resolveModel(plain.id, { cacheDir: cache, endpoint: first.endpoint, retries: 0 }), {
    code: 'ERR_HUB_NETWORK',
    message: /model\.safetensors.*run again to resume/,
  })
  await first.close()
  const blob = path.join(cache, 'models--test-org--ernie-tiny', 'blobs', sha256(plain.files['model.safetensors']))
  const partial = fs.statSync(`${blob}.incomplete`).size
  t.ok(partial > 0 && partial < plain.files['model.safetensors'].length, `a partial file of ${partial} bytes`)
  t.same(fs.readdirSync(path.join(cache, '.locks', 'models--test-org--ernie-tiny')), [], 'the lock was released')

  const second = await startFakeHub([plain])
  t.teardown(() => second.close())
  const snapshot = await resolveModel(plain.id, { cacheDir: cache, endpoint: second.endpoint })
  t.same(second.downloads('model.safetensors').map((r) => r.range), [`bytes=${partial}-`], 'resumed from the partial size')
  checkLayout(t, cache, plain, snapshot, expectedFiles)
})

t.test('corrupted bytes are rejected and nothing is left in the cache', async (t) => {
  const hub = await startFakeHub([plain], { corrupt: ['model.safetensors'] })
  t.teardown(() => hub.close())
  const cache = freshCache()
  await t.rejects(resolveModel(plain.id, { cacheDir: cache, endpoint: hub.endpoint }), {
    code: 'ERR_HUB_VERIFY',
    file: 'model.safetensors',
    message: new RegExp(`model\\.safetensors failed verification .*sha256 [0-9a-f]{64}; the hub lists \\d+ bytes, ${sha256(plain.files['model.safetensors'])}\\)`),
  })
  const storage = path.join(cache, 'models--test-org--ernie-tiny')
  const blobs = fs.readdirSync(path.join(storage, 'blobs'))
  t.notOk(blobs.some((b) => b.startsWith(sha256(plain.files['model.safetensors']))), 'no blob, complete or partial, for the bad file')
  t.notOk(fs.existsSync(path.join(storage, 'snapshots', plain.sha, 'model.safetensors')), 'no snapshot entry')
  t.equal(hub.downloads('model.safetensors').length, 1, 'not retried: the bytes, not the connection, were wrong')

  // A small non-LFS file is checked against its git blob sha1.
  const hub2 = await startFakeHub([plain], { corrupt: ['tokenizer_config.json'] })
  t.teardown(() => hub2.close())
  await t.rejects(resolveModel(plain.id, { cacheDir: freshCache(), endpoint: hub2.endpoint }), {
    code: 'ERR_HUB_VERIFY',
    message: /tokenizer_config\.json failed verification .*git blob sha1/,
  })
})

t.test('the token goes to the hub as a Bearer header, never to the CDN', async (t) => {
  const token = 'hf_testtokenABCDEF'
  const hub = await startFakeHub([plain], { token })
  t.teardown(() => hub.close())
  await t.rejects(resolveModel(plain.id, { cacheDir: freshCache(), endpoint: hub.endpoint }), {
    code: 'ERR_HUB_AUTH',
    message: /HTTP 401.*set HF_TOKEN/,
  })

  hub.requests.length = 0
  await resolveModel(plain.id, { cacheDir: freshCache(), endpoint: hub.endpoint, token })
  const hubRequests = hub.requests.filter((r) => r.server === 'hub')
  t.ok(hubRequests.length >= 4 && hubRequests.every((r) => r.authorization === `Bearer ${token}`), 'every hub request carries it')
  const cdnRequests = hub.requests.filter((r) => r.server === 'cdn')
  t.ok(cdnRequests.length >= 2 && cdnRequests.every((r) => r.authorization === undefined), 'the CDN (another origin) never sees it')

  process.env.HF_TOKEN = token
  try {
    await resolveModel(plain.id, { cacheDir: freshCache(), endpoint: hub.endpoint })
    t.pass('HF_TOKEN is used')
    await t.rejects(resolveModel(plain.id, { cacheDir: freshCache(), endpoint: hub.endpoint, token: false }), { code: 'ERR_HUB_AUTH' }, 'token: false sends none')
  } finally {
    delete process.env.HF_TOKEN
  }
  fs.writeFileSync(path.join(process.env.HF_HOME!, 'token'), `${token}\n`)
  try {
    await resolveModel(plain.id, { cacheDir: freshCache(), endpoint: hub.endpoint })
    t.pass('the token file under HF_HOME is used')
  } finally {
    fs.rmSync(path.join(process.env.HF_HOME!, 'token'))
  }
})

t.test('an AbortSignal stops the download; the partial file stays resumable', async (t) => {
  const hub = await startFakeHub([plain], { slow: true })
  t.teardown(() => hub.close())
  const cache = freshCache()
  const controller = new AbortController()
  let abortedAt = 0
  const run = resolveModel(plain.id, {
    cacheDir: cache,
    endpoint: hub.endpoint,
    signal: controller.signal,
    onProgress: (p) => {
      if (p.file === 'model.safetensors' && p.loaded > 100_000 && !abortedAt) {
        abortedAt = p.loaded
        controller.abort()
      }
    },
  })
  await t.rejects(run, { name: 'AbortError' })
  t.ok(abortedAt > 0, 'aborted mid-file')
  const storage = path.join(cache, 'models--test-org--ernie-tiny')
  const partial = path.join(storage, 'blobs', `${sha256(plain.files['model.safetensors'])}.incomplete`)
  t.ok(fs.statSync(partial).size < plain.files['model.safetensors'].length, 'a partial file remains')
  t.same(fs.readdirSync(path.join(cache, '.locks', 'models--test-org--ernie-tiny')), [], 'the lock was released')
  await t.rejects(resolveModel(plain.id, { cacheDir: cache, endpoint: hub.endpoint, signal: AbortSignal.abort() }), { name: 'AbortError' }, 'an aborted signal stops at once')

  const snapshot = await resolveModel(plain.id, { cacheDir: cache, endpoint: hub.endpoint })
  t.match(hub.downloads('model.safetensors').at(-1)?.range, /^bytes=\d+-$/, 'the next run resumes')
  checkLayout(t, cache, plain, snapshot, expectedFiles)
})

t.test('concurrent resolves of one repo share the downloads', async (t) => {
  const hub = await startFakeHub([plain], { slow: true })
  t.teardown(() => hub.close())
  const cache = freshCache()
  const [a, b] = await Promise.all([
    resolveModel(plain.id, { cacheDir: cache, endpoint: hub.endpoint }),
    resolveModel(plain.id, { cacheDir: cache, endpoint: hub.endpoint }),
  ])
  t.equal(a, b)
  for (const f of expectedFiles) t.equal(hub.downloads(f).length, 1, `${f} downloaded once`)
  checkLayout(t, cache, plain, a, expectedFiles)
})

t.test('sources: local directories as they are; bad ids and unknown repos are clear errors', async (t) => {
  t.equal(await resolveModel(fixture), fixture)
  t.equal(await resolveModel(path.relative(process.cwd(), fixture)), fixture, 'relative paths resolve')
  await t.rejects(resolveModel('./no/such/dir'), { code: 'ERR_HUB_LOCAL_NOT_FOUND', message: /no such directory/ })
  await t.rejects(resolveModel(path.join(fixture, 'config.json')), { code: 'ERR_HUB_INVALID_ARGUMENT', message: /is a file/ })
  for (const bad of ['org--x/name', 'org/na..me', '-org/name', 'org/name.', 'a b/c', ''])
    await t.rejects(resolveModel(bad), { code: 'ERR_HUB_INVALID_ARGUMENT' }, JSON.stringify(bad))
  const hub = await startFakeHub([plain])
  t.teardown(() => hub.close())
  await t.rejects(resolveModel('test-org/unknown', { cacheDir: freshCache(), endpoint: hub.endpoint }), {
    code: 'ERR_HUB_NOT_FOUND',
    message: /test-org\/unknown.*HTTP 404.*Repository not found/,
  })
  await t.rejects(resolveModel(plain.id, { cacheDir: freshCache(), endpoint: hub.endpoint, revision: 'v9' }), {
    code: 'ERR_HUB_NOT_FOUND',
    message: /revision 'v9'/,
  })
  await t.rejects(resolveModel(plain.id, { cacheDir: freshCache(), endpoint: hub.endpoint, revision: '../x' }), { code: 'ERR_HUB_INVALID_ARGUMENT' })
  const noWeights: FakeRepo = { id: 'test-org/bin-only', sha: sha('bin'), files: { 'config.json': read('config.json'), 'pytorch_model.bin': Buffer.from('x') } }
  const hub2 = await startFakeHub([noWeights])
  t.teardown(() => hub2.close())
  await t.rejects(resolveModel(noWeights.id, { cacheDir: freshCache(), endpoint: hub2.endpoint }), {
    code: 'ERR_HUB_MISSING_FILES',
    message: /neither model\.safetensors nor model\.safetensors\.index\.json/,
  })
  t.ok(new HubError('ERR_HUB_HTTP', 'x') instanceof Error)
})

t.test('a hub whose API answers are not what the hub sends is refused by name, never read without bound', async (t) => {
  const http = await import('node:http')
  const answers: Record<string, (res: import('node:http').ServerResponse) => void> = {
    'not JSON': (res) => res.writeHead(200, { 'Content-Type': 'application/json' }).end('<html>'),
    'no commit': (res) => res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"id":"x"}'),
    'endless': (res) => {
      // Far more than an API answer may be, sent without a length: the reader must stop on its own.
      res.writeHead(200, { 'Content-Type': 'application/json' })
      const chunk = Buffer.alloc(1 << 20, 0x20)
      let sent = 0
      const more = () => {
        while (sent < 64 && res.write(chunk)) sent++
        if (sent < 64) res.once('drain', more)
        else res.end()
      }
      more()
    },
  }
  for (const [what, answer] of Object.entries(answers)) {
    const server = http.createServer((_req, res) => answer(res))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const endpoint = `http://127.0.0.1:${(server.address() as import('node:net').AddressInfo).port}`
    const why = { 'not JSON': /^test-org\/odd: .*not JSON/, 'no commit': /^test-org\/odd: .*no commit hash/, endless: /^test-org\/odd: .*exceeds the \d+ bytes/ }[what]!
    await t.rejects(resolveModel('test-org/odd', { cacheDir: freshCache(), endpoint }), { code: 'ERR_HUB_RESPONSE', message: why }, what)
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  }
})

t.test('a server that stops sending is abandoned after the idle timeout; the bytes received stay for a resume', async (t) => {
  const hub = await startFakeHub([plain], { stall: ['model.safetensors'] })
  t.teardown(() => hub.close())
  const cache = freshCache()
  const started = Date.now()
  await t.rejects(resolveModel(plain.id, { cacheDir: cache, endpoint: hub.endpoint, timeoutMs: 300, retries: 1 }), {
    code: 'ERR_HUB_TIMEOUT',
    message: /model\.safetensors failed after 2 attempt\(s\): .*nothing received for 0\.3 s.*run again to resume/,
  })
  t.ok(Date.now() - started < 20_000, `gave up after ${Date.now() - started} ms, not waiting forever`)
  t.equal(hub.downloads('model.safetensors').length, 2, 'one retry, resuming')
  t.equal(hub.downloads('model.safetensors')[1].range, 'bytes=10-', 'the retry asks for what was missing')
  const partial = path.join(cache, 'models--test-org--ernie-tiny', 'blobs', `${sha256(plain.files['model.safetensors'])}.incomplete`)
  t.equal(fs.statSync(partial).size, 20, 'what arrived stays on disk')

  // HF_HUB_DOWNLOAD_TIMEOUT, in seconds as huggingface_hub reads it, when no option is given.
  process.env.HF_HUB_DOWNLOAD_TIMEOUT = '0.2'
  t.teardown(() => delete process.env.HF_HUB_DOWNLOAD_TIMEOUT)
  await t.rejects(resolveModel(plain.id, { cacheDir: freshCache(), endpoint: hub.endpoint, retries: 0 }), { code: 'ERR_HUB_TIMEOUT', message: /nothing received for 0\.2 s/ })
  process.env.HF_HUB_DOWNLOAD_TIMEOUT = 'soon'
  await t.rejects(resolveModel(plain.id, { cacheDir: freshCache(), endpoint: hub.endpoint }), { code: 'ERR_HUB_INVALID_ARGUMENT', message: /HF_HUB_DOWNLOAD_TIMEOUT/ })
})

t.test('a hub that accepts the connection and never answers is treated as unreachable', async (t) => {
  const http = await import('node:http')
  const silent = http.createServer(() => undefined)
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    silent.closeAllConnections()
    silent.close()
  })
  const endpoint = `http://127.0.0.1:${(silent.address() as import('node:net').AddressInfo).port}`
  await t.rejects(resolveModel(plain.id, { cacheDir: freshCache(), endpoint, timeoutMs: 200 }), {
    code: 'ERR_HUB_NETWORK',
    message: /could not be reached \(.*nothing received for 0\.2 s.*\), and .* holds no snapshot/,
  })
})

t.test('a listed size the disk cannot hold is refused before any byte is written', async (t) => {
  const hub = await startFakeHub([plain], { listedSizes: { 'model.safetensors': 1e15 } })
  t.teardown(() => hub.close())
  const cache = freshCache()
  await t.rejects(resolveModel(plain.id, { cacheDir: cache, endpoint: hub.endpoint }), { code: 'ERR_HUB_NO_SPACE', message: /model\.safetensors needs 1000000000000000 more bytes and .* has \d+ free/ })
  t.equal(hub.downloads('model.safetensors').length, 0, 'nothing requested')
  const blobs = path.join(cache, 'models--test-org--ernie-tiny', 'blobs')
  t.same(fs.readdirSync(blobs).filter((f) => f.endsWith('.incomplete')), [], 'no partial file')
})
