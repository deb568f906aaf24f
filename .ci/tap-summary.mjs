// Reads a TAP stream on stdin, echoes it, and ends with "N passed, N failed, N skipped",
// counting leaf assertions: a result line is a parent (a subtest or a file) when the line
// before it, YAML and comments aside, is a deeper plan "1..N" that closed its children.
// A file that crashes before its plan is a leaf "not ok"; so is a failed parent none of whose
// leaves failed (a file that crashed part-way, after passing assertions); .ci/run also checks
// tap's exit code.
import { createInterface } from 'node:readline'

let passed = 0, failed = 0, skipped = 0
let last = null // { indent, plan: boolean }
const failedBefore = new Map() // indent -> `failed` after the previous result at that indent
let inYaml = -1
const rl = createInterface({ input: process.stdin })
for await (const line of rl) {
  process.stdout.write(line + '\n')
  const indent = line.length - line.trimStart().length
  const s = line.trim()
  if (inYaml >= 0) {
    if (s === '...' && indent === inYaml) inYaml = -1
    continue
  }
  if (s === '---') { inYaml = indent; continue }
  if (s === '' || s.startsWith('#') || s.startsWith('TAP version') || s.startsWith('Bail out')) {
    if (s.startsWith('Bail out')) failed++
    continue
  }
  const plan = /^1\.\.\d+/.test(s)
  const result = /^(not )?ok\b/.exec(s)
  if (result) {
    const parent = last && last.plan && last.indent > indent
    if (!parent) {
      if (/#\s*(SKIP|TODO)\b/i.test(s)) skipped++
      else if (result[1]) failed++
      else passed++
    } else if (result[1] && failed === (failedBefore.get(indent) ?? 0)) {
      failed++
    }
    // a new stretch starts at this indent and every deeper one
    for (const d of failedBefore.keys()) if (d > indent) failedBefore.set(d, failed)
    failedBefore.set(indent, failed)
  }
  last = { indent, plan }
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`)
process.exitCode = failed > 0 ? 1 : 0
