// Checkpoints: resuming gives the same loss curve as an uninterrupted run (LoRA + AdamW with
// length-grouped batches; full fine-tuning with bf16 copies, 8-bit AdamW and accumulation);
// saveTotalLimit keeps the last K; a LoRA checkpoint is a PEFT adapter directory; a process
// killed (SIGKILL) in the middle of a save leaves the previous checkpoint loadable.
import t from 'tap'
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { LoraAdapter } from '../lib/model/index'
import { openSafetensors } from '../lib/io/safetensors'
import { setNumThreads } from '../lib/kernels/index'
import { latestCheckpoint, listCheckpoints, LmTask, readTrainerState, Trainer, type TrainerOptions } from '../lib/train/index'
import { killChildModel, tinyModel, tokenData } from './trainer-helpers'

setNumThreads(1)
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-ckpt-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

const bits = (x: Float32Array | Uint16Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength)

t.test('resume equality: LoRA, AdamW, length-grouped batches, cosine warmup', async (t) => {
  const outputDir = path.join(tmp, 'lora-resume')
  const options: TrainerOptions = { batchSize: 8, maxSteps: 10, learningRate: 1e-2, schedule: 'cosine', warmupSteps: 2, weightDecay: 0.01, groupByLength: true, seed: 3 }
  const make = (adapterSeed: number) => {
    const model = tinyModel()
    const adapter = LoraAdapter.create(model, { r: 4, alpha: 8, seed: adapterSeed })
    return { model, adapter, task: new LmTask(model, { train: tokenData(32), adapter }) }
  }
  const a = make(1)
  const full = await new Trainer(a.task, { ...options, outputDir, saveSteps: 5 }).train()
  t.same(listCheckpoints(outputDir).map((c) => c.step), [5, 10])
  const mid = readTrainerState(path.join(outputDir, 'checkpoint-5'))
  t.same([mid.step, mid.epoch, mid.batchInEpoch], [5, 1, 1], 'saved mid-epoch: epoch 1, one batch in')

  // a fresh model and a differently initialised adapter: everything must come from the checkpoint
  const b = make(2)
  const resumed = await new Trainer(b.task, { ...options, resumeFromCheckpoint: path.join(outputDir, 'checkpoint-5') }).train()
  t.equal(resumed.steps, 10)
  t.same(resumed.lossHistory.slice(0, 5), full.lossHistory.slice(0, 5), 'the first half comes from the checkpoint')
  t.same(resumed.lossHistory.slice(5), full.lossHistory.slice(5), 'steps 6-10 give the same losses')
  for (const [n, x] of a.adapter.tensors) t.ok(bits(x).equals(bits(b.adapter.tensors.get(n)!)), `${n} identical`)
  for (const r of [a, b]) r.adapter.dispose(), await r.model.dispose()
})

t.test('resume equality: full fine-tuning, bf16 copies, 8-bit AdamW, accumulation 2', async (t) => {
  const outputDir = path.join(tmp, 'full-resume')
  const options: TrainerOptions = { batchSize: 4, gradientAccumulationSteps: 2, maxSteps: 8, learningRate: 2e-3, optimizer: 'adamw8bit', warmupRatio: 0.25, seed: 9 }
  const a = tinyModel(1)
  const full = await new Trainer(new LmTask(a, { train: tokenData(32), fullTraining: true }), { ...options, outputDir, saveSteps: 3 }).train()
  const saved = readTrainerState(path.join(outputDir, 'checkpoint-3'))
  t.ok(saved.optimizer.params.some((p) => p.state === '8bit') && saved.optimizer.params.some((p) => p.state === 'f32'), 'both 8-bit and fp32 moments saved')
  t.equal(saved.batchInEpoch, 6, '3 steps of 2 micro-batches')

  const b = tinyModel(5) // other weights: the masters come from the checkpoint
  const resumed = await new Trainer(new LmTask(b, { train: tokenData(32), fullTraining: true }), { ...options, resumeFromCheckpoint: path.join(outputDir, 'checkpoint-3') }).train()
  t.same(resumed.lossHistory.slice(3), full.lossHistory.slice(3), 'steps 4-8 give the same losses')
  for (const [n, x] of a.trainableWeights) t.ok(bits(x).equals(bits(b.trainableWeights.get(n)!)), `master ${n} identical`)
  for (const [n, x] of a.computeWeights) t.ok(bits(x).equals(bits(b.computeWeights.get(n)!)), `bf16 copy ${n} identical`)
  await a.dispose()
  await b.dispose()
})

t.test('saveTotalLimit keeps the last K; a LoRA checkpoint is a PEFT adapter; resume from the latest', async (t) => {
  const outputDir = path.join(tmp, 'rotation')
  const model = tinyModel()
  const adapter = LoraAdapter.create(model, { r: 4, seed: 1 })
  const task = new LmTask(model, { train: tokenData(32), adapter })
  const saves: string[] = []
  const options: TrainerOptions = { batchSize: 8, maxSteps: 5, learningRate: 1e-2, outputDir, saveSteps: 1, saveTotalLimit: 2, onProgress: (e) => e.checkpoint && saves.push(e.checkpoint) }
  const r = await new Trainer(task, options).train()
  t.same(saves.map((s) => path.basename(s)), ['checkpoint-1', 'checkpoint-2', 'checkpoint-3', 'checkpoint-4', 'checkpoint-5'], 'a checkpoint after every step')
  t.same(fs.readdirSync(outputDir).sort(), ['checkpoint-4', 'checkpoint-5'], 'only the last two remain, nothing else')
  t.same(r.checkpoints.map((c) => path.basename(c)), ['checkpoint-4', 'checkpoint-5'])
  const last = path.join(outputDir, 'checkpoint-5')
  t.same(fs.readdirSync(last).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'optimizer.safetensors', 'params.safetensors', 'trainer_state.json'])
  const peft = await LoraAdapter.load(last, model)
  for (const [n, x] of adapter.tensors) t.ok(bits(x).equals(bits(peft.tensors.get(n)!)), `${n}: the checkpoint's PEFT adapter is the trained one`)
  {
    using params = openSafetensors(path.join(last, 'params.safetensors'))
    const name = 'base_model.model.model.layers.1.mlp.down_proj.lora_B.weight'
    t.same(params.tensors[name].shape, [64, 4], 'trainable tensors keep their shapes')
  }
  t.equal(latestCheckpoint(outputDir), last)

  const more = await new Trainer(task, { ...options, maxSteps: 7, resumeFromCheckpoint: true }).train()
  t.equal(more.steps, 7)
  t.same(more.lossHistory.slice(0, 5), r.lossHistory, 'the history continues')
  t.same(fs.readdirSync(outputDir).sort(), ['checkpoint-6', 'checkpoint-7'])

  // saving again over existing checkpoint directories (a rerun in the same outputDir) replaces them
  await new Trainer(task, { ...options, maxSteps: 2, saveTotalLimit: undefined }).train()
  t.same(listCheckpoints(outputDir).map((c) => c.step), [1, 2, 6, 7])
  await new Trainer(task, { ...options, maxSteps: 2, saveTotalLimit: undefined }).train()
  t.same(listCheckpoints(outputDir).map((c) => c.step), [1, 2, 6, 7])
  t.same(fs.readdirSync(outputDir).filter((f) => f.startsWith('.')), [], 'no temporary directories left')

  // mismatches are refused
  const seventh = path.join(outputDir, 'checkpoint-7')
  const fewer = new LmTask(model, { train: tokenData(31), adapter })
  await t.rejects(new Trainer(fewer, { resumeFromCheckpoint: seventh }).train(), { code: 'ERR_CHECKPOINT', message: /saved with 32 training examples, the task has 31/ })
  await t.rejects(new Trainer(task, { resumeFromCheckpoint: seventh, optimizer: 'sgd' }).train(), { code: 'ERR_CHECKPOINT', message: /saved by a adamw optimizer/ })
  const other = LoraAdapter.create(model, { r: 2 })
  await t.rejects(new Trainer(new LmTask(model, { train: tokenData(32), adapter: other }), { resumeFromCheckpoint: seventh }).train(), { code: 'ERR_CHECKPOINT', message: /must be F32 with/ })
  await t.rejects(new Trainer(task, { resumeFromCheckpoint: path.join(tmp, 'nowhere') }).train(), { code: 'ERR_CHECKPOINT' })
  const fresh = await new Trainer(task, { outputDir: path.join(tmp, 'empty'), resumeFromCheckpoint: true, maxSteps: 1 }).train()
  t.equal(fresh.steps, 1, 'resumeFromCheckpoint: true with no checkpoint starts fresh')
  for (const a of [adapter, peft, other]) a.dispose()
  await model.dispose()
})

t.test('SIGKILL during a checkpoint save leaves the previous checkpoint loadable', async (t) => {
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'))
  let killedMidSave = false
  for (let attempt = 0; attempt < 4 && !killedMidSave; attempt++) {
    const outputDir = path.join(tmp, `killed-${attempt}`)
    fs.mkdirSync(outputDir)
    const child = spawn(process.execPath, [...loader, path.join(__dirname, 'trainer-save-child.ts'), outputDir], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d) => (stderr += d))
    const exited = new Promise<string | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)))
    // Once at least two checkpoints exist, kill the moment a save's temporary directory holds a file.
    const deadline = Date.now() + 60_000
    while (Date.now() < deadline && child.exitCode === null) {
      const names = fs.readdirSync(outputDir)
      const pending = names.find((f) => f.startsWith('.checkpoint-') && f.endsWith('.tmp'))
      if (listCheckpoints(outputDir).length >= 2 && pending) {
        let files: string[] = []
        try {
          files = fs.readdirSync(path.join(outputDir, pending))
        } catch {
          // renamed into place in between
        }
        if (files.length > 0) {
          child.kill('SIGKILL')
          break
        }
      }
      await new Promise((r) => setTimeout(r, 1))
    }
    const signal = await exited
    t.equal(signal, 'SIGKILL', `the child was killed (${stderr.slice(0, 500)})`)
    const left = fs.readdirSync(outputDir)
    killedMidSave = left.some((f) => f.startsWith('.checkpoint-') && f.endsWith('.tmp'))
    // Whatever the moment: every checkpoint-<n> directory is complete and loadable.
    const complete = listCheckpoints(outputDir)
    t.same(
      left.filter((f) => /^checkpoint-\d+$/.test(f)).sort(),
      complete.map((c) => path.basename(c.dir)).sort(),
      'no checkpoint-<n> directory without its trainer state',
    )
    t.ok(complete.length >= 1, `${complete.length} complete checkpoints (${left.join(', ')})`)
    const latest = complete.at(-1)!
    const state = readTrainerState(latest.dir)
    t.equal(state.step, latest.step)
    {
      using params = openSafetensors(path.join(latest.dir, 'params.safetensors'))
      using opt = openSafetensors(path.join(latest.dir, 'optimizer.safetensors'))
      t.ok(Object.keys(params.tensors).length > 10 && Object.keys(opt.tensors).length > 20, 'its tensors read back')
    }
    // and training resumes from it
    const model = killChildModel()
    const task = new LmTask(model, { train: tokenData(16), fullTraining: true })
    const r = await new Trainer(task, { batchSize: 4, maxSteps: latest.step + 1, learningRate: 1e-3, outputDir, resumeFromCheckpoint: true }).train()
    t.equal(r.steps, latest.step + 1, `resumed from step ${latest.step}`)
    t.same(r.lossHistory.slice(0, latest.step), state.lossHistory)
    await model.dispose()
  }
  t.ok(killedMidSave, 'a kill landed while a checkpoint was being written (its temporary directory remains)')
})
