// Child process for trainer-checkpoint.test.ts: full fine-tuning of a small model that saves a
// checkpoint after every step into argv[2], so the test can SIGKILL it mid-save. Not a test file.
import { setNumThreads } from '../lib/kernels/index'
import { LmTask, Trainer } from '../lib/train/index'
import { killChildModel, tokenData } from './trainer-helpers'

setNumThreads(1)
const task = new LmTask(killChildModel(), { train: tokenData(16), fullTraining: true })
new Trainer(task, { batchSize: 4, maxSteps: 100_000, learningRate: 1e-3, outputDir: process.argv[2], saveSteps: 1, saveTotalLimit: 2 })
  .train()
  .catch((err) => {
    console.error(err)
    process.exit(1)
  })
