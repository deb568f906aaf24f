// A minimal protobuf (proto2 wire format) reader for SentencePiece's ModelProto: the fields a
// tokenizer needs, proto2 defaults for absent ones, unknown fields skipped, and every length and
// offset checked so that a corrupt file gives a TokenizerError naming the byte and field at fault.
import { TokenizerError } from './errors'

/** ModelProto.SentencePiece.Type. */
export const PieceType = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const
export type PieceType = (typeof PieceType)[keyof typeof PieceType]

/** TrainerSpec.ModelType. */
export const ModelType = { UNIGRAM: 1, BPE: 2, WORD: 3, CHAR: 4 } as const
export type ModelType = (typeof ModelType)[keyof typeof ModelType]

export interface ModelPiece {
  /** The piece as UTF-8 bytes: the matching key (SentencePiece works on bytes). */
  bytes: Uint8Array
  /** The piece decoded for display (invalid UTF-8 becomes U+FFFD). */
  piece: string
  score: number
  type: PieceType
}

export interface TrainerSpec {
  modelType: ModelType
  vocabSize: number
  byteFallback: boolean
  splitDigits: boolean
  splitByWhitespace: boolean
  splitByNumber: boolean
  splitByUnicodeScript: boolean
  treatWhitespaceAsSuffix: boolean
  allowWhitespaceOnlyPieces: boolean
  maxSentencepieceLength: number
  controlSymbols: string[]
  userDefinedSymbols: string[]
  unkId: number
  bosId: number
  eosId: number
  padId: number
  unkPiece: string
  bosPiece: string
  eosPiece: string
  padPiece: string
  unkSurface: string
}

export interface NormalizerSpec {
  name: string
  precompiledCharsmap: Uint8Array
  addDummyPrefix: boolean
  removeExtraWhitespaces: boolean
  escapeWhitespaces: boolean
  normalizationRuleTsv: string
}

export interface ModelProto {
  pieces: ModelPiece[]
  trainerSpec: TrainerSpec
  normalizerSpec: NormalizerSpec
  /** Present only when the file has one (rare: applied to decoded text). */
  denormalizerSpec?: NormalizerSpec
}

const WIRE_VARINT = 0
const WIRE_FIXED64 = 1
const WIRE_LENGTH = 2
const WIRE_FIXED32 = 5
const WIRE_NAMES = ['varint', 'fixed64', 'length-delimited', 'start-group', 'end-group', 'fixed32', '6', '7']

const utf8 = new TextDecoder('utf-8')

class WireReader {
  pos: number
  /** Low 32 bits of the last varint, for int32 fields (negative values are 10-byte varints). */
  lo32 = 0

  constructor(
    readonly buf: Uint8Array,
    start: number,
    readonly end: number,
    readonly file: string,
    readonly path: string,
  ) {
    this.pos = start
  }

  fail(message: string, at = this.pos): never {
    throw new TokenizerError('ERR_TOKENIZER_MODEL', `${message} (${this.path}, byte ${at})`, { file: this.file })
  }

  varint(): number {
    const start = this.pos
    let value = 0
    let lo = 0
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail('truncated varint', start)
      const b = this.buf[this.pos++]
      if (i < 5) lo |= (b & 0x7f) << (7 * i)
      if (i < 8) value += (b & 0x7f) * 2 ** (7 * i)
      if ((b & 0x80) === 0) {
        this.lo32 = lo
        return value
      }
    }
    this.fail('varint longer than 10 bytes', start)
  }

  length(): number {
    const at = this.pos
    const n = this.varint()
    if (n > this.end - this.pos) this.fail(`length ${n} runs past the end of its message (${this.end - this.pos} bytes left)`, at)
    return n
  }

  bytes(): Uint8Array {
    const n = this.length()
    const out = this.buf.subarray(this.pos, this.pos + n)
    this.pos += n
    return out
  }

  string(): string {
    return utf8.decode(this.bytes())
  }

  float(): number {
    if (this.end - this.pos < 4) this.fail('truncated float')
    const b = this.buf
    const view = new DataView(b.buffer, b.byteOffset + this.pos, 4)
    this.pos += 4
    return view.getFloat32(0, true)
  }

  skip(wire: number): void {
    switch (wire) {
      case WIRE_VARINT:
        this.varint()
        return
      case WIRE_FIXED64:
        if (this.end - this.pos < 8) this.fail('truncated fixed64')
        this.pos += 8
        return
      case WIRE_LENGTH: {
        const n = this.length()
        this.pos += n
        return
      }
      case WIRE_FIXED32:
        if (this.end - this.pos < 4) this.fail('truncated fixed32')
        this.pos += 4
        return
      default:
        this.fail(`unsupported wire type ${WIRE_NAMES[wire]}`)
    }
  }

  /** Calls `field(number, wire)` for each field; the callback consumes the value or returns false to skip it. */
  fields(field: (num: number, wire: number, at: number) => boolean): void {
    while (this.pos < this.end) {
      const at = this.pos
      const key = this.varint()
      const num = Math.floor(key / 8)
      const wire = key % 8
      if (num === 0) this.fail('field number 0', at)
      if (!field(num, wire, at)) this.skip(wire)
    }
  }

  sub(path: string): WireReader {
    const n = this.length()
    const r = new WireReader(this.buf, this.pos, this.pos + n, this.file, path)
    this.pos += n
    return r
  }

  expect(wire: number, want: number, name: string, at: number): void {
    if (wire !== want) this.fail(`field ${name} has wire type ${WIRE_NAMES[wire]}, expected ${WIRE_NAMES[want]}`, at)
  }
}

function defaultTrainerSpec(): TrainerSpec {
  return {
    modelType: ModelType.UNIGRAM,
    vocabSize: 8000,
    byteFallback: false,
    splitDigits: false,
    splitByWhitespace: true,
    splitByNumber: true,
    splitByUnicodeScript: true,
    treatWhitespaceAsSuffix: false,
    allowWhitespaceOnlyPieces: false,
    maxSentencepieceLength: 16,
    controlSymbols: [],
    userDefinedSymbols: [],
    unkId: 0,
    bosId: 1,
    eosId: 2,
    padId: -1,
    unkPiece: '<unk>',
    bosPiece: '<s>',
    eosPiece: '</s>',
    padPiece: '<pad>',
    unkSurface: ' \u2047 ',
  }
}

function defaultNormalizerSpec(): NormalizerSpec {
  return {
    name: '',
    precompiledCharsmap: new Uint8Array(0),
    addDummyPrefix: true,
    removeExtraWhitespaces: true,
    escapeWhitespaces: true,
    normalizationRuleTsv: '',
  }
}

function readPiece(r: WireReader): ModelPiece {
  let bytes: Uint8Array = new Uint8Array(0)
  let score = 0
  let type: number = PieceType.NORMAL
  r.fields((num, wire, at) => {
    switch (num) {
      case 1:
        r.expect(wire, WIRE_LENGTH, 'piece', at)
        bytes = r.bytes()
        return true
      case 2:
        r.expect(wire, WIRE_FIXED32, 'score', at)
        score = r.float()
        return true
      case 3:
        r.expect(wire, WIRE_VARINT, 'type', at)
        r.varint()
        type = r.lo32
        if (type < 1 || type > 6) r.fail(`unknown piece type ${type}`, at)
        return true
    }
    return false
  })
  return { bytes, piece: utf8.decode(bytes), score, type: type as PieceType }
}

function readTrainerSpec(r: WireReader, s: TrainerSpec): void {
  const int32 = (wire: number, name: string, at: number): number => {
    r.expect(wire, WIRE_VARINT, name, at)
    r.varint()
    return r.lo32
  }
  const bool = (wire: number, name: string, at: number): boolean => {
    r.expect(wire, WIRE_VARINT, name, at)
    return r.varint() !== 0
  }
  const str = (wire: number, name: string, at: number): string => {
    r.expect(wire, WIRE_LENGTH, name, at)
    return r.string()
  }
  r.fields((num, wire, at) => {
    switch (num) {
      case 3: {
        const t = int32(wire, 'model_type', at)
        if (t < 1 || t > 4) r.fail(`unknown model_type ${t}`, at)
        s.modelType = t as ModelType
        return true
      }
      case 4: s.vocabSize = int32(wire, 'vocab_size', at); return true
      case 35: s.byteFallback = bool(wire, 'byte_fallback', at); return true
      case 25: s.splitDigits = bool(wire, 'split_digits', at); return true
      case 22: s.splitByWhitespace = bool(wire, 'split_by_whitespace', at); return true
      case 23: s.splitByNumber = bool(wire, 'split_by_number', at); return true
      case 21: s.splitByUnicodeScript = bool(wire, 'split_by_unicode_script', at); return true
      case 24: s.treatWhitespaceAsSuffix = bool(wire, 'treat_whitespace_as_suffix', at); return true
      case 26: s.allowWhitespaceOnlyPieces = bool(wire, 'allow_whitespace_only_pieces', at); return true
      case 20: s.maxSentencepieceLength = int32(wire, 'max_sentencepiece_length', at); return true
      case 30: s.controlSymbols.push(str(wire, 'control_symbols', at)); return true
      case 31: s.userDefinedSymbols.push(str(wire, 'user_defined_symbols', at)); return true
      case 40: s.unkId = int32(wire, 'unk_id', at); return true
      case 41: s.bosId = int32(wire, 'bos_id', at); return true
      case 42: s.eosId = int32(wire, 'eos_id', at); return true
      case 43: s.padId = int32(wire, 'pad_id', at); return true
      case 45: s.unkPiece = str(wire, 'unk_piece', at); return true
      case 46: s.bosPiece = str(wire, 'bos_piece', at); return true
      case 47: s.eosPiece = str(wire, 'eos_piece', at); return true
      case 48: s.padPiece = str(wire, 'pad_piece', at); return true
      case 44: s.unkSurface = str(wire, 'unk_surface', at); return true
    }
    return false
  })
}

function readNormalizerSpec(r: WireReader, s: NormalizerSpec): void {
  r.fields((num, wire, at) => {
    switch (num) {
      case 1:
        r.expect(wire, WIRE_LENGTH, 'name', at)
        s.name = r.string()
        return true
      case 2:
        r.expect(wire, WIRE_LENGTH, 'precompiled_charsmap', at)
        s.precompiledCharsmap = r.bytes()
        return true
      case 3:
        r.expect(wire, WIRE_VARINT, 'add_dummy_prefix', at)
        s.addDummyPrefix = r.varint() !== 0
        return true
      case 4:
        r.expect(wire, WIRE_VARINT, 'remove_extra_whitespaces', at)
        s.removeExtraWhitespaces = r.varint() !== 0
        return true
      case 5:
        r.expect(wire, WIRE_VARINT, 'escape_whitespaces', at)
        s.escapeWhitespaces = r.varint() !== 0
        return true
      case 6:
        r.expect(wire, WIRE_LENGTH, 'normalization_rule_tsv', at)
        s.normalizationRuleTsv = r.string()
        return true
    }
    return false
  })
}

/** Parses a serialized sentencepiece ModelProto (the bytes of a `tokenizer.model` file). */
export function parseModelProto(data: Uint8Array, file = 'tokenizer.model'): ModelProto {
  const r = new WireReader(data, 0, data.length, file, 'ModelProto')
  const pieces: ModelPiece[] = []
  const trainerSpec = defaultTrainerSpec()
  const normalizerSpec = defaultNormalizerSpec()
  let denormalizerSpec: NormalizerSpec | undefined
  r.fields((num, wire, at) => {
    switch (num) {
      case 1:
        r.expect(wire, WIRE_LENGTH, 'pieces', at)
        pieces.push(readPiece(r.sub(`pieces[${pieces.length}]`)))
        return true
      case 2:
        r.expect(wire, WIRE_LENGTH, 'trainer_spec', at)
        readTrainerSpec(r.sub('trainer_spec'), trainerSpec)
        return true
      case 3:
        r.expect(wire, WIRE_LENGTH, 'normalizer_spec', at)
        readNormalizerSpec(r.sub('normalizer_spec'), normalizerSpec)
        return true
      case 5:
        r.expect(wire, WIRE_LENGTH, 'denormalizer_spec', at)
        denormalizerSpec ??= defaultNormalizerSpec()
        readNormalizerSpec(r.sub('denormalizer_spec'), denormalizerSpec)
        return true
    }
    return false
  })
  if (pieces.length === 0) {
    throw new TokenizerError('ERR_TOKENIZER_MODEL', 'no pieces: not a SentencePiece model', { file })
  }
  return { pieces, trainerSpec, normalizerSpec, ...(denormalizerSpec ? { denormalizerSpec } : {}) }
}
