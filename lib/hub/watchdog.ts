// A request that stops answering is abandoned, not waited on forever: each hub request gets a
// watchdog that aborts it when no headers or body bytes arrive for `idleMs` (the timer restarts
// with every chunk, so a slow but steady download is never cut). The caller's own AbortSignal
// still cancels at once. A timeout is an ERR_HUB_TIMEOUT HubError, which a download retries by
// resuming where the bytes stopped.
import { HubError } from './errors'

export class Watchdog {
  private readonly controller = new AbortController()
  private timer: ReturnType<typeof setTimeout> | undefined
  private readonly onOuterAbort: () => void

  constructor(
    private readonly idleMs: number,
    private readonly what: string,
    private readonly outer?: AbortSignal,
  ) {
    this.onOuterAbort = () => this.abort(outer!.reason)
    if (outer?.aborted) this.abort(outer.reason)
    else outer?.addEventListener('abort', this.onOuterAbort, { once: true })
    this.touch()
  }

  /** Aborts the request when the timer runs out, or the caller's signal aborts. */
  get signal(): AbortSignal {
    return this.controller.signal
  }

  /** Data arrived: the idle timer starts again. */
  touch(): void {
    clearTimeout(this.timer)
    if (this.controller.signal.aborted) return
    const idle = new HubError('ERR_HUB_TIMEOUT', `${this.what}: nothing received for ${this.idleMs / 1000} s (HF_HUB_DOWNLOAD_TIMEOUT or the timeoutMs option)`)
    this.timer = setTimeout(() => this.abort(idle), this.idleMs)
    // The socket keeps the process alive while a request is pending; the timer need not.
    this.timer.unref?.()
  }

  /** The request is over (answered in full, failed or given up). */
  stop(): void {
    clearTimeout(this.timer)
    this.outer?.removeEventListener('abort', this.onOuterAbort)
  }

  /** `response` with a body that restarts the timer on each chunk and stops the watchdog at its end. */
  watch(response: Response): Response {
    // A body is not allowed on these statuses' Response; they carry none worth watching.
    if (!response.body || [204, 205, 304].includes(response.status)) {
      this.stop()
      return response
    }
    const body = response.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform: (chunk, controller) => {
          this.touch()
          controller.enqueue(chunk)
        },
        flush: () => this.stop(),
      }),
    )
    return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers })
  }

  private abort(reason: unknown): void {
    clearTimeout(this.timer)
    this.controller.abort(reason)
  }
}
