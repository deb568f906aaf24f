// ChatML on a Base vocabulary: the tokenizer gets <|im_start|> / <|im_end|> as new special tokens
// after its vocabulary, and the model's embedding (and an untied head) grows by rows set to the mean
// of the old ones; on old tokens the grown model computes exactly what the checkpoint did.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as path from 'node:path'
import t from 'tap'
import { ErnieModel, Tokenizer, type ChatMessage } from '../../lib/index'
import type { WeightArray } from '../../lib/model/weights'
import { fromBf16Bits, toBf16Bits } from '../helpers/helpers'

const FIXTURES = path.join(__dirname, '..', 'fixtures')
const ERNIE_TINY = path.join(FIXTURES, 'ernie-tiny')
const MARKERS = ['<|im_start|>', '<|im_end|>']
// The reference SentencePiece's ids of the text between the markers (ernie-tiny's tokenizer.model).
const NI_HAO = [2444, 2293]
const IM_START_AS_TEXT = [3487, 5312, 2509, 2870, 3508, 547, 2760, 2539, 5312, 3402]

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'resize-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('withSpecialTokens: new ids after the vocabulary, atomic, decoded, saved and reloaded', async (t) => {
  for (const prefer of ['tokenizer.model', 'tokenizer.json'] as const) {
    const base = await Tokenizer.fromDirectory(ERNIE_TINY, { prefer })
    t.equal(base.vocabSize, 6000)
    t.equal(base.pieceToId('<|im_start|>'), undefined, 'the Base vocabulary has no ChatML markers')
    const tok = base.withSpecialTokens([...MARKERS, '<|begin_of_sentence|>'])
    t.same([tok.pieceToId('<|im_start|>'), tok.pieceToId('<|im_end|>'), tok.pieceToId('<|begin_of_sentence|>')], [6000, 6001, 3], `${prefer}: new ids follow the vocabulary; a token already there keeps its id`)
    t.equal(tok.vocabSize, 6002)
    const ids = tok.encode('<|im_start|>user\n你好<|im_end|>\n', { parseSpecial: true })
    t.same(ids, [6000, 2855, 2575, 1134, 26, ...NI_HAO, 6001, 26], 'each marker is one id')
    t.equal(tok.decode(ids), '<|im_start|>user\n你好<|im_end|>\n')
    t.equal(tok.decode(ids, { skipSpecialTokens: true }), 'user\n你好\n')
    t.same(tok.encode('<|im_start|>'), IM_START_AS_TEXT, 'without parseSpecial a marker is text')
    t.equal(tok.chatTemplate?.builtin, 'chatml', 'its markers now imply ChatML')
    const messages: ChatMessage[] = [{ role: 'user', content: '你好' }]
    t.same(tok.encodeChat(messages), ids)
    t.throws(() => base.encodeChat(messages, { template: 'chatml' }), { code: 'ERR_TOKENIZER_INPUT', message: /needs <\|im_start\|>/ }, 'the original is unchanged')
    t.same(tok.withSpecialTokens(MARKERS).vocabSize, 6002, 'adding them again adds nothing')

    const dir = tempDir(t)
    await tok.save(dir)
    const saved = JSON.parse(readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'))
    t.same(saved.additional_special_tokens, [...MARKERS, '<|begin_of_sentence|>'])
    t.match(saved.added_tokens_decoder, { 6000: { content: '<|im_start|>', special: true }, 6001: { content: '<|im_end|>', special: true } })
    const again = await Tokenizer.fromDirectory(dir, { prefer })
    t.same(again.encode('<|im_start|>user\n你好<|im_end|>\n', { parseSpecial: true }), ids, 'the saved tokenizer gives the same ids')
  }
  t.throws(() => Tokenizer.fromSentencePiece(new Uint8Array(readFileSync(path.join(ERNIE_TINY, 'tokenizer.model')))).withSpecialTokens(['']), { code: 'ERR_TOKENIZER_INPUT' })
  await t.rejects(Tokenizer.fromSentencePiece(new Uint8Array(readFileSync(path.join(ERNIE_TINY, 'tokenizer.model')))).save(tempDir(t)), { code: 'ERR_TOKENIZER_NOT_FOUND' })
})

/** The float64 mean of the first `rows` token vectors, rounded as the loader stores it (f32, then bf16 for bf16 weights). */
function meanRow(data: WeightArray, rows: number, hidden: number, tokenAxis: 0 | 1, ld: number): number[] {
  const value = (i: number) => (data instanceof Float32Array ? data[i] : fromBf16Bits(data[i]))
  const out: number[] = []
  for (let h = 0; h < hidden; h++) {
    let sum = 0
    for (let r = 0; r < rows; r++) sum += value(tokenAxis === 0 ? r * ld + h : h * ld + r)
    const f = Math.fround(sum / rows)
    out.push(data instanceof Float32Array ? f : fromBf16Bits(toBf16Bits(f)))
  }
  return out
}

const tokenVector = (data: WeightArray, token: number, hidden: number, tokenAxis: 0 | 1, ld: number) =>
  Array.from({ length: hidden }, (_, h) => {
    const i = tokenAxis === 0 ? token * ld + h : h * ld + token
    return data instanceof Float32Array ? data[i] : fromBf16Bits(data[i])
  })

t.test('resizeTokenEmbeddings: new rows are the mean, old tokens compute exactly as before (tied head)', async (t) => {
  const old = await ErnieModel.fromPretrained(ERNIE_TINY)
  const grown = await ErnieModel.fromPretrained(ERNIE_TINY, { resizeTokenEmbeddings: 6020 })
  t.teardown(() => Promise.all([old.dispose(), grown.dispose()]))
  const V = old.config.vocab_size, H = old.config.hidden_size
  t.equal(V, 6016)
  t.equal(grown.config.vocab_size, 6020)
  const before = old.weights.embed.data, after = grown.weights.embed.data
  t.equal(after.length, 6020 * H)
  t.ok(after.subarray(0, V * H).every((x, i) => x === before[i]), 'the old rows are copied unchanged')
  const mean = meanRow(before, V, H, 0, H)
  for (let k = V; k < 6020; k++) t.same(tokenVector(after, k, H, 0, H), mean, `row ${k} is the old rows' mean`)
  t.equal(grown.weights.lmHead.data, after, 'the tied head is the grown embedding')

  const input = { inputIds: [[3, 2444, 2293, 4, 296, 5, 0, 6015]] }
  for (const precision of ['fp32', 'bf16'] as const) {
    const a = await old.forward(input, { output: ['hidden', 'logits'], precision })
    const b = await grown.forward(input, { output: ['hidden', 'logits'], precision })
    t.same(b.hidden, a.hidden, `${precision}: hidden states identical`)
    let same = true
    let within = true
    for (let pos = 0; pos < 8; pos++) {
      for (let v = 0; v < V; v++) same &&= b.logits![pos * 6020 + v] === a.logits![pos * V + v]
      // the new tokens' logits: hidden . mean, each product rounded at most as bf16 operands round
      const h = Array.from(b.hidden!.subarray(pos * H, (pos + 1) * H))
      const exact = h.reduce((s, x, i) => s + x * mean[i], 0)
      const scale = h.reduce((s, x, i) => s + Math.abs(x * mean[i]), 0)
      for (let k = V; k < 6020; k++) within &&= Math.abs(b.logits![pos * 6020 + k] - exact) <= 2 ** -7 * scale + 1e-6
    }
    t.ok(same, `${precision}: the old tokens' logits identical`)
    t.ok(within, `${precision}: the new tokens' logits are hidden . mean`)
  }
  t.throws(() => ErnieModel.random(old.config, { resizeTokenEmbeddings: 6016 }), { name: 'RangeError', message: /above the checkpoint's vocab_size 6016/ })
})

t.test('a tokenizer given to fromPretrained with ids past the rows grows the vocabulary to its size', async (t) => {
  const tok = (await Tokenizer.fromDirectory(ERNIE_TINY)).withSpecialTokens(Array.from({ length: 17 }, (_, i) => `<|marker_${i}|>`))
  t.equal(tok.pieceToId('<|marker_16|>'), 6016, 'the last marker is one past the checkpoint\'s 6016 rows')
  const grown = await ErnieModel.fromPretrained(ERNIE_TINY, { tokenizer: tok })
  t.teardown(() => grown.dispose())
  t.equal(grown.tokenizer, tok, 'the tokenizer given is the model\'s')
  t.equal(grown.config.vocab_size, 6017)
  const fits = await ErnieModel.fromPretrained(ERNIE_TINY, { tokenizer: (await Tokenizer.fromDirectory(ERNIE_TINY)).withSpecialTokens(['<|a|>']) })
  t.teardown(() => fits.dispose())
  t.equal(fits.config.vocab_size, 6016, 'ids within the rows (padding rows): no growth')
})

t.test('resizeTokenEmbeddings grows an untied head too, and the grown model saves and reloads', async (t) => {
  const config = { ...JSON.parse(readFileSync(path.join(ERNIE_TINY, 'config.json'), 'utf8')), tie_word_embeddings: false, vocab_size: 6000 }
  const old = ErnieModel.random(config, { seed: 7 })
  const grown = ErnieModel.random(config, { seed: 7, resizeTokenEmbeddings: 6002 })
  t.teardown(() => Promise.all([old.dispose(), grown.dispose()]))
  const H = old.config.hidden_size
  t.not(grown.weights.lmHead.data, grown.weights.embed.data, 'untied')
  const head = old.weights.lmHead.data
  t.equal(grown.weights.lmHead.data.length, 6002 * H)
  t.ok(grown.weights.lmHead.data.subarray(0, 6000 * H).every((x, i) => x === head[i]))
  t.same(tokenVector(grown.weights.lmHead.data, 6001, H, 0, H), meanRow(head, 6000, H, 0, H), "the head's new row is its own rows' mean")
  const input = { inputIds: [[3, 2444, 2293, 4, 6001, 6000]] }
  const oldInput = { inputIds: [[3, 2444, 2293, 4]] }
  const a = await old.forward(oldInput, { output: ['logits'], precision: 'fp32' })
  const b = await grown.forward(input, { output: ['logits'], precision: 'fp32' })
  let same = true
  for (let pos = 0; pos < 4; pos++) for (let v = 0; v < 6000; v++) same &&= b.logits![pos * 6002 + v] === a.logits![pos * 6000 + v]
  t.ok(same, 'the old tokens (before the new ones, causal) compute exactly as before')

  const dir = tempDir(t)
  await grown.save(dir)
  const reloaded = await ErnieModel.fromPretrained(dir, { tokenizer: false })
  t.teardown(() => reloaded.dispose())
  t.equal(reloaded.config.vocab_size, 6002)
  const c = await reloaded.forward(input, { output: ['logits'], precision: 'fp32' })
  t.same(c.logits, b.logits, 'saved with the grown rows')
})
