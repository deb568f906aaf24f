// Texts from standard input, one a line, answered through the Batcher (the one predict and the
// server share): piped input goes in batches for throughput, a batch that is not full going
// PIPED_FLUSH_MS after it could start, so that a line typed (or written by another program) is
// answered without waiting for the next ones; interactive input is answered at once.
import * as readline from 'node:readline'

import { Batcher } from '../classifier/batcher'

/** How long piped lines wait for company once a batch could start (ms). */
export const PIPED_FLUSH_MS = 50

export interface LineBatching {
  /** The most lines in one batch. */
  batchSize: number
  /** How long a batch that is not full waits for more lines (ms); 0 (interactive): only for those already read. */
  flushMs: number
}

/**
 * Answers the input's non-blank lines (\n or \r\n): `answer` gets a batch of lines and gives one
 * output string per line; `write` gets the outputs in input order, each as soon as its batch is
 * done. Resolves when the input ends (or `signal` aborts: Ctrl-C at a terminal) and every line
 * read is answered. Reading waits while 16 batches' worth of lines are unanswered, so memory
 * stays bounded whatever the input's length.
 */
export async function answerLines(
  input: NodeJS.ReadableStream,
  batching: LineBatching,
  answer: (lines: string[]) => Promise<string[]>,
  write: (output: string) => void,
  signal?: AbortSignal,
): Promise<void> {
  const batcher = new Batcher(answer, { maxBatch: batching.batchSize, maxWaitMs: batching.flushMs })
  const rl = readline.createInterface({ input, crlfDelay: Infinity, signal })
  // Lines read ahead of the answers: when this many wait, reading pauses until half of them are
  // answered, so the batcher always holds the next runs' lines (draining them all before reading
  // on left the cores idle between runs: piped predict ran at a quarter of eval's speed).
  const maxUnanswered = 16 * batching.batchSize
  let unanswered = 0
  let failure: { error: unknown } | undefined
  // The outputs, chained in input order; `after[n % maxUnanswered]` the chain after line n.
  let written: Promise<void> = Promise.resolve()
  const after: Promise<void>[] = new Array(maxUnanswered)
  let read = 0
  try {
    for await (const line of rl) {
      if (failure) break
      if (line.trim() === '') continue
      const output = batcher.submit([line])
      output.catch(() => {}) // seen by the chain below
      unanswered++
      written = written.then(async () => {
        try {
          if (!failure) write((await output)[0])
        } catch (error) {
          failure ??= { error }
          rl.close() // stop reading: the loop ends, and the failure is thrown
        } finally {
          unanswered--
        }
      })
      after[read++ % maxUnanswered] = written
      if (unanswered >= maxUnanswered) await after[(read - 1 - maxUnanswered / 2) % maxUnanswered]
    }
    await written
    if (failure) throw failure.error
  } finally {
    batcher.close()
    rl.close()
  }
}

/** Whether stdin is a person at a terminal (answer each line at once) rather than a pipe or file. */
export function isInteractive(input: NodeJS.ReadableStream): boolean {
  return (input as { isTTY?: boolean }).isTTY === true
}
