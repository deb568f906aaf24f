// createServer: one or more ErnieClassifiers over node:http (no framework: three routes, JSON in
// and out). POST /v1/classify answers [{ label, score, scores }] per text; requests from
// concurrent clients share inference runs through each classifier's predict batcher. GET /health,
// GET /metrics (Prometheus text). close() drains: no new connections, in-flight requests finish.
import * as http from 'node:http'

import type { ErnieClassifier } from '../classifier/classifier'
import { ErnieError, rangeError, typeError } from '../errors'
import { ServerMetrics } from './metrics'
import { HttpError, parseClassifyRequest, readBody } from './request'

export interface ServeOptions {
  /** Texts per forward pass (predict's batchSize, default 32). */
  batchSize?: number
  /** Texts per inference run, requests coalesced (default 1024). */
  maxBatch?: number
  /** How long a run that is not full waits for more requests, in ms (default 2). */
  maxWaitMs?: number
  /** Texts that may wait per model; past it requests get 503 with Retry-After (default 4096). */
  maxQueue?: number
  /** Time to answer one request, body included, in ms; past it 503 (default 30000). */
  timeoutMs?: number
  /** Largest request body in bytes; larger ones get 413 (default 1 MiB). */
  maxBodyBytes?: number
}

/** Where the server listens (node:net's AddressInfo, stated here so the types need no Node typings). */
export interface ServerAddress {
  address: string
  family: string
  port: number
}

export interface ClassifierServer {
  /** The node:http server (listening once listen() resolved). */
  /** @internal */
  readonly server: http.Server
  /** Starts listening (port 0: any free port); resolves with the address. */
  listen(port?: number, host?: string): Promise<ServerAddress>
  /** Stops accepting, lets in-flight requests finish, then resolves. The classifiers stay open. */
  close(): Promise<void>
}

const DEFAULTS = { batchSize: 32, maxBatch: 1024, maxWaitMs: 2, maxQueue: 4096, timeoutMs: 30_000, maxBodyBytes: 1 << 20 }

function positive(name: string, v: number, integer: boolean): number {
  if (typeof v !== 'number' || !(v >= 0) || (integer && (!Number.isInteger(v) || v < 1))) throw rangeError(`createServer: ${name} must be a ${integer ? 'positive integer' : 'number >= 0'}, got ${v}`)
  return v
}

/**
 * An HTTP server for `classifiers`: one (served as "default") or several by name. Sets each
 * classifier's predict batching (maxBatch, maxWaitMs, maxQueue) from `options`.
 */
export function createServer(classifiers: ErnieClassifier | Record<string, ErnieClassifier>, options: ServeOptions = {}): ClassifierServer {
  const byName: Record<string, ErnieClassifier> = typeof (classifiers as ErnieClassifier).predict === 'function' ? { default: classifiers as ErnieClassifier } : { ...(classifiers as Record<string, ErnieClassifier>) }
  const models = Object.keys(byName)
  if (models.length === 0) throw typeError('createServer: no classifiers given')
  for (const m of models) if (typeof byName[m]?.predict !== 'function') throw typeError(`createServer: "${m}" is not an ErnieClassifier`)
  const o = { ...DEFAULTS, ...options }
  positive('batchSize', o.batchSize, true)
  positive('maxBatch', o.maxBatch, true)
  positive('maxWaitMs', o.maxWaitMs, false)
  positive('maxQueue', o.maxQueue, true)
  positive('timeoutMs', o.timeoutMs, true)
  positive('maxBodyBytes', o.maxBodyBytes, true)

  const metrics = new ServerMetrics(() => new Map(models.map((m) => [m, byName[m].queuedTexts])))
  for (const m of models) byName[m].setBatching({ maxBatch: o.maxBatch, maxWaitMs: o.maxWaitMs, maxQueue: o.maxQueue, onBatch: (n) => metrics.batch(m, n) })
  let draining = false

  function send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    if (res.headersSent || res.destroyed) return
    const text = typeof body === 'string' ? body : JSON.stringify(body)
    res.writeHead(status, {
      'content-type': typeof body === 'string' ? 'text/plain; version=0.0.4; charset=utf-8' : 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(text),
      ...(draining ? { connection: 'close' } : {}),
      ...headers,
    })
    res.end(text)
  }

  async function classify(req: http.IncomingMessage, res: http.ServerResponse): Promise<number> {
    // the request's signal: its timeout, or the client gone (the texts then leave the queue)
    const controller = new AbortController()
    const timer = setTimeout(() => controller.abort(new HttpError(503, 'ERR_TIMEOUT', `not answered within ${o.timeoutMs} ms`, { 'retry-after': '1' })), o.timeoutMs)
    // ('close' also follows every answer sent: only one not sent yet means the client left)
    res.on('close', () => res.writableFinished || controller.abort(new HttpError(499, 'ERR_CLIENT_GONE', 'the client closed the connection')))
    try {
      const { model, texts } = parseClassifyRequest(await readBody(req, o.maxBodyBytes), models)
      if (texts.length > o.maxQueue) throw new HttpError(413, 'ERR_TOO_MANY_TEXTS', `${texts.length} texts; at most ${o.maxQueue} per request`)
      metrics.inflight++
      try {
        const predictions = await byName[model].predict(texts, { batchSize: o.batchSize, signal: controller.signal })
        send(res, 200, predictions)
        return 200
      } finally {
        metrics.inflight--
      }
    } catch (err) {
      const e = httpError(err, controller.signal)
      metrics.error(e.code)
      send(res, e.status, { error: { code: e.code, message: e.message } }, e.headers)
      return e.status
    } finally {
      clearTimeout(timer)
    }
  }

  // a body that trickles in slower than the request timeout is cut off (408 from node), checked every second
  const server = http.createServer({ requestTimeout: o.timeoutMs, headersTimeout: Math.min(o.timeoutMs, 60_000), connectionsCheckingInterval: 1000 }, async (req, res) => {
    const started = performance.now()
    const route = (req.url ?? '/').split('?')[0]
    let status: number
    if (route === '/v1/classify') {
      if (req.method !== 'POST') status = refuse(res, 405, 'use POST', { allow: 'POST' })
      else status = await classify(req, res)
    } else if (route === '/health') {
      status = draining ? 503 : 200
      send(res, status, { status: draining ? 'draining' : 'ok', models })
    } else if (route === '/metrics') {
      status = 200
      send(res, 200, metrics.text())
    } else status = refuse(res, 404, `no route ${route} (POST /v1/classify, GET /health, GET /metrics)`)
    metrics.request(['/v1/classify', '/health', '/metrics'].includes(route) ? route : 'other', status, (performance.now() - started) / 1000)
  })

  function refuse(res: http.ServerResponse, status: number, message: string, headers: Record<string, string> = {}): number {
    const code = status === 404 ? 'ERR_NOT_FOUND' : 'ERR_METHOD'
    metrics.error(code)
    send(res, status, { error: { code, message } }, headers)
    return status
  }

  return {
    server,
    listen(port = 0, host = '127.0.0.1') {
      return new Promise((resolve, reject) => {
        server.once('error', reject)
        server.listen(port, host, () => {
          server.off('error', reject)
          resolve(server.address() as ServerAddress)
        })
      })
    },
    close() {
      draining = true
      return new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeIdleConnections()
      })
    },
  }
}

/** The HTTP answer for a failed classify request. */
function httpError(err: unknown, signal: AbortSignal): HttpError {
  if (err instanceof HttpError) return err
  if (signal.aborted && signal.reason instanceof HttpError) return signal.reason
  const code = (err as { code?: string }).code
  if (code === 'ERR_QUEUE_FULL') return new HttpError(503, code, (err as Error).message, { 'retry-after': '1' })
  if (code === 'ERR_DISPOSED') return new HttpError(503, code, 'the server is shutting down')
  if (err instanceof ErnieError) return new HttpError(500, err.code, err.message)
  return new HttpError(500, 'ERR_INTERNAL', (err as Error)?.message ?? String(err))
}
