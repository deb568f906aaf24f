// Truncated encoding of a long text without tokenizing it whole: a 10 MB review kept to 512 tokens
// should cost about what 512 tokens cost, not seconds of the JS thread. Only a prefix (and, for
// head_tail, a suffix) of the text is encoded, in windows that grow until they hold the kept
// tokens with room to spare and two successive windows agree on them.
//
// Why not a bound: a tokenizer's ids near a cut can differ from those of the whole text (a word cut
// in two, a BPE merge that wanted the next character), and how far back that reaches depends on the
// tokenizer: inside a run of one repeated character, BPE's pairing follows the run's length to its
// far end. So a window is cut only where the kind of character changes (letter, digit, space,
// other: where SentencePiece's script and number splits and the GPT-style pre-tokenizer regexes
// start a new unit), the kept tokens lie at least SLACK tokens away from the cut, and two windows
// of different lengths must give them alike. A text too short to gain from windows, or one whose
// windows find no cut or never agree before they reach half its length, is encoded whole.

/** Tokens a window must hold past the kept ones, so those are never the ones right at its cut. */
const SLACK = 16

/** How the kept tokens are chosen, as Tokenizer.encodeBatch's `truncation` says. */
export type Truncation = true | 'head_tail'

/** The tokens kept from a text's whole encoding: the first `budget`, or head_tail's first quarter and last three quarters. */
export function truncateIds(ids: number[], budget: number, truncation: Truncation): number[] {
  if (ids.length <= budget) return ids
  if (truncation === true) return ids.slice(0, budget)
  const head = headCount(budget)
  return [...ids.slice(0, head), ...ids.slice(ids.length - (budget - head))]
}

function headCount(budget: number): number {
  return Math.ceil(budget / 4)
}

/** truncateIds(encode(text), budget, truncation), encoding only as much of the text as the kept tokens need. */
export function encodeTruncated(text: string, budget: number, truncation: Truncation, encode: (text: string) => number[]): number[] {
  // A first window of 4 characters per token plus a margin: enough for most text in one or two steps.
  const first = 4 * budget + 256
  if (text.length <= 4 * first) return truncateIds(encode(text), budget, truncation)
  const head = truncation === true ? budget : headCount(budget)
  const headIds = stableEnd(text, head, first, 'head', encode)
  const tailIds = head === budget ? [] : stableEnd(text, budget - head, first, 'tail', encode)
  if (headIds === undefined || tailIds === undefined) return truncateIds(encode(text), budget, truncation)
  return [...headIds, ...tailIds]
}

// The first (head) or last (tail) `count` tokens of `text`, from windows growing from `chars`
// characters until two successive ones agree on them; undefined if the windows reach half the text first.
function stableEnd(text: string, count: number, chars: number, side: 'head' | 'tail', encode: (text: string) => number[]): number[] | undefined {
  let previous: number[] | undefined
  for (; chars <= text.length / 2; chars = 2 * chars + 1) {
    const cut = side === 'head' ? cutNear(text, chars, chars / 2) : cutNear(text, text.length - chars, chars / 2)
    const ids = cut === undefined ? [] : encode(side === 'head' ? text.slice(0, cut) : text.slice(cut))
    if (ids.length < count + SLACK) {
      previous = undefined
      continue
    }
    const kept = side === 'head' ? ids.slice(0, count) : ids.slice(ids.length - count)
    if (previous !== undefined && previous.every((id, k) => id === kept[k])) return kept
    previous = kept
  }
  return undefined
}

// The nearest position at or before `i`, at most `reach` back, where the kind of character changes.
function cutNear(text: string, i: number, reach: number): number | undefined {
  for (let k = Math.floor(i); k > 0 && k >= i - reach; k--) {
    const here = kindAt(text, k)
    if (here !== 4 && here !== kindBefore(text, k)) return k
  }
  return undefined
}

const LETTER = /\p{L}|\p{M}/u
const NUMBER = /\p{N}/u
const SPACE = /\s/u

// 0 space, 1 letter (or mark), 2 digit, 3 anything else; a low surrogate (the middle of a character) is 4, never a cut.
function kindAt(text: string, i: number): number {
  const c = text.charCodeAt(i)
  if (c >= 0xdc00 && c <= 0xdfff) return 4
  const ch = String.fromCodePoint(text.codePointAt(i)!)
  return SPACE.test(ch) ? 0 : LETTER.test(ch) ? 1 : NUMBER.test(ch) ? 2 : 3
}

function kindBefore(text: string, i: number): number {
  const c = text.charCodeAt(i - 1)
  return kindAt(text, c >= 0xdc00 && c <= 0xdfff && i >= 2 ? i - 2 : i - 1)
}
