// Truncated encodeBatch encodes only the parts of a long text it keeps (lib/tokenizer/truncate.ts),
// and gives exactly the ids of encoding the whole text and then truncating it (the reference here:
// encode() of the whole text, sliced in the test).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { SentencePieceModel, Tokenizer, sentencePieceToTokenizerJson } from '../../lib/index'
import { modelBytes } from '../helpers/tokenizer-helpers'

const ROOT = join(__dirname, '..', '..')
const reviews = readFileSync(join(ROOT, 'test/fixtures/chnsenticorp/train.tsv'), 'utf8')
const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')

const LONG_TEXTS: [string, string][] = [
  // 60k characters: the library's Unigram cannot encode ~120k+ tokens in one piece (its own
  // spread), and the reference here is the whole text's encoding.
  ['Chinese reviews', reviews.slice(0, 60_000)],
  ['English prose and code', readme.repeat(3).slice(0, 60_000)], // the README's length varies: a fixed size
  ['a run of one character', '哈'.repeat(40_000)],
  ['a run of a repeated pair', '哈！'.repeat(20_000)],
  ['whitespace runs', 'ab   \n\n  cd \t '.repeat(5_000)],
  ['astral characters at every cut', '😀x😈'.repeat(20_000)],
  ['special tokens in the text', '<|begin_of_sentence|>价格 299 元<|end_of_sentence|>'.repeat(2_000)],
]

function tokenizers(): [string, Tokenizer][] {
  const bpe = modelBytes('ernie_style_bpe')
  const json = (name: 'ernie_style_bpe' | 'unigram') => JSON.parse(JSON.stringify(sentencePieceToTokenizerJson(modelBytes(name), `${name}.model`)))
  return [
    ['sentencepiece bpe', Tokenizer.fromSentencePiece(bpe)],
    ['sentencepiece unigram', Tokenizer.fromSentencePiece(modelBytes('unigram'))],
    ['tokenizer.json bpe', Tokenizer.fromTokenizerJson(json('ernie_style_bpe'))],
    ['tokenizer.json unigram', Tokenizer.fromTokenizerJson(json('unigram'))],
  ]
}

// The reference: the whole text's ids, truncated as encodeBatch documents.
function reference(tok: Tokenizer, text: string, maxLength: number, truncation: true | 'head_tail', parseSpecial: boolean): number[] {
  const ids = tok.encode(text, { parseSpecial })
  if (ids.length <= maxLength) return ids
  if (truncation === true) return ids.slice(0, maxLength)
  const head = Math.ceil(maxLength / 4)
  return [...ids.slice(0, head), ...ids.slice(ids.length - (maxLength - head))]
}

t.test('truncated rows of long texts are the whole text\'s ids, truncated', async (t) => {
  for (const [name, tok] of tokenizers()) {
    for (const [what, text] of LONG_TEXTS) {
      for (const maxLength of [1, 37, 512]) {
        for (const truncation of [true, 'head_tail'] as const) {
          for (const parseSpecial of what.startsWith('special') ? [false, true] : [false]) {
            const got = tok.encodeBatch([text], { maxLength, truncation, parseSpecial }).inputIds[0]
            const want = reference(tok, text, maxLength, truncation, parseSpecial)
            if (JSON.stringify(got) !== JSON.stringify(want)) t.fail(`${name}, ${what}, maxLength ${maxLength}, ${truncation}, parseSpecial ${parseSpecial}`)
          }
        }
      }
    }
    t.pass(`${name}: every long text`)
  }
})

t.test('a 1 MB text kept to 512 tokens is encoded in windows, never whole', async (t) => {
  const text = reviews.repeat(5).slice(0, 1_000_000)
  const encoded: number[] = []
  const original = SentencePieceModel.prototype.encode
  SentencePieceModel.prototype.encode = function (this: SentencePieceModel, s: string, ...rest: unknown[]) {
    encoded.push(s.length)
    return (original as (...a: unknown[]) => number[]).call(this, s, ...rest)
  } as typeof original
  t.teardown(() => {
    SentencePieceModel.prototype.encode = original
  })
  const tok = Tokenizer.fromSentencePiece(modelBytes('ernie_style_bpe'))
  for (const truncation of [true, 'head_tail'] as const) {
    encoded.length = 0
    const ids = tok.encodeBatch([text], { maxLength: 512, truncation }).inputIds[0]
    t.equal(ids.length, 512)
    const total = encoded.reduce((a, b) => a + b, 0)
    t.ok(total < text.length / 20, `${truncation}: ${total} characters encoded of ${text.length}`)
  }
})
