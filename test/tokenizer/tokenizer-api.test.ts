// The Tokenizer users see, on the ernie-tiny tokenizer (tokenizer.model + tokenizer_config.json),
// through both readers: the SentencePiece path and the converted tokenizer.json path must behave
// the same. Expected ids are the reference library's encodings of the same text.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { Tokenizer, renderChatTemplate, sentencePieceToTokenizerJson, type ChatMessage } from '../../lib/index'
import { modelBytes, readFixture } from '../helpers/tokenizer-helpers'

const ERNIE_CONFIG = JSON.parse(Buffer.from(readFixture('ernie-tiny.tokenizer_config.json')).toString('utf8'))

// Reference encodings (ernie_style_bpe.model).
const NI_HAO = [2444, 2293] // 你好
const HEN_HAO = [297] // 很好
const REVIEW = '这个宾馆比较陈旧了，特价的房间也很一般。总体来说一般'
const REVIEW_IDS = [290, 334, 282, 569, 2285, 2280, 1867, 422, 381, 308, 2282, 1267, 308]
const IM_START_AS_TEXT = [3487, 5312, 2509, 2870, 3508, 547, 2760, 2539, 5312, 3402]

/** A model directory with the ernie-tiny tokenizer, as tokenizer.model or as tokenizer.json. */
function ernieDir(t: { teardown(fn: () => void): void }, kind: 'sentencepiece' | 'tokenizer.json', config: Record<string, unknown> = ERNIE_CONFIG): string {
  const dir = mkdtempSync(join(tmpdir(), 'ernie-tok-api-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  if (kind === 'sentencepiece') writeFileSync(join(dir, 'tokenizer.model'), modelBytes('ernie_style_bpe'))
  else writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(sentencePieceToTokenizerJson(modelBytes('ernie_style_bpe'))))
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config))
  return dir
}

const KINDS = ['sentencepiece', 'tokenizer.json'] as const

t.test('special tokens from tokenizer_config.json', async (t) => {
  for (const kind of KINDS) {
    const tok = await Tokenizer.fromDirectory(ernieDir(t, kind))
    t.equal(tok.kind, kind)
    t.equal(tok.vocabSize, 6000, `${kind}: the model's pieces; cls/sep are its control pieces`)
    t.same([tok.unkTokenId, tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.clsTokenId, tok.sepTokenId], [0, 1, 2, 0, 3, 4])
    t.equal(tok.pieceToId('<|begin_of_sentence|>'), 3)
    t.equal(tok.pieceToId('<|end_of_sentence|>'), 4)
    t.equal(tok.pieceToId('价格'), 296)
    t.equal(tok.pieceToId('no such piece'), undefined)
    t.equal(tok.idToPiece(296), '价格')
    t.equal(tok.idToPiece(6000), undefined)
    t.same(tok.specialToken('cls'), { id: 3, content: '<|begin_of_sentence|>', special: true, lstrip: false, rstrip: false })
    t.equal(tok.modelMaxLength, 4096)
    t.equal(tok.chatTemplate?.builtin, 'ernie', 'no chat_template shipped: the built-in its cls/sep tokens imply')
  }
})

t.test('encode: parseSpecial and addSpecialTokens', async (t) => {
  for (const kind of KINDS) {
    const tok = await Tokenizer.fromDirectory(ernieDir(t, kind))
    t.same(tok.encode(REVIEW), REVIEW_IDS, kind)
    t.same(tok.encode('<|begin_of_sentence|>你好<|end_of_sentence|>', { parseSpecial: true }), [3, ...NI_HAO, 4])
    t.same(tok.encode('<s>你好</s><mask:1>', { parseSpecial: true }), [1, ...NI_HAO, 2, 5], 'control pieces are special tokens')
    t.same(tok.encode('<s>'), [3487, 2575, 3402], 'without parseSpecial they are plain text')
    t.same(tok.encode('你好', { addSpecialTokens: true }), NI_HAO, 'this config adds no BOS/EOS')
    const withBos = await Tokenizer.fromDirectory(ernieDir(t, kind, { ...ERNIE_CONFIG, add_bos_token: true, add_eos_token: true }))
    t.same(withBos.encode('你好', { addSpecialTokens: true }), [1, ...NI_HAO, 2])
    t.same(withBos.encode(''), [])
    t.same(withBos.encode('', { addSpecialTokens: true }), [1, 2])
  }
})

t.test('added special tokens past the vocabulary get new ids', async (t) => {
  for (const kind of KINDS) {
    const config = { ...ERNIE_CONFIG, additional_special_tokens: ['<|im_start|>', { content: '<|im_end|>', rstrip: true }] }
    const tok = await Tokenizer.fromDirectory(ernieDir(t, kind, config))
    t.equal(tok.vocabSize, 6002, kind)
    t.equal(tok.pieceToId('<|im_start|>'), 6000)
    t.equal(tok.pieceToId('<|im_end|>'), 6001)
    t.same(tok.encode('<|im_start|>很好<|im_end|>  你好', { parseSpecial: true }), [6000, ...HEN_HAO, 6001, ...NI_HAO], 'rstrip eats the spaces after')
    t.same(tok.encode('<|im_start|>'), IM_START_AS_TEXT)
    t.equal(tok.decode([6000, ...HEN_HAO, 6001]), '<|im_start|>很好<|im_end|>')
    t.equal(tok.decode([6000, ...HEN_HAO, 6001], { skipSpecialTokens: true }), '很好')
    t.same(tok.addedTokens.filter((a) => a.id >= 6000).map((a) => a.content), ['<|im_start|>', '<|im_end|>'])
    const byDecoder = { ...ERNIE_CONFIG, added_tokens_decoder: { '6000': { content: '<think>', special: false } } }
    const tok2 = await Tokenizer.fromDirectory(ernieDir(t, 'sentencepiece', byDecoder))
    t.same(tok2.encode('很好<think>你好'), [...HEN_HAO, 6000, ...NI_HAO], 'non-special added tokens are always matched')
  }
})

t.test('special_tokens_map.json and added_tokens.json', async (t) => {
  for (const kind of KINDS) {
    const dir = ernieDir(t, kind)
    writeFileSync(join(dir, 'special_tokens_map.json'), JSON.stringify({ pad_token: { content: '</s>', lstrip: false }, additional_special_tokens: ['<mask:1>'] }))
    writeFileSync(join(dir, 'added_tokens.json'), JSON.stringify({ '<extra>': 6000 }))
    const tok = await Tokenizer.fromDirectory(dir)
    t.equal(tok.padTokenId, 0, `${kind}: tokenizer_config.json's pad_token wins over special_tokens_map.json`)
    t.equal(tok.vocabSize, 6001)
    t.same(tok.encode('很好<extra>'), [...HEN_HAO, 6000], 'added tokens are matched without parseSpecial')
    t.same(tok.encode('<mask:1>', { parseSpecial: true }), [5])
    const { pad_token: _unused, ...noPad } = ERNIE_CONFIG
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(noPad))
    t.equal((await Tokenizer.fromDirectory(dir)).padTokenId, 2, 'pad_token from special_tokens_map.json')
  }
})

t.test('decode', async (t) => {
  for (const kind of KINDS) {
    const tok = await Tokenizer.fromDirectory(ernieDir(t, kind))
    t.equal(tok.decode(REVIEW_IDS), REVIEW, kind)
    t.equal(tok.decode([3, ...NI_HAO, 4]), '<|begin_of_sentence|>你好<|end_of_sentence|>')
    t.equal(tok.decode([3, ...NI_HAO, 4], { skipSpecialTokens: true }), '你好')
    t.equal(tok.decode([256, 175, 168, 152]), '😈')
    t.equal(tok.decode([]), '')
    t.throws(() => tok.decode([6000]), { code: 'ERR_TOKENIZER_INPUT', message: /ids\[0\] = 6000 is not a token id \(0\.\.5999\)/ })
    t.throws(() => tok.decode([1, -1]), { code: 'ERR_TOKENIZER_INPUT', message: /ids\[1\]/ })
    t.throws(() => tok.decode('12' as unknown as number[]), { code: 'ERR_TOKENIZER_INPUT' })
  }
})

t.test('encodeBatch: padding, truncation, attention masks', async (t) => {
  for (const kind of KINDS) {
    const tok = await Tokenizer.fromDirectory(ernieDir(t, kind, { ...ERNIE_CONFIG, add_bos_token: true, add_eos_token: true }))
    const texts = ['你好', REVIEW, '']
    t.same(tok.encodeBatch(texts), { inputIds: [NI_HAO, REVIEW_IDS, []], attentionMask: [[1, 1], Array(13).fill(1), []] }, `${kind}: no padding`)
    const longest = tok.encodeBatch(texts, { padding: 'longest' })
    t.same(longest.inputIds, [[...NI_HAO, ...Array(11).fill(0)], REVIEW_IDS, Array(13).fill(0)], 'right-padded with the pad id')
    t.same(longest.attentionMask, [[1, 1, ...Array(11).fill(0)], Array(13).fill(1), Array(13).fill(0)])
    const fixed = tok.encodeBatch(texts, { maxLength: 6, padding: 'max_length', addSpecialTokens: true })
    t.same(fixed.inputIds, [[1, ...NI_HAO, 2, 0, 0], [1, ...REVIEW_IDS.slice(0, 4), 2], [1, 2, 0, 0, 0, 0]])
    t.same(fixed.attentionMask, [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    // head_tail keeps a quarter of the budget from the start and the rest from the end.
    const ht = tok.encodeBatch([REVIEW], { maxLength: 10, truncation: 'head_tail', addSpecialTokens: true })
    t.same(ht.inputIds, [[1, ...REVIEW_IDS.slice(0, 2), ...REVIEW_IDS.slice(-6), 2]])
    t.same(tok.encodeBatch([REVIEW], { maxLength: 5, truncation: 'head_tail' }).inputIds, [[...REVIEW_IDS.slice(0, 2), ...REVIEW_IDS.slice(-3)]])
    t.same(tok.encodeBatch([REVIEW], { maxLength: 5, truncation: false, padding: 'max_length' }).inputIds, [REVIEW_IDS], 'no truncation: longer rows stay')
    t.same(tok.encodeBatch(['<|begin_of_sentence|>你好'], { parseSpecial: true }).inputIds, [[3, ...NI_HAO]])
    t.throws(() => tok.encodeBatch(texts, { padding: 'max_length' }), { code: 'ERR_TOKENIZER_INPUT', message: /needs maxLength/ })
    t.throws(() => tok.encodeBatch(texts, { maxLength: 2, addSpecialTokens: true }), { code: 'ERR_TOKENIZER_INPUT', message: /leaves no room/ })
    t.throws(() => tok.encodeBatch(texts, { maxLength: 0 }), { code: 'ERR_TOKENIZER_INPUT', message: /maxLength must be a positive integer/ })
    t.throws(() => tok.encodeBatch(texts, { padding: 'left' as 'longest' }), { code: 'ERR_TOKENIZER_INPUT', message: /padding must be/ })
    t.throws(() => tok.encodeBatch(texts, { truncation: 'tail' as 'head_tail', maxLength: 4 }), { code: 'ERR_TOKENIZER_INPUT', message: /truncation must be/ })
    t.throws(() => tok.encodeBatch(['ok', 'x\udfff']), { code: 'ERR_TOKENIZER_INPUT', message: /texts\[1\] contains a lone UTF-16 surrogate U\+DFFF at index 1/ })
  }
  const noPad = await Tokenizer.fromDirectory(ernieDir(t, 'sentencepiece', { ...ERNIE_CONFIG, pad_token: null }))
  t.equal(noPad.padTokenId, undefined, 'pad_token: null removes the pad token (the model has none)')
  t.throws(() => noPad.encodeBatch(['你好', REVIEW], { padding: 'longest' }), { code: 'ERR_TOKENIZER_INPUT', message: /needs a pad token/ })
  t.same(noPad.encodeBatch(['很好', '很好'], { padding: 'longest' }).inputIds, [HEN_HAO, HEN_HAO], 'nothing to pad, no pad token needed')
})

t.test('chat templates', async (t) => {
  const messages: ChatMessage[] = [
    { role: 'system', content: 'S' },
    { role: 'user', content: '你好' },
    { role: 'assistant', content: '好的' },
    { role: 'user', content: '谢谢' },
  ]
  const ernie = '<|begin_of_sentence|>S\nUser: 你好\nAssistant: 好的<|end_of_sentence|>User: 谢谢\n'
  t.equal(renderChatTemplate(messages, 'ernie'), ernie, 'the ERNIE template defaults cls_token / sep_token itself')
  t.equal(renderChatTemplate(messages, 'ernie', true), `${ernie}Assistant: `)
  t.equal(
    renderChatTemplate(messages, 'chatml', true),
    '<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n好的<|im_end|>\n<|im_start|>user\n谢谢<|im_end|>\n<|im_start|>assistant\n',
  )
  // Reference encodings of the text between the special tokens.
  const first = [2618, 26, 2842, 2575, 1134, 2967, 2289, 2444, 2293, 26, 2679, 2575, 2575, 578, 2644, 2539, 2967, 2289, 396]
  const second = [2842, 2575, 1134, 2967, 2289, 1123, 26, 2679, 2575, 2575, 578, 2644, 2539, 2967, 2289]
  for (const kind of KINDS) {
    const tok = await Tokenizer.fromDirectory(ernieDir(t, kind))
    t.equal(tok.applyChatTemplate(messages, { addGenerationPrompt: true }), `${ernie}Assistant: `, `${kind}: ERNIE template from the config`)
    t.same(tok.encodeChat(messages, { addGenerationPrompt: true }), [3, ...first, 4, ...second])
    t.throws(() => tok.encodeChat(messages, { template: 'chatml' }), { code: 'ERR_TOKENIZER_INPUT', message: /needs <\|im_start\|> as a special token/ })
    const qwenish = await Tokenizer.fromDirectory(ernieDir(t, kind, { ...ERNIE_CONFIG, additional_special_tokens: ['<|im_start|>', '<|im_end|>'] }))
    t.equal(qwenish.chatTemplate?.builtin, 'chatml', 'no chat_template shipped: the built-in its <|im_start|> / <|im_end|> imply')
    t.same(qwenish.encodeChat([{ role: 'user', content: '你好' }]), [6000, 2855, 2575, 1134, 26, ...NI_HAO, 6001, 26])
    // A shipped template wins over the implied one, and sees the special tokens by role.
    const shipped = await Tokenizer.fromDirectory(
      ernieDir(t, kind, { ...ERNIE_CONFIG, chat_template: '{{ sep_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ bos_token }}' }),
    )
    t.equal(shipped.chatTemplate?.builtin, undefined)
    t.equal(shipped.applyChatTemplate(messages), '<|end_of_sentence|>S你好好的谢谢<s>')
    t.same(shipped.encodeChat([{ role: 'user', content: '你好' }]), [4, ...NI_HAO, 1])
  }
  const plain = Tokenizer.fromSentencePiece(modelBytes('unigram'))
  t.equal(plain.chatTemplate, undefined)
  t.throws(() => plain.applyChatTemplate(messages), { code: 'ERR_TOKENIZER_INPUT', message: /ships no chat template/ })
  t.throws(() => renderChatTemplate([{ role: 'robot', content: 'x' } as unknown as ChatMessage], 'ernie'), { code: 'ERR_TOKENIZER_INPUT', message: /messages\[0\]\.role/ })
  t.throws(() => renderChatTemplate([{ role: 'user', content: 5 } as unknown as ChatMessage], 'chatml'), { code: 'ERR_TOKENIZER_INPUT', message: /messages\[0\]\.content/ })
})

t.test('a bare tokenizer.model takes its special tokens from the trainer spec', async (t) => {
  const tok = Tokenizer.fromSentencePiece(modelBytes('unigram'))
  t.same([tok.unkTokenId, tok.bosTokenId, tok.eosTokenId, tok.padTokenId], [0, 1, 2, undefined])
  t.same(tok.encode('<s>ok</s>', { parseSpecial: true }), [1, 262, 483, 1030, 2], 'each text segment gets its dummy prefix')
  t.throws(() => tok.encode('\ud800'), { code: 'ERR_TOKENIZER_INPUT', message: /lone UTF-16 surrogate/ })
})
