// A full disk during a save: on a small tmpfs filled up on purpose, a checkpoint save and a file
// save fail with ERR_NO_SPACE naming the target and saying the previous version is intact; the
// last good checkpoint stays whole and a run resumes from it; no temporary is left behind.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { saveSafetensors } from '../../lib/io/safetensors'
import { latestCheckpoint, LmTask, Trainer } from '../../lib/train/index'
import { tinyModel, tokenData } from '../helpers/trainer-helpers'

const mountPoint = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-full-disk-'))
// A filesystem of our own, small enough to fill: mounting needs root (as CI runs).
const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint]).status === 0
t.teardown(() => {
  if (mounted) spawnSync('umount', [mountPoint])
  fs.rmSync(mountPoint, { recursive: true, force: true })
})

/** Fills the filesystem but for about `leave` bytes. */
function fillAllBut(leave: number): void {
  const free = fs.statfsSync(mountPoint)
  const bytes = free.bavail * free.bsize - leave
  if (bytes > 0) fs.writeFileSync(path.join(mountPoint, `filler-${Date.now()}`), Buffer.alloc(bytes))
}

const entries = (dir: string) => fs.readdirSync(dir).sort()

t.test('a checkpoint save on a full disk: ERR_NO_SPACE, the last good checkpoint intact and resumable', { skip: !mounted && 'cannot mount a tmpfs here (needs root): no way to fill a disk safely' }, async (t) => {
  const out = path.join(mountPoint, 'run')
  const task = () => new LmTask(tinyModel(), { train: tokenData(16), fullTraining: true })
  let filled = false
  const onProgress = (e: { step: number; checkpoint?: string }) => {
    // After the first checkpoint is complete, the disk fills up: the second cannot be written.
    if (e.checkpoint && !filled) {
      filled = true
      fillAllBut(64 << 10)
    }
  }
  const trainer = new Trainer(task(), { batchSize: 4, maxSteps: 3, learningRate: 1e-3, outputDir: out, saveSteps: 1, onProgress })
  await t.rejects(trainer.train(), {
    code: 'ERR_NO_SPACE',
    message: `${out}/checkpoint-2: no space left on the device (ENOSPC) while writing it; nothing was written at ${out}/checkpoint-2. Free space and save again. The last complete checkpoint, ${out}/checkpoint-1, is intact: resumeFromCheckpoint continues from it.`,
  })
  t.equal(latestCheckpoint(out), path.join(out, 'checkpoint-1'), 'the last good checkpoint is the one before the failure')
  t.same(entries(out), ['checkpoint-1'], 'no partial checkpoint or temporary left')

  for (const f of entries(mountPoint)) if (f.startsWith('filler-')) fs.rmSync(path.join(mountPoint, f))
  const resumed = new Trainer(task(), { batchSize: 4, maxSteps: 3, learningRate: 1e-3, outputDir: out, saveSteps: 1, resumeFromCheckpoint: true })
  const r = await resumed.train()
  t.equal(r.steps, 3, 'the run resumed from checkpoint-1 and finished')
})

t.test('a file save on a full disk: ERR_NO_SPACE, the previous file intact, no temporary left', { skip: !mounted && 'cannot mount a tmpfs here (needs root): no way to fill a disk safely' }, async (t) => {
  const dir = path.join(mountPoint, 'files')
  fs.mkdirSync(dir)
  const file = path.join(dir, 'w.safetensors')
  await saveSafetensors(file, { w: { dtype: 'F32', shape: [4], data: Float32Array.from([1, 2, 3, 4]) } })
  const before = fs.readFileSync(file)
  fillAllBut(16 << 10)
  await t.rejects(saveSafetensors(file, { w: { dtype: 'F32', shape: [1 << 16], data: new Float32Array(1 << 16) } }), {
    code: 'ERR_NO_SPACE',
    message: `${file}: no space left on the device (ENOSPC) while writing it; the previous file at ${file} is intact. Free space and save again.`,
  })
  t.same(fs.readFileSync(file), before, 'the previous file, byte for byte')
  t.same(entries(dir), ['w.safetensors'], 'no temporary left')
})
