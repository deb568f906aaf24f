// `ernie-sentiment sft`: the command on the tiny fixture model with dialogues built from
// ChnSentiCorp reviews (files written, the loss fell, --resume), ChatML's markers added to a
// vocabulary without them and chatted through, its run file
// (recipes/ernie-chat-sft-lora.yaml resolves to what it writes, with no warning), and usage errors.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { parse as parseYaml } from 'yaml'

import { ErnieModel, LoraAdapter, Tokenizer } from '../../lib/index'
import { runMain, tempDir, TINY, TRAIN } from '../helpers/classifier-helpers'
import { fromBf16Bits } from '../helpers/helpers'

const root = path.join(__dirname, '..', '..')

function dialogueFile(dir: string, n: number): string {
  const rows = fs.readFileSync(TRAIN, 'utf8').split('\n').slice(1, n + 1)
  const file = path.join(dir, 'chat.jsonl')
  const records = rows.map((row) => {
    const [label, text] = row.split('\t')
    return JSON.stringify({ conversations: [{ from: 'human', value: `情感？${text.slice(0, 50)}` }, { from: 'gpt', value: label === '1' ? '正面' : '负面' }] })
  })
  fs.writeFileSync(file, records.join('\n') + '\n')
  return file
}

t.test('sft trains, writes the adapter and its log, and resumes', async (t) => {
  const dir = tempDir(t, 'ernie-sft-cli-')
  const data = dialogueFile(dir, 30)
  const out = path.join(dir, 'adapter')
  const args = ['sft', '--data', data, '--base', TINY, '--out', out, '--batch-size', '4', '--gradient-accumulation-steps', '1', '--lr', '5e-3', '--warmup-steps', '0', '--eval-steps', '2', '--save-steps', '2', '--max-length', '96', '--quiet']
  const run = await runMain([...args, '--max-steps', '4', '--json'])
  t.equal(run.code, 0, run.stderr)
  const r = JSON.parse(run.stdout)
  t.match(r, { outputDir: path.resolve(out), steps: 4, stopReason: 'completed', data: { train: { source: data, conversations: 27, skipped: { count: 0 } }, eval: { source: data, conversations: 3 } } })
  t.ok(r.finalLoss < 0.8 * r.firstLoss, `training loss ${r.firstLoss} -> ${r.finalLoss}`)
  t.equal(r.eval.perplexity, Math.exp(r.eval.loss))
  for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'tokenizer.model', 'tokenizer_config.json', 'sft_log.json']) t.ok(fs.existsSync(path.join(out, f)), f)
  t.same(fs.readdirSync(path.join(out, 'checkpoints')).sort(), ['checkpoint-2', 'checkpoint-4'])
  const log = JSON.parse(fs.readFileSync(path.join(out, 'sft_log.json'), 'utf8'))
  t.same(log.evalHistory.map((e: { step: number }) => e.step), [2, 4])

  // The directory now holds a run: another needs --resume; resumed with more steps, it continues from step 4.
  const again = await runMain([...args, '--max-steps', '6'])
  t.equal(again.code, 2)
  t.match(again.stderr, /--out: .* holds files; choose a new or empty directory, or --resume a run there/)
  const resumed = await runMain([...args, '--max-steps', '6', '--resume', '--json'])
  t.equal(resumed.code, 0, resumed.stderr)
  const rr = JSON.parse(resumed.stdout)
  t.equal(rr.steps, 6)
  const log2 = JSON.parse(fs.readFileSync(path.join(out, 'sft_log.json'), 'utf8'))
  t.same(log2.lossHistory.slice(0, 4), log.lossHistory, 'the first four steps are the first run’s')

  const text = await runMain(['sft', '--data', data, '--base', TINY, '--out', path.join(dir, 'text'), '--max-steps', '1', '--batch-size', '4', '--eval-ratio', '0', '--max-length', '96', '--lora-r', '4', '--quiet'])
  t.equal(text.code, 0, text.stderr)
  t.match(text.stdout, /^trained 1 steps on 30 conversations \(\d+ rows, \d+ answer tokens\) in .*\ntraining loss [\d.]+ -> [\d.]+\nadapter written to /)
  t.match(JSON.parse(fs.readFileSync(path.join(dir, 'text', 'adapter_config.json'), 'utf8')), { r: 4, lora_alpha: 64 }, '--lora-r over the recipe, alpha the recipe\'s')
})

t.test("--template chatml on a vocabulary without ChatML's markers: added, their rows trained, chat talks through them", async (t) => {
  const dir = tempDir(t, 'ernie-sft-chatml-')
  const data = dialogueFile(dir, 12)
  const out = path.join(dir, 'adapter')
  const base = await ErnieModel.fromPretrained(TINY)
  t.teardown(() => base.dispose())
  t.same(base.tokenizer!.missingChatTokens('chatml'), ['<|im_start|>', '<|im_end|>'], "the fixture's vocabulary lacks them")
  const r = await runMain(['sft', '--data', data, '--base', TINY, '--out', out, '--template', 'chatml', '--max-steps', '3', '--batch-size', '4', '--lr', '5e-3', '--warmup-steps', '0', '--eval-ratio', '0', '--max-length', '96', '--quiet'])
  t.equal(r.code, 0, r.stderr)
  // the saved tokenizer: the markers as special tokens after the vocabulary, and the template
  const tok = await Tokenizer.fromDirectory(out)
  const ids = ['<|im_start|>', '<|im_end|>'].map((m) => tok.pieceToId(m))
  t.same(ids, [6000, 6001])
  t.same(tok.missingChatTokens(), [], 'its own template is ChatML, with the markers it needs')
  t.same(tok.encodeChat([{ role: 'user', content: 'x' }], { addGenerationPrompt: true }).filter((id) => id >= 6000), [6000, 6001, 6000])
  // the adapter: the markers' rows train beside LoRA (PEFT's trainable_token_indices), moved from the base's
  const config = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'))
  t.same(config.trainable_token_indices, { embed_tokens: [6000, 6001] })
  const adapter = await LoraAdapter.load(out, base)
  t.teardown(() => adapter.dispose())
  const delta = adapter.tensors.get('base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta')!
  const H = base.config.hidden_size
  const embed = base.weights.embed.data.subarray(6000 * H, 6002 * H)
  const before = embed instanceof Uint16Array ? Float32Array.from(embed, fromBf16Bits) : embed
  t.equal(delta.length, 2 * H)
  t.ok([0, 1].every((k) => delta.subarray(k * H, (k + 1) * H).some((x, i) => x !== before[k * H + i])), 'both rows moved in training')
  // chat through the adapter's tokenizer: the reply is the model's own answer to the ChatML prompt
  const chat = await runMain(['chat', '--model', TINY, '--adapter', out, '--max-new-tokens', '4', '你好'])
  t.equal(chat.code, 0, chat.stderr)
  const tuned = await ErnieModel.fromPretrained(TINY, { tokenizer: tok })
  t.teardown(() => tuned.dispose())
  const again = await LoraAdapter.load(out, tuned)
  t.teardown(() => again.dispose())
  const want = await tuned.chat([{ role: 'user', content: '你好' }], { adapter: again, maxNewTokens: 4 })
  t.same(JSON.parse(chat.stdout), { text: '你好', reply: want.message.content, finishReason: want.finishReason })
})

t.test('recipes/ernie-chat-sft-lora.yaml resolves to the settings it writes, with no warning', async (t) => {
  const file = path.join(root, 'recipes', 'ernie-chat-sft-lora.yaml')
  const r = await runMain(['sft', file, '--print-config'])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stderr, '')
  const written = parseYaml(fs.readFileSync(file, 'utf8')) as Record<string, unknown>
  // ERNIEKit's names in the recipe, and sft's for them (`sft --help`).
  const name: Record<string, string> = {
    train_dataset_path: 'data', max_seq_len: 'max-length', model_name_or_path: 'base', lora_rank: 'lora-r', lora_alpha: 'lora-alpha',
    batch_size: 'batch-size', gradient_accumulation_steps: 'gradient-accumulation-steps', num_train_epochs: 'epochs', eval_steps: 'eval-steps',
    load_best_model_at_end: 'load-best-model-at-end', output_dir: 'out', learning_rate: 'lr', lr_scheduler_type: 'schedule', warmup_steps: 'warmup-steps', weight_decay: 'weight-decay',
  }
  const expected: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(written)) if (!(k === 'max_steps' && v === -1)) expected[name[k] ?? k] = k === 'fine_tuning' ? 'lora' : v
  t.same(parseYaml(r.stdout), expected)
  t.equal(written.train_dataset_path, 'data/chat/hotel-dialogues.jsonl')
  t.ok(fs.existsSync(path.join(root, 'data', 'chat', 'hotel-dialogues.jsonl')), 'the example data ships')
})

t.test('usage errors name the flag', async (t) => {
  const dir = tempDir(t, 'ernie-sft-cli-')
  const cases: Array<[string[], RegExp]> = [
    [['sft', '--base', TINY, '--out', dir], /--data is required \(in a run file: data or train_dataset_path\)/],
    [['sft', '--data', path.join(dir, 'none.jsonl'), '--base', TINY, '--out', dir], /--data: no such file/],
    [['sft', '--data', TRAIN, '--base', TINY, '--out', dir, '--loss-on', 'prompt'], /--loss-on must be one of assistant, last, all/],
    [['sft', '--data', TRAIN, '--base', TINY, '--out', dir, '--packing', 'yes'], /--packing must be true or false/],
    [['sft', '--data', TRAIN, '--base', TINY, '--out', dir, '--eval-ratio', '1'], /--eval-ratio must be below 1/],
    [['sft', '--data', TRAIN, '--base', TINY, '--out', dir, '--method', 'lora'], /unknown option --method: sft trains a LoRA adapter/],
  ]
  for (const [args, message] of cases) {
    const r = await runMain(args)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.stderr, message)
  }
  // Chat data errors name the file and line (exit 1).
  const bad = path.join(dir, 'bad.jsonl')
  fs.writeFileSync(bad, '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n{"messages": []}\n')
  const r = await runMain(['sft', '--data', bad, '--base', TINY, '--out', path.join(dir, 'o'), '--quiet'])
  t.equal(r.code, 1)
  t.match(r.stderr, `[ERR_DATA] ${bad}:2: field "messages" must be a non-empty array of messages`)
  const help = await runMain(['sft', '--help'])
  t.match(help.stdout, /--loss-on TURNS +assistant \| last \| all/)
})
