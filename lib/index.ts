// ernie-sentiment: the public API.
//
// The declarations name ES2022 types and Disposable / AsyncDisposable (Symbol.dispose,
// Symbol.asyncDispose): these directives bring those libraries into a consumer's program, whatever
// its `target` or `lib`, so that the types check without @types/node. (AbortSignal and fetch come
// from TypeScript's default DOM library, or from @types/node.)
/// <reference lib="es2022" preserve="true" />
/// <reference lib="esnext.disposable" preserve="true" />
export * as kernels from './kernels/index'
export * as io from './io'
export * as hub from './hub'
export {
  Tokenizer,
  TokenizerError,
  SentencePieceModel,
  sentencePieceToTokenizerJson,
  convertSentencePieceFile,
  renderChatTemplate,
  ChatTemplate,
} from './tokenizer'
export type {
  AddedToken,
  ApplyChatTemplateOptions,
  BatchEncodeOptions,
  BatchEncoding,
  ChatMessage,
  ChatRole,
  ChatTemplateName,
  ChatTemplateTokens,
  DecodeOptions,
  EncodeOptions,
  FromDirectoryOptions,
  SpecialTokenRole,
  TokenizerErrorCode,
  TokenizerJson,
} from './tokenizer'
export { ErnieError, AbortError } from './errors'
export { resolvePrecision, precisionInForce, precisionRecord, PRECISIONS, type Precision, type PrecisionRecord } from './precision'
export { resolveDevice, cudaInfo, cudaDevices, cudaBuilt, type Device, type CudaDevice, type CudaInfo } from './device'
export * from './model/index'
export * from './train/index'
export * from './classifier/index'
export * from './serve/index'
export * as data from './data/index'
export { DataError } from './data/index'
export type { LabeledText, DataFormat, OnInvalid, SkipReport } from './data/index'
