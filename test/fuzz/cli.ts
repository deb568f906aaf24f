// `npm run fuzz -- --count N [--seed S] [--jobs J] [--batch B] [--reports FILE]`: the suite's fuzz runner for longer
// runs. Prints counts by family and outcome, the rejections' error codes, and every failure;
// exits 1 when there is one.
import * as fs from 'node:fs'
import { parseArgs } from 'node:util'

import { runFuzz, summarize } from './runner'
import { DEFAULT_SEED } from './seed'

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      count: { type: 'string', default: '1000' },
      seed: { type: 'string', default: String(DEFAULT_SEED) },
      jobs: { type: 'string', default: '2' },
      batch: { type: 'string', default: '50' },
      /** Writes every case's report (what, verdict, outcome, error) to this file as JSON Lines. */
      reports: { type: 'string' },
    },
  })
  const count = Number(values.count)
  const seed = Number(values.seed)
  if (!Number.isInteger(count) || count < 1 || !Number.isInteger(seed)) throw new Error('--count and --seed must be integers (count >= 1)')
  const started = Date.now()
  const run = await runFuzz({
    seed,
    count,
    jobs: Number(values.jobs),
    batchSize: Number(values.batch),
    onProgress: (done, total) => process.stderr.write(`\r${done}/${total} cases`),
  })
  process.stderr.write('\n')
  if (values.reports) fs.writeFileSync(values.reports, run.reports.map((r) => JSON.stringify(r)).join('\n') + '\n')
  const seconds = (Date.now() - started) / 1000
  console.log(`fuzz: ${count} cases, seed ${seed}, ${seconds.toFixed(1)} s`)
  console.log('\ncounts by family (verdict->outcome):')
  for (const [family, counts] of Object.entries(summarize(run)).sort()) {
    const total = Object.values(counts).reduce((a, b) => a + b, 0)
    console.log(`  ${family.padEnd(12)} ${String(total).padStart(6)}  ${Object.entries(counts).sort().map(([k, v]) => `${k} ${v}`).join(', ')}`)
  }
  const codes: Record<string, number> = {}
  for (const r of run.reports) if (r.outcome === 'rejected') codes[`${r.family} ${String(r.error!.code)}`] = (codes[`${r.family} ${String(r.error!.code)}`] ?? 0) + 1
  console.log('\nrejections by family and code:')
  for (const [k, v] of Object.entries(codes).sort()) console.log(`  ${k.padEnd(44)} ${v}`)
  const either = run.reports.filter((r) => r.verdict === 'either')
  if (either.length > 0) {
    console.log(`\n'either' cases (the spec allows both): ${either.length}`)
    for (const why of new Set(either.map((r) => r.why))) console.log(`  ${why}`)
  }
  console.log(`\ncrashes ${run.crashes.length}, hangs ${run.hangs.length}, failures ${run.failures.length}`)
  for (const f of run.failures) console.log(`  #${f.id} ${f.family} [${f.what}]: ${f.problem}`)
  process.exitCode = run.failures.length > 0 ? 1 : 0
}

main().catch((e) => {
  console.error(e)
  process.exitCode = 2
})
