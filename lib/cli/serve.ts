// `ernie-sentiment serve`: saved classifiers over HTTP (lib/serve), until SIGTERM or SIGINT,
// which stop accepting, let in-flight requests finish, and exit 0.
import * as path from 'node:path'

import { ErnieClassifier } from '../classifier/classifier'
import { createServer } from '../serve/server'
import { namedModels, UsageError } from './args'
import type { CliIo } from './io'
import { files, formatConfig, helpText, integer, option, readCommandLine, text, type CommandSpec } from './settings'

export const SERVE_OPTIONS = {
  model: option(files('[NAME=]DIR'), "a saved classifier (repeat for several; NAME defaults to the directory's\nname)", { multiple: true }),
  port: option(integer(0), 'port (default 8080; 0: any free port)'),
  host: option(text('H'), 'address to listen on (default 127.0.0.1)'),
  'batch-size': option(integer(1), 'texts per forward pass (default 32)'),
  'max-batch': option(integer(1), 'texts per inference run (default 1024)'),
  'max-wait-ms': option(integer(0), 'how long a run that is not full waits for more requests (default 2)'),
  'max-queue': option(integer(1), 'texts that may wait per model; past it 503 + Retry-After (default 4096)'),
  'timeout-ms': option(integer(1), 'time to answer a request; past it 503 (default 30000)'),
  'max-body-bytes': option(integer(1), 'largest request body (default 1048576); larger: 413'),
}

export const SERVE: CommandSpec<typeof SERVE_OPTIONS> = {
  name: 'serve',
  usage: '--model DIR [--model NAME=DIR ...] [options]',
  about: `Serves saved classifiers over HTTP:
  POST /v1/classify  {"text": "..."} or {"texts": ["...", ...]} (and "model": NAME when several)
                     -> [{"label", "score", "scores"}] per text
  GET  /health       {"status": "ok", "models": [...]}
  GET  /metrics      Prometheus text: requests, errors, latency, batch sizes, queue depth
Concurrent requests share inference runs (at most --max-batch texts, waiting --max-wait-ms for
company). SIGTERM stops accepting, finishes the requests in flight and exits 0.`,
  options: SERVE_OPTIONS,
  runFile: {},
}

export async function runServe(argv: string[], io: CliIo): Promise<number> {
  const cl = readCommandLine(SERVE, argv, io.stderr)
  if (cl.help) return void io.stdout.write(helpText(SERVE)), 0
  const v = cl.values
  if (!v.model || v.model.length === 0) throw new UsageError('give --model DIR (a saved classifier), or several as --model NAME=DIR')
  // Named by the directory's last part unless NAME= says: the name requests give as "model".
  const models = namedModels(v.model, (dir) => path.basename(path.resolve(dir)))
  if (cl.printConfig) return void io.stdout.write(formatConfig(SERVE, cl)), 0
  const port = v.port ?? 8080
  const options = {
    batchSize: v['batch-size'],
    maxBatch: v['max-batch'],
    maxWaitMs: v['max-wait-ms'],
    maxQueue: v['max-queue'],
    timeoutMs: v['timeout-ms'],
    maxBodyBytes: v['max-body-bytes'],
  }
  const classifiers: Record<string, ErnieClassifier> = {}
  try {
    for (const { name, dir } of models) classifiers[name] = await ErnieClassifier.load(dir, { signal: io.signal })
    const served = createServer(models.length === 1 ? classifiers[models[0].name] : classifiers, Object.fromEntries(Object.entries(options).filter(([, x]) => x !== undefined)))
    const address = await served.listen(port, v.host ?? '127.0.0.1')
    io.stderr.write(`serving ${models.map((m) => `${m.name} (${m.dir})`).join(', ')} on http://${address.address}:${address.port}\n`)
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
