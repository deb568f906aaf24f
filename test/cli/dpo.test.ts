// `ernie-sentiment dpo` and the preference records it reads: string and chat records rendered with
// the answer's tokens scored and the prompt's not; bad records named by file:line; a LoRA run on
// the tiny fixture that writes a PEFT adapter and dpo_log.json; an SFT output as --base (its
// adapter continued, itself the reference); full tuning writing a model.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { DataError, loadPreferencePairs } from '../../lib/index'
import { ErnieModel } from '../../lib/model/index'
import { runMain, tempDir, TINY, TRAIN } from '../helpers/classifier-helpers'

const dir = tempDir(t, 'ernie-dpo-')

/**
 * Pairs whose chosen answer is a polite reply and whose rejected one is curt, to prompts made of
 * ChnSentiCorp reviews; every other record in chat form.
 */
function writePairs(file: string, n: number, offset = 0): string {
  const reviews = fs.readFileSync(TRAIN, 'utf8').trim().split('\n').slice(1 + offset).map((l) => l.split('\t')[1])
  const polite = ['感谢您的评价，我们会继续努力，欢迎再次光临！', '非常感谢您的反馈，祝您生活愉快！', '谢谢您的支持，期待再次为您服务！']
  const curt = ['知道了。', '随便。', '哦。']
  const lines = Array.from({ length: n }, (_, i) => {
    const prompt = `顾客评价：${reviews[i].slice(0, 30)}\n回复：`
    const chosen = polite[i % 3], rejected = curt[(i * 7) % 3]
    return JSON.stringify(i % 2 ? { prompt: [{ role: 'user', content: prompt }], chosen: [{ role: 'assistant', content: chosen }], rejected } : { prompt, chosen, rejected })
  })
  fs.writeFileSync(file, lines.join('\n') + '\n')
  return file
}

t.test('records: strings and chat form, the answer scored and the prompt not', async (t) => {
  await using model = await ErnieModel.fromPretrained(TINY)
  const tok = model.tokenizer!
  const file = writePairs(path.join(dir, 'two.jsonl'), 2)
  const { pairs, truncated } = await loadPreferencePairs(file, tok)
  t.equal(truncated, 0)
  // strings: the prompt's tokens, then the answer's, then EOS
  const plain = pairs[0].chosen
  const promptIds = tok.encode('顾客评价：' + fs.readFileSync(TRAIN, 'utf8').split('\n')[1].split('\t')[1].slice(0, 30) + '\n回复：')
  t.same(plain.inputIds.slice(0, plain.answerStart), promptIds, 'the prompt, tokenized alone')
  t.same(plain.inputIds.slice(plain.answerStart), [...tok.encode('感谢您的评价，我们会继续努力，欢迎再次光临！'), tok.eosTokenId!], 'the answer, then EOS')
  // chat: the prompt's ids exactly those generation is fed, then the answer's content and the
  // template's end-of-turn marker (ERNIE-4.5: "Assistant: " + content + <|end_of_sentence|>),
  // tokenized apart as chat SFT labels them
  const chat = pairs[1].chosen
  const messages = [{ role: 'user' as const, content: `顾客评价：${fs.readFileSync(TRAIN, 'utf8').split('\n')[2].split('\t')[1].slice(0, 30)}\n回复：` }]
  const gen = tok.encodeChat(messages, { addGenerationPrompt: true })
  t.same(chat.inputIds.slice(0, chat.answerStart), gen, 'the prompt with the generation prompt')
  t.same(chat.inputIds.slice(chat.answerStart), [...tok.encode('非常感谢您的反馈，祝您生活愉快！'), tok.pieceToId('<|end_of_sentence|>')], 'the answer, then the end of its turn')
  t.equal(pairs[1].rejected.inputIds.at(-1), tok.pieceToId('<|end_of_sentence|>'), 'a string answer to a chat prompt ends as the template ends a turn')
  // maxLength cuts the answer's end, counted
  const one = writePairs(path.join(dir, 'one.jsonl'), 1)
  const cut = await loadPreferencePairs(one, tok, { maxLength: plain.answerStart + 2 })
  t.equal(cut.truncated, 1)
  t.same(cut.pairs[0].chosen.inputIds, plain.inputIds.slice(0, plain.answerStart + 2))
  await t.rejects(loadPreferencePairs(one, tok, { maxLength: plain.answerStart }), { code: 'ERR_DATA', message: new RegExp(`one.jsonl:1: the prompt alone has ${plain.answerStart} tokens`) })
})

t.test('bad records are DataErrors naming file:line', async (t) => {
  await using model = await ErnieModel.fromPretrained(TINY)
  const cases: Array<[string, RegExp]> = [
    ['{"prompt": "p", "chosen": "a"}', /no "rejected" field/],
    ['{"prompt": "p", "chosen": "", "rejected": "b"}', /"chosen" is empty/],
    ['{"prompt": "p", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}', /"chosen" is in chat form .* "prompt" is a string/],
    ['{"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}', /chosen\[0\]\.role is 'user': an answer holds assistant messages only/],
    ['{"prompt": [{"role": "bot", "content": "p"}], "chosen": "a", "rejected": "b"}', /prompt\[0\]\.role must be/],
    ['{"prompt": 3, "chosen": "a", "rejected": "b"}', /"prompt" must be a string or a list/],
    ['{"prompt": [{"from": "gpt", "value": "p"}], "chosen": "a", "rejected": "b"}', /"chosen": encodeConversation: .*user/],
    ['["prompt"]', /expected a JSON object/],
    ['{"prompt": "p", ', /invalid JSON/],
  ]
  for (const [bad, message] of cases) {
    const file = path.join(dir, 'bad.jsonl')
    fs.writeFileSync(file, `{"prompt": "p", "chosen": "a", "rejected": "b"}\n\n${bad}\n`)
    const err = await loadPreferencePairs(file, model.tokenizer!).then(() => undefined, (e: unknown) => e)
    t.ok(err instanceof DataError, `${bad}: a DataError`)
    t.match((err as DataError).message, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3: ${message.source}`), (err as Error).message)
    t.equal((err as DataError).code, 'ERR_DATA')
  }
  fs.writeFileSync(path.join(dir, 'empty.jsonl'), '\n')
  await t.rejects(loadPreferencePairs(path.join(dir, 'empty.jsonl'), model.tokenizer!), { code: 'ERR_DATA', message: /no preference records/ })
})

t.test('dpo: LoRA on the tiny fixture, then an SFT output as --base, then full tuning', async (t) => {
  const pairs = writePairs(path.join(dir, 'pairs.jsonl'), 32)
  const out = path.join(dir, 'lora')
  const r = await runMain(['dpo', '--data', pairs, '--eval-ratio', '0.25', '--base', TINY, '--out', out, '--max-steps', '6', '--batch-size', '8', '--lr', '5e-3', '--eval-steps', '3', '--json'])
  t.equal(r.code, 0, r.stderr.slice(-500))
  const s = JSON.parse(r.stdout)
  t.same(s.data, { train: 24, eval: 8, truncated: 0 })
  t.equal(s.steps, 6)
  t.same(s.loss, { beta: 0.1, loss: 'sigmoid', labelSmoothing: 0 })
  t.ok(s.evalMetrics['rewards/margins'] > 0 && s.evalMetrics['rewards/accuracies'] > 0.5, `held out after 6 steps: margin ${s.evalMetrics['rewards/margins']}, accuracy ${s.evalMetrics['rewards/accuracies']}`)
  for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'dpo_log.json']) t.ok(fs.existsSync(path.join(out, f)), f)
  const log = JSON.parse(fs.readFileSync(path.join(out, 'dpo_log.json'), 'utf8'))
  t.equal(log.trainCurve.length, 6)
  t.same(Object.keys(log.trainCurve[0]).sort(), ['logps/chosen', 'logps/rejected', 'loss', 'rewards/accuracies', 'rewards/chosen', 'rewards/margins', 'rewards/rejected', 'step'])
  t.same(log.evalCurve.map((e: { step: number }) => e.step), [3, 6])
  t.match(r.stderr, /dpo {2}step 6\/6 {2}loss \d\.\d{4} {2}margin -?\d\.\d{4} {2}acc \d\.\d\d {2}eval loss/)

  // An SFT output (a PEFT adapter over its base): the adapter continues, and it is the reference,
  // so the first step's policy equals it: loss ln 2 exactly (a base reference would give less).
  const cont = path.join(dir, 'continued')
  const r2 = await runMain(['dpo', '--data', pairs, '--base', out, '--out', cont, '--max-steps', '2', '--batch-size', '8', '--lr', '5e-3', '--json'])
  t.equal(r2.code, 0, r2.stderr.slice(-500))
  const log2 = JSON.parse(fs.readFileSync(path.join(cont, 'dpo_log.json'), 'utf8'))
  t.match(log2.reference, /the SFT output/)
  t.ok(Math.abs(log2.trainCurve[0].loss - Math.LN2) < 1e-9, `first loss ${log2.trainCurve[0].loss} = ln 2: the reference is the SFT output`)
  t.equal(JSON.parse(fs.readFileSync(path.join(cont, 'adapter_config.json'), 'utf8')).r, 8, 'the SFT adapter (r 8) continued')

  const full = path.join(dir, 'full')
  const r3 = await runMain(['dpo', '--data', pairs, '--base', TINY, '--out', full, '--tuning', 'full', '--max-steps', '2', '--batch-size', '8', '--json'])
  t.equal(r3.code, 0, r3.stderr.slice(-500))
  for (const f of ['config.json', 'model.safetensors', 'dpo_log.json']) t.ok(fs.existsSync(path.join(full, f)), f)

  const again = await runMain(['dpo', '--data', pairs, '--base', TINY, '--out', out, '--max-steps', '1'])
  t.equal(again.code, 2)
  t.match(again.stderr, /is not empty; pass --overwrite/)
  const replaced = await runMain(['dpo', '--data', pairs, '--base', TINY, '--out', out, '--max-steps', '1', '--overwrite', '--quiet'])
  t.equal(replaced.code, 0, `--overwrite replaces the earlier output (${replaced.stderr.slice(-300)})`)
  t.equal(JSON.parse(fs.readFileSync(path.join(out, 'dpo_log.json'), 'utf8')).trainCurve.length, 1, 'its log is the new run\'s')
})

t.test('dpo: usage', async (t) => {
  const help = await runMain(['dpo', '--help'])
  t.equal(help.code, 0)
  for (const flag of ['--beta', '--loss', '--label-smoothing', '--tuning', '--eval-ratio', '--max-steps', '--gradient-accumulation-steps', '--precision', '--print-config'])
    t.match(help.stdout, flag)
  const bad = await runMain(['dpo', '--data', TRAIN, '--base', TINY, '--out', path.join(dir, 'x'), '--loss', 'hinge'])
  t.equal(bad.code, 2)
  t.match(bad.stderr, /--loss.*sigmoid, ipo/)
  const runFile = path.join(dir, 'dpo.yaml')
  fs.writeFileSync(runFile, `train_dataset_path: ${TRAIN}\nmodel_name_or_path: ${TINY}\noutput_dir: out\nbeta: 0.2\nloss: ipo\nlearning_rate: 1e-4\n`)
  const config = await runMain(['dpo', runFile, '--max-steps', '3', '--print-config'])
  t.equal(config.code, 0, config.stderr)
  for (const line of [/^beta: 0\.2 +# .*dpo\.yaml:4: beta$/m, /^loss: "ipo"/m, /^lr: 0\.0001 +# .*dpo\.yaml:6: learning_rate$/m, /^max-steps: 3 +# --max-steps$/m, /^base: /m])
    t.match(config.stdout, line)
  const badLine = path.join(dir, 'badline.jsonl')
  fs.writeFileSync(badLine, '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p"}\n')
  const r = await runMain(['dpo', '--data', badLine, '--base', TINY, '--out', path.join(dir, 'y'), '--max-steps', '1'])
  t.equal(r.code, 1)
  t.match(r.stderr, `[ERR_DATA] ${badLine}:2: no "chosen" field`)
})
