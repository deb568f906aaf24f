// The command line's streams and interrupt signal (stdout, stderr, stdin): what main() and the
// commands it runs write to and read from.
import type { ProgressStream } from './progress'

export interface CliIo {
  /** isTTY: a terminal (compare prints tables there, JSON lines to a pipe). */
  stdout: { write(s: string): unknown; isTTY?: boolean }
  stderr: ProgressStream
  stdin: NodeJS.ReadableStream
  /** Aborted on an interrupt (SIGINT): training stops between steps. */
  signal?: AbortSignal
}
