// The run files the package ships (recipes/) for train: each resolves, with no warning, to the settings it
// writes (read here with the yaml package and mapped by this test's own table of ERNIEKit's
// names), for train and for eval; and one runs for real, train then eval, on the tiny fixture model.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { parse as parseYaml } from 'yaml'

import { ErnieClassifier } from '../../lib/classifier/index'
import { runMain, tempDir, TINY } from '../helpers/classifier-helpers'

const root = path.join(__dirname, '..', '..')
const allRecipes = fs.readdirSync(path.join(root, 'recipes')).filter((f) => f.endsWith('.yaml'))
// The chat SFT recipe is sft's (test/cli/sft.test.ts); the others are train's and eval's.
const recipes = allRecipes.filter((f) => f !== 'ernie-chat-sft-lora.yaml')
// The recipes' paths are relative to the package root, as their comments say.
process.chdir(root)

// ERNIEKit's names in the recipes, and the package's names for them (README, `train --help`).
const OPTION_OF: Record<string, string> = {
  train_dataset_path: 'data',
  eval_dataset_path: 'eval',
  max_seq_len: 'max-length',
  model_name_or_path: 'base',
  fine_tuning: 'tuning',
  lora_rank: 'lora-r',
  lora_alpha: 'lora-alpha',
  batch_size: 'batch-size',
  gradient_accumulation_steps: 'gradient-accumulation-steps',
  num_train_epochs: 'epochs',
  eval_steps: 'eval-steps',
  output_dir: 'out',
  warmup_steps: 'warmup-steps',
  learning_rate: 'lr',
  lr_scheduler_type: 'schedule',
  weight_decay: 'weight-decay',
  compute_type: 'precision',
}

/** What train should resolve a recipe to: its keys under the package's names, ERNIEKit's spellings of values lowered, max_steps: -1 dropped. */
function expectedTrainSettings(file: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(file)) {
    if (key === 'max_steps' && value === -1) continue
    out[OPTION_OF[key] ?? key] = key === 'fine_tuning' ? String(value).toLowerCase() : value
  }
  // stage: SFT on the recipes' text/label data: the classifier fine_tuning names
  if (file.stage === 'SFT') out.method = out.tuning
  return out
}

t.test('recipes/ holds the five recipes', async (t) => {
  t.same(allRecipes.sort(), ['ernie-chat-sft-lora.yaml', 'erniekit-sft-full.yaml', 'erniekit-sft-lora.yaml', 'qwen3-embedding-head.yaml', 'qwen3-lora.yaml'])
})

for (const recipe of recipes) {
  t.test(`${recipe}: train and eval --print-config`, async (t) => {
    const file = path.join('recipes', recipe)
    const written = parseYaml(fs.readFileSync(file, 'utf8')) as Record<string, unknown>
    const train = await runMain(['train', file, '--print-config'])
    t.equal(train.code, 0, train.stderr)
    t.equal(train.stderr, '', 'no warning: every key means something here')
    t.same(parseYaml(train.stdout), expectedTrainSettings(written))
    const evaluate = await runMain(['eval', file, '--print-config'])
    t.equal(evaluate.code, 0, evaluate.stderr)
    t.same(parseYaml(evaluate.stdout), { out: written.output_dir ?? written.out, eval: written.eval_dataset_path ?? written.eval }, 'eval: the classifier train saves, on the held-out data')
  })
}

t.test('erniekit-sft-lora.yaml runs: train (the tiny model, 3 steps) then eval', async (t) => {
  const file = path.join('recipes', 'erniekit-sft-lora.yaml')
  const out = path.join(tempDir(t), 'clf')
  const train = await runMain(['train', file, '--base', TINY, '--max-steps', '3', '--out', out, '--quiet', '--json'])
  t.equal(train.code, 0, train.stderr)
  const result = JSON.parse(train.stdout)
  t.equal(result.method, 'lora', 'stage: SFT and fine_tuning: LoRA on text/label data')
  t.equal(result.steps, 3)
  t.equal(result.data.train.examples, 9600, 'the bundled ChnSentiCorp train split')
  t.equal(result.data.eval.examples, 1200, 'and its dev split, evaluated at the end')
  const saved = JSON.parse(fs.readFileSync(path.join(out, 'classifier.json'), 'utf8'))
  t.match(saved.training.settings, {
    method: 'lora',
    learningRate: 1e-4,
    schedule: 'cosine',
    warmupSteps: 20,
    weightDecay: 0.01,
    batchSize: 8,
    gradientAccumulationSteps: 2,
    maxSteps: 3,
    seed: 23,
    maxLength: 256,
    precision: 'bf16',
    lora: { r: 32, alpha: 64 },
  })

  const evaluate = await runMain(['eval', file, '--model', out, '--json'])
  t.equal(evaluate.code, 0, evaluate.stderr)
  const m = JSON.parse(evaluate.stdout)
  const clf = await ErnieClassifier.load(out)
  t.teardown(() => clf.dispose())
  const expected = await clf.evaluate(path.join('data', 'chnsenticorp', 'dev.tsv'))
  t.equal(m.count, 1200, "eval_dataset_path: the dev split")
  t.same(m.confusion, expected.confusion)
  t.equal(m.accuracy, expected.accuracy)
})
