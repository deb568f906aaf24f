// The structural fuzz test (issue 17 item 8): seeded cases of corrupted safetensors headers,
// config.json fields, token ids, training data, saved classifiers (this package's form and the
// Hugging Face one), PEFT adapters and tokenizer files (test/fuzz/gen-*.ts), each
// with the verdict the spec gives it, run in batches of 50 per child process. It fails on a
// crash, a hang, a corrupted input that loads (or a harmless one that computes NaN or is
// refused), and a rejection that is not a typed error naming its file. ERNIE_FUZZ_SEED varies
// the seed, ERNIE_FUZZ_COUNT the number of cases; `npm run fuzz -- --count N` runs more.
import t from 'tap'

import type { CaseReport } from './child'
import { judge, runFuzz, summarize } from './runner'
import { suiteSeed } from './seed'

const COUNT = Number(process.env.ERNIE_FUZZ_COUNT ?? 1000)

t.test('the judge: what each outcome means for each verdict', async (t) => {
  const report = (verdict: CaseReport['verdict'], outcome: CaseReport['outcome'], error?: Partial<NonNullable<CaseReport['error']>>, named = true): CaseReport => ({
    event: 'done',
    id: 0,
    family: 'config',
    verdict,
    what: 'x',
    outcome,
    ms: 0,
    ...(error ? { error: { name: 'ErnieError', code: 'ERR_CONFIG', message: '/d/config.json: bad', ...error }, named } : {}),
    ...(outcome === 'garbage' ? { detail: 'logit 3 is NaN' } : {}),
  })
  t.equal(judge(report('reject', 'rejected', {})), undefined, 'a typed rejection naming the file')
  t.match(judge(report('reject', 'accepted')), /silent acceptance/)
  t.match(judge(report('reject', 'garbage')), /silent acceptance/)
  t.match(judge(report('reject', 'rejected', { name: 'TypeError', code: undefined })), /untyped error/)
  t.match(judge(report('reject', 'rejected', { code: 'ENOENT' })), /untyped error/)
  t.match(judge(report('reject', 'rejected', { code: 'EISDIR' })), /untyped error/, "Node's own EISDIR")
  t.equal(judge(report('reject', 'rejected', { name: 'FileError', code: 'EISDIR' })), undefined, "the io layer's FileError for a directory")
  t.match(judge(report('reject', 'rejected', {}, false)), /does not name the file/)
  t.equal(judge(report('accept', 'accepted')), undefined, 'a harmless variant that computes')
  t.match(judge(report('accept', 'garbage')), /bad result: logit 3 is NaN/)
  t.match(judge(report('accept', 'rejected', {})), /harmless variant refused/)
  t.equal(judge(report('either', 'accepted')), undefined)
  t.equal(judge(report('either', 'rejected', {})), undefined)
  t.match(judge(report('either', 'rejected', {}, false)), /does not name the file/)
})

t.test('the runner pins a crash, an exit mid-batch and a hang on their case, and runs the rest', async (t) => {
  process.env.ERNIE_FUZZ_SELFTEST = JSON.stringify({ crash: 1, exit: 3, hang: 5 })
  let run
  try {
    run = await runFuzz({ seed: suiteSeed(), count: 7, batchSize: 7, jobs: 1, batchTimeoutMs: 10_000 })
  } finally {
    delete process.env.ERNIE_FUZZ_SELFTEST
  }
  t.same(run.crashes.map((c) => c.id), [1, 3], 'cases 1 and 3 crashed')
  t.match(run.crashes[0].problem, /killed by SIGKILL/)
  t.match(run.crashes[1].problem, /exited with code 0 mid-batch/)
  t.same(run.hangs.map((h) => h.id), [5], 'case 5 hung')
  t.match(run.hangs[0].problem, /no result after 10000 ms/)
  t.same(run.reports.map((r) => r.id), [0, 2, 4, 6], 'the other cases ran, each in the batch after the one that failed')
})

t.test(`${COUNT} fuzz cases (seed ${suiteSeed()}): no crash, no hang, no silent acceptance, typed errors naming the file`, async (t) => {
  const run = await runFuzz({ seed: suiteSeed(), count: COUNT })
  const table = summarize(run)
  t.comment(JSON.stringify(table))
  t.equal(run.reports.length + run.crashes.length + run.hangs.length, COUNT, 'every case ran')
  t.same(run.crashes, [], 'no crash')
  t.same(run.hangs, [], 'no hang')
  t.same(run.failures.filter((f) => !run.crashes.includes(f) && !run.hangs.includes(f)), [], 'every outcome as its verdict says')
  // the run tested something: each family had cases of both verdicts (a short run by ERNIE_FUZZ_COUNT need not)
  const least = COUNT >= 1000 ? 5 : 0
  for (const family of ['safetensors', 'config', 'ids', 'data', 'classifier', 'adapter', 'hf-classifier', 'tokenizer']) {
    const mine = run.reports.filter((r) => r.family === family)
    const of = (v: string) => mine.filter((r) => r.verdict === v).length
    t.ok(of('accept') >= least && of('reject') >= least, `${family}: ${of('accept')} accept and ${of('reject')} reject cases`)
  }
})
