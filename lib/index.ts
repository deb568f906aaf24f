// ernie-sentiment: the public API.
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
} from './tokenizer'
export type {
  AddedToken,
  ApplyChatTemplateOptions,
  BatchEncodeOptions,
  BatchEncoding,
  ChatMessage,
  ChatRole,
  ChatTemplateName,
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
export * as data from './data/index'
export { DataError } from './data/index'
export type { LabeledText, DataFormat, OnInvalid, SkipReport } from './data/index'
