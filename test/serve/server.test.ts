// createServer and `ernie-sentiment serve` against two classifiers trained on ernie-tiny: the
// answers equal each classifier's own predict; 4xx before the model; metrics text; a fault mix
// (disconnects, a slow body, malformed and oversized bodies among good requests); SIGTERM drain.
import t from 'tap'
import { spawn } from 'node:child_process'
import * as http from 'node:http'
import * as net from 'node:net'
import * as path from 'node:path'

import { createServer, ErnieClassifier } from '../../lib/index'
import { readTsv, tempDir, TINY, TRAIN } from '../helpers/classifier-helpers'

const dir = tempDir(t)
const train = readTsv(TRAIN)
const data = train.texts.slice(0, 40).map((text, i) => ({ text, label: train.labels[i] }))
const texts = train.texts.slice(200, 240)
let a: ErnieClassifier
let b: ErnieClassifier
let url = ''
let close: () => Promise<void>

function post(body: string, headers: Record<string, string> = {}): Promise<{ status: number; json: any; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url + '/v1/classify', { method: 'POST', headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      let text = ''
      res.on('data', (c) => (text += c))
      res.on('end', () => resolve({ status: res.statusCode!, json: text ? JSON.parse(text) : undefined, headers: res.headers }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

t.before(async () => {
  a = new ErnieClassifier({ model: TINY, method: 'head', maxLength: 32 })
  await a.fit(data, { epochs: 1 })
  b = new ErnieClassifier({ model: TINY, method: 'head', maxLength: 32, labels: ['neg', 'pos'] })
  await b.fit(data.map((d) => ({ text: d.text, label: d.label === 1 ? 'pos' : 'neg' })), { epochs: 2, seed: 7 })
  await a.save(path.join(dir, 'a'))
  const served = createServer({ a, b }, { maxBodyBytes: 65536, timeoutMs: 2000 })
  const address = await served.listen(0)
  url = `http://127.0.0.1:${address.port}`
  close = () => served.close()
})
t.teardown(async () => {
  await close()
  await a.dispose()
  await b.dispose()
})

t.test('classify: one text, several texts, two models, each equal to the classifier’s predict', async (t) => {
  const one = await post(JSON.stringify({ text: texts[0], model: 'a' }))
  t.equal(one.status, 200)
  t.same(one.json, [await a.predict(texts[0])])
  t.same(Object.keys(one.json[0]), ['label', 'score', 'scores'])
  const many = await post(JSON.stringify({ texts, model: 'b' }))
  t.same(many.json, await b.predict(texts))
  t.ok(many.json.every((p: { label: string }) => ['neg', 'pos'].includes(p.label)), 'b’s own labels')
  const concurrent = await Promise.all(texts.map((text) => post(JSON.stringify({ text, model: 'a' }))))
  t.same(
    concurrent.map((r) => r.json[0]),
    await a.predict(texts),
    '40 concurrent requests',
  )
  const health = await new Promise<any>((resolve) => http.get(url + '/health', (res) => { let s = ''; res.on('data', (c) => (s += c)); res.on('end', () => resolve({ status: res.statusCode, json: JSON.parse(s) })) }))
  t.same(health, { status: 200, json: { status: 'ok', models: ['a', 'b'] } })
})

t.test('bad requests get a 4xx with a message and never reach a model', async (t) => {
  let runs = 0
  a.setBatching({ onBatch: () => runs++ })
  b.setBatching({ onBatch: () => runs++ })
  const cases: Array<[string, number, RegExp]> = [
    ['{"text": "x"', 400, /not JSON/],
    ['[1]', 400, /JSON object/],
    ['{"text": "x"}', 400, /several models are served: .*\(a, b\)/],
    ['{"text": "", "model": "a"}', 400, /"text" is empty/],
    ['{"texts": [], "model": "a"}', 400, /"texts" is empty/],
    ['{"texts": ["x", 3], "model": "a"}', 400, /"texts"\[1\] must be a string, got number/],
    ['{"text": "x", "texts": ["y"], "model": "a"}', 400, /exactly one/],
    ['{"text": "x", "model": "c"}', 404, /no model "c"/],
    ['{"text": "x", "model": "a", "top_k": 2}', 400, /unknown field "top_k"/],
    [JSON.stringify({ text: 'x'.repeat(70_000), model: 'a' }), 413, /limit is 65536/],
  ]
  for (const [body, status, message] of cases) {
    const r = await post(body)
    t.equal(r.status, status, body.slice(0, 40))
    t.match(r.json.error.message, message)
  }
  t.equal(runs, 0, 'no inference run')
})

t.test('metrics: Prometheus text with requests, errors, latency, batch sizes, queue depth', async (t) => {
  const text = await new Promise<string>((resolve) => http.get(url + '/metrics', (res) => { let s = ''; res.on('data', (c) => (s += c)); res.on('end', () => resolve(s)) }))
  t.match(text, /^# TYPE ernie_requests_total counter$/m)
  t.match(text, /^ernie_requests_total\{route="\/v1\/classify",status="400"\} 8$/m, '8 of the bad requests were 400s')
  t.match(text, /^ernie_errors_total\{code="ERR_BAD_JSON"\} 1$/m)
  t.match(text, /^ernie_request_duration_seconds_count \d+$/m)
  t.match(text, /^ernie_batch_texts_bucket\{model="b",le="\+Inf"\} \d+$/m)
  t.match(text, /^ernie_queue_texts\{model="a"\} 0$/m)
})

t.test('faults: disconnects, a slow body, malformed and oversized bodies among good requests', async (t) => {
  const port = Number(new URL(url).port)
  const expected = await a.predict(texts)
  const faults: Promise<unknown>[] = []
  for (let i = 0; i < 10; i++) {
    // a client that sends its request and leaves before the answer
    faults.push(new Promise<void>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        const body = JSON.stringify({ texts, model: 'a' })
        s.write(`POST /v1/classify HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`)
        setImmediate(() => s.destroy())
        resolve()
      })
      s.on('error', () => resolve())
    }))
    // a body cut off half way
    faults.push(new Promise<void>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.write(`POST /v1/classify HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"text": "ha`)
        s.destroy()
        resolve()
      })
    }))
    faults.push(post('{"texts": [null]}'), post('not json'), post(JSON.stringify({ text: 'y'.repeat(70_000), model: 'b' })))
  }
  // a body trickling in past the server's request timeout (2 s)
  const slow = new Promise<string>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.write(`POST /v1/classify HTTP/1.1\r\nhost: x\r\ncontent-length: 20\r\n\r\n{`)
      const drip = setInterval(() => s.write(' '), 500)
      let got = ''
      s.on('data', (c) => (got += c))
      s.on('close', () => (clearInterval(drip), resolve(got)))
    })
  })
  const good = texts.map((text, i) => post(JSON.stringify({ text, model: 'a' })).then((r) => ({ r, i })))
  const answers = await Promise.all(good)
  await Promise.allSettled(faults)
  let right = 0
  for (const { r, i } of answers) if (r.status === 200 && JSON.stringify(r.json[0]) === JSON.stringify(expected[i])) right++
  t.equal(right, texts.length, `${right} of ${texts.length} good requests answered correctly among 50 faulty ones`)
  t.match(await slow, /^HTTP\/1.1 408/, 'the slow body was cut off with 408')
  const after = await post(JSON.stringify({ text: texts[1], model: 'a' }))
  t.same(after.json, [expected[1]], 'the server is still up')
})

t.test('ernie-sentiment serve: SIGTERM finishes the request in flight and exits 0', async (t) => {
  const bin = path.join(__dirname, '..', '..', 'lib', 'cli', 'bin.ts')
  const child = spawn(process.execPath, [...process.execArgv.filter((x) => x.includes('@tapjs/typescript')), bin, 'serve', '--model', path.join(dir, 'a'), '--port', '0', '--max-wait-ms', '300'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  const port = await new Promise<number>((resolve, reject) => {
    child.stderr.on('data', (c) => {
      stderr += c
      const m = /http:\/\/127\.0\.0\.1:(\d+)/.exec(stderr)
      if (m) resolve(Number(m[1]))
    })
    child.on('exit', () => reject(new Error(stderr)))
  })
  url = `http://127.0.0.1:${port}`
  // the request waits 300 ms in the batcher: SIGTERM arrives while it is in flight
  const inFlight = post(JSON.stringify({ text: texts[2] }))
  await new Promise((r) => setTimeout(r, 100))
  child.kill('SIGTERM')
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  const r = await inFlight
  t.equal(r.status, 200)
  t.same(r.json, [await a.predict(texts[2])])
  t.equal(code, 0, stderr)
})
