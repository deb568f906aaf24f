// The tokenizer.json path: our .model -> tokenizer.json converter, loaded through
// @huggingface/tokenizers, must reproduce the same reference goldens as the SentencePiece path;
// and a broken tokenizer.json must give a TokenizerError naming the file.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { SentencePieceModel, Tokenizer, sentencePieceToTokenizerJson } from '../../lib/index'
import { MODELS, firstIdMismatch, goldens, modelBytes } from '../helpers/tokenizer-helpers'

// As a file would hold it: JSON text, parsed again.
const converted = (name: (typeof MODELS)[number]) => JSON.parse(JSON.stringify(sentencePieceToTokenizerJson(modelBytes(name), `${name}.model`)))

t.test('converted tokenizer.json, through @huggingface/tokenizers, reproduces every golden id', async (t) => {
  for (const name of MODELS) {
    const tok = Tokenizer.fromTokenizerJson(converted(name))
    t.equal(tok.kind, 'tokenizer.json')
    const lines = goldens(name)
    t.equal(lines.length, 1218)
    t.equal(firstIdMismatch(lines, (text) => tok.encode(text)), undefined, `${name}: every line`)
  }
})

t.test('the converted file has the HF structure', async (t) => {
  const bpe = converted('ernie_style_bpe')
  t.match(bpe.model, { type: 'BPE', unk_token: '<unk>', byte_fallback: true, fuse_unk: true })
  t.equal(Object.keys(bpe.model.vocab).length, 6000)
  t.equal(bpe.model.vocab['价格'], 296)
  // The best-scoring piece (酒店, score 0) is the first merge.
  t.same(bpe.model.merges[0], ['酒', '店'])
  t.same(bpe.pre_tokenizer, { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'never', split: false })
  t.equal(bpe.normalizer, null, 'identity normalization, spaces kept')
  t.same(
    bpe.added_tokens.map((a: { id: number; content: string; special: boolean }) => [a.id, a.content, a.special]),
    [
      [0, '<unk>', true],
      [1, '<s>', true],
      [2, '</s>', true],
      [3, '<|begin_of_sentence|>', true],
      [4, '<|end_of_sentence|>', true],
      [5, '<mask:1>', true],
      ...Array.from({ length: 10 }, (_, d) => [6 + d, String(d), false]),
    ],
  )
  const uni = converted('unigram')
  t.match(uni.model, { type: 'Unigram', unk_id: 0, byte_fallback: true })
  t.equal(uni.model.vocab.length, 4000)
  t.same(uni.model.vocab[262], ['\u2581', Math.fround(-3.917593240737915)])
  t.equal(uni.normalizer.normalizers[0].type, 'Precompiled')
  const charsmap = SentencePieceModel.fromBytes(modelBytes('unigram')).proto.normalizerSpec.precompiledCharsmap
  t.same(Buffer.from(uni.normalizer.normalizers[0].precompiled_charsmap, 'base64'), Buffer.from(charsmap))
  t.match(uni.pre_tokenizer, { type: 'Metaspace', prepend_scheme: 'first' })
})

t.test('the library path uses the real charsmap and byte fallback', async (t) => {
  const tok = Tokenizer.fromTokenizerJson(converted('unigram'))
  // Reference ids: NFKC would turn U+A7F2 into 'C'; the charsmap keeps it, so it falls back to bytes.
  t.same(tok.encode('\ua7f2\u200b x'), [262, 237, 162, 181, 262, 1651])
  t.same(tok.encode('😈'), [262, 243, 162, 155, 139])
  t.same(tok.encode('e\u0301e\u0300'), [262, 198, 172, 198, 171])
})

t.test('decoding through the library agrees with the SentencePiece path on every golden line', async (t) => {
  for (const name of MODELS) {
    const viaJson = Tokenizer.fromTokenizerJson(converted(name))
    const viaModel = Tokenizer.fromSentencePiece(modelBytes(name))
    let firstBad = -1
    for (const [i, g] of goldens(name).entries()) {
      if (firstBad < 0 && viaJson.decode(g.ids) !== viaModel.decode(g.ids)) firstBad = i
    }
    t.equal(firstBad, -1, name)
  }
  // Identity normalization: decoding gives the text back, U+FEFF included.
  const tok = Tokenizer.fromTokenizerJson(converted('ernie_style_bpe'))
  for (const text of ['q\ufeff丸', ' 价格 299 元, very good!!', '\t\n😀😃']) t.equal(tok.decode(tok.encode(text)), text)
})

t.test('fromDirectory prefers tokenizer.json, and can be told to use tokenizer.model', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ernie-tok-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'tokenizer.model'), modelBytes('ernie_style_bpe'))
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(converted('ernie_style_bpe')))
  const json = await Tokenizer.fromDirectory(dir)
  const sp = await Tokenizer.fromDirectory(dir, { prefer: 'tokenizer.model' })
  t.equal(json.kind, 'tokenizer.json')
  t.equal(sp.kind, 'sentencepiece')
  const g = goldens('ernie_style_bpe')[7]
  t.same(json.encode(g.text), g.ids)
  t.same(sp.encode(g.text), g.ids)
})

t.test('an invalid tokenizer.json gives a TokenizerError naming the file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ernie-tok-bad-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'tokenizer.json')
  const load = async (content: string) => {
    writeFileSync(file, content)
    return Tokenizer.fromDirectory(dir)
  }
  const base = converted('ernie_style_bpe')
  const fileRe = (rest: string) => new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: ${rest}`)
  await t.rejects(load('{"model": '), { name: 'TokenizerError', code: 'ERR_TOKENIZER_JSON', message: fileRe('invalid JSON') })
  await t.rejects(load('[]'), { code: 'ERR_TOKENIZER_JSON', message: fileRe('not a JSON object') })
  await t.rejects(load(JSON.stringify({ ...base, model: undefined })), { code: 'ERR_TOKENIZER_JSON', message: fileRe('missing the "model" object') })
  await t.rejects(load(JSON.stringify({ ...base, model: { ...base.model, type: 'Nonsense' } })), { code: 'ERR_TOKENIZER_JSON', message: /model type "Nonsense" is not supported/ })
  await t.rejects(load(JSON.stringify({ ...base, normalizer: { type: 'Nonsense' } })), { code: 'ERR_TOKENIZER_JSON', message: /cannot build it: Unknown Normalizer type: Nonsense/ })
  await t.rejects(load(JSON.stringify({ ...base, added_tokens: {} })), { code: 'ERR_TOKENIZER_JSON', message: /"added_tokens" must be an array/ })
  await t.rejects(load(JSON.stringify({ ...base, added_tokens: [{ id: -1, content: 'x' }] })), { code: 'ERR_TOKENIZER_JSON', message: /added_tokens\[0\]/ })
  await t.rejects(load(JSON.stringify({ ...base, decoder: 'yes' })), { code: 'ERR_TOKENIZER_JSON', message: /"decoder" must be an object or null/ })
  const uni = converted('unigram')
  uni.normalizer.normalizers[0].precompiled_charsmap = Buffer.from('not a charsmap').toString('base64')
  await t.rejects(load(JSON.stringify(uni)), { code: 'ERR_TOKENIZER_JSON', message: /precompiled_charsmap: trie size/ })
  const noBytes = converted('unigram')
  noBytes.model.vocab[100][0] = 'replaced'
  await t.rejects(load(JSON.stringify(noBytes)), { code: 'ERR_TOKENIZER_JSON', message: /byte piece|<0x61> is missing/ })
  await t.rejects(Tokenizer.fromDirectory(join(dir, 'missing')), { code: 'ERR_TOKENIZER_NOT_FOUND', message: /is not a directory/ })
  rmSync(file)
  await t.rejects(Tokenizer.fromDirectory(dir), { code: 'ERR_TOKENIZER_NOT_FOUND', message: /has neither tokenizer.json nor tokenizer.model/ })
  writeFileSync(join(dir, 'tokenizer.model'), modelBytes('ernie_style_bpe'))
  writeFileSync(join(dir, 'tokenizer_config.json'), '{"bos_token": 5')
  await t.rejects(Tokenizer.fromDirectory(dir), { code: 'ERR_TOKENIZER_JSON', message: /tokenizer_config\.json: invalid JSON/ })
  writeFileSync(join(dir, 'tokenizer_config.json'), '{"bos_token": 5}')
  await t.rejects(Tokenizer.fromDirectory(dir), { code: 'ERR_TOKENIZER_JSON', message: /tokenizer_config\.json: "bos_token" must be a string/ })
})

t.test('a byte-level BPE tokenizer.json (Qwen-style) with ChatML added tokens', async (t) => {
  // A tiny GPT-2/Qwen-style file: byte-level pre-tokenizer and decoder, special added tokens.
  const vocab: Record<string, number> = { h: 0, i: 1, hi: 2, 'Ġ': 3, 'Ġhi': 4, '!': 5, 'Ċ': 6, a: 7, s: 8, t: 9, n: 10, r: 11, e: 12, u: 13, '<': 14, '|': 15, '>': 16, _: 17, m: 18 }
  const json = {
    version: '1.0',
    added_tokens: [
      { id: 19, content: '<|endoftext|>', special: true, lstrip: false, rstrip: false, normalized: false, single_word: false },
      { id: 20, content: '<|im_start|>', special: true, lstrip: false, rstrip: false, normalized: false, single_word: false },
      { id: 21, content: '<|im_end|>', special: true, lstrip: false, rstrip: false, normalized: false, single_word: false },
    ],
    normalizer: { type: 'NFC' },
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges: [['h', 'i'], ['Ġ', 'hi']] },
  }
  const tok = Tokenizer.fromTokenizerJson(json, { config: { eos_token: '<|im_end|>', pad_token: '<|endoftext|>' } })
  t.same(tok.encode('hi hi!'), [2, 4, 5])
  t.same(tok.encode('hi?'), [2], 'a byte the vocabulary lacks is dropped when there is no unk token')
  const noUnk = Tokenizer.fromTokenizerJson({ model: { type: 'Unigram', unk_id: null, vocab: [['a', -1], ['b', -2]] } })
  t.same(noUnk.encode('ab?a'), [0, 1, 0], 'unigram: so is a character, when there is no unk token')
  t.equal(tok.vocabSize, 22)
  t.equal(tok.eosTokenId, 21)
  t.equal(tok.padTokenId, 19)
  t.equal(tok.chatTemplate?.builtin, 'chatml', 'its special tokens imply ChatML')
  t.same(tok.encode('<|im_start|>hi', { parseSpecial: true }), [20, 2])
  t.same(tok.encode('<|im_start|>hi'), [14, 15, 1, 18, 17, 8, 9, 7, 11, 9, 15, 16, 2], 'without parseSpecial the markers are text')
  t.same(tok.encode('hi', { addSpecialTokens: true }), [2], 'a ByteLevel post-processor adds nothing')
  const ids = tok.encodeChat([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true })
  t.same(ids, [20, 13, 8, 12, 11, 6, 2, 21, 6, 20, 7, 8, 8, 1, 8, 9, 7, 10, 9, 6])
  t.equal(tok.decode(ids), '<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n')
  t.equal(tok.decode(ids, { skipSpecialTokens: true }), 'user\nhi\nassistant\n')
})
