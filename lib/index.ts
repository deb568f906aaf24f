// ernie-sentiment: the public API.
export * as kernels from './kernels'
export { TokenizerError, SentencePieceModel } from './tokenizer'
export type { TokenizerErrorCode } from './tokenizer'
