// Tokenizers: tokenizer.json through @huggingface/tokenizers, tokenizer.model through our own SentencePiece.
export { Tokenizer, TOKENIZER_FILES, copyModelFiles, hasTokenizerFiles } from './tokenizer'
export type {
  AddedToken,
  ApplyChatTemplateOptions,
  BatchEncodeOptions,
  BatchEncoding,
  DecodeOptions,
  EncodeOptions,
  FromDirectoryOptions,
  SpecialTokenRole,
  TokenizerFiles,
} from './tokenizer'
export { TokenizerError, type TokenizerErrorCode } from './errors'
export { SentencePieceModel, type SentencePieceEncoding, type SentencePieceModelType } from './sentencepiece'
export { parseModelProto, PieceType, ModelType, type ModelProto, type ModelPiece, type NormalizerSpec, type TrainerSpec } from './protobuf'
export { PrecompiledCharsMap, SentencePieceNormalizer } from './normalizer'
export { sentencePieceToTokenizerJson, convertSentencePieceFile, type TokenizerJson } from './convert'
export { renderChatTemplate, ChatTemplate, CHAT_TEMPLATE_TOKENS, builtinChatTemplatePath, type ChatMessage, type ChatRole, type ChatTemplateName, type ChatTemplateTokens } from './chat'
