#!/usr/bin/env node
// The `ernie-sentiment` executable: runs the command line with the process's streams. A first
// Ctrl-C stops training between steps; a second one exits at once.
import { main } from './main'

const controller = new AbortController()
process.on('SIGINT', () => {
  if (controller.signal.aborted) process.exit(130)
  controller.abort()
})

main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, signal: controller.signal }).then(
  (code) => {
    process.exitCode = code
  },
  (e) => {
    process.stderr.write(`ernie-sentiment: ${(e as Error).stack ?? e}\n`)
    process.exitCode = 1
  },
)
