// tokenizer.json's vocabulary, ids, merges and added tokens are checked (lib/tokenizer/hf-vocab.ts):
// each broken entry is an ERR_TOKENIZER_JSON naming the file and the entry, never a tokenizer that
// loads and then encodes to nothing or to ids past the vocabulary.
import t, { type Test } from 'tap'
import { Tokenizer } from '../../lib/index'

const FILE = '/models/x/tokenizer.json'
const load = (json: Record<string, unknown>) => () => Tokenizer.fromTokenizerJson(json, { jsonFile: FILE })
const bpe = (model: Record<string, unknown>, added: unknown[] = []) => ({ model: { type: 'BPE', unk_token: null, ...model }, added_tokens: added })
const VOCAB = { a: 0, b: 1, ab: 2 }
const token = (id: number, content: string, special = true) => ({ id, content, special })

function rejects(t: Test, json: Record<string, unknown>, message: RegExp, what: string): void {
  t.throws(load(json), { name: 'TokenizerError', code: 'ERR_TOKENIZER_JSON', file: FILE, message }, what)
}

t.test('a good file loads: the reference for the broken ones below', async (t) => {
  const tok = Tokenizer.fromTokenizerJson(bpe({ vocab: VOCAB, merges: [['a', 'b']] }, [token(3, '<s>')]))
  t.same(tok.encode('abab'), [2, 2])
  t.equal(tok.vocabSize, 4)
})

t.test('BPE and WordPiece vocabularies: a non-empty object of unique integer ids in range', async (t) => {
  rejects(t, bpe({ vocab: {}, merges: [] }), /model\.vocab is empty/, 'empty')
  rejects(t, bpe({ vocab: [['a', 0]], merges: [] }), /model\.vocab of a BPE model must be an object/, 'an array')
  rejects(t, bpe({ vocab: { a: 0, b: -1 }, merges: [] }), /model\.vocab\["b"\] = -1 is not an id \(an integer in 0\.\.1\)/, 'negative')
  rejects(t, bpe({ vocab: { a: 0, b: 0.5 }, merges: [] }), /model\.vocab\["b"\] = 0\.5 is not an id/, 'fractional')
  rejects(t, bpe({ vocab: { a: 0, b: '1' }, merges: [] }), /model\.vocab\["b"\] = "1" is not an id/, 'a string')
  rejects(t, bpe({ vocab: { a: 0, b: 7 }, merges: [] }), /model\.vocab\["b"\] = 7 is not an id \(an integer in 0\.\.1\)/, 'past the tokens the file defines')
  rejects(t, bpe({ vocab: { a: 0, b: 0 }, merges: [] }), /model\.vocab: id 0 is given to both "a" and "b"/, 'duplicate')
  rejects(t, { model: { type: 'WordPiece', unk_token: '[UNK]', vocab: { a: 0 } } }, /model\.unk_token "\[UNK\]" is not in the vocabulary/, 'WordPiece unk token')
  rejects(t, bpe({ vocab: VOCAB, merges: [], unk_token: '<unk>' }), /model\.unk_token "<unk>" is not in the vocabulary/, 'BPE unk token')
})

t.test('BPE merges name tokens of the vocabulary, and so does what they make', async (t) => {
  rejects(t, bpe({ vocab: VOCAB, merges: 'a b' }), /model\.merges must be an array/, 'not an array')
  rejects(t, bpe({ vocab: VOCAB, merges: ['a b c'] }), /model\.merges\[0\] must be "a b" or \["a", "b"\], got "a b c"/, 'three parts')
  rejects(t, bpe({ vocab: VOCAB, merges: [['a', 'b'], ['a']] }), /model\.merges\[1\] must be/, 'one part')
  rejects(t, bpe({ vocab: VOCAB, merges: [[1, 2]] }), /model\.merges\[0\] must be/, 'numbers')
  rejects(t, bpe({ vocab: VOCAB, merges: [['a', 'c']] }), /model\.merges\[0\] \(\["a","c"\]\): "c" is not in the vocabulary/, 'a part outside')
  rejects(t, bpe({ vocab: VOCAB, merges: ['a b', 'b a'] }), /model\.merges\[1\] \(\["b","a"\]\): "ba" is not in the vocabulary/, 'the result outside')
  const wp = Tokenizer.fromTokenizerJson(bpe({ vocab: { a: 0, '##b': 1, ab: 2 }, merges: [['a', '##b']], continuing_subword_prefix: '##' }))
  t.equal(wp.vocabSize, 3, 'the continuing-subword prefix is dropped from the merged token')
})

t.test('Unigram: a non-empty array of [piece, score], unique pieces, unk_id inside it', async (t) => {
  const uni = (model: Record<string, unknown>) => ({ model: { type: 'Unigram', unk_id: 0, vocab: [['<unk>', 0], ['a', -1]], ...model } })
  rejects(t, uni({ vocab: [] }), /model\.vocab of a Unigram model must be a non-empty array/, 'empty')
  rejects(t, uni({ unk_id: 99 }), /model\.unk_id 99 is not an index of model\.vocab \(0\.\.1\)/, 'unk_id past the end')
  rejects(t, uni({ unk_id: 0.5 }), /model\.unk_id 0\.5/, 'fractional unk_id')
  rejects(t, uni({ vocab: [['<unk>', 0], ['a', -1], ['a', -2]] }), /model\.vocab\[2\]: piece "a" is also model\.vocab\[1\]/, 'duplicate piece')
  rejects(t, uni({ vocab: [['<unk>', 0], ['a', null]] }), /model\.vocab\[1\] must be \[non-empty piece, finite score\]/, 'no score')
  rejects(t, uni({ vocab: [['<unk>', 0], ['', -1]] }), /model\.vocab\[1\] must be/, 'empty piece')
  const ok = Tokenizer.fromTokenizerJson(uni({}))
  t.same(ok.encode('a'), [1])
})

t.test('added tokens: non-empty, unique, and agreeing with the vocabulary', async (t) => {
  const model = { vocab: VOCAB, merges: [] }
  rejects(t, bpe(model, [token(3, '')]), /added_tokens\[0\] \("", id 3\): "content" is empty/, 'empty content')
  rejects(t, bpe(model, [token(3, '<s>'), token(3, '</s>')]), /added_tokens\[1\] \("<\/s>", id 3\): id 3 is also added token "<s>"/, 'same id twice')
  rejects(t, bpe(model, [token(3, '<s>'), token(4, '<s>')]), /added_tokens\[1\] \("<s>", id 4\): the same content is added twice/, 'same content twice')
  rejects(t, bpe(model, [token(3, 'ab')]), /added_tokens\[0\] \("ab", id 3\): the vocabulary gives this token id 2/, 'a vocabulary token under another id')
  rejects(t, bpe(model, [token(1, '<s>')]), /added_tokens\[0\] \("<s>", id 1\): id 1 is "b" in the vocabulary/, 'an id the vocabulary uses')
  rejects(t, bpe(model, [token(9, '<s>')]), /added_tokens\[0\] \("<s>", id 9\): id is past the 4 tokens the file defines/, 'past the end')
  const same = Tokenizer.fromTokenizerJson(bpe(model, [token(2, 'ab')]))
  t.equal(same.pieceToId('ab'), 2, 'a vocabulary token listed again with its own id is fine')
})

t.test('130,000 added tokens load (no spread of their ids onto the stack)', async (t) => {
  const n = 130_000
  const added = Array.from({ length: n }, (_, i) => token(3 + i, `<extra_${i}>`))
  const tok = Tokenizer.fromTokenizerJson(bpe({ vocab: VOCAB, merges: [] }, added))
  t.equal(tok.vocabSize, 3 + n)
  t.same(tok.encode('a<extra_129999>', { parseSpecial: true }), [0, 3 + n - 1])
  const batch = tok.encodeBatch(Array.from({ length: n }, () => 'a'), { padding: 'longest' })
  t.equal(batch.inputIds.length, n, 'padding to the longest of 130,000 rows')
})
