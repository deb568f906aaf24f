// Regexes read from tokenizer files, run on RE2 (re2js, pure JS): its time is linear in the text
// whatever the pattern, so a hostile tokenizer.json cannot hang the JS thread the way `(a+)+$` does
// on a backtracking RegExp. Tokenizer files write patterns in Oniguruma's syntax (what HF's Rust
// crate compiles); this translates the subset real tokenizers use into RE2 syntax with the same
// meaning, and names anything else in a TokenizerError (ERR_TOKENIZER_PATTERN).
import { RE2JS } from 're2js'
import { TokenizerError } from './errors'

/** Where a pattern sits, for error messages: the file and the component (`pre_tokenizer.pretokenizers[0]`). */
export interface PatternSite {
  file: string
  at: string
}

// Oniguruma's \s is Unicode White_Space; RE2's \s is ASCII only.
const SPACE = '\\p{White_Space}'
const NOT_SPACE = '\\P{White_Space}'
const HEX = '0-9A-Fa-f'
// The GPT-2 / Qwen / Llama-3 idiom: a run of whitespace, less its last character when a
// non-space follows (that character then starts the next piece, as in " word").
const SPACE_RUN_IDIOM = '\\s+(?!\\S)|\\s+'

interface Translation {
  source: string
  /** Groups (numbered from 1) standing for SPACE_RUN_IDIOM: a match through one gives back its last character when text follows. */
  spaceRunGroups: number
}

class Translator {
  private i = 0
  private out = ''
  private depth = 0
  private spaceRunGroups = 0

  constructor(
    private readonly pattern: string,
    private readonly site: PatternSite,
  ) {}

  fail(what: string, at = this.i): never {
    throw new TokenizerError('ERR_TOKENIZER_PATTERN', `${this.site.at}: pattern ${JSON.stringify(this.pattern)}: ${what} (at index ${at}); patterns run on a linear-time engine (RE2) that lacks it`, {
      file: this.site.file,
    })
  }

  translate(): Translation {
    const p = this.pattern
    let alternativeStart = true
    while (this.i < p.length) {
      if (alternativeStart && this.depth === 0 && p.startsWith(SPACE_RUN_IDIOM, this.i)) {
        const after = this.i + SPACE_RUN_IDIOM.length
        if (after === p.length || p[after] === '|') {
          this.out += `(${SPACE}+)`
          this.spaceRunGroups++
          this.i = after
          alternativeStart = false
          continue
        }
      }
      const c = p[this.i]
      alternativeStart = false
      switch (c) {
        case '\\':
          this.out += this.escape(false)
          break
        case '[':
          this.out += `[${this.charClass()}]`
          break
        case '(':
          this.group()
          break
        case ')':
          if (this.depth === 0) this.fail('unbalanced ")"')
          this.depth--
          this.out += ')'
          this.i++
          break
        case '|':
          this.out += '|'
          this.i++
          alternativeStart = true
          break
        case '*':
        case '+':
        case '?':
          this.out += c
          this.i++
          this.quantifierSuffix()
          break
        case '{':
          this.brace()
          break
        case ']':
        case '}':
          this.out += `\\${c}`
          this.i++
          break
        default: {
          // Literals, '.', '^' and '$' mean the same in both ('^' and '$' are line anchors: compiled MULTILINE).
          const cp = p.codePointAt(this.i)!
          this.out += String.fromCodePoint(cp)
          this.i += cp > 0xffff ? 2 : 1
        }
      }
    }
    if (this.depth !== 0) this.fail('missing ")"')
    return { source: this.out, spaceRunGroups: this.spaceRunGroups }
  }

  // After a quantifier: '?' makes it lazy (same in RE2); '+' makes it possessive (RE2 has none).
  private quantifierSuffix(): void {
    if (this.pattern[this.i] === '?') {
      this.out += '?'
      this.i++
    } else if (this.pattern[this.i] === '+') {
      this.fail('a possessive quantifier')
    }
  }

  private brace(): void {
    const m = /^\{(\d*)(?:(,)(\d*))?\}/.exec(this.pattern.slice(this.i, this.i + 32))
    if (!m || (m[1] === '' && (m[2] === undefined || m[3] === ''))) {
      // Not a quantifier: a literal brace, as in Oniguruma.
      this.out += '\\{'
      this.i++
      return
    }
    this.out += `{${m[1] === '' ? '0' : m[1]}${m[2] ?? ''}${m[3] ?? ''}}`
    this.i += m[0].length
    this.quantifierSuffix()
  }

  private group(): void {
    const p = this.pattern
    const start = this.i
    this.depth++
    if (p[this.i + 1] !== '?') {
      // Captures mean nothing to a tokenizer: every group of the file is non-capturing here.
      this.out += '(?:'
      this.i++
      return
    }
    const rest = p.slice(this.i, this.i + 64)
    if (rest.startsWith('(?:')) {
      this.out += '(?:'
      this.i += 3
      return
    }
    const named = /^\(\?(?:P?<[A-Za-z_]\w*>|'[A-Za-z_]\w*')/.exec(rest)
    if (named) {
      this.out += '(?:'
      this.i += named[0].length
      return
    }
    // Option groups: i (case-insensitive) as in RE2, Ruby's m (dot matches newline) as RE2's s.
    const options = /^\(\?([imx]*)(?:-([imx]*))?([:)])/.exec(rest)
    if (options && (options[1] !== '' || options[2] !== undefined)) {
      if ((options[1] + (options[2] ?? '')).includes('x')) this.fail('the extended-syntax option (?x)', start)
      const map = (s: string) => s.replaceAll('m', 's')
      this.out += `(?${map(options[1])}${options[2] !== undefined ? `-${map(options[2])}` : ''}${options[3]}`
      this.i += options[0].length
      if (options[3] === ')') this.depth--
      return
    }
    if (/^\(\?<?[=!]/.test(rest)) this.fail('a lookaround assertion (only the idiom \\s+(?!\\S)|\\s+ is rewritten)', start)
    if (rest.startsWith('(?>')) this.fail('an atomic group (?>...)', start)
    this.fail(`the group syntax ${JSON.stringify(rest.slice(0, 3))}`, start)
  }

  /** An escape at this.i (a backslash); inClass: inside [...], where sets are written without brackets. */
  private escape(inClass: boolean): string {
    const p = this.pattern
    const start = this.i
    if (this.i + 1 >= p.length) this.fail('a trailing backslash')
    const c = p[this.i + 1]
    this.i += 2
    switch (c) {
      case 's':
        return SPACE
      case 'S':
        return NOT_SPACE
      case 'd':
        return '\\p{Nd}'
      case 'D':
        return '\\P{Nd}'
      case 'h':
        return inClass ? HEX : `[${HEX}]`
      case 'H':
        if (inClass) this.fail('\\H inside a character class', start)
        return `[^${HEX}]`
      case 'p':
      case 'P': {
        const braced = /^\{(\^?)([^}]*)\}/.exec(p.slice(this.i, this.i + 64))
        if (!braced) {
          if (this.i >= p.length) this.fail('an unfinished \\p', start)
          const name = p[this.i]
          this.i++
          return `\\${c}${name}`
        }
        this.i += braced[0].length
        const negate = (c === 'P') !== (braced[1] === '^')
        return `\\${negate ? 'P' : 'p'}{${braced[2]}}`
      }
      case 't':
      case 'n':
      case 'r':
      case 'f':
      case 'v':
      case 'a':
        return `\\${c}`
      case 'e':
        return '\\x{1B}'
      case 'b':
        if (inClass) return '\\x{08}'
        return this.fail('the word boundary \\b (Unicode words in Oniguruma, ASCII in RE2)', start)
      case 'x': {
        const m = /^(\{[0-9A-Fa-f]{1,8}\}|[0-9A-Fa-f]{1,2})/.exec(p.slice(this.i, this.i + 10))
        if (!m) this.fail('a malformed \\x escape', start)
        this.i += m[0].length
        return `\\x{${m[0].replace(/[{}]/g, '')}}`
      }
      case 'u': {
        const m = /^[0-9A-Fa-f]{4}/.exec(p.slice(this.i, this.i + 4))
        if (!m) this.fail('a malformed \\u escape', start)
        this.i += 4
        return `\\x{${m[0]}}`
      }
      case 'A':
      case 'z':
        if (inClass) this.fail(`\\${c} inside a character class`, start)
        return `\\${c}`
      default: {
        if (/[0-9]/.test(c)) this.fail(`the backreference or octal escape \\${c}`, start)
        if (/[A-Za-z]/.test(c)) this.fail(`the escape \\${c}`, start)
        // An escaped punctuation mark or other character is itself.
        const cp = p.codePointAt(start + 1)!
        this.i = start + 1 + (cp > 0xffff ? 2 : 1)
        return cp < 0x80 ? `\\${c}` : String.fromCodePoint(cp)
      }
    }
  }

  /** The inside of a [...] at this.i, leaving this.i after its ']'. Nested positive classes are unions (flattened). */
  private charClass(): string {
    const p = this.pattern
    const start = this.i
    this.i++
    let body = ''
    if (p[this.i] === '^') {
      body = '^'
      this.i++
    }
    if (p[this.i] === ']') {
      body += '\\]'
      this.i++
    }
    while (this.i < p.length) {
      const c = p[this.i]
      if (c === ']') {
        this.i++
        if (body === '' || body === '^') this.fail('an empty character class', start)
        return body
      }
      if (c === '\\') {
        body += this.escape(true)
        continue
      }
      if (c === '[') {
        if (p[this.i + 1] === ':') this.fail('a POSIX bracket [:name:]', this.i)
        if (p[this.i + 1] === '^') this.fail('a negated class nested in a class', this.i)
        body += this.charClass()
        continue
      }
      if (c === '&' && p[this.i + 1] === '&') this.fail('a class intersection &&', this.i)
      const cp = p.codePointAt(this.i)!
      body += String.fromCodePoint(cp)
      this.i += cp > 0xffff ? 2 : 1
    }
    return this.fail('an unterminated character class', start)
  }
}

/** A Regex or String pattern of a tokenizer file, compiled for RE2. */
export class LinearPattern {
  private readonly re: RE2JS | null
  private readonly spaceRunGroups: number

  private constructor(re: RE2JS | null, spaceRunGroups: number) {
    this.re = re
    this.spaceRunGroups = spaceRunGroups
  }

  /** The `pattern` field of a Split / Replace component: `{ "Regex": "..." }` or `{ "String": "..." }`. */
  static fromConfig(pattern: unknown, site: PatternSite): LinearPattern {
    const p = pattern as { Regex?: unknown; String?: unknown } | null
    if (typeof p === 'object' && p !== null && typeof p.String === 'string') {
      // An empty literal matches nowhere (as in HF's crate), not everywhere.
      return new LinearPattern(p.String === '' ? null : RE2JS.compile(RE2JS.quote(p.String)), 0)
    }
    if (typeof p !== 'object' || p === null || typeof p.Regex !== 'string') {
      throw new TokenizerError('ERR_TOKENIZER_JSON', `${site.at}: "pattern" must be { "Regex": string } or { "String": string }`, { file: site.file })
    }
    const t = new Translator(p.Regex, site).translate()
    try {
      return new LinearPattern(RE2JS.compile(t.source, RE2JS.MULTILINE), t.spaceRunGroups)
    } catch (e) {
      throw new TokenizerError('ERR_TOKENIZER_PATTERN', `${site.at}: pattern ${JSON.stringify(p.Regex)} cannot be compiled for the linear-time engine (RE2): ${(e as Error).message}`, {
        file: site.file,
        cause: e,
      })
    }
  }

  /**
   * The matches in `text`, leftmost-first, as [start, end) UTF-16 offsets; an empty match right
   * after the previous match is skipped, as HF's crate (Oniguruma's find_iter) does.
   */
  *matches(text: string): Generator<[number, number]> {
    if (this.re === null) return
    const m = this.re.matcher(text)
    let from = 0
    let lastEnd = -1
    while (from <= text.length && m.find(from)) {
      const start = m.start()
      let end = m.end()
      if (start === end && start === lastEnd) {
        from = start + (isHighSurrogateAt(text, start) ? 2 : 1)
        continue
      }
      // Every White_Space character is one UTF-16 unit.
      if (end - start >= 2 && end < text.length && this.throughSpaceRun(m)) end -= 1
      yield [start, end]
      lastEnd = end
      from = end
    }
  }

  private throughSpaceRun(m: ReturnType<RE2JS['matcher']>): boolean {
    for (let g = 1; g <= this.spaceRunGroups; g++) if (m.start(g) >= 0) return true
    return false
  }

  /** `text` cut at the matches: [start, end, isMatch] pieces in order, covering it (HF's find_matches). */
  segments(text: string): [number, number, boolean][] {
    const out: [number, number, boolean][] = []
    let prev = 0
    for (const [start, end] of this.matches(text)) {
      if (start > prev) out.push([prev, start, false])
      out.push([start, end, true])
      prev = end
    }
    if (prev < text.length || out.length === 0) out.push([prev, text.length, false])
    return out
  }

  /** Every match replaced by `content`, literally (no `$1` substitution, as in HF's crate). */
  replaceAll(text: string, content: string): string {
    let out = ''
    let prev = 0
    for (const [start, end] of this.matches(text)) {
      out += text.slice(prev, start) + content
      prev = end
    }
    return out + text.slice(prev)
  }
}

function isHighSurrogateAt(text: string, i: number): boolean {
  const c = text.charCodeAt(i)
  return c >= 0xd800 && c <= 0xdbff && i + 1 < text.length
}
