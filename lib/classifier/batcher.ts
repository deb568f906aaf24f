// Coalesces concurrent requests into batches: many callers each asking for a few items (one
// text per HTTP request, 6,000 predict(text) calls at once) share forward passes of up to
// `maxBatch` items instead of each running its own. A batch uses every core, so the next one is
// formed only once the running one says it has started all its work (its last pieces are
// computing; the next batch's first pieces then follow them without a gap), or has finished;
// requests arriving meanwhile wait at most `maxWaitMs` past the moment a batch could start, in
// arrival order. A request larger than maxBatch is split and resolves when its last
// part is done. The queue is bounded: past `maxQueue` waiting items a request is refused at once
// (ERR_QUEUE_FULL), which a server turns into 503 + Retry-After.
import { ErnieError, rangeError } from '../errors'

export interface BatcherOptions {
  /** Items per batch (default 32). */
  maxBatch?: number
  /** How long a batch that is not full waits for more items once it could start, in ms (default 0: the next turn of the event loop). */
  maxWaitMs?: number
  /** Items that may wait; a request that would exceed it is refused (default Infinity). */
  maxQueue?: number
}

interface Request<I, O> {
  items: readonly I[]
  /** Outputs so far, by item index. */
  out: O[]
  /** Items not yet handed to a batch, from this index on. */
  next: number
  /** Items whose batch has not finished yet. */
  pending: number
  resolve: (out: O[]) => void
  reject: (err: unknown) => void
  signal?: AbortSignal
  onAbort?: () => void
  failed: boolean
}

export class Batcher<I, O> {
  readonly maxBatch: number
  readonly maxWaitMs: number
  readonly maxQueue: number
  private readonly queue: Request<I, O>[] = []
  private waiting = 0 // items queued, not yet in a batch
  private running = 0 // batches in flight
  private preparing = 0 // of them, those that have not yet started all their work
  private timer: { cancel(): void } | undefined
  private closed: Error | undefined

  /**
   * `run` computes one batch: its outputs in the order of its inputs. Its `signal` fires when
   * every request in the batch has been aborted (none is left to want the outputs); it is absent
   * when a request in the batch has no signal. It calls `onAllStarted` (if it ever does) once the
   * batch's last piece of work has started: the next batch may be formed then.
   */
  constructor(
    private readonly run: (items: I[], signal: AbortSignal | undefined, onAllStarted: () => void) => Promise<O[]>,
    options: BatcherOptions = {},
  ) {
    this.maxBatch = options.maxBatch ?? 32
    this.maxWaitMs = options.maxWaitMs ?? 0
    this.maxQueue = options.maxQueue ?? Infinity
    if (!Number.isInteger(this.maxBatch) || this.maxBatch < 1) throw rangeError(`Batcher: maxBatch must be a positive integer, got ${this.maxBatch}`)
    if (!(this.maxWaitMs >= 0) || !Number.isFinite(this.maxWaitMs)) throw rangeError(`Batcher: maxWaitMs must be a finite number >= 0, got ${this.maxWaitMs}`)
    if (!(this.maxQueue >= 1)) throw rangeError(`Batcher: maxQueue must be >= 1, got ${this.maxQueue}`)
  }

  /** Items waiting for a batch. */
  get queued(): number {
    return this.waiting
  }

  /** Whether a batch is running now. */
  get busy(): boolean {
    return this.running > 0
  }

  /** The outputs of `items`, computed in batches shared with other requests. */
  submit(items: readonly I[], signal?: AbortSignal): Promise<O[]> {
    if (this.closed) return Promise.reject(this.closed)
    if (items.length === 0) return Promise.resolve([])
    if (signal?.aborted) return Promise.reject(signal.reason)
    if (this.waiting + items.length > this.maxQueue)
      return Promise.reject(new ErnieError('ERR_QUEUE_FULL', `the queue holds ${this.waiting} items, and ${items.length} more would pass its limit of ${this.maxQueue}; try again shortly`))
    return new Promise<O[]>((resolve, reject) => {
      const req: Request<I, O> = { items, out: new Array<O>(items.length), next: 0, pending: items.length, resolve, reject, signal, failed: false }
      if (signal) {
        // Aborted while still waiting: its remaining items leave the queue; a running part finishes unseen.
        req.onAbort = () => {
          const i = this.queue.indexOf(req)
          if (i >= 0) {
            this.queue.splice(i, 1)
            this.waiting -= req.items.length - req.next
          }
          this.fail(req, signal.reason)
        }
        signal.addEventListener('abort', req.onAbort, { once: true })
      }
      this.queue.push(req)
      this.waiting += items.length
      this.schedule()
    })
  }

  /** Refuses new requests; those queued are rejected with `reason`. A running batch finishes. */
  close(reason: Error = new ErnieError('ERR_DISPOSED', 'the batcher was closed')): void {
    this.closed = reason
    this.timer?.cancel()
    this.timer = undefined
    for (const req of this.queue.splice(0)) this.fail(req, reason)
    this.waiting = 0
  }

  private schedule(): void {
    if (this.preparing > 0 || this.timer !== undefined || this.queue.length === 0) return
    // A full batch starts now; otherwise it waits maxWaitMs for company (0: this turn's other calls).
    const delay = this.waiting >= this.maxBatch ? 0 : this.maxWaitMs
    const start = () => {
      this.timer = undefined
      void this.flush()
    }
    if (delay === 0) {
      const handle = setImmediate(start)
      this.timer = { cancel: () => clearImmediate(handle) }
    } else {
      const handle = setTimeout(start, delay)
      this.timer = { cancel: () => clearTimeout(handle) }
    }
  }

  private async flush(): Promise<void> {
    // The next batch: items in arrival order, parts of requests included.
    const parts: Array<{ req: Request<I, O>; from: number; to: number }> = []
    const items: I[] = []
    while (items.length < this.maxBatch && this.queue.length > 0) {
      const req = this.queue[0]
      const take = Math.min(this.maxBatch - items.length, req.items.length - req.next)
      parts.push({ req, from: req.next, to: req.next + take })
      for (let i = req.next; i < req.next + take; i++) items.push(req.items[i])
      req.next += take
      this.waiting -= take
      if (req.next === req.items.length) this.queue.shift()
    }
    if (items.length === 0) return
    this.running++
    this.preparing++
    let allStarted = false
    const onAllStarted = () => {
      if (allStarted) return
      allStarted = true
      this.preparing--
      this.schedule()
    }
    const whenAllAbort = allAborted(parts.map((p) => p.req.signal))
    try {
      const outputs = await this.run(items, whenAllAbort?.signal, onAllStarted)
      if (outputs.length !== items.length) throw new Error(`Batcher: a batch of ${items.length} items gave ${outputs.length} outputs`)
      let k = 0
      for (const { req, from, to } of parts) {
        for (let i = from; i < to; i++) req.out[i] = outputs[k++]
        req.pending -= to - from
        if (req.pending === 0 && !req.failed) this.settle(req)
      }
    } catch (err) {
      for (const { req } of parts) {
        // The rest of a failed request leaves the queue with it.
        const i = this.queue.indexOf(req)
        if (i >= 0) {
          this.queue.splice(i, 1)
          this.waiting -= req.items.length - req.next
        }
        this.fail(req, err)
      }
    } finally {
      whenAllAbort?.release()
      if (!allStarted) this.preparing--
      this.running--
      this.schedule()
    }
  }

  private settle(req: Request<I, O>): void {
    if (req.onAbort) req.signal!.removeEventListener('abort', req.onAbort)
    req.resolve(req.out)
  }

  private fail(req: Request<I, O>, err: unknown): void {
    if (req.failed) return
    req.failed = true
    if (req.onAbort) req.signal!.removeEventListener('abort', req.onAbort)
    req.reject(err)
  }
}

/** A signal that fires once every one of `signals` has; undefined when one of them is missing. */
function allAborted(signals: ReadonlyArray<AbortSignal | undefined>): { signal: AbortSignal; release(): void } | undefined {
  if (!signals.every((s) => s !== undefined)) return undefined
  const all = signals as AbortSignal[]
  const controller = new AbortController()
  const check = () => {
    if (all.every((s) => s.aborted)) controller.abort(all[0].reason)
  }
  for (const s of all) s.addEventListener('abort', check, { once: true })
  check()
  return { signal: controller.signal, release: () => all.forEach((s) => s.removeEventListener('abort', check)) }
}
