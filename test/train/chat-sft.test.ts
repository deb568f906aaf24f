// sft(): the recipe in one call on the tiny fixture model, with dialogues built from ChnSentiCorp
// reviews: the files it writes (a PEFT adapter that loads, the base's tokenizer, the log), its
// settings (the recipe's defaults where none are given), the held-out split, and a run stopped
// at a checkpoint and resumed ending with the same adapter as a run never stopped.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import { ErnieModel, LoraAdapter } from '../../lib/model/index'
import { sft, SFT_DEFAULTS, SFT_LOG_FILE, type SftOptions } from '../../lib/train/index'

const FIXTURES = path.join(__dirname, '..', 'fixtures')
const TINY = path.join(FIXTURES, 'ernie-tiny')
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-sft-'))
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))

/** `n` dialogues from the fixture's ChnSentiCorp rows: a review asked about, its sentiment answered. */
function sentimentDialogues(n: number): object[] {
  const rows = fs.readFileSync(path.join(FIXTURES, 'chnsenticorp', 'train.tsv'), 'utf8').split('\n').slice(1, n + 1)
  return rows.map((row) => {
    const [label, text] = row.split('\t')
    return { messages: [{ role: 'user', content: `这条评论是正面还是负面？\n${text.slice(0, 60)}` }, { role: 'assistant', content: label === '1' ? '正面。' : '负面。' }] }
  })
}

const common = (out: string): SftOptions => ({
  data: sentimentDialogues(40),
  base: TINY,
  outputDir: out,
  maxSteps: 6,
  batchSize: 4,
  gradientAccumulationSteps: 1,
  learningRate: 5e-3,
  warmupSteps: 0,
  evalSteps: 3,
  saveSteps: 3,
  maxLength: 128,
})

t.test('sft writes a PEFT adapter, the tokenizer and its log; the answers loss falls', async (t) => {
  const out = path.join(dir, 'run')
  const r = await sft(common(out))
  t.same(fs.readdirSync(out).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'checkpoints', SFT_LOG_FILE, 'tokenizer.model', 'tokenizer_config.json'])
  t.same(fs.readdirSync(path.join(out, 'checkpoints')).sort(), ['checkpoint-3', 'checkpoint-6'])
  t.same(fs.readFileSync(path.join(out, 'tokenizer.model')), fs.readFileSync(path.join(TINY, 'tokenizer.model')), "the base's tokenizer, as it is")
  const config = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'))
  t.match(config, { peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 16, lora_alpha: 64, base_model_name_or_path: TINY })
  t.same([...config.target_modules].sort(), ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'])

  // 40 dialogues, a tenth held out (seeded), packed several to a row.
  t.equal(r.data.train.conversations, 36)
  t.equal(r.data.eval!.conversations, 4)
  t.ok(r.data.train.rows < 36, `${r.data.train.rows} packed rows`)
  t.equal(r.train.steps, 6)
  t.same(r.train.evalHistory.map((e) => e.step), [3, 6])
  t.ok(r.train.lossHistory[5] < 0.8 * r.train.lossHistory[0], `training loss ${r.train.lossHistory[0]} -> ${r.train.lossHistory[5]}`)
  t.equal(r.eval!.perplexity, Math.exp(r.eval!.loss))

  const log = JSON.parse(fs.readFileSync(path.join(out, SFT_LOG_FILE), 'utf8'))
  t.match(log.settings, {
    optimizer: SFT_DEFAULTS.optimizer,
    schedule: SFT_DEFAULTS.schedule,
    weightDecay: SFT_DEFAULTS.weightDecay,
    maxGradNorm: SFT_DEFAULTS.maxGradNorm,
    saveTotalLimit: SFT_DEFAULTS.saveTotalLimit,
    earlyStoppingPatience: SFT_DEFAULTS.earlyStoppingPatience,
    recompute: true,
    packing: true,
    lossOn: 'assistant',
    lora: { r: 16, alpha: 64 },
    learningRate: 5e-3,
    maxLength: 128,
  })
  t.equal(log.lossHistory.length, 6)
  t.same(log.eval, r.eval)

  // The adapter loads on the base, trained.
  const model = await ErnieModel.fromPretrained(TINY)
  const adapter = await LoraAdapter.load(out, model)
  t.ok([...adapter.tensors.values()].some((x) => x.some((v) => v !== 0)), 'trained tensors')
  adapter.dispose()
  await model.dispose()
})

t.test('a run stopped at its checkpoint and resumed ends with the adapter of a run never stopped', async (t) => {
  const straight = path.join(dir, 'straight')
  await sft(common(straight))
  const resumed = path.join(dir, 'resumed')
  const stop = new AbortController()
  const first = await sft({ ...common(resumed), signal: stop.signal, onProgress: (p) => p.step === 3 && stop.abort() })
  t.equal(first.train.stopReason, 'aborted')
  t.equal(first.train.steps, 3)
  const second = await sft({ ...common(resumed), resume: true })
  t.equal(second.train.steps, 6)
  t.same(second.train.lossHistory.slice(0, 3), first.train.lossHistory, 'the first steps are the first run’s')
  const tensors = (d: string) => fs.readFileSync(path.join(d, 'adapter_model.safetensors'))
  t.ok(tensors(resumed).equals(tensors(straight)), 'the same adapter, byte for byte')
})

t.test('data problems and options', async (t) => {
  await t.rejects(sft({ ...common(path.join(dir, 'x')), data: [{ messages: [{ role: 'user', content: 'a' }] }] }), { name: 'DataError', message: /^data\[0\]: "messages" ends with a user turn/ })
  await t.rejects(sft({ ...common(path.join(dir, 'x')), data: sentimentDialogues(1) }), { name: 'RangeError', message: /too few to hold out 0.1 of it for evaluation \(give evalData, or evalRatio: 0\)/ })
  await t.rejects(sft({ ...common(path.join(dir, 'x')), maxLength: 8 }), { name: 'ErnieError', code: 'ERR_DATA', message: /every training conversation is longer than maxLength 8 tokens \(36 dropped\)/ })
  await t.rejects(sft({ ...common(path.join(dir, 'x')), evalRatio: 1 }), { name: 'RangeError', message: /evalRatio must be in \[0, 1\)/ })
  const skip = await sft({ ...common(path.join(dir, 'skip')), maxSteps: 1, evalRatio: 0, data: [...sentimentDialogues(3), { text: 'x' }], onInvalid: 'skip' })
  t.equal(skip.data.train.skipped.count, 1)
  t.equal(skip.data.eval, undefined, 'evalRatio 0: no evaluation')
  t.equal(skip.eval, undefined)
})
