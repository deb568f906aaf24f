// Texts from standard input, one a line, handed on in batches for predict and compare. Piped
// input is batched for throughput, but a batch also goes once input goes quiet for a moment, so
// that a line typed (or written by another program) is answered without waiting for the next
// ones; interactive input is answered at once.
import * as readline from 'node:readline'

/** How long piped input may be quiet before the lines read so far are answered (ms). */
export const PIPED_FLUSH_MS = 50

export interface LineBatching {
  /** The most lines in one batch. */
  batchSize: number
  /**
   * A batch goes when it is full, or when this long (ms) passes with no new line; 0 (interactive):
   * at once, with whatever lines were already read.
   */
  flushMs: number
}

const QUIET = Symbol('quiet')

/** `p`, or QUIET once `ms` pass without it settling. */
function orQuiet<T>(p: Promise<T>, ms: number): Promise<T | typeof QUIET> {
  let timer: NodeJS.Timeout | undefined
  const quiet = new Promise<typeof QUIET>((resolve) => (timer = setTimeout(() => resolve(QUIET), ms)))
  return Promise.race([p, quiet]).finally(() => clearTimeout(timer))
}

/**
 * Calls `answer` with each batch of the input's non-blank lines (\n or \r\n), in order and one
 * call at a time; resolves when the input ends (or `signal` aborts: Ctrl-C at a terminal) and
 * the last batch is answered. Lines keep being read while a batch is answered (readline pauses
 * the input when a thousand wait).
 */
export async function answerLines(input: NodeJS.ReadableStream, batching: LineBatching, answer: (lines: string[]) => Promise<void>, signal?: AbortSignal): Promise<void> {
  const rl = readline.createInterface({ input, crlfDelay: Infinity, signal })
  const lines = rl[Symbol.asyncIterator]()
  let pending: string[] = []
  const flush = async () => {
    if (pending.length === 0) return
    const batch = pending
    pending = []
    await answer(batch)
  }
  let next = lines.next()
  try {
    for (;;) {
      const r = pending.length === 0 ? await next : await orQuiet(next, batching.flushMs)
      if (r === QUIET) {
        await flush()
        continue
      }
      if (r.done) break
      next = lines.next()
      if (r.value.trim() !== '') pending.push(r.value)
      if (pending.length >= batching.batchSize) await flush()
    }
    await flush()
  } finally {
    next.catch(() => {})
    rl.close()
  }
}

/** Whether stdin is a person at a terminal (answer each line at once) rather than a pipe or file. */
export function isInteractive(input: NodeJS.ReadableStream): boolean {
  return (input as { isTTY?: boolean }).isTTY === true
}
