// The server's Prometheus metrics, in the text exposition format (version 0.0.4). Written by hand:
// two counters, two histograms and two gauges fit in this file, which is less than what
// prom-client (a registry, default process collectors) would bring in as a dependency.

/** Upper bounds of the request latency histogram, in seconds. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
/** Upper bounds of the batch size histogram, in texts. */
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]

class Histogram {
  readonly counts: number[]
  sum = 0
  count = 0
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length).fill(0)
  }
  observe(v: number): void {
    this.sum += v
    this.count++
    for (let i = 0; i < this.bounds.length; i++) if (v <= this.bounds[i]) this.counts[i]++
  }
  lines(name: string, labels: string): string[] {
    const sep = labels ? ',' : ''
    return [
      ...this.bounds.map((b, i) => `${name}_bucket{${labels}${sep}le="${b}"} ${this.counts[i]}`),
      `${name}_bucket{${labels}${sep}le="+Inf"} ${this.count}`,
      `${name}_sum${labels ? `{${labels}}` : ''} ${this.sum}`,
      `${name}_count${labels ? `{${labels}}` : ''} ${this.count}`,
    ]
  }
}

function label(value: string): string {
  return JSON.stringify(value) // escapes \ " and newlines as the format asks
}

export class ServerMetrics {
  private readonly requests = new Map<string, number>() // `${route} ${status}` -> count
  private readonly errors = new Map<string, number>() // error code -> count
  private readonly latency = new Histogram(LATENCY_BUCKETS)
  private readonly batches = new Map<string, Histogram>() // model -> texts per run
  inflight = 0

  constructor(private readonly queued: () => Map<string, number>) {}

  request(route: string, status: number, seconds: number): void {
    const key = `${route} ${status}`
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1)
    if (route === '/v1/classify') this.latency.observe(seconds)
  }

  error(code: string): void {
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1)
  }

  batch(model: string, texts: number): void {
    let h = this.batches.get(model)
    if (!h) this.batches.set(model, (h = new Histogram(BATCH_BUCKETS)))
    h.observe(texts)
  }

  /** The exposition text served at GET /metrics. */
  text(): string {
    const out: string[] = []
    out.push('# HELP ernie_requests_total HTTP requests answered, by route and status.', '# TYPE ernie_requests_total counter')
    for (const [key, n] of this.requests) {
      const [route, status] = key.split(' ')
      out.push(`ernie_requests_total{route=${label(route)},status="${status}"} ${n}`)
    }
    out.push('# HELP ernie_errors_total Requests answered with an error, by error code.', '# TYPE ernie_errors_total counter')
    for (const [code, n] of this.errors) out.push(`ernie_errors_total{code=${label(code)}} ${n}`)
    out.push('# HELP ernie_request_duration_seconds Time to answer POST /v1/classify.', '# TYPE ernie_request_duration_seconds histogram')
    out.push(...this.latency.lines('ernie_request_duration_seconds', ''))
    out.push('# HELP ernie_batch_texts Texts per inference run (requests coalesced by the batcher).', '# TYPE ernie_batch_texts histogram')
    for (const [model, h] of this.batches) out.push(...h.lines('ernie_batch_texts', `model=${label(model)}`))
    out.push('# HELP ernie_queue_texts Texts waiting for an inference run.', '# TYPE ernie_queue_texts gauge')
    for (const [model, n] of this.queued()) out.push(`ernie_queue_texts{model=${label(model)}} ${n}`)
    out.push('# HELP ernie_inflight_requests Classify requests being answered.', '# TYPE ernie_inflight_requests gauge', `ernie_inflight_requests ${this.inflight}`)
    return out.join('\n') + '\n'
  }
}
