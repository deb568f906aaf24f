// Checkpoints: resuming gives the same loss curve as an uninterrupted run (LoRA + AdamW with
// length-grouped batches; full fine-tuning with bf16 copies, 8-bit AdamW and accumulation);
// saveTotalLimit keeps the last K; a LoRA checkpoint is a PEFT adapter directory; a process
// killed (SIGKILL) at each stage of a save leaves the previous checkpoints loadable.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { LoraAdapter } from '../../lib/model/index'
import { openSafetensors } from '../../lib/io/safetensors'
import { setNumThreads } from '../../lib/kernels/index'
import { latestCheckpoint, listCheckpoints, LmTask, readTrainerState, Trainer, type TrainerOptions } from '../../lib/train/index'
import { killAtPause } from '../helpers/helpers'
import { tinyModel, tokenData } from '../helpers/trainer-helpers'

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

t.test('SIGKILL during a checkpoint save, at any stage, leaves the previous checkpoints loadable', async (t) => {
  // The child has saved checkpoints 1 and 2 and is saving 3 (then drops 1) when it is killed.
  // The directory's stages only: safetensors.test.ts kills a file's writer at each of its own, and
  // each child costs seconds of TypeScript loading.
  const expected: Record<string, number[]> = {
    'directory:filled': [1, 2], // checkpoint 3 written in full under a temporary name
    'directory:renamed': [1, 2, 3],
    'checkpoint:rotating': [2, 3], // checkpoint 1 renamed away, not yet deleted
  }
  const dirOf = (stage: string) => path.join(tmp, `killed-${stage.replace(':', '-')}`)
  // One child per stage, all at once (each runs on one thread).
  const runs = await Promise.all(
    Object.keys(expected).map((stage) => {
      fs.mkdirSync(dirOf(stage))
      return killAtPause(path.join(__dirname, 'trainer-save-child.ts'), [dirOf(stage)], stage)
    }),
  )
  for (const [i, [stage, steps]] of Object.entries(expected).entries()) {
    const outputDir = dirOf(stage)
    const run = runs[i]
    t.ok(run.paused && run.signal === 'SIGKILL', `${stage}: killed there (${run.stderr.slice(0, 500)})`)
    const left = fs.readdirSync(outputDir)
    const complete = listCheckpoints(outputDir)
    t.same(complete.map((c) => c.step), steps, `${stage}: complete checkpoints ${steps.join(', ')} (${left.join(', ')})`)
    t.same(left.filter((f) => /^checkpoint-\d+$/.test(f)).sort(), complete.map((c) => path.basename(c.dir)).sort(), 'no checkpoint-<n> directory without its trainer state')
    // Each one reads back whole.
    for (const c of complete) {
      const state = readTrainerState(c.dir)
      t.equal(state.step, c.step)
      t.equal(state.lossHistory.length, c.step)
      using params = openSafetensors(path.join(c.dir, 'params.safetensors'))
      using opt = openSafetensors(path.join(c.dir, 'optimizer.safetensors'))
      t.ok(Object.keys(params.tensors).length > 10 && Object.keys(opt.tensors).length > 20, `${stage}: checkpoint-${c.step}'s tensors read back`)
    }
    // and training resumes from the latest
    const latest = complete.at(-1)!
    const model = tinyModel()
    const task = new LmTask(model, { train: tokenData(16), fullTraining: true })
    const r = await new Trainer(task, { batchSize: 4, maxSteps: latest.step + 1, learningRate: 1e-3, outputDir, resumeFromCheckpoint: true }).train()
    t.equal(r.steps, latest.step + 1, `${stage}: resumed from step ${latest.step}`)
    t.same(r.lossHistory.slice(0, latest.step), readTrainerState(latest.dir).lossHistory)
    await model.dispose()
  }
})

t.test('loadBestModelAtEnd puts back the best evaluation; pruning never deletes the best checkpoint', async (t) => {
  // Best = the highest eval loss (greaterIsBetter), which training on the eval data itself makes
  // the first evaluation's: the parameters after step 1, which a 1-step run gives independently.
  const options: TrainerOptions = { batchSize: 8, maxSteps: 4, learningRate: 1e-2, seed: 3, evalSteps: 1, metricForBestModel: 'loss', greaterIsBetter: true }
  const make = () => {
    const model = tinyModel()
    const adapter = LoraAdapter.create(model, { r: 4, alpha: 8, seed: 1 })
    return { model, adapter, task: new LmTask(model, { train: tokenData(16), eval: tokenData(16), adapter }) }
  }
  const oneStep = make()
  await new Trainer(oneStep.task, { ...options, maxSteps: 1 }).train()

  for (const withDir of [true, false]) {
    const run = make()
    const outputDir = path.join(tmp, `best-${withDir}`)
    const r = await new Trainer(run.task, { ...options, loadBestModelAtEnd: true, ...(withDir ? { outputDir, saveSteps: 1, saveTotalLimit: 1 } : {}) }).train()
    t.equal(r.bestStep, 1, 'the first evaluation was the best')
    t.ok(r.restoredBest, 'and its parameters were put back')
    for (const [n, x] of oneStep.adapter.tensors) t.ok(bits(x).equals(bits(run.adapter.tensors.get(n)!)), `${withDir ? 'from its checkpoint' : 'from memory'}: ${n} as after step 1`)
    if (withDir) t.same(listCheckpoints(outputDir).map((c) => c.step), [1, 4], 'saveTotalLimit 1 keeps the latest, and the best besides')
    run.adapter.dispose()
    await run.model.dispose()
  }
  oneStep.adapter.dispose()
  await oneStep.model.dispose()
  t.throws(() => new Trainer(make().task, { loadBestModelAtEnd: true }), { message: /loadBestModelAtEnd needs evalSteps/ })
})
