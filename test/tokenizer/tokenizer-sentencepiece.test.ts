// Our SentencePiece reader against the reference library: the golden encodings of both fixture
// models (every id and piece of every line), the ModelProto fields, the charsmap normalizer,
// BPE / unigram details on small synthetic models, decoding, and bad input. Every expected value
// below was produced by the reference SentencePiece library, not by this code.
import t from 'tap'
import { SentencePieceModel, TokenizerError } from '../../lib/index'
import { PieceType } from '../../lib/tokenizer/protobuf'
import { MODELS, goldens, modelBytes, writeModelProto, type SyntheticPiece } from '../helpers/tokenizer-helpers'

const bpe = SentencePieceModel.fromBytes(modelBytes('ernie_style_bpe'), 'ernie_style_bpe.model')
const unigram = SentencePieceModel.fromBytes(modelBytes('unigram'), 'unigram.model')

t.test('reproduces every golden line exactly (ids and pieces), both models', async (t) => {
  for (const name of MODELS) {
    const model = name === 'unigram' ? unigram : bpe
    const lines = goldens(name)
    t.equal(lines.length, 1218, `${name}: golden lines`)
    let idMismatch = -1
    let pieceMismatch = -1
    for (const [i, g] of lines.entries()) {
      const r = model.encodeWithPieces(g.text)
      if (idMismatch < 0 && JSON.stringify(r.ids) !== JSON.stringify(g.ids)) idMismatch = i
      if (pieceMismatch < 0 && JSON.stringify(r.pieces) !== JSON.stringify(g.pieces)) pieceMismatch = i
      if (JSON.stringify(model.encode(g.text)) !== JSON.stringify(g.ids)) idMismatch = i
    }
    t.equal(idMismatch, -1, `${name}: every line's ids match`)
    t.equal(pieceMismatch, -1, `${name}: every line's pieces match`)
  }
})

t.test('reads the ModelProto fields', async (t) => {
  const s = bpe.proto.trainerSpec
  t.equal(bpe.type, 'bpe')
  t.equal(bpe.size, 6000)
  t.match(s, { vocabSize: 6000, byteFallback: true, splitDigits: true, unkId: 0, bosId: 1, eosId: 2, padId: -1, maxSentencepieceLength: 16 })
  t.same(s.userDefinedSymbols, ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
  t.same(s.controlSymbols, ['<|begin_of_sentence|>', '<|end_of_sentence|>', '<mask:1>'])
  t.match(bpe.proto.normalizerSpec, { name: 'identity', addDummyPrefix: false, removeExtraWhitespaces: false, escapeWhitespaces: true })
  t.equal(bpe.proto.normalizerSpec.precompiledCharsmap.length, 0)
  t.same(
    [0, 1, 3, 5, 6, 15, 16, 271, 272].map((id) => [bpe.idToPiece(id), bpe.pieceType(id)]),
    [
      ['<unk>', PieceType.UNKNOWN],
      ['<s>', PieceType.CONTROL],
      ['<|begin_of_sentence|>', PieceType.CONTROL],
      ['<mask:1>', PieceType.CONTROL],
      ['0', PieceType.USER_DEFINED],
      ['9', PieceType.USER_DEFINED],
      ['<0x00>', PieceType.BYTE],
      ['<0xFF>', PieceType.BYTE],
      ['酒店', PieceType.NORMAL],
    ],
  )
  t.equal(bpe.score(273), -1)
  t.equal(bpe.pieceToId('价格'), 296)
  t.equal(unigram.type, 'unigram')
  t.equal(unigram.size, 4000)
  t.match(unigram.proto.normalizerSpec, { name: 'nmt_nfkc', addDummyPrefix: true, removeExtraWhitespaces: true, escapeWhitespaces: true })
  t.equal(unigram.proto.normalizerSpec.precompiledCharsmap.length, 237561)
  t.equal(unigram.score(259), Math.fround(-2.476247787475586))
})

t.test('the precompiled charsmap is looked up, not approximated by NFKC', async (t) => {
  // [text, normalized, ids] from the reference library with unigram.model.
  const cases: [string, string, number[]][] = [
    ['a\uff5eb', '\u2581a\uff5eb', [262, 538, 951, 829]], // NFKC would turn U+FF5E into '~'
    ['\ua7f2\u200b x', '\u2581\ua7f2\u2581x', [262, 237, 162, 181, 262, 1651]], // U+A7F2 kept; U+200B is a space
    ['  \uff28\uff45\uff4c\uff4c\uff4f\u3000 \u3000 world\t\n', '\u2581Hello\u2581world', [262, 1029, 544, 627, 627, 483, 262, 1092, 483, 844, 627, 705]],
    ['\ufeffstart', '\u2581start', [262, 534, 559, 538, 844, 559]],
    ['\ufb01ve \u2460\u2461', '\u2581five\u258112', [262, 1009, 639, 1347, 544, 262, 348, 311]],
    ['e\u0301e\u0300', '\u2581\u00e9\u00e8', [262, 198, 172, 198, 171]], // combining sequences composed
    ['\u0001\u0002ok\u007f', '\u2581ok', [262, 483, 1030]], // control characters dropped
  ]
  for (const [text, normalized, ids] of cases) {
    t.equal(unigram.normalize(text), normalized, `normalize ${JSON.stringify(text)}`)
    t.same(unigram.encode(text), ids, `encode ${JSON.stringify(text)}`)
  }
  t.not(unigram.normalize('\uff5e'), `\u2581${'\uff5e'.normalize('NFKC')}`, 'differs from String.normalize where the charsmap does')
  // The identity model keeps everything, spaces escaped.
  t.equal(bpe.normalize(' a  b\u3000\n'), '\u2581a\u2581\u2581b\u3000\n')
})

t.test('BPE: user-defined digits, control symbols as plain text, whitespace kept', async (t) => {
  // From the reference library with ernie_style_bpe.model.
  t.same(bpe.encode('2024年'), [8, 6, 8, 10, 2443])
  t.same(bpe.encode('<s>x</s>'), [3487, 2575, 3402, 2872, 3487, 2917, 2575, 3402])
  t.same(
    bpe.encodeWithPieces('<|begin_of_sentence|>User: 你好\n').pieces,
    ['<', '|', 'b', 'e', 'g', 'in', '_', 'o', 'f', '_', 's', 'e', 'n', 't', 'e', 'n', 'c', 'e', '|', '>', 'U', 's', 'er', ':', '▁', '你', '好', '<0x0A>'],
  )
  t.same(bpe.encode('a  b'), [2566, 2289, 2289, 3021])
})

// Small models built in the test; their expected encodings come from the reference library.
const A: SyntheticPiece[] = [
  { piece: '<unk>', score: 0, type: PieceType.UNKNOWN },
  { piece: 'a', score: -10, type: PieceType.NORMAL },
  { piece: 'b', score: -10, type: PieceType.NORMAL },
  { piece: 'c', score: -10, type: PieceType.NORMAL },
  { piece: 'ab', score: -1, type: PieceType.UNUSED },
  { piece: 'abc', score: -2, type: PieceType.NORMAL },
  { piece: 'bc', score: -3, type: PieceType.NORMAL },
  { piece: 'd', score: -10, type: PieceType.NORMAL },
]
const B: SyntheticPiece[] = [
  { piece: '<unk>', score: 0, type: PieceType.UNKNOWN },
  { piece: '<s>', score: 0, type: PieceType.CONTROL },
  { piece: '\u2581', score: -2, type: PieceType.NORMAL },
  { piece: 'h', score: -3, type: PieceType.NORMAL },
  { piece: 'i', score: -3, type: PieceType.NORMAL },
  { piece: 'hi', score: -1, type: PieceType.NORMAL },
  { piece: '[X]', score: 0, type: PieceType.USER_DEFINED },
  { piece: '[', score: -5, type: PieceType.NORMAL },
  { piece: 'X', score: -5, type: PieceType.NORMAL },
  { piece: ']', score: -5, type: PieceType.NORMAL },
]

t.test('BPE merges through UNUSED pieces and resegments them', async (t) => {
  const m = SentencePieceModel.fromBytes(
    writeModelProto({ pieces: A, modelType: 2, normalizer: { addDummyPrefix: false, removeExtraWhitespaces: false } }),
    'synthetic-bpe.model',
  )
  const cases: [string, number[]][] = [
    ['abc', [5]],
    ['abd', [1, 2, 7]],
    ['ab', [1, 2]],
    ['bcab', [6, 1, 2]],
    ['dabc', [7, 5]],
    ['abab', [1, 2, 1, 2]],
  ]
  for (const [text, ids] of cases) t.same(m.encode(text), ids, JSON.stringify(text))
})

t.test('unigram: user-defined symbols win, unknown runs merge into one <unk>', async (t) => {
  const m = SentencePieceModel.fromBytes(writeModelProto({ pieces: B, modelType: 1 }), 'synthetic-unigram.model')
  const cases: [string, number[], string[], string][] = [
    ['hi[X]hi', [2, 5, 6, 5], ['▁', 'hi', '[X]', 'hi'], 'hi[X]hi'],
    ['[X]', [2, 6], ['▁', '[X]'], '[X]'],
    [' hi  hi ', [2, 5, 2, 5], ['▁', 'hi', '▁', 'hi'], 'hi hi'],
    ['h?', [2, 3, 0], ['▁', 'h', '?'], 'h \u2047 '],
    ['?!h', [2, 0, 3], ['▁', '?!', 'h'], ' \u2047 h'],
    ['[X', [2, 7, 8], ['▁', '[', 'X'], '[X'],
    ['<s>hi', [2, 0, 5], ['▁', '<s>', 'hi'], ' \u2047 hi'],
  ]
  for (const [text, ids, pieces, decoded] of cases) {
    t.same(m.encodeWithPieces(text), { ids, pieces }, JSON.stringify(text))
    t.equal(m.decode(ids), decoded, `decode ${JSON.stringify(text)}`)
  }
})

t.test('decode', async (t) => {
  // Identity normalization without a dummy prefix is lossless: every golden line decodes to its text.
  let firstBad = -1
  for (const [i, g] of goldens('ernie_style_bpe').entries()) if (firstBad < 0 && bpe.decode(g.ids) !== g.text) firstBad = i
  t.equal(firstBad, -1, 'ernie_style_bpe: decode(golden ids) === text on every line')
  // Reference decodes: control pieces invisible, byte pieces joined (a broken sequence gives one
  // U+FFFD per byte), <unk> as its surface.
  t.equal(bpe.decode([3, 296, 2289, 8, 1, 2572, 4, 256, 175, 168, 152, 256, 175, 0]), '价格 2元😈\ufffd\ufffd \u2047 ')
  const unigramCases: [number[], string][] = [
    [[262, 538, 951, 829], 'a\uff5eb'],
    [[262, 1029, 544, 627, 627, 483, 262, 1092, 483, 844, 627, 705], 'Hello world'],
    [[262, 1009, 639, 1347, 544, 262, 348, 311], 'five 12'],
    [[262, 198, 172, 198, 171], '\u00e9\u00e8'],
  ]
  for (const [ids, text] of unigramCases) t.equal(unigram.decode(ids), text)
  t.throws(() => bpe.decode([6000]), { name: 'TokenizerError', code: 'ERR_TOKENIZER_INPUT', message: /6000 is outside the vocabulary/ })
  t.throws(() => bpe.decode([1.5]), { code: 'ERR_TOKENIZER_INPUT' })
})

t.test('long inputs: linear-time BPE and unigram give the same ids as short ones', async (t) => {
  // A newline is never merged (a byte piece in the BPE model, a piece boundary after the unigram
  // model maps it to a space), so a long text of repeated lines encodes as the line's ids repeated.
  const line = goldens('ernie_style_bpe')[19].text + '~~~~~~~~!!!!!!。。。。。\n'
  const reps = 400 // ~40k characters, ~100k bytes
  for (const model of [bpe, unigram]) {
    const one = model.encode(line)
    t.same(model.encode(line.repeat(reps)), Array.from({ length: reps }, () => one).flat(), `${model.type}: the line's ids, repeated`)
  }
  const runs = '~'.repeat(50000)
  t.equal(bpe.decode(bpe.encode(runs)), runs, 'a 50k-character run of one symbol round-trips')
})

t.test('text that is not valid Unicode is rejected', async (t) => {
  for (const model of [bpe, unigram]) {
    t.throws(() => model.encode('ab\ud800c'), { name: 'TokenizerError', code: 'ERR_TOKENIZER_INPUT', message: /lone UTF-16 surrogate U\+D800 at index 2/ })
    t.throws(() => model.encode('\udc00'), { code: 'ERR_TOKENIZER_INPUT', message: /U\+DC00 at index 0/ })
    t.throws(() => model.encode('x\ud83d'), { code: 'ERR_TOKENIZER_INPUT', message: /index 1/ })
    t.throws(() => model.encode(42 as unknown as string), { code: 'ERR_TOKENIZER_INPUT', message: /must be a string/ })
  }
  t.same(bpe.encode('😈'), [256, 175, 168, 152], 'a valid surrogate pair is fine')
})

t.test('corrupt and unsupported models give a TokenizerError naming the file', async (t) => {
  const bytes = modelBytes('ernie_style_bpe')
  const err = (data: Uint8Array, message: RegExp) =>
    t.throws(() => SentencePieceModel.fromBytes(data, 'bad.model'), { name: 'TokenizerError', code: 'ERR_TOKENIZER_MODEL', message })
  err(bytes.subarray(0, 40000), /^bad\.model: .*(truncated|runs past the end)/)
  err(new Uint8Array(0), /no pieces/)
  err(Uint8Array.of(0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f), /runs past the end/)
  err(Uint8Array.of(0x3b), /unsupported wire type start-group/) // field 7, a group
  err(Uint8Array.of(0x0a, 0x02, 0x08, 0x01), /field piece has wire type varint/)
  err(writeModelProto({ pieces: A.slice(1), modelType: 2 }), /no piece of type UNKNOWN/)
  err(writeModelProto({ pieces: [...A, A[0]], modelType: 2 }), /pieces 0 and 8 are both of type UNKNOWN|defined twice/)
  err(writeModelProto({ pieces: A, modelType: 3 }), /model_type WORD is not supported/)
  err(writeModelProto({ pieces: [...A, { piece: '<0x41>', score: 0, type: PieceType.BYTE }], modelType: 2 }), /byte_fallback is false/)
  err(writeModelProto({ pieces: [...A, { piece: '<0x41>', score: 0, type: PieceType.BYTE }], modelType: 2, byteFallback: true }), /byte piece <0x00> is missing/)
  err(writeModelProto({ pieces: [...A, { piece: 'a', score: 0, type: PieceType.NORMAL }], modelType: 2 }), /"a" is defined twice/)
  err(writeModelProto({ pieces: [...A, { piece: '', score: 0, type: PieceType.NORMAL }], modelType: 2 }), /piece 8 is empty/)
  // A charsmap whose trie size is not what the reference accepts.
  const proto = unigram.proto
  const charsmap = proto.normalizerSpec.precompiledCharsmap
  const broken = charsmap.slice()
  new DataView(broken.buffer).setUint32(0, 1000, true)
  t.throws(() => SentencePieceModel.fromProto({ ...proto, normalizerSpec: { ...proto.normalizerSpec, precompiledCharsmap: broken } }, 'x.model'), {
    code: 'ERR_TOKENIZER_MODEL',
    message: /precompiled_charsmap: trie size 1000 is not a positive multiple of 1024/,
  })
  t.ok(new TokenizerError('ERR_TOKENIZER_MODEL', 'm') instanceof Error)
})
