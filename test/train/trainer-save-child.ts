// Child process for trainer-checkpoint.test.ts: full fine-tuning of the tiny model, a checkpoint
// after every step into argv[2], the last two kept. The test's ERNIE_TEST_PAUSE_AT (the writers'
// test hook) is held back until two checkpoints are complete, so that the test kills the child
// during the third save. Not a test file.
import { setNumThreads } from '../../lib/kernels/index'
import { LmTask, Trainer } from '../../lib/train/index'
import { tinyModel, tokenData } from '../helpers/trainer-helpers'

const stage = process.env.ERNIE_TEST_PAUSE_AT
delete process.env.ERNIE_TEST_PAUSE_AT
setNumThreads(1)
const task = new LmTask(tinyModel(), { train: tokenData(16), fullTraining: true })
const onProgress = (e: { step: number; checkpoint?: string }) => {
  if (e.checkpoint && e.step === 2) process.env.ERNIE_TEST_PAUSE_AT = stage
}
new Trainer(task, { batchSize: 4, maxSteps: 4, learningRate: 1e-3, outputDir: process.argv[2], saveSteps: 1, saveTotalLimit: 2, onProgress })
  .train()
  .catch((err) => {
    console.error(err)
    process.exit(1)
  })
