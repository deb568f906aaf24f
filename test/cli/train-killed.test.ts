// `ernie-sentiment train` SIGKILLed while it checkpoints, then run again with --resume: the
// classifier it saves is the one a run never killed saves (identical predictions, scores
// included). The process is stopped at exact points of the checkpoint's save (the test hook of
// lib/io/test-pause.ts) rather than at a time that races the writer.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier } from '../../lib/classifier/index'
import { listCheckpoints } from '../../lib/train/index'
import { DEV, readTsv, runCli, tempDir, TINY } from '../helpers/classifier-helpers'
import { killAtPause } from '../helpers/helpers'

const dir = tempDir(t)
const bin = path.join(__dirname, '..', '..', 'lib', 'cli', 'bin.ts')
const args = (out: string) => ['train', '--data', DEV, '--base', TINY, '--method', 'lora', '--max-length', '24', '--max-steps', '6', '--batch-size', '16', '--lr', '2e-3', '--seed', '3', '--save-steps', '2', '--out', out, '--quiet']
const texts = readTsv(DEV).texts.slice(0, 24)

async function predictions(out: string) {
  const clf = await ErnieClassifier.load(out)
  try {
    return await clf.predict(texts)
  } finally {
    await clf.dispose()
  }
}

t.test('killed while checkpointing, resumed: the classifier of a run never killed', async (t) => {
  const whole = path.join(dir, 'whole')
  const r = await runCli(args(whole))
  t.equal(r.code, 0, r.stderr)
  const want = await predictions(whole)

  // directory:renamed: the first checkpoint (step 2) is in place, its parent not yet flushed;
  // safetensors:partial: the first checkpoint's weights half written, in a temporary directory.
  const cases: Array<[string, number[], RegExp]> = [
    ['directory:renamed', [2], /^resumed from step 2 \(.*checkpoint-2\)$/m],
    ['safetensors:partial', [], /^no checkpoint in .*: trained from the start$/m],
  ]
  for (const [stage, left, says] of cases) {
    const out = path.join(dir, `killed-${stage.replace(':', '-')}`)
    const killed = await killAtPause(bin, args(out), stage)
    t.ok(killed.paused && killed.signal === 'SIGKILL', `${stage}: killed there (${killed.stderr.slice(0, 300)})`)
    t.notOk(fs.existsSync(path.join(out, 'classifier.json')), `${stage}: no classifier was saved`)
    t.same(listCheckpoints(`${out}.checkpoints`).map((c) => c.step), left, `${stage}: the checkpoints on disk`)
    const resumed = await runCli([...args(out), '--resume'])
    t.equal(resumed.code, 0, `${stage}: the resumed run exits 0 (${resumed.stderr.slice(-300)})`)
    t.match(resumed.stderr, says, `${stage}: it says where it continued from`)
    t.same(await predictions(out), want, `${stage}: identical predictions to the run never killed`)
  }
})
