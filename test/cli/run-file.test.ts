// Run files (`ernie-sentiment train run.yaml`): ERNIEKit's keys and the package's own mapped to
// the options, unused ERNIEKit settings warned about (errors under --strict), unknown keys and
// wrong types named with the file and line, flags over the file, --print-config, stage: SFT
// choosing the method from the data, and eval and pretrain reading their files.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { parse as parseYaml } from 'yaml'

import { runMain, tempDir, TRAIN, DEV } from '../helpers/classifier-helpers'

const dir = tempDir(t, 'ernie-runfile-')

/** Writes a run file into the test's directory; returns its path. */
function runFile(name: string, body: string): string {
  const file = path.join(dir, name)
  fs.writeFileSync(file, body)
  return file
}

/** --print-config's settings (its comments dropped) as an object, read by the yaml package. */
function printed(stdout: string): Record<string, unknown> {
  return parseYaml(stdout) ?? {}
}

// The keys of ERNIEKit's ERNIE-4.5-0.3B run_sft_8k.yaml, with values of our own, in its layout.
const ERNIEKIT_SFT = `### data
train_dataset_type: "erniekit"
eval_dataset_type: "erniekit"
train_dataset_path: "${TRAIN}"
train_dataset_prob: "1.0"
eval_dataset_path: "${DEV}"
eval_dataset_prob: "1.0"
max_seq_len: 128

### model
model_name_or_path: baidu/ERNIE-4.5-0.3B-PT
fine_tuning: LoRA
lora_rank: 32
lora_alpha: 64
fuse_rope: True

### finetuning
stage: SFT
seed: 23
do_train: True
do_eval: True
dataloader_num_workers: 1
batch_size: 4
num_train_epochs: 2
max_steps: -1
eval_steps: 100
evaluation_strategy: steps
save_steps: 100
logging_steps: 1
gradient_accumulation_steps: 8
output_dir: ./output
disable_tqdm: True

# train
warmup_steps: 20
learning_rate: 1.0e-5
lr_scheduler_type: cosine

# optimizer
weight_decay: 0.1
adam_beta2: 0.95
optim: adamw_bnb_8bit
max_grad_norm: 0.5

# performance
tensor_parallel_degree: 1
sharding: stage1
recompute: False
compute_type: bf16
amp_custom_white_list:
  - lookup_table
  - matmul
`

/** The 1-based line of `key:` in ERNIEKIT_SFT, counted here. */
const lineOf = (key: string) => ERNIEKIT_SFT.split('\n').findIndex((l) => l.startsWith(`${key}:`)) + 1

t.test("ERNIEKit's SFT file: its keys mapped to train's options, the rest warned about", async (t) => {
  const file = runFile('run_sft.yaml', ERNIEKIT_SFT)
  const r = await runMain(['train', file, '--print-config'])
  t.equal(r.code, 0, r.stderr)
  t.same(printed(r.stdout), {
    data: TRAIN,
    eval: DEV,
    base: 'baidu/ERNIE-4.5-0.3B-PT',
    method: 'lora', // stage: SFT on text/label data: the classifier fine_tuning names
    tuning: 'lora',
    stage: 'SFT',
    do_train: true,
    do_eval: true,
    out: './output',
    epochs: 2, // max_steps: -1 is ERNIEKit's "not set"
    'batch-size': 4,
    'gradient-accumulation-steps': 8,
    lr: 1e-5,
    schedule: 'cosine',
    'warmup-steps': 20,
    'weight-decay': 0.1,
    optimizer: 'adamw8bit', // HF's optim name, read as the package's
    'adam-beta2': 0.95,
    'max-grad-norm': 0.5,
    'max-length': 128,
    'lora-r': 32,
    'lora-alpha': 64,
    'eval-steps': 100,
    'save-steps': 100,
    recompute: false,
    seed: 23,
    precision: 'bf16',
  })
  t.match(r.stdout, new RegExp(`^lr: 0\\.00001 +# .*run_sft\\.yaml:${lineOf('learning_rate')}: learning_rate$`, 'm'), 'each setting says where it came from')
  t.match(r.stdout, new RegExp(`^method: "lora" +# .*run_sft\\.yaml:${lineOf('stage')}: stage on text/label data, .*run_sft\\.yaml:${lineOf('fine_tuning')}: fine_tuning$`, 'm'))
  const unusedKeys = ['train_dataset_type', 'eval_dataset_type', 'train_dataset_prob', 'eval_dataset_prob', 'fuse_rope', 'dataloader_num_workers', 'evaluation_strategy', 'logging_steps', 'disable_tqdm', 'tensor_parallel_degree', 'sharding', 'amp_custom_white_list']
  const unused = unusedKeys.map((k) => `${k} (line ${lineOf(k)})`)
  t.equal(r.stderr, `ernie-sentiment: warning: ${file}: ERNIEKit settings with no meaning here, not used: ${unused.join(', ')} (--strict makes this an error)\n`)

  const strict = await runMain(['train', file, '--print-config', '--strict'])
  t.equal(strict.code, 2, '--strict: the unused settings are errors')
  t.match(strict.stderr, `ernie-sentiment: ${file}:2: ERNIEKit settings with no meaning here (an error under --strict): ${unused.join(', ')}\n`)
  t.equal(strict.stdout, '')
})

t.test('flags override the file; --print-config reads back as the same run', async (t) => {
  const file = runFile('override.yaml', `train_dataset_path: ${TRAIN}\noutput_dir: out\nnum_train_epochs: 3\nlearning_rate: 2.0e-5\nmethod: head\n`)
  const r = await runMain(['train', file, '--epochs', '1.5', '--lr', '3e-4', '--print-config'])
  t.equal(r.code, 0, r.stderr)
  const settings = printed(r.stdout)
  t.same(settings, { data: TRAIN, out: 'out', method: 'head', epochs: 1.5, lr: 3e-4 })
  t.match(r.stdout, /^epochs: 1\.5 +# --epochs$/m)
  t.match(r.stdout, /^method: "head" +# .*override\.yaml:5: method$/m, "the package's own names are keys too")
  // The printed settings are a run file of the package's own names that gives the same run.
  const again = await runMain(['train', runFile('printed.yaml', r.stdout), '--print-config'])
  t.equal(again.code, 0, again.stderr)
  t.same(printed(again.stdout), settings)
})

t.test('stage: SFT trains the generative method on src/tgt data, the classifier on text/label data', async (t) => {
  const sft = path.join(dir, 'sft-train.jsonl')
  fs.writeFileSync(sft, '{"src": ["房间很干净"], "tgt": ["正面"]}\n{"src": ["太吵了"], "tgt": ["负面"]}\n')
  const base = `train_dataset_path: ${sft}\noutput_dir: out\nstage: SFT\n`
  const generative = await runMain(['train', runFile('gen.yaml', base + 'fine_tuning: Full\n'), '--print-config'])
  t.equal(generative.code, 0, generative.stderr)
  t.match(printed(generative.stdout), { method: 'generative', tuning: 'full' })
  t.match(generative.stdout, /^method: "generative" +# .*gen\.yaml:3: stage on src\/tgt data$/m)
  const tsv = await runMain(['train', runFile('cls.yaml', base.replace(sft, TRAIN) + 'fine_tuning: full\n'), '--print-config'])
  t.match(printed(tsv.stdout), { method: 'full', tuning: 'full' }, 'text/label data: the classifier, trained in full')
  const noTuning = await runMain(['train', runFile('default.yaml', base.replace(sft, TRAIN)), '--print-config'])
  t.notOk('method' in printed(noTuning.stdout), 'no fine_tuning: the default method')
  // A method named outright wins over stage; a fine_tuning that contradicts it is an error.
  const named = await runMain(['train', runFile('named.yaml', base + 'fine_tuning: LoRA\n'), '--method', 'lora', '--print-config'])
  t.match(printed(named.stdout), { method: 'lora' })
  const clash = await runMain(['train', runFile('clash.yaml', base + 'fine_tuning: LoRA\n'), '--method', 'full', '--print-config'])
  t.equal(clash.code, 2)
  t.match(clash.stderr, /clash\.yaml:4: fine_tuning says lora, but the method \(--method\) is full fine-tuning/)
  const head = await runMain(['train', runFile('head.yaml', base + 'fine_tuning: LoRA\nmethod: head\n'), '--print-config'])
  t.match(head.stderr, /head\.yaml:4: fine_tuning says lora, but the method \(.*head\.yaml:5: method\) trains only a head on the frozen model/)
})

t.test('mistakes in a run file name the file, the line and the key', async (t) => {
  const cases: Array<[string, string, string | RegExp]> = [
    ['typo.yaml', `train_dataset_path: ${TRAIN}\nnum_train_epoch: 3\n`, ':2: unknown key "num_train_epoch" for train; did you mean num_train_epochs?'],
    ['typo2.yaml', 'max-lenght: 64\n', ':1: unknown key "max-lenght" for train; did you mean max-length?'],
    ['unknown.yaml', 'frobnicate: 1\n', /:1: unknown key "frobnicate" for train\nRun/],
    ['string.yaml', 'learning_rate: fast\n', ':1: learning_rate must be a positive number, got "fast" (a string)'],
    ['quoted.yaml', 'batch_size: "8"\n', ':1: batch_size must be an integer >= 1, got "8" (a string)'],
    ['float.yaml', 'per_device_train_batch_size: 1.5\n', ':1: per_device_train_batch_size must be an integer >= 1, got 1.5'],
    ['bool.yaml', 'do_eval: yes\n', ':1: do_eval must be true or false, got "yes" (a string)'],
    ['empty.yaml', 'lora_rank:\n', ':1: lora_rank must be an integer >= 1, got nothing (an empty value)'],
    ['list.yaml', 'output_dir: [a, b]\n', ':1: output_dir must be a non-empty string, got a list'],
    ['choice.yaml', 'fine_tuning: QLoRA\n', ':1: fine_tuning must be one of full, lora, got "QLoRA" (a string)'],
    ['fp16.yaml', 'compute_type: fp16\n', /:1: compute_type must be one of fp32, bf16, auto, got "fp16" \(a string\) \(fp16 and the quantised types .*\)\n/],
    ['stage.yaml', 'stage: DPO\n', ':1: stage must be one of SFT, got "DPO" (a string) (ERNIEKit\'s other stages (PT, DPO) are not trained by this command)'],
    ['twice.yaml', 'batch_size: 8\nlearning_rate: 1.0e-5\nper_device_train_batch_size: 4\n', ':3: per_device_train_batch_size sets batch-size, as batch_size does on line 1: keep one'],
    ['dup.yaml', 'seed: 1\nseed: 2\n', ':2: a key is set twice (each key once)'],
    ['syntax.yaml', 'seed: 1\nlabels: @a\n', ':2: not valid YAML: Plain value cannot start with reserved character @'],
    ['seq.yaml', '- seed\n- 1\n', ':1: a run file is a mapping of settings (`key: value` lines)'],
    ['model.yaml', 'model: ./clf\n', ':1: model: a base model is --base DIR|ID here (--model names a saved classifier, for eval and predict)'],
    ['flag.yaml', 'print-config: true\n', ':1: print-config is a flag only (--print-config), not a run-file setting'],
    ['no-train.yaml', `train_dataset_path: ${TRAIN}\noutput_dir: o\ndo_train: False\n`, ':3: do_train is false: there is nothing to train'],
    ['no-data.yaml', 'output_dir: o\n', /--data is required \(in a run file: data or train_dataset_path\)/],
    ['missing.yaml', `train_dataset_path: ${path.join(dir, 'absent.tsv')}\noutput_dir: o\n`, /:1: train_dataset_path: no such file: .*absent\.tsv/],
  ]
  for (const [name, body, message] of cases) {
    const file = runFile(name, body)
    const r = await runMain(['train', file, '--print-config'])
    t.equal(r.code, 2, `${name}: exit 2`)
    t.equal(r.stdout, '')
    if (typeof message === 'string') {
      const expected = message.startsWith(':') ? `ernie-sentiment: ${file}${message}\nRun 'ernie-sentiment train --help' for usage.\n` : message
      t.equal(r.stderr, expected, name)
    } else t.match(r.stderr, message, name)
  }
  const absent = await runMain(['train', path.join(dir, 'nope.yaml')])
  t.equal(absent.code, 2)
  t.match(absent.stderr, /nope\.yaml: no such run file/)
  const notYaml = await runMain(['train', TRAIN])
  t.match(notYaml.stderr, /unexpected argument ".*train\.tsv" \(a run file is named NAME\.yaml or NAME\.yml\)/)
  const two = await runMain(['train', runFile('a.yaml', 'seed: 1\n'), runFile('b.yaml', 'seed: 2\n')])
  t.match(two.stderr, /unexpected argument ".*b\.yaml" \(one run file at a time\)/)
  const fileOnlyFlag = await runMain(['train', '--stage', 'SFT'])
  t.match(fileOnlyFlag.stderr, /unknown option --stage/, 'stage is a run-file key, not a flag')
})

t.test('eval reads the run file train used: the classifier it saved, on its held-out data', async (t) => {
  const file = runFile('eval.yaml', ERNIEKIT_SFT)
  const r = await runMain(['eval', file, '--print-config'])
  t.equal(r.code, 0, r.stderr)
  t.same(printed(r.stdout), { out: './output', eval: DEV }, "output_dir is the classifier, eval_dataset_path the data; train's keys are left to it")
  const left = ['train_dataset_path', 'max_seq_len', 'model_name_or_path', 'fine_tuning'].map((k) => `${k} \\(line ${lineOf(k)}\\)`).join(', ')
  t.match(r.stdout, new RegExp(`^# left to other commands: ${left}, `, 'm'))
  t.match(r.stderr, ` fuse_rope (line ${lineOf('fuse_rope')}),`, "ERNIEKit's unused settings are warned about here too")
  t.notMatch(r.stderr, /learning_rate/, "train's keys are not")
  const own = await runMain(['eval', runFile('own.yaml', `data: ${TRAIN}\neval: ${DEV}\nout: ./clf\nper_device_eval_batch_size: 16\n`), '--model', './other', '--print-config'])
  t.equal(own.code, 0, own.stderr)
  t.same(printed(own.stdout), { out: './other', eval: DEV, per_device_eval_batch_size: 16 }, "train's data is what it trained on: eval leaves it; --model wins over out")
  const wrongKey = await runMain(['eval', runFile('model.yaml', 'model: ./clf\n')])
  t.match(wrongKey.stderr, /model\.yaml:1: model: in a run file the classifier is out \(or output_dir\), where train saved it/)
  const unknown = await runMain(['eval', runFile('typo.yaml', 'eval_dataset_pth: x\n')])
  t.match(unknown.stderr, /typo\.yaml:1: unknown key "eval_dataset_pth" for eval; did you mean eval_dataset_path\?/)
})

t.test('pretrain reads a run file', async (t) => {
  const file = runFile('pt.yaml', `stage: PT\ntext: [a.txt, b.txt]\nconfig: config.json\ntokenizer: tok\noutput_dir: model\nmax_seq_len: 64\nbatch_size: 8\nmax_steps: 100\nlearning_rate: 1.0e-3\nwarmup_steps: 10\nsave_steps: 50\nrecompute: False\n`)
  const r = await runMain(['pretrain', file, '--text', 'c.txt', '--print-config'])
  t.equal(r.code, 0, r.stderr)
  t.same(printed(r.stdout), { text: ['c.txt'], config: 'config.json', tokenizer: 'tok', out: 'model', stage: 'PT', 'seq-length': 64, 'batch-size': 8, 'max-steps': 100, lr: 1e-3, 'warmup-steps': 10, 'save-steps': 50 })
  t.match(r.stderr, /not used: recompute \(line 12\)/, 'an ERNIEKit setting pretrain has no use for')
  const fromBase = await runMain(['pretrain', runFile('cpt.yaml', 'stage: PT\ntrain_dataset_path: pt.jsonl\n'), '--print-config'])
  t.match(fromBase.stderr, /cpt\.yaml:2: train_dataset_path: pretrain reads plain text files, one document per line: text: \[FILE, \.\.\.\]/)
  // Continued pre-training: ERNIEKit's model_name_or_path is the base; it brings its config and tokenizer.
  const cpt = await runMain(['pretrain', runFile('base.yaml', 'model_name_or_path: baidu/ERNIE-4.5-0.3B-PT\ntext: a.txt\noutput_dir: o\n'), '--print-config'])
  t.equal(cpt.code, 0, cpt.stderr)
  t.same(printed(cpt.stdout), { text: ['a.txt'], base: 'baidu/ERNIE-4.5-0.3B-PT', out: 'o' })
  const neither = await runMain(['pretrain', runFile('neither.yaml', 'text: a.txt\noutput_dir: o\n')])
  t.match(neither.stderr, /--config is required \(in a run file: config\)/, 'from random weights the architecture is needed')
  const text = await runMain(['pretrain', runFile('one.yaml', 'text: a.txt\nconfig: c.json\ntokenizer: t\nout: o\n'), '--print-config'])
  t.same(printed(text.stdout).text, ['a.txt'], 'one text file as a string')
})

t.test('--help lists the run-file keys', async (t) => {
  const r = await runMain(['train', '--help'])
  t.match(r.stdout, /^Usage: ernie-sentiment train --data FILE --out DIR \[options\]\n {7}ernie-sentiment train RUN\.yaml \[options\]\n/)
  t.match(r.stdout, /^ {2}per_device_train_batch_size {3}--batch-size$/m)
  t.match(r.stdout, /^ {2}compute_type {18}--precision$/m)
  t.match(r.stdout, /^ {2}--print-config {9}/m)
  const e = await runMain(['eval', '--help'])
  t.match(e.stdout, /^ {2}output_dir {20}--model$/m)
})
