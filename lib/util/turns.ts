// Turns at the cores for inference forwards, granted in the order they were asked for: a
// single-threaded forward holds one turn, a forward on the whole thread pool holds them all. One
// set for the process, so that work from several runs in flight (the next coalesced run starting
// while the last one's final batches compute, or two served models) is queued rather than piled
// onto the cores.

export class Turns {
  private held = 0
  private readonly queue: Array<{ want: number; grant: () => void }> = []

  /** `count()`: how many turns there are now (read at each grant: the thread count may change). */
  constructor(private readonly count: () => number) {}

  /** Callers waiting for turns. */
  get waiting(): number {
    return this.queue.length
  }

  /**
   * work() once `want` turns (at most all of them) are free and every earlier caller has been
   * served; they are freed when it settles. Its result or error is passed on.
   */
  async hold<T>(want: number, work: () => Promise<T>): Promise<T> {
    const n = Math.max(1, Math.min(want, this.count()))
    if (this.queue.length > 0 || !this.fits(n)) await new Promise<void>((grant) => this.queue.push({ want: n, grant }))
    else this.held += n
    try {
      return await work()
    } finally {
      this.held -= n
      this.grant()
    }
  }

  private fits(n: number): boolean {
    return this.held === 0 || this.held + n <= this.count()
  }

  private grant(): void {
    while (this.queue.length > 0 && this.fits(this.queue[0].want)) {
      const next = this.queue.shift()!
      this.held += next.want
      next.grant()
    }
  }
}
