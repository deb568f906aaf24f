// Tokenizers: tokenizer.model through our own SentencePiece reader.
export { TokenizerError, type TokenizerErrorCode } from './errors'
export { SentencePieceModel, type SentencePieceEncoding, type SentencePieceModelType } from './sentencepiece'
export { parseModelProto, PieceType, ModelType, type ModelProto, type ModelPiece, type NormalizerSpec, type TrainerSpec } from './protobuf'
export { PrecompiledCharsMap, SentencePieceNormalizer } from './normalizer'
