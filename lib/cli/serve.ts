// `ernie-sentiment serve`: saved classifiers over HTTP (lib/serve), until SIGTERM or SIGINT,
// which stop accepting, let in-flight requests finish, and exit 0.
import { ErnieClassifier } from '../classifier/classifier'
import { createServer } from '../serve/server'
import { int, noPositionals, parse, UsageError } from './args'
import type { CliIo } from './io'

export const SERVE_HELP = `Usage: ernie-sentiment serve --model DIR [--model NAME=DIR ...] [options]

Serves saved classifiers over HTTP:
  POST /v1/classify  {"text": "..."} or {"texts": ["...", ...]} (and "model": NAME when several)
                     -> [{"label", "score", "scores"}] per text
  GET  /health       {"status": "ok", "models": [...]}
  GET  /metrics      Prometheus text: requests, errors, latency, batch sizes, queue depth
Concurrent requests share inference runs (at most --max-batch texts, waiting --max-wait-ms for
company). SIGTERM stops accepting, finishes the requests in flight and exits 0.

Options:
  --model [NAME=]DIR   a saved classifier (repeat for several; NAME defaults to the directory's name)
  --port N             port (default 8080; 0: any free port)
  --host H             address to listen on (default 127.0.0.1)
  --batch-size N       texts per forward pass (default 32)
  --max-batch N        texts per inference run (default 1024)
  --max-wait-ms N      how long a run that is not full waits for more requests (default 2)
  --max-queue N        texts that may wait per model; past it 503 + Retry-After (default 4096)
  --timeout-ms N       time to answer a request; past it 503 (default 30000)
  --max-body-bytes N   largest request body (default 1048576); larger: 413
  -h, --help           this help
`

/** NAME=DIR or DIR (named by its last path part). */
function modelSpecs(values: string[]): Array<[string, string]> {
  const specs = values.map((v): [string, string] => {
    const eq = v.indexOf('=')
    if (eq > 0) return [v.slice(0, eq), v.slice(eq + 1)]
    return [v.replace(/[\\/]+$/, '').split(/[\\/]/).pop() || v, v]
  })
  const names = specs.map(([n]) => n)
  const twice = names.find((n, i) => names.indexOf(n) !== i)
  if (twice) throw new UsageError(`two --model flags are named "${twice}": name them with NAME=DIR`)
  return specs
}

export async function runServe(argv: string[], io: CliIo): Promise<number> {
  const { values: a, positionals } = parse(argv, {
    model: { type: 'string', multiple: true },
    port: { type: 'string' },
    host: { type: 'string' },
    'batch-size': { type: 'string' },
    'max-batch': { type: 'string' },
    'max-wait-ms': { type: 'string' },
    'max-queue': { type: 'string' },
    'timeout-ms': { type: 'string' },
    'max-body-bytes': { type: 'string' },
  })
  if (a.help) return void io.stdout.write(SERVE_HELP), 0
  noPositionals(positionals)
  const v = a as Record<string, string | undefined>
  const models = (a.model as string[] | undefined) ?? []
  if (models.length === 0) throw new UsageError('give --model DIR (a saved classifier), or several as --model NAME=DIR')
  const specs = modelSpecs(models)
  const port = int(v.port, 'port', 0) ?? 8080
  const options = {
    batchSize: int(v['batch-size'], 'batch-size'),
    maxBatch: int(v['max-batch'], 'max-batch'),
    maxWaitMs: int(v['max-wait-ms'], 'max-wait-ms', 0),
    maxQueue: int(v['max-queue'], 'max-queue'),
    timeoutMs: int(v['timeout-ms'], 'timeout-ms'),
    maxBodyBytes: int(v['max-body-bytes'], 'max-body-bytes'),
  }
  const classifiers: Record<string, ErnieClassifier> = {}
  try {
    for (const [name, dir] of specs) classifiers[name] = await ErnieClassifier.load(dir, { signal: io.signal })
    const served = createServer(specs.length === 1 ? classifiers[specs[0][0]] : classifiers, Object.fromEntries(Object.entries(options).filter(([, x]) => x !== undefined)))
    const address = await served.listen(port, v.host ?? '127.0.0.1')
    io.stderr.write(`serving ${specs.map(([n, d]) => `${n} (${d})`).join(', ')} on http://${address.address}:${address.port}\n`)
    await new Promise<void>((resolve) => {
      process.once('SIGTERM', resolve)
      io.signal?.addEventListener('abort', () => resolve(), { once: true })
    })
    io.stderr.write('stopping: finishing the requests in flight\n')
    await served.close()
    return 0
  } finally {
    await Promise.all(Object.values(classifiers).map((c) => c.dispose()))
  }
}
