// The seam between the Tokenizer users see and the two ways of tokenizing plain text.

/** What the Tokenizer wrapper needs from a backend: plain-text encoding and the vocabulary. */
export interface TokenizerBackend {
  readonly kind: 'sentencepiece' | 'tokenizer.json'
  /** Ids [0, modelSize) are the model's own vocabulary. */
  readonly modelSize: number
  /** Encodes text with no special-token parsing. */
  encode(text: string): number[]
  idToPiece(id: number): string | undefined
  pieceToId(piece: string): number | undefined
  /**
   * Decodes ids. `render(id)` gives the text of tokens the wrapper owns (special / added tokens):
   * a string to use, null to drop the token, undefined when the backend should decode it.
   */
  decode(ids: readonly number[], render: (id: number) => string | null | undefined): string
  /**
   * Substrings that decode rewrites once they are complete (a cleanup of spaces), so that text
   * ending with the start of one may still change when more ids follow. None when absent.
   */
  readonly decodeRewrites?: readonly string[]
}
