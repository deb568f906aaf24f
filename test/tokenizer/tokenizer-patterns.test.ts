// Regexes from tokenizer.json run on RE2 (lib/tokenizer/pattern.ts, hf-patterns.ts): backtracking
// patterns return, the GPT-2/Qwen/Llama-3 pre-tokenizer patterns (with their \s+(?!\S) lookahead
// rewritten) cut real text exactly as the library's own JS RegExp does, HF's Split behaviours hold,
// and what RE2 cannot run is a typed error naming the file and the pattern.
import { spawnSync } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { SplitPreTokenizer, Tokenizer as HfTokenizer } from '@huggingface/tokenizers'
import t from 'tap'
import { Tokenizer } from '../../lib/index'
import { linearPatterns } from '../../lib/tokenizer/hf-patterns'
import { goldens } from '../helpers/tokenizer-helpers'

const ROOT = join(__dirname, '..', '..')

// The pre-tokenizer patterns of real tokenizer.json files.
const QWEN = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
const LLAMA3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
const GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

const split = (regex: string, behavior = 'Isolated', invert = false) => ({ type: 'Split', pattern: { Regex: regex }, behavior, invert })

/** Our pre-tokenizer for a file's pre_tokenizer config. */
function ours(preTokenizer: Record<string, unknown>): (text: string) => string[] {
  const inner = { normalizer: null, pre_tokenizer: null, decoder: null }
  linearPatterns({ pre_tokenizer: preTokenizer }, 'tokenizer.json').install(inner)
  const p = inner.pre_tokenizer as unknown as { pre_tokenize_text(text: string): string[] }
  return (text) => p.pre_tokenize_text(text)
}

// Real text: Chinese reviews, the tokenizer goldens' texts (mixed scripts, whitespace cases), and
// English prose and code (README, the tokenizer sources: indentation, blank lines, CRLF-free runs).
function realTexts(): string[] {
  const reviews = ['train.tsv', 'dev.tsv', 'test.tsv'].flatMap((f) =>
    readFileSync(join(ROOT, 'test/fixtures/chnsenticorp', f), 'utf8')
      .split('\n')
      .slice(1)
      .map((l) => l.slice(l.indexOf('\t') + 1)),
  )
  const golden = [...goldens('ernie_style_bpe'), ...goldens('unigram')].map((g) => g.text)
  const sources = readdirSync(join(ROOT, 'lib/tokenizer')).map((f) => readFileSync(join(ROOT, 'lib/tokenizer', f), 'utf8'))
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  return [...reviews, ...golden, ...sources, readme, ...readme.split('\n\n')]
}

// Whitespace edge cases around the lookahead rewrite, by hand.
const EDGES = [
  '', ' ', '  ', 'a', ' a', '  a', '   a', 'a ', 'a  ', 'a  b', 'a \n b', '\n', '\n\n', ' \n', '\n ', ' \n ', '\r\n', 'a\r\n\r\nb',
  '\t\tx', 'x\t\t', '\u3000\u3000好', '好\u3000\u3000', '\u00a0 x', 'x \u0085 y', '\u2028a', 'a\u2029\u2029', '\ufeff x',
  "it's", "IT'S", "we'LL", "don't  ", "'s", "''s", '  123', '1 2  3', '１２３', 'x\u0301  y', '😀  😀', ' 😀', '!!  ??', ' ...\n\n',
]

// Seeded random strings over the characters the patterns care about (ASCII case folding only: see the note below).
function randomTexts(count: number, seed: number): string[] {
  const alphabet = [' ', ' ', ' ', '\t', '\n', '\r', '\u3000', '\u00a0', '\u0085', '\u2028', '\ufeff', 'a', 'Z', 's', 'T', "'", '1', '٣', '.', '!', '好', '\u0301', '😀', 'é']
  let x = seed
  const next = () => ((x = (x * 1103515245 + 12345) >>> 0), x)
  return Array.from({ length: count }, () => Array.from({ length: next() % 24 }, () => alphabet[next() % alphabet.length]).join(''))
}

t.test('the pre-tokenizer patterns of Qwen, Llama-3 and GPT-2 cut text as the library\'s JS RegExp does', async (t) => {
  const real = realTexts()
  t.ok(real.length > 4000, `${real.length} real texts`)
  const texts = [...real, ...EDGES, ...randomTexts(20000, 7)]
  for (const [name, regex] of [['Qwen', QWEN], ['Llama-3', LLAMA3], ['GPT-2', GPT2]] as const) {
    const config = split(regex)
    const reference = new SplitPreTokenizer(config as never)
    const linear = ours(config)
    const mismatch = texts.find((text) => JSON.stringify(linear(text)) !== JSON.stringify(reference.pre_tokenize_text(text)))
    t.equal(mismatch, undefined, `${name}: every text cut the same`)
  }
  // The rewrite at work: a run of spaces gives its last one to the word after it.
  t.same(ours(split(QWEN))('a   b  \n c  '), ['a', '  ', ' b', '  \n', ' c', '  '])
})

t.test('a Qwen-style byte-level tokenizer.json gives the library\'s ids on real text', async (t) => {
  // Byte-level BPE with Qwen's pre-tokenizer: the 256 byte symbols, a few merges over them.
  const bytes = [...Array(256).keys()].map((b) => byteSymbol(b))
  const vocab: Record<string, number> = Object.fromEntries(bytes.map((s, i) => [s, i]))
  const merges: [string, string][] = []
  for (const [a, b] of [['Ġ', 't'], ['h', 'e'], ['Ġt', 'he'], ['i', 'n'], ['Ċ', 'Ċ'], ['Ġ', 'Ġ'], ['ä', '½'], ['Ġ', 'a']]) {
    merges.push([a, b])
    vocab[a + b] = Object.keys(vocab).length
  }
  const json = {
    normalizer: { type: 'NFC' },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [split(QWEN), { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false }] },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    model: { type: 'BPE', vocab, merges, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false },
  }
  const tok = Tokenizer.fromTokenizerJson(JSON.parse(JSON.stringify(json)))
  const library = new HfTokenizer(JSON.parse(JSON.stringify({ ...json, added_tokens: [], post_processor: null })), {})
  const texts = [...realTexts(), ...EDGES]
  const mismatch = texts.find((text) => JSON.stringify(tok.encode(text)) !== JSON.stringify(library.encode(text, { add_special_tokens: false }).ids))
  t.equal(mismatch, undefined, 'every text: the same ids')
  t.equal(tok.decode(tok.encode('the  Ġ 好\n\nx')), 'the  Ġ 好\n\nx')
})

// GPT-2's byte-to-symbol table: printable Latin-1 bytes are themselves, the rest shifted past 255.
function byteSymbol(b: number): string {
  const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)
  if (printable) return String.fromCharCode(b)
  let n = 0
  for (let k = 0; k < b; k++) if (!((k >= 0x21 && k <= 0x7e) || (k >= 0xa1 && k <= 0xac) || (k >= 0xae && k <= 0xff))) n++
  return String.fromCharCode(256 + n)
}

t.test('Split behaviours and invert, as HF\'s crate defines them', async (t) => {
  const text = 'the-final--countdown'
  const cases: [string, boolean, string[]][] = [
    ['Removed', false, ['the', 'final', 'countdown']],
    ['Isolated', false, ['the', '-', 'final', '-', '-', 'countdown']],
    ['MergedWithPrevious', false, ['the-', 'final-', '-', 'countdown']],
    ['MergedWithNext', false, ['the', '-final', '-', '-countdown']],
    ['Contiguous', false, ['the', '-', 'final', '--', 'countdown']],
    ['Removed', true, ['-', '-', '-']],
    ['Isolated', true, ['the', '-', 'final', '-', '-', 'countdown']],
  ]
  for (const [behavior, invert, want] of cases) t.same(ours(split('-', behavior, invert))(text), want, `${behavior}${invert ? ', inverted' : ''}`)
  t.same(ours({ type: 'Split', pattern: { String: '--' }, behavior: 'Removed', invert: false })(text), ['the-final', 'countdown'], 'a String pattern is literal')
  t.same(ours(split('x*'))('axb'), ['a', 'x', 'b'], 'empty matches: none right after a match')
})

t.test('Replace normalizer and decoder run on RE2 and replace literally', async (t) => {
  const tok = Tokenizer.fromTokenizerJson({
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Replace', pattern: { Regex: '(a+)+$' }, content: '$&' }, { type: 'Replace', pattern: { Regex: '\\s+' }, content: '_' }] },
    decoder: { type: 'Replace', pattern: { Regex: '_' }, content: ' ' },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab: { '[UNK]': 0, b: 1, '##_': 2, '##$': 3, '##&': 4, _: 5, '##b': 6 } },
  })
  // 'b  aaa' -> 'b_aaa' -> the trailing a-run replaced by the literal '$&' -> 'b_$&'.
  t.same(tok.encode('b  aaa'), [1, 2, 3, 4])
  t.equal(tok.decode([5]), ' ')
})

const BACKTRACKING = ['(a+)+$', '(a|aa)+$', '(a*)*b']

t.test('backtracking patterns return at once (in a child process, so a regression fails instead of hanging)', async (t) => {
  const script = `
    const { Tokenizer } = require(${JSON.stringify(join(ROOT, 'lib', 'index'))})
    const vocab = { a: 0, '!': 1, aa: 2, b: 3 }
    const model = { type: 'BPE', vocab, merges: [['a', 'a']], unk_token: null }
    const text = 'a'.repeat(40) + '!'
    const out = []
    for (const regex of ${JSON.stringify(BACKTRACKING)}) {
      const split = { type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false }
      out.push(Tokenizer.fromTokenizerJson({ pre_tokenizer: split, model }).encode(text))
      out.push(Tokenizer.fromTokenizerJson({ pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Whitespace' }, split] }, model }).encode(text))
      out.push(Tokenizer.fromTokenizerJson({ normalizer: { type: 'Replace', pattern: { Regex: regex }, content: 'b' }, model }).encode(text + text))
    }
    console.log(JSON.stringify(out))
  `
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'))
  const r = spawnSync(process.execPath, [...loader, '-e', script], { encoding: 'utf8', timeout: 120_000 })
  t.equal(r.signal, null, 'the child was not killed by the timeout')
  t.equal(r.status, 0, r.stderr)
  // None of the patterns matches 40 a's then '!' (no end of text, no b): one piece, BPE'd into 20 'aa' and '!'.
  const once = [...Array(20).fill(2), 1]
  t.same(JSON.parse(r.stdout), BACKTRACKING.flatMap(() => [once, once, [...once, ...once]]))
})

t.test('what RE2 cannot run is a typed error naming the file, the component and the pattern', async (t) => {
  const model = { type: 'BPE', vocab: { a: 0 }, merges: [] }
  const cases: [string, RegExp][] = [
    ['a(?=b)', /lookaround/],
    ['(?<!x)a', /lookaround/],
    ['\\s+(?!\\S)', /lookaround/],
    ['(a)\\1', /backreference/],
    ['(?>a+)', /atomic group/],
    ['a++', /possessive/],
    ['\\bword', /word boundary/],
    ['[[:alpha:]]', /POSIX bracket/],
    ['[a-z&&[^aeiou]]', /intersection/],
    ['\\p{Word}', /cannot be compiled/],
    ['a{2000}', /cannot be compiled/],
  ]
  for (const [regex, why] of cases) {
    const json = { pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'ByteLevel' }, split(regex)] }, model }
    t.throws(() => Tokenizer.fromTokenizerJson(json, { jsonFile: '/m/tokenizer.json' }), {
      name: 'TokenizerError',
      code: 'ERR_TOKENIZER_PATTERN',
      file: '/m/tokenizer.json',
      message: why,
    }, regex)
    try {
      Tokenizer.fromTokenizerJson(json, { jsonFile: '/m/tokenizer.json' })
    } catch (e) {
      t.match((e as Error).message, `/m/tokenizer.json: pre_tokenizer.pretokenizers[1]: pattern ${JSON.stringify(regex)}`)
    }
  }
  t.throws(() => Tokenizer.fromTokenizerJson({ pre_tokenizer: split('a', 'Sideways'), model }), { code: 'ERR_TOKENIZER_JSON', message: /"behavior" must be one of/ })
  t.throws(() => Tokenizer.fromTokenizerJson({ normalizer: { type: 'Replace', pattern: { Regex: 'a' } }, model }), { code: 'ERR_TOKENIZER_JSON', message: /normalizer \(Replace\): "content" must be a string/ })
  t.throws(() => Tokenizer.fromTokenizerJson({ pre_tokenizer: { type: 'Split', pattern: { Regexp: 'a' } }, model }), { code: 'ERR_TOKENIZER_JSON', message: /"pattern" must be/ })
})

t.test('Oniguruma syntax that real files use is translated to the same meaning', async (t) => {
  const cut = (regex: string, text: string) => ours(split(regex, 'Removed', true))(text)
  t.same(cut('\\s+', 'a\u3000\u0085b c'), ['\u3000\u0085', ' '], '\\s is Unicode White_Space (U+3000, U+0085), not ASCII')
  t.same(cut('\\d+', 'x١٢3'), ['١٢3'], '\\d is any decimal digit')
  t.same(cut('[^\\s\\p{L}]+', 'ab, .cd'), [',', '.'], '\\s inside a negated class')
  t.same(cut('\\h+', 'xyz09afG'), ['09af'], '\\h is a hex digit')
  t.same(cut('(?i:ab)', 'xaBAbab'), ['aB', 'Ab', 'ab'])
  t.same(cut('\\x{4F60}|\\u597D', '你好吗'), ['你', '好'])
  t.same(cut('^a', 'ab\nab'), ['a', 'a'], '^ is a line anchor, as in Ruby syntax')
  t.same(cut('[^()|\\s[.,!?…。，、।۔،]]+', 'a,b。c d'), ['a', 'b', 'c', 'd'], 'a nested class is a union (BLOOM\'s pattern)')
  t.same(cut('a{,2}', 'aaa'), ['aa', 'a'], '{,n} is {0,n}')
  t.same(cut('(?<w>a)(b)', 'abab'), ['ab', 'ab'], 'named and numbered groups become non-capturing')
})
