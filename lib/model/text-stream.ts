// Generated tokens to text as they come, handing out only text that no later token can change:
// never half a UTF-8 character (byte tokens that are not yet a whole character decode to U+FFFD at
// the end, held back), never the start of a stop string, nor the start of a substring the decoder
// rewrites once complete. What is handed out, joined, is exactly the final text.
import { ErnieError } from '../errors'
import type { Tokenizer } from '../tokenizer'

const REPLACEMENT = 0xfffd

/** The length of the longest ending of `text` that is the start (not the whole) of one of `patterns`. */
function heldEnding(text: string, patterns: readonly string[]): number {
  let held = 0
  for (const p of patterns)
    for (let n = Math.min(p.length - 1, text.length); n > held; n--)
      if (text.endsWith(p.slice(0, n))) {
        held = n
        break
      }
  return held
}

export class TextStream {
  private readonly ids: number[] = []
  private text = ''
  private released = ''
  private cut: number | undefined
  private readonly pending: readonly string[]

  /** `stop`: strings that end the text (it is cut before the first one). */
  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly stop: readonly string[],
  ) {
    this.pending = [...stop, ...tokenizer.decodeRewrites]
  }

  /** Whether the text holds a stop string (the text ends before it). */
  get stopped(): boolean {
    return this.cut !== undefined
  }

  /** Adds a token; returns the text that became final with it ('' while held back). */
  push(id: number): string {
    if (this.stopped) throw new ErnieError('ERR_STATE', 'TextStream: a token after a stop string')
    this.ids.push(id)
    this.text = this.tokenizer.decode(this.ids, { skipSpecialTokens: true })
    for (const s of this.stop) {
      const at = this.text.indexOf(s)
      if (at >= 0 && (this.cut === undefined || at < this.cut)) this.cut = at
    }
    if (this.cut !== undefined) return this.release(this.cut)
    let end = this.text.length
    while (end > this.released.length && this.text.charCodeAt(end - 1) === REPLACEMENT) end--
    end -= heldEnding(this.text.slice(this.released.length, end), this.pending)
    return this.release(end)
  }

  /** The rest of the text, at the end of generation: all of it, or what comes before a stop string. */
  finish(): string {
    return this.release(this.cut ?? this.text.length)
  }

  private release(end: number): string {
    // A decoder whose output for more ids does not extend its output for fewer would break the
    // promise above; none of the tokenizers here does, and this says so if one ever did.
    if (!this.text.startsWith(this.released))
      throw new ErnieError('ERR_STREAM_DECODE', `streamed text ${JSON.stringify(this.released.slice(-20))} was changed by a later token (decode is not prefix-stable)`)
    if (end <= this.released.length) return ''
    const piece = this.text.slice(this.released.length, end)
    this.released += piece
    return piece
  }
}
