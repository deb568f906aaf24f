// The command line's streams and interrupt signal (stdout, stderr, stdin): what main() and the
// commands it runs write to and read from.
import type { ProgressStream } from './progress'

export interface CliIo {
  stdout: { write(s: string): unknown }
  stderr: ProgressStream
  stdin: NodeJS.ReadableStream
  /** Aborted on an interrupt (SIGINT): training stops between steps. */
  signal?: AbortSignal
}
