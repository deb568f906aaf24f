// chat(): the end-of-turn token read from the chat template (ERNIE-4.5's and ChatML's), and a
// conversation answered until it: the fixture's embedding row of <|end_of_sentence|> (its head
// row too: the head is tied) is made a scaled copy of a token the model generates, so that the
// end of turn comes mid-answer; the
// answer is checked against a greedy decode by full forwards that stops at that id.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { ErnieModel, Tokenizer, type ChatMessage } from '../../lib/index'
import { endOfTurnIds } from '../../lib/model/generate'
import { tempDir } from '../helpers/classifier-helpers'
import { fromBf16Bits, toBf16Bits } from '../helpers/helpers'
import { tinyModel } from '../helpers/trainer-helpers'

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'ernie-tiny')

t.test('the end-of-turn token comes from the template: ERNIE-4.5 and ChatML', async (t) => {
  const ernie = await Tokenizer.fromDirectory(FIXTURE)
  t.same(endOfTurnIds(ernie), [ernie.pieceToId('<|end_of_sentence|>')], '<|end_of_sentence|>')
  // the same vocabulary with ChatML's markers added as special tokens
  const dir = tempDir(t, 'ernie-chatml-')
  fs.copyFileSync(path.join(FIXTURE, 'tokenizer.model'), path.join(dir, 'tokenizer.model'))
  const config = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'tokenizer_config.json'), 'utf8'))
  config.added_tokens_decoder = {
    ...config.added_tokens_decoder,
    '6000': { content: '<|im_start|>', special: true },
    '6001': { content: '<|im_end|>', special: true },
  }
  // (no generation prompt: the end of turn is found without one)
  config.chat_template = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config))
  const chatml = await Tokenizer.fromDirectory(dir)
  t.same(endOfTurnIds(chatml), [6001], '<|im_end|>')
})

/** Greedy by full forwards (argmax over the tokenizer's vocabulary) until `end` or `steps` tokens. */
async function greedyUntil(model: ErnieModel, prompt: number[], end: number, steps: number): Promise<{ tokens: number[]; ended: boolean }> {
  const seq = [...prompt]
  const V = model.config.vocab_size
  for (let i = 0; i < steps; i++) {
    const { logits } = await model.forward({ inputIds: [seq] }, { output: ['logits'] })
    const last = logits!.subarray((seq.length - 1) * V, seq.length * V)
    let best = 0
    for (let j = 1; j < model.tokenizer!.vocabSize; j++) if (last[j] > last[best]) best = j
    if (best === end) return { tokens: seq.slice(prompt.length), ended: true }
    seq.push(best)
  }
  return { tokens: seq.slice(prompt.length), ended: false }
}

/** The fixture with row `row` of the (tied) embedding replaced by `scale` times row `from`, in bf16. */
function patchedFixture(dir: string, row: number, from: number, scale: number): void {
  for (const f of ['config.json', 'tokenizer.model', 'tokenizer_config.json']) fs.copyFileSync(path.join(FIXTURE, f), path.join(dir, f))
  const buf = fs.readFileSync(path.join(FIXTURE, 'model.safetensors'))
  const n = Number(buf.readBigUInt64LE(0))
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'))
  const embed = header['model.embed_tokens.weight'] as { dtype: string; shape: [number, number]; data_offsets: [number, number] }
  if (embed.dtype !== 'BF16') throw new Error(`expected a BF16 embedding, got ${embed.dtype}`)
  const H = embed.shape[1]
  const at = (r: number, j: number) => 8 + n + embed.data_offsets[0] + 2 * (r * H + j)
  for (let j = 0; j < H; j++) buf.writeUInt16LE(toBf16Bits(scale * fromBf16Bits(buf.readUInt16LE(at(from, j)))), at(row, j))
  fs.writeFileSync(path.join(dir, 'model.safetensors'), buf)
}

t.test('chat() answers until the end-of-turn token, as greedy full forwards do', async (t) => {
  const messages: ChatMessage[] = [
    { role: 'system', content: '你是酒店评论助手' },
    { role: 'user', content: '这家酒店的房间怎么样？' },
  ]
  const original = await ErnieModel.fromPretrained(FIXTURE)
  const tok = original.tokenizer!
  const eot = tok.pieceToId('<|end_of_sentence|>')!
  const prompt = tok.encodeChat(messages, { addGenerationPrompt: true })
  const unstopped = await original.generate(prompt, { maxNewTokens: 24, eosTokenIds: [] })
  t.notOk(unstopped.tokens.includes(eot), 'the fixture never ends its turn by itself here')
  await original.dispose()
  // the end of turn made to outscore, once it comes, a token the answer reaches a few steps in:
  // the first such token and scale with which the reference ends the turn mid-answer
  let model: ErnieModel | undefined
  let ref = { tokens: [] as number[], ended: false }
  const candidates = unstopped.tokens.flatMap((id, i) => (i >= 2 && !unstopped.tokens.slice(0, i).includes(id) ? [id] : []))
  search: for (const id of candidates.slice(0, 4))
    for (const scale of [1.02, 1.05, 1.125]) {
      const dir = tempDir(t, 'ernie-eot-')
      patchedFixture(dir, eot, id, scale)
      model = await ErnieModel.fromPretrained(dir)
      ref = await greedyUntil(model, prompt, eot, 24)
      if (ref.ended && ref.tokens.length >= 2) break search
      await model.dispose()
    }
  if (!t.ok(ref.ended && ref.tokens.length >= 2, `the reference ends its turn after ${ref.tokens.length} tokens`) || !model) return

  const answer = await model.chat(messages, { maxNewTokens: 24 })
  t.equal(answer.finishReason, 'eos')
  t.same(answer.tokens, ref.tokens, "the reference's tokens, without the end of turn")
  t.same(answer.message, { role: 'assistant', content: tok.decode(ref.tokens, { skipSpecialTokens: true }) })
  const asIds = await model.generate(prompt, { maxNewTokens: ref.tokens.length + 3, eosTokenIds: [] })
  t.same(asIds.tokens.slice(0, ref.tokens.length + 1), [...ref.tokens, eot], 'the same prompt as bare ids runs past it')
  t.equal((await model.generate(messages, { maxNewTokens: 24 })).finishReason, 'eos', 'generate(messages) ends there too')
  const chunks: string[] = []
  let finish: string | undefined
  for await (const c of model.chatStream(messages, { maxNewTokens: 24 })) chunks.push(c.text), (finish = c.finishReason ?? finish)
  t.same([chunks.join(''), finish], [answer.message.content, 'eos'], 'chatStream joins to the same answer')

  await t.rejects(model.chat([], {}), { name: 'TypeError', message: /non-empty array/ })
  await t.rejects(model.chat([...messages, { role: 'assistant', content: '好' }]), { name: 'RangeError', message: /last message is the assistant's/ })
  await t.rejects(model.chat([{ role: 'robot' as 'user', content: 'x' }]), { code: 'ERR_TOKENIZER_INPUT', message: /role/ })
  t.throws(() => model.chatStream([{ role: 'user', content: 'x' }], { topK: -2 }), { name: 'RangeError', message: /^chat: topK/ })
  await model.dispose()
  const bare = tinyModel()
  await t.rejects(bare.chat([{ role: 'user', content: 'x' }]), { code: 'ERR_NO_TOKENIZER' })
  await bare.dispose()
})
