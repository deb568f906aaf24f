// The Tokenizer users see: one API over a tokenizer.json (HF's library) or a tokenizer.model (our
// SentencePiece), with special / added tokens, batching with truncation and padding, and chat templates.
import { existsSync } from 'node:fs'
import { copyFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { ErnieError } from '../errors'
import { replaceFileAtomically } from '../io/atomic'
import { readSmallFile, type SmallFileKind } from '../io/read'
import type { TokenizerBackend } from './backend'
import { CHAT_TEMPLATE_TOKENS, ChatTemplate, impliedChatTemplate, isChatTemplateName, shippedChatTemplates, type ChatMessage, type ChatTemplateName } from './chat'
import { TokenizerError, checkText } from './errors'
import { addedTokenFields, flag, isObject, isTokenId, MAX_TOKEN_ID, optionalFlag, parseJsonFile, tokenContent } from './json-fields'
import { HfBackend } from './hf'
import { PieceType } from './protobuf'
import { SentencePieceModel } from './sentencepiece'
import { encodeTruncated } from './truncate'

export interface EncodeOptions {
  /** Add the tokens the tokenizer wraps a sequence in (BOS/EOS per its config or post-processor). Default false. */
  addSpecialTokens?: boolean
  /** Match special tokens written in the text (e.g. `<|im_start|>`) as single tokens. Default false: they are plain text. */
  parseSpecial?: boolean
}

export interface DecodeOptions {
  /** Leave special tokens out of the text. Default false. */
  skipSpecialTokens?: boolean
}

export interface BatchEncodeOptions extends EncodeOptions {
  /** Length limit for truncation and for `padding: 'max_length'`, special tokens included. */
  maxLength?: number
  /** 'longest': pad to the longest row; 'max_length': pad to maxLength; false: ragged rows. Default false. */
  padding?: 'longest' | 'max_length' | false
  /**
   * true: keep the first tokens; 'head_tail': keep the first quarter and the last three quarters of the
   * budget (the head+tail truncation of Sun et al. 2019 for long reviews); false: never truncate.
   * Default: true when maxLength is given. A truncated row encodes only the parts of a long text it
   * keeps (a 10 MB text kept to 512 tokens costs about what 512 tokens cost), with the same ids as
   * encoding the whole text and cutting them.
   */
  truncation?: boolean | 'head_tail'
}

export interface BatchEncoding {
  inputIds: number[][]
  attentionMask: number[][]
}

export interface AddedToken {
  id: number
  content: string
  /** Special tokens are matched in text only with `parseSpecial`, and dropped by `skipSpecialTokens`. */
  special: boolean
  lstrip: boolean
  rstrip: boolean
}

export type SpecialTokenRole = 'bos' | 'eos' | 'unk' | 'pad' | 'cls' | 'sep' | 'mask'
const ROLES: readonly SpecialTokenRole[] = ['bos', 'eos', 'unk', 'pad', 'cls', 'sep', 'mask']

export interface ApplyChatTemplateOptions {
  /** End with the prompt for the assistant's turn. Default false. */
  addGenerationPrompt?: boolean
  /**
   * Which template: the name of one the checkpoint ships (tokenizer_config.json's list of named
   * templates), a built-in ('ernie' | 'chatml' | 'qwen3'), or a Jinja template's text. Default: the
   * checkpoint's (chat_template.jinja, else tokenizer_config.json's chat_template), else the built-in
   * its special tokens imply.
   */
  template?: ChatTemplateName | string
}

export interface TokenizerFiles {
  /** tokenizer_config.json, parsed. */
  config?: Record<string, unknown>
  /** special_tokens_map.json, parsed. */
  specialTokensMap?: Record<string, unknown>
  /** added_tokens.json ({ content: id }), parsed. */
  addedTokens?: Record<string, unknown>
  /** The model directory the files were read from (what save() copies; names special_tokens_map.json and added_tokens.json in errors). */
  directory?: string
  /** chat_template.jinja's text (newer transformers save the template there), and its path. */
  chatTemplateJinja?: { text: string; file: string }
  /** tokenizer_config.json's path, for error messages. */
  source?: string
}

/**
 * @internal What a tokenizer is made from, as structured clone carries it to a worker thread:
 * tokenizer.model's bytes or tokenizer.json's value, and the files beside them.
 */
export type TokenizerSource =
  | { kind: 'sentencepiece'; model: Uint8Array; files: TokenizerFiles & { modelFile?: string } }
  | { kind: 'tokenizer.json'; json: unknown; files: TokenizerFiles & { jsonFile?: string } }

export interface FromDirectoryOptions {
  /** Which file to use when a directory has both. Default 'tokenizer.json' (as transformers does). */
  prefer?: 'tokenizer.json' | 'tokenizer.model'
}

class SentencePieceBackend implements TokenizerBackend {
  readonly kind = 'sentencepiece' as const
  constructor(readonly model: SentencePieceModel) {}
  get modelSize(): number {
    return this.model.size
  }
  encode(text: string): number[] {
    return this.model.encode(text)
  }
  idToPiece(id: number): string | undefined {
    return this.model.idToPiece(id)
  }
  pieceToId(piece: string): number | undefined {
    return this.model.pieceToId(piece)
  }
  decode(ids: readonly number[], render: (id: number) => string | null | undefined): string {
    return this.model.decode(ids, { render })
  }
}

/** Finds added tokens in text: leftmost match, longest at that position. */
class TokenMatcher {
  private readonly byFirst = new Map<string, AddedToken[]>()
  readonly empty: boolean
  constructor(tokens: readonly AddedToken[]) {
    for (const t of tokens) {
      if (t.content.length === 0) continue
      const list = this.byFirst.get(t.content[0]) ?? []
      list.push(t)
      this.byFirst.set(t.content[0], list)
    }
    for (const list of this.byFirst.values()) list.sort((a, b) => b.content.length - a.content.length)
    this.empty = this.byFirst.size === 0
  }
  split(text: string): (string | AddedToken)[] {
    const out: (string | AddedToken)[] = []
    let last = 0
    for (let i = 0; i < text.length; i++) {
      const list = this.byFirst.get(text[i])
      if (!list) continue
      const hit = list.find((t) => text.startsWith(t.content, i))
      if (!hit) continue
      if (i > last) out.push(text.slice(last, i))
      out.push(hit)
      i += hit.content.length - 1
      last = i + 1
    }
    if (last < text.length) out.push(text.slice(last))
    // lstrip / rstrip: an added token swallows the whitespace beside it.
    for (let k = 0; k < out.length; k++) {
      const t = out[k]
      if (typeof t === 'string') continue
      if (t.lstrip && typeof out[k - 1] === 'string') out[k - 1] = (out[k - 1] as string).trimEnd()
      if (t.rstrip && typeof out[k + 1] === 'string') out[k + 1] = (out[k + 1] as string).trimStart()
    }
    return out
  }
}

/** The files a tokenizer may be made of in a model directory (what is copied with a model). */
export const TOKENIZER_FILES: readonly string[] = [
  'tokenizer.json',
  'tokenizer.model',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'chat_template.jinja',
]

/** Copies those of `files` that exist in directory `from` into directory `to`. */
/** Whether `dir` holds a tokenizer (tokenizer.json or tokenizer.model) for Tokenizer.fromDirectory. */
export function hasTokenizerFiles(dir: string): boolean {
  return ['tokenizer.json', 'tokenizer.model'].some((f) => existsSync(join(dir, f)))
}

export async function copyModelFiles(from: string, to: string, files: readonly string[] = TOKENIZER_FILES): Promise<void> {
  for (const f of files) {
    const info = await stat(join(from, f)).catch(() => undefined)
    if (info?.isFile()) await copyFile(join(from, f), join(to, f))
  }
}

export class Tokenizer {
  /** Which reader tokenizes: our SentencePiece ('sentencepiece') or @huggingface/tokenizers ('tokenizer.json'). */
  readonly kind: 'sentencepiece' | 'tokenizer.json'
  /** Number of ids: the model's vocabulary plus added tokens (embedding rows may be padded past it). */
  readonly vocabSize: number
  /** The built-in template this tokenizer's special tokens imply, when it ships none. */
  private readonly impliedTemplate: ChatTemplateName | undefined
  /** The templates the checkpoint ships, by name ('default' for a single one). */
  readonly chatTemplates: ReadonlyMap<string, ChatTemplate>
  /** tokenizer_config.json's model_max_length, when it gives one. */
  readonly modelMaxLength: number | undefined
  private readonly backend: TokenizerBackend
  private readonly added = new Map<number, AddedToken>()
  private readonly addedByContent = new Map<string, AddedToken>()
  private readonly roles = new Map<SpecialTokenRole, AddedToken>()
  // additional_special_tokens, in their files' order (chat templates may read them).
  private readonly additionalSpecial: string[] = []
  private readonly prefix: number[]
  private readonly suffix: number[]
  private readonly alwaysMatcher: TokenMatcher
  private readonly specialMatcher: TokenMatcher
  private readonly files: TokenizerFiles
  private readonly rebuild: (files: TokenizerFiles) => Tokenizer
  private readonly source_: TokenizerSource | undefined

  private constructor(
    backend: TokenizerBackend,
    files: TokenizerFiles,
    init: {
      added: AddedToken[]
      /** Tokens that the backend does not match itself and that are matched even without parseSpecial. */
      alwaysMatch: (t: AddedToken) => boolean
      defaultRoles: Partial<Record<SpecialTokenRole, string>>
      template?: { prefix: number[]; suffix: number[] }
      /** The same tokenizer from other files (withSpecialTokens). */
      rebuild: (files: TokenizerFiles) => Tokenizer
      /** What it was made from, when that can be sent to another thread. */
      source?: TokenizerSource
    },
  ) {
    this.backend = backend
    this.files = files
    this.rebuild = init.rebuild
    this.source_ = init.source
    this.kind = backend.kind
    const config = files.config ?? {}
    const source = files.source ?? 'tokenizer_config.json'
    const fileNamed = (name: string) => (files.directory !== undefined ? join(files.directory, name) : name)
    for (const t of init.added) this.register(t)

    // Added tokens listed in the config with their ids (transformers' added_tokens_decoder).
    const decoder = config.added_tokens_decoder
    if (decoder !== undefined) {
      if (!isObject(decoder)) throw new TokenizerError('ERR_TOKENIZER_JSON', '"added_tokens_decoder" must be an object', { file: source })
      for (const [key, value] of Object.entries(decoder)) {
        // keys as transformers writes them (int(key) in Python): decimal ids
        const id = /^(0|[1-9]\d*)$/.test(key) ? Number(key) : NaN
        if (!isTokenId(id) || !isObject(value))
          throw new TokenizerError('ERR_TOKENIZER_JSON', `added_tokens_decoder["${key}"] needs a decimal id in [0, ${MAX_TOKEN_ID}] and a token object`, { file: source })
        const t = addedTokenFields(value, `added_tokens_decoder["${key}"]: `, source)
        if (this.added.has(id) || this.addedByContent.has(t.content)) continue
        this.register({ id, ...t })
      }
    }
    if (files.addedTokens !== undefined) {
      const file = fileNamed('added_tokens.json')
      for (const [content, id] of Object.entries(files.addedTokens)) {
        if (content === '' || !isTokenId(id))
          throw new TokenizerError('ERR_TOKENIZER_JSON', `${JSON.stringify(content)}: a token needs non-empty content and an integer id in [0, ${MAX_TOKEN_ID}], got ${JSON.stringify(id)}`, { file })
        if (!this.addedByContent.has(content)) this.register({ id, content, special: false, lstrip: false, rstrip: false })
      }
    }

    // Special tokens by role: special_tokens_map.json, then tokenizer_config.json, then the model's own.
    const declared = new Map<SpecialTokenRole, { content: string; lstrip: boolean; rstrip: boolean }>()
    for (const role of ROLES) {
      const fromDefault = init.defaultRoles[role]
      if (fromDefault !== undefined) declared.set(role, { content: fromDefault, lstrip: false, rstrip: false })
    }
    const extra: { content: string; lstrip: boolean; rstrip: boolean }[] = []
    for (const [file, obj] of [
      [fileNamed('special_tokens_map.json'), files.specialTokensMap],
      [source, config],
    ] as const) {
      if (obj === undefined) continue
      for (const role of ROLES) {
        const v = tokenContent(obj[`${role}_token`], `${role}_token`, file)
        if (v !== undefined) declared.set(role, v)
        else if (obj[`${role}_token`] === null) declared.delete(role)
      }
      const more = obj.additional_special_tokens
      if (more !== undefined && more !== null) {
        if (!Array.isArray(more)) throw new TokenizerError('ERR_TOKENIZER_JSON', '"additional_special_tokens" must be an array', { file })
        more.forEach((m, i) => {
          const v = tokenContent(m, `additional_special_tokens[${i}]`, file)
          if (v) extra.push(v)
        })
      }
    }
    for (const [role, v] of declared) this.roles.set(role, this.special(v))
    for (const v of extra) {
      this.special(v)
      if (!this.additionalSpecial.includes(v.content)) this.additionalSpecial.push(v.content)
    }

    this.vocabSize = this.nextFreeId()
    const all = [...this.added.values()]
    this.alwaysMatcher = new TokenMatcher(all.filter((t) => !t.special && init.alwaysMatch(t)))
    this.specialMatcher = new TokenMatcher(all.filter((t) => t.special || init.alwaysMatch(t)))

    // addSpecialTokens: explicit add_bos_token / add_eos_token win (as transformers does), else the post-processor.
    const addBos = optionalFlag(config, 'add_bos_token', '', source)
    const addEos = optionalFlag(config, 'add_eos_token', '', source)
    if (typeof addBos === 'boolean' || typeof addEos === 'boolean' || init.template === undefined) {
      const bos = this.roles.get('bos')
      const eos = this.roles.get('eos')
      this.prefix = addBos === true && bos ? [bos.id] : []
      this.suffix = addEos === true && eos ? [eos.id] : []
    } else {
      this.prefix = init.template.prefix
      this.suffix = init.template.suffix
    }
    // read by the tokenizer.json backend (fromTokenizerJson); its type is checked for both kinds
    flag(config, 'clean_up_tokenization_spaces', '', source)
    // a positive integer; transformers writes 1e30 (VERY_LARGE_INTEGER) for "no limit"
    const maxLen = config.model_max_length
    if (maxLen !== undefined && maxLen !== null && !(Number.isInteger(maxLen) && (maxLen as number) > 0))
      throw new TokenizerError('ERR_TOKENIZER_JSON', `"model_max_length" must be a positive integer, got ${JSON.stringify(maxLen)}`, { file: source })
    this.modelMaxLength = typeof maxLen === 'number' && maxLen < 1e15 ? maxLen : undefined
    this.chatTemplates = shippedChatTemplates(config.chat_template, source, files.chatTemplateJinja)
    this.impliedTemplate = impliedChatTemplate((c) => this.addedByContent.get(c)?.special === true)
  }

  // The first id past the vocabulary and every added token (a loop: a spread of 100k+ ids overflows the stack).
  private nextFreeId(): number {
    let next = this.backend.modelSize
    for (const id of this.added.keys()) if (id >= next) next = id + 1
    return next
  }

  private register(t: AddedToken): AddedToken {
    const existing = this.addedByContent.get(t.content)
    if (existing) return existing
    this.added.set(t.id, t)
    this.addedByContent.set(t.content, t)
    return t
  }

  // A declared special token: an existing added token, else a model piece, else a new id past the vocabulary.
  private special(v: { content: string; lstrip: boolean; rstrip: boolean }): AddedToken {
    const existing = this.addedByContent.get(v.content)
    if (existing) {
      existing.special = true
      return existing
    }
    let id = this.backend.pieceToId(v.content)
    if (id === undefined) id = this.nextFreeId()
    return this.register({ id, content: v.content, special: true, lstrip: v.lstrip, rstrip: v.rstrip })
  }

  /**
   * Loads a tokenizer from a model directory: tokenizer.json when present (through
   * @huggingface/tokenizers), else tokenizer.model (through our SentencePiece reader), with
   * tokenizer_config.json, special_tokens_map.json and added_tokens.json when present.
   */
  static async fromDirectory(dir: string, options: FromDirectoryOptions = {}): Promise<Tokenizer> {
    const info = await stat(dir).catch(() => undefined)
    if (!info?.isDirectory()) throw new TokenizerError('ERR_TOKENIZER_NOT_FOUND', `${dir} is not a directory`)
    const readOptional = async (name: string): Promise<Buffer | undefined> => {
      const kind: SmallFileKind = name === 'tokenizer.json' || name === 'tokenizer.model' ? name : 'tokenizer-config'
      try {
        return await readSmallFile(join(dir, name), kind)
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined
        if (e instanceof ErnieError) throw e // not a regular file, or past its size cap: named by the reader
        throw new TokenizerError('ERR_TOKENIZER_NOT_FOUND', `cannot read: ${(e as Error).message}`, { file: join(dir, name), cause: e })
      }
    }
    const readJson = async (name: string): Promise<Record<string, unknown> | undefined> => {
      const buf = await readOptional(name)
      if (buf === undefined) return undefined
      const value = parseJsonFile(buf, join(dir, name))
      if (!isObject(value)) throw new TokenizerError('ERR_TOKENIZER_JSON', 'must be a JSON object', { file: join(dir, name) })
      return value
    }
    const jinja = await readOptional('chat_template.jinja')
    const files: TokenizerFiles = {
      chatTemplateJinja: jinja !== undefined ? { text: jinja.toString('utf8'), file: join(dir, 'chat_template.jinja') } : undefined,
      config: await readJson('tokenizer_config.json'),
      specialTokensMap: await readJson('special_tokens_map.json'),
      addedTokens: await readJson('added_tokens.json'),
      source: join(dir, 'tokenizer_config.json'),
      directory: dir,
    }
    const order = options.prefer === 'tokenizer.model' ? ['tokenizer.model', 'tokenizer.json'] : ['tokenizer.json', 'tokenizer.model']
    for (const name of order) {
      const buf = await readOptional(name)
      if (buf === undefined) continue
      const file = join(dir, name)
      if (name === 'tokenizer.json') return Tokenizer.fromTokenizerJson(parseJsonFile(buf, file), { ...files, jsonFile: file })
      return Tokenizer.fromSentencePiece(new Uint8Array(buf.buffer, buf.byteOffset, buf.length), { ...files, modelFile: file })
    }
    throw new TokenizerError('ERR_TOKENIZER_NOT_FOUND', `${dir} has neither tokenizer.json nor tokenizer.model`)
  }

  /** A tokenizer from a tokenizer.model's bytes (our SentencePiece reader). */
  static fromSentencePiece(model: Uint8Array | SentencePieceModel, files: TokenizerFiles & { modelFile?: string } = {}): Tokenizer {
    const sp = model instanceof SentencePieceModel ? model : SentencePieceModel.fromBytes(model, files.modelFile ?? 'tokenizer.model')
    const added: AddedToken[] = []
    for (let id = 0; id < sp.size; id++) {
      const type = sp.pieceType(id)
      // Control pieces are the model's special tokens; the unknown piece too, as transformers treats it.
      if (type === PieceType.CONTROL || type === PieceType.UNKNOWN) {
        added.push({ id, content: sp.idToPiece(id)!, special: true, lstrip: false, rstrip: false })
      }
    }
    const spec = sp.proto.trainerSpec
    const roleOf = (id: number) => (id >= 0 && id < sp.size ? sp.idToPiece(id) : undefined)
    const defaultRoles: Partial<Record<SpecialTokenRole, string>> = {
      unk: roleOf(sp.unkId),
      bos: roleOf(spec.bosId),
      eos: roleOf(spec.eosId),
      pad: roleOf(spec.padId),
    }
    const bytes = model instanceof SentencePieceModel ? undefined : model
    return new Tokenizer(new SentencePieceBackend(sp), files, {
      rebuild: (f) => Tokenizer.fromSentencePiece(bytes ?? sp, f),
      source: bytes ? { kind: 'sentencepiece', model: bytes, files } : undefined,
      added,
      // User-defined pieces are matched by the model itself; other added tokens need the wrapper.
      alwaysMatch: (t) => t.id >= sp.size || sp.pieceType(t.id) !== PieceType.USER_DEFINED,
      defaultRoles,
    })
  }

  /** A tokenizer from a parsed tokenizer.json (through @huggingface/tokenizers). */
  static fromTokenizerJson(json: unknown, files: TokenizerFiles & { jsonFile?: string } = {}): Tokenizer {
    const file = files.jsonFile ?? 'tokenizer.json'
    const config = files.config ?? {}
    const source = files.source ?? 'tokenizer_config.json'
    const libraryConfig: Record<string, unknown> = {}
    for (const key of ['remove_space', 'do_lowercase_and_remove_accent'] as const) if (config[key] !== undefined) libraryConfig[key] = flag(config, key, '', source)
    const eos = tokenContent(config.eos_token, 'eos_token', source)
    if (eos) libraryConfig.eos_token = eos.content
    const backend = new HfBackend(json, file, {
      cleanUpTokenizationSpaces: flag(config, 'clean_up_tokenization_spaces', '', source),
      libraryConfig,
    })
    const j = json as Record<string, unknown>
    const model = j.model as Record<string, unknown>
    const defaultRoles: Partial<Record<SpecialTokenRole, string>> = {}
    if (typeof model.unk_token === 'string') defaultRoles.unk = model.unk_token
    else if (Number.isInteger(model.unk_id)) defaultRoles.unk = backend.idToPiece(model.unk_id as number)
    const matchedByLibrary = new Set(backend.addedTokens.filter((a) => !a.special).map((a) => a.id))
    return new Tokenizer(backend, files, {
      rebuild: (f) => Tokenizer.fromTokenizerJson(json, f),
      source: { kind: 'tokenizer.json', json, files },
      added: backend.addedTokens.map((t) => ({ ...t })),
      // The library matches the file's own non-special added tokens; the config's are ours to match.
      alwaysMatch: (t) => !matchedByLibrary.has(t.id),
      defaultRoles,
      template: templateOf(j.post_processor, file),
    })
  }

  /**
   * @internal What this tokenizer was made from, for `fromSource` in another thread (the same
   * tokenizer, id for id); undefined for one made from a parsed SentencePieceModel.
   */
  get source(): TokenizerSource | undefined {
    return this.source_
  }

  /** @internal The tokenizer `source` describes. */
  static fromSource(source: TokenizerSource): Tokenizer {
    return source.kind === 'sentencepiece'
      ? Tokenizer.fromSentencePiece(source.model, source.files)
      : Tokenizer.fromTokenizerJson(source.json, source.files)
  }

  get bosTokenId(): number | undefined {
    return this.roles.get('bos')?.id
  }
  get eosTokenId(): number | undefined {
    return this.roles.get('eos')?.id
  }
  get padTokenId(): number | undefined {
    return this.roles.get('pad')?.id
  }
  get unkTokenId(): number | undefined {
    return this.roles.get('unk')?.id
  }
  get clsTokenId(): number | undefined {
    return this.roles.get('cls')?.id
  }
  get sepTokenId(): number | undefined {
    return this.roles.get('sep')?.id
  }

  /** The special token declared for a role (`bos_token`, `eos_token`, ...), if any. */
  specialToken(role: SpecialTokenRole): AddedToken | undefined {
    const t = this.roles.get(role)
    return t ? { ...t } : undefined
  }

  /** Added tokens (special and not), by id. */
  get addedTokens(): AddedToken[] {
    return [...this.added.values()].sort((a, b) => a.id - b.id).map((t) => ({ ...t }))
  }

  /** Id of a vocabulary piece or added token, given exactly; undefined when there is none. */
  pieceToId(piece: string): number | undefined {
    return this.addedByContent.get(piece)?.id ?? this.backend.pieceToId(piece)
  }

  /** The piece (or added token) of an id; undefined outside the vocabulary. */
  idToPiece(id: number): string | undefined {
    return this.added.get(id)?.content ?? this.backend.idToPiece(id)
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    checkText(text)
    const ids = this.encodeContent(text, options.parseSpecial === true)
    return options.addSpecialTokens ? [...this.prefix, ...ids, ...this.suffix] : ids
  }

  private encodeContent(text: string, parseSpecial: boolean): number[] {
    const matcher = parseSpecial ? this.specialMatcher : this.alwaysMatcher
    if (matcher.empty) return this.backend.encode(text)
    const ids: number[] = []
    for (const part of matcher.split(text)) {
      if (typeof part !== 'string') ids.push(part.id)
      else if (part.length > 0) for (const id of this.backend.encode(part)) ids.push(id)
    }
    return ids
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    if (!Array.isArray(ids)) throw new TokenizerError('ERR_TOKENIZER_INPUT', 'ids must be an array of token ids')
    ids.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new TokenizerError('ERR_TOKENIZER_INPUT', `ids[${i}] = ${String(id)} is not a token id (0..${this.vocabSize - 1})`)
      }
    })
    const skip = options.skipSpecialTokens === true
    return this.backend.decode(ids, (id) => {
      const t = this.added.get(id)
      if (t === undefined) return undefined
      if (t.special && skip) return null
      return t.content
    })
  }

  /**
   * @internal Substrings that decode() rewrites once complete (transformers'
   * clean_up_tokenization_spaces): streamed text holds back an ending that may start one.
   */
  get decodeRewrites(): readonly string[] {
    return this.backend.decodeRewrites ?? []
  }

  encodeBatch(texts: readonly string[], options: BatchEncodeOptions = {}): BatchEncoding {
    if (!Array.isArray(texts)) throw new TokenizerError('ERR_TOKENIZER_INPUT', 'texts must be an array of strings')
    const { maxLength, padding = false } = options
    const truncation = options.truncation ?? maxLength !== undefined
    if (maxLength !== undefined && (!Number.isInteger(maxLength) || maxLength < 1)) {
      throw new TokenizerError('ERR_TOKENIZER_INPUT', `maxLength must be a positive integer, got ${String(maxLength)}`)
    }
    if (padding !== false && padding !== 'longest' && padding !== 'max_length') {
      throw new TokenizerError('ERR_TOKENIZER_INPUT', `padding must be 'longest', 'max_length' or false, got ${JSON.stringify(padding)}`)
    }
    if (truncation !== true && truncation !== false && truncation !== 'head_tail') {
      throw new TokenizerError('ERR_TOKENIZER_INPUT', `truncation must be true, false or 'head_tail', got ${JSON.stringify(truncation)}`)
    }
    if (padding === 'max_length' && maxLength === undefined) throw new TokenizerError('ERR_TOKENIZER_INPUT', "padding: 'max_length' needs maxLength")
    if (truncation !== false && maxLength === undefined) throw new TokenizerError('ERR_TOKENIZER_INPUT', 'truncation needs maxLength')
    const prefix = options.addSpecialTokens ? this.prefix : []
    const suffix = options.addSpecialTokens ? this.suffix : []
    const budget = maxLength === undefined ? Infinity : maxLength - prefix.length - suffix.length
    if (truncation !== false && budget < 1) {
      throw new TokenizerError('ERR_TOKENIZER_INPUT', `maxLength ${maxLength} leaves no room for text after ${prefix.length + suffix.length} special tokens`)
    }
    const rows = texts.map((text, i) => {
      checkText(text, `texts[${i}]`)
      const encode = (part: string) => this.encodeContent(part, options.parseSpecial === true)
      // Truncated rows encode only the parts of a long text they keep (truncate.ts).
      const ids = truncation === false ? encode(text) : encodeTruncated(text, budget, truncation, encode)
      return prefix.length + suffix.length > 0 ? [...prefix, ...ids, ...suffix] : ids
    })
    const target = padding === 'longest' ? rows.reduce((longest, r) => Math.max(longest, r.length), 0) : padding === 'max_length' ? maxLength! : 0
    const pad = this.padTokenId
    if (target > 0 && pad === undefined && rows.some((r) => r.length < target)) {
      throw new TokenizerError('ERR_TOKENIZER_INPUT', 'padding needs a pad token, and this tokenizer declares none (pad_token in tokenizer_config.json)')
    }
    const inputIds: number[][] = []
    const attentionMask: number[][] = []
    for (const row of rows) {
      const n = Math.max(row.length, target)
      const ids = new Array<number>(n)
      const mask = new Array<number>(n)
      for (let k = 0; k < n; k++) {
        ids[k] = k < row.length ? row[k] : pad!
        mask[k] = k < row.length ? 1 : 0
      }
      inputIds.push(ids)
      attentionMask.push(mask)
    }
    return { inputIds, attentionMask }
  }

  /**
   * This tokenizer with `contents` added as special tokens, as transformers' add_special_tokens({
   * additional_special_tokens }) does: one that is not a token yet gets the next id after the
   * vocabulary and added tokens (ChatML's `<|im_start|>` / `<|im_end|>` on a Base vocabulary); each
   * is matched whole in encodeChat and with parseSpecial, and decodes to its text. The model needs
   * embedding rows for the new ids (`resizeTokenEmbeddings` on load when they pass its rows).
   */
  withSpecialTokens(contents: readonly string[]): Tokenizer {
    if (!Array.isArray(contents) || contents.some((c) => typeof c !== 'string' || c.length === 0)) {
      throw new TokenizerError('ERR_TOKENIZER_INPUT', 'withSpecialTokens: contents must be an array of non-empty strings')
    }
    const config: Record<string, unknown> = { ...(this.files.config ?? {}) }
    const decoder: Record<string, unknown> = isObject(config.added_tokens_decoder) ? { ...config.added_tokens_decoder } : {}
    const additional = Array.isArray(config.additional_special_tokens) ? [...config.additional_special_tokens] : []
    let next = this.vocabSize
    for (const content of new Set(contents)) {
      if (!additional.some((a) => a === content || (isObject(a) && a.content === content))) additional.push(content)
      if (this.pieceToId(content) !== undefined) continue // already a token: made special, same id
      decoder[String(next++)] = { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true }
    }
    config.additional_special_tokens = additional
    config.added_tokens_decoder = decoder
    return this.rebuild({ ...this.files, config })
  }

  /** tokenizer_config.json as this tokenizer would be saved (with the tokens withSpecialTokens added). */
  get config(): Record<string, unknown> {
    return structuredClone(this.files.config ?? {})
  }

  /**
   * Writes the tokenizer into directory `dir`: the files it was loaded from (tokenizer.model or
   * tokenizer.json, chat_template.jinja, ...), and its tokenizer_config.json (`config`). A tokenizer
   * not loaded from a directory has no files to copy: ERR_TOKENIZER_NOT_FOUND.
   */
  async save(dir: string): Promise<void> {
    if (this.files.directory === undefined) throw new TokenizerError('ERR_TOKENIZER_NOT_FOUND', 'save: this tokenizer was not loaded from a directory, so it has no files to copy')
    await copyModelFiles(this.files.directory, dir, TOKENIZER_FILES.filter((f) => f !== 'tokenizer_config.json'))
    await replaceFileAtomically(join(dir, 'tokenizer_config.json'), `${JSON.stringify(this.files.config ?? {}, null, 2)}\n`)
  }

  /**
   * The template `applyChatTemplate` uses by default: the checkpoint's (chat_template.jinja, else
   * tokenizer_config.json's chat_template), else the built-in its special tokens imply (read when
   * first asked for: a classifier never renders a chat); undefined when there is neither.
   */
  get chatTemplate(): ChatTemplate | undefined {
    return this.chatTemplates.get('default') ?? (this.impliedTemplate !== undefined ? ChatTemplate.builtin(this.impliedTemplate) : undefined)
  }

  /** The template `options.template` names (see ApplyChatTemplateOptions), else this tokenizer's default. */
  resolveChatTemplate(template?: ChatTemplateName | string): ChatTemplate {
    if (template === undefined) {
      if (this.chatTemplate !== undefined) return this.chatTemplate
      throw new TokenizerError('ERR_TOKENIZER_INPUT', "this tokenizer ships no chat template and its special tokens imply none; pass { template: 'ernie' | 'chatml' | 'qwen3' | jinja text }")
    }
    if (typeof template !== 'string') throw new TokenizerError('ERR_TOKENIZER_INPUT', `template must be a string, got ${typeof template}`)
    return this.chatTemplates.get(template) ?? (isChatTemplateName(template) ? ChatTemplate.builtin(template) : new ChatTemplate(template, 'options.template'))
  }

  /**
   * The variables transformers passes a chat template besides the messages: each declared special
   * token by role (`bos_token`, `eos_token`, `cls_token`, ...) and `additional_special_tokens`.
   */
  chatTemplateTokens(): Record<string, string | string[]> {
    const out: Record<string, string | string[]> = {}
    for (const [role, t] of this.roles) out[`${role}_token`] = t.content
    if (this.additionalSpecial.length > 0) out.additional_special_tokens = [...this.additionalSpecial]
    return out
  }

  /** Renders a conversation with a chat template (default: the checkpoint's, else the built-in its special tokens imply). */
  applyChatTemplate(messages: readonly ChatMessage[], options: ApplyChatTemplateOptions = {}): string {
    return this.resolveChatTemplate(options.template).render(messages, options.addGenerationPrompt === true, this.chatTemplateTokens())
  }

  /**
   * The markers a built-in template writes (CHAT_TEMPLATE_TOKENS) that are not special tokens of
   * this tokenizer: ChatML's on ERNIE-4.5's vocabulary. A checkpoint's own template: none.
   */
  missingChatTokens(template?: ChatTemplate | ChatTemplateName | string): string[] {
    const t = template instanceof ChatTemplate ? template : this.resolveChatTemplate(template)
    return t.builtin === undefined ? [] : CHAT_TEMPLATE_TOKENS[t.builtin].filter((content) => this.addedByContent.get(content)?.special !== true)
  }

  /**
   * The chat template's text tokenized with special tokens parsed, as transformers tokenizes it (no
   * BOS/EOS added). A built-in template's markers must be special tokens here.
   */
  encodeChat(messages: readonly ChatMessage[], options: ApplyChatTemplateOptions = {}): number[] {
    const template = this.resolveChatTemplate(options.template)
    const missing = this.missingChatTokens(template)
    if (missing.length > 0) {
      throw new TokenizerError(
        'ERR_TOKENIZER_INPUT',
        `the ${template.builtin} chat template needs ${missing[0]} as a special token, and this tokenizer has none (withSpecialTokens adds it)`,
      )
    }
    return this.encode(template.render(messages, options.addGenerationPrompt === true, this.chatTemplateTokens()), { parseSpecial: true })
  }
}

// The `single` template of a TemplateProcessing post-processor (alone or in a Sequence) as ids around $A.
function templateOf(postProcessor: unknown, file: string): { prefix: number[]; suffix: number[] } | undefined {
  if (!isObject(postProcessor)) return undefined
  if (postProcessor.type === 'Sequence' && Array.isArray(postProcessor.processors)) {
    for (const p of postProcessor.processors) {
      const t = templateOf(p, file)
      if (t) return t
    }
    return undefined
  }
  if (postProcessor.type !== 'TemplateProcessing') return undefined
  const bad = (what: string): never => {
    throw new TokenizerError('ERR_TOKENIZER_JSON', `post_processor (TemplateProcessing): ${what}`, { file })
  }
  const single = postProcessor.single
  const specials = isObject(postProcessor.special_tokens) ? postProcessor.special_tokens : {}
  if (!Array.isArray(single)) bad('"single" must be an array')
  const prefix: number[] = []
  const suffix: number[] = []
  let seenSequence = false
  for (const piece of single as unknown[]) {
    if (isObject(piece) && isObject(piece.Sequence)) {
      seenSequence = true
      continue
    }
    if (!isObject(piece) || !isObject(piece.SpecialToken) || typeof piece.SpecialToken.id !== 'string') bad('"single" items must be { Sequence } or { SpecialToken: { id } }')
    const name = ((piece as Record<string, Record<string, unknown>>).SpecialToken.id as string)
    const entry = specials[name]
    if (!isObject(entry) || !Array.isArray(entry.ids) || !entry.ids.every((x) => Number.isInteger(x))) bad(`special token ${JSON.stringify(name)} has no integer "ids"`)
    ;(seenSequence ? suffix : prefix).push(...((entry as { ids: number[] }).ids))
  }
  return { prefix, suffix }
}
