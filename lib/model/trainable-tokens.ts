// Trainable token rows beside a LoRA adapter, as PEFT's `trainable_token_indices` (its
// TrainableTokens method): a few rows of the embedding (and of an untied LM head) train while the
// rest of the base stays frozen, e.g. the rows of chat markers added to a Base vocabulary
// (Tokenizer.withSpecialTokens + resizeTokenEmbeddings). As in PEFT, the adapter holds the rows'
// values themselves (`trainable_tokens_delta`, [k, hidden], initialised from the model's rows),
// not differences, and a tied LM head shares the embedding's rows.
//
// The engine reads whole [vocab, hidden] tables: the adapter keeps its own copies of the tables it
// changes (in the checkpoint's dtype), with its rows written in before each call that uses it.
// The model without the adapter is unchanged (its own tables), as PEFT's adapter-disabled model.
import { ErnieError, rangeError, typeError } from '../errors'
import type { NativeMatrix, NativeTokenRowGrads } from '../addon-types'
import type { ResolvedConfig } from './config'
import { bf16ToF32, f32ToBf16 } from './dtype'
import { materialize } from './layout'
import type { MatrixView, ModelViews, WeightArray } from './weights'

/** The two tables whose rows may train, by their PEFT module name. */
export type TokenTable = 'embed_tokens' | 'lm_head'

/**
 * Which token rows train. A list: the input embedding's rows (and, with a tied head, the LM
 * head's, which are the same rows), as PEFT's list form. An object: rows per table, by PEFT's
 * module names; an untied LM head trains only the rows named under `lm_head`.
 */
export type TrainableTokenIndices = number[] | Partial<Record<TokenTable, number[]>>

/** The resolved rows of each table (empty: that table does not train; lm_head is empty when tied). */
export interface TrainableTokens {
  embed_tokens: number[]
  lm_head: number[]
  /** The LM head is the embedding: its rows are embed_tokens' and get both gradients. */
  tiedHead: boolean
}

/** Whether the model's LM head is its embedding (one table). */
export function tiedHead(weights: ModelViews): boolean {
  return weights.lmHead === weights.embed
}

/** PEFT's tensor name of a table's trainable rows in adapter_model.safetensors. */
export function tokenRowsName(table: TokenTable): string {
  return table === 'embed_tokens'
    ? 'base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta'
    : 'base_model.model.lm_head.token_adapter.trainable_tokens_delta'
}

/** The tables a name of tokenRowsName's belongs to, or undefined. */
export function tokenTableOf(name: string): TokenTable | undefined {
  return name === tokenRowsName('embed_tokens') ? 'embed_tokens' : name === tokenRowsName('lm_head') ? 'lm_head' : undefined
}

/** Checks `indices` (LoraOptions.trainableTokenIndices, or adapter_config.json's) against the model. */
export function resolveTrainableTokens(indices: unknown, config: ResolvedConfig, tied: boolean, where: string): TrainableTokens {
  const out: TrainableTokens = { embed_tokens: [], lm_head: [], tiedHead: tied }
  if (indices === undefined || indices === null) return out
  const ids = (x: unknown, what: string): number[] => {
    if (!Array.isArray(x) || x.length === 0) throw typeError(`${where}: ${what} must be a non-empty array of token ids`)
    const seen = new Set<number>()
    for (const [i, id] of x.entries()) {
      if (!Number.isInteger(id) || id < 0 || id >= config.vocab_size)
        throw rangeError(`${where}: ${what}[${i}] = ${JSON.stringify(id)} is not a token id of the vocabulary [0, ${config.vocab_size})`)
      if (seen.has(id)) throw rangeError(`${where}: ${what} names token ${id} twice`)
      seen.add(id)
    }
    return [...x]
  }
  if (Array.isArray(indices)) {
    out.embed_tokens = ids(indices, 'trainableTokenIndices')
    return out
  }
  if (typeof indices !== 'object') throw typeError(`${where}: trainableTokenIndices must be a list of token ids or { embed_tokens?, lm_head? }`)
  for (const [key, value] of Object.entries(indices as Record<string, unknown>)) {
    // PEFT matches a key against module names by suffix: "model.embed_tokens" is embed_tokens.
    const table = key.split('.').pop()
    if (table !== 'embed_tokens' && table !== 'lm_head')
      throw rangeError(`${where}: trainableTokenIndices names ${JSON.stringify(key)}; only embed_tokens and lm_head have token rows here`)
    if (table === 'lm_head' && tied)
      throw rangeError(`${where}: trainableTokenIndices names lm_head, but this model's LM head is its embedding (tied): its rows train with embed_tokens`)
    out[table] = ids(value, `trainableTokenIndices.${key}`)
  }
  return out
}

/** Whether any row trains. */
export function hasTrainableTokens(t: TrainableTokens): boolean {
  return t.embed_tokens.length > 0 || t.lm_head.length > 0
}

/** adapter_config.json's `trainable_token_indices` (the object form: it names an untied head's rows too). */
export function peftTrainableTokenIndices(t: TrainableTokens): Record<string, number[]> | undefined {
  if (!hasTrainableTokens(t)) return undefined
  const out: Record<string, number[]> = {}
  if (t.embed_tokens.length > 0) out.embed_tokens = [...t.embed_tokens]
  if (t.lm_head.length > 0) out.lm_head = [...t.lm_head]
  return out
}

/** The model's table as a row-major [vocab, hidden] copy the adapter owns, in its dtype. */
function ownedCopy(view: MatrixView): WeightArray {
  const m = materialize(view)
  return m === view.data ? m.slice() : m
}

/** A table's rows as f32, [ids.length, hidden] (PEFT's initialisation: the rows as they are). */
export function tableRows(view: MatrixView, ids: readonly number[]): Float32Array {
  const H = view.cols
  const stored = view.data instanceof Float32Array ? new Float32Array(ids.length * H) : new Uint16Array(ids.length * H)
  for (const [j, id] of ids.entries())
    for (let c = 0; c < H; c++) stored[j * H + c] = view.data[view.offset + (view.transposed ? c * view.ld + id : id * view.ld + c)]
  return stored instanceof Float32Array ? stored : bf16ToF32(stored)
}

/** Writes rows [ids.length, hidden] (f32) into a row-major table, rounded to its dtype; returns whether anything changed. */
export function writeRows(table: WeightArray, hidden: number, ids: readonly number[], rows: Float32Array): boolean {
  let changed = false
  for (const [j, id] of ids.entries()) {
    const src = rows.subarray(j * hidden, (j + 1) * hidden)
    const stored: WeightArray = table instanceof Float32Array ? src : f32ToBf16(src)
    const dst = table.subarray(id * hidden, (id + 1) * hidden)
    // Only rows that changed are written: calls running with this adapter read the table meanwhile.
    if (dst.every((v, c) => Object.is(v, stored[c]))) continue
    dst.set(stored)
    changed = true
  }
  return changed
}

/**
 * The tables an adapter with trainable token rows computes with: copies of the model's embedding
 * and (untied, with lm_head rows) LM head, kept equal to the adapter's rows by sync().
 */
export class TokenTables {
  private readonly embed: WeightArray | undefined
  private readonly lmHead: WeightArray | undefined

  constructor(
    weights: ModelViews,
    private readonly config: ResolvedConfig,
    private readonly tokens: TrainableTokens,
  ) {
    this.embed = tokens.embed_tokens.length > 0 ? ownedCopy(weights.embed) : undefined
    this.lmHead = tokens.lm_head.length > 0 ? ownedCopy(weights.lmHead) : undefined
  }

  /** Writes the adapter's current rows (tensors by tokenRowsName) into the tables. */
  sync(tensors: ReadonlyMap<string, Float32Array>): void {
    const H = this.config.hidden_size
    if (this.embed) writeRows(this.embed, H, this.tokens.embed_tokens, tensors.get(tokenRowsName('embed_tokens'))!)
    if (this.lmHead) writeRows(this.lmHead, H, this.tokens.lm_head, tensors.get(tokenRowsName('lm_head'))!)
  }

  /** The native Adapter's `embed` / `lmHead` options: a tied head reads the embedding's table. */
  native(): { embed?: NativeMatrix; lmHead?: NativeMatrix } {
    const V = this.config.vocab_size, H = this.config.hidden_size
    const matrix = (data: WeightArray): NativeMatrix => ({ data, rows: V, cols: H })
    const out: { embed?: NativeMatrix; lmHead?: NativeMatrix } = {}
    if (this.embed) out.embed = matrix(this.embed)
    if (this.lmHead) out.lmHead = matrix(this.lmHead)
    else if (this.embed && this.tokens.tiedHead) out.lmHead = out.embed
    return out
  }
}

/**
 * trainStep's `embedRows` / `lmHeadRows`: gradient buffers taken from (or added to) `buffer`
 * under the rows' PEFT names. A tied head's part goes to the embedding's rows (the same arrays).
 */
export function tokenRowGrads(
  config: ResolvedConfig,
  tokens: TrainableTokens,
  buffer: (name: string, size: number) => Float32Array,
): { embedRows?: NativeTokenRowGrads; lmHeadRows?: NativeTokenRowGrads } {
  const H = config.hidden_size
  const spec = (table: TokenTable): NativeTokenRowGrads => ({ ids: Int32Array.from(tokens[table]), rows: buffer(tokenRowsName(table), tokens[table].length * H) })
  const out: { embedRows?: NativeTokenRowGrads; lmHeadRows?: NativeTokenRowGrads } = {}
  if (tokens.embed_tokens.length > 0) out.embedRows = spec('embed_tokens')
  if (tokens.lm_head.length > 0) out.lmHeadRows = spec('lm_head')
  else if (out.embedRows && tokens.tiedHead) out.lmHeadRows = out.embedRows
  return out
}

/**
 * The model's views with the adapter's rows written into its embedding and LM head (merging):
 * new tables in `dtype` (f32, or rounded to bf16), the tied head following the embedding.
 */
export function mergedTokenViews(
  weights: ModelViews,
  config: ResolvedConfig,
  tokens: TrainableTokens,
  tensors: ReadonlyMap<string, Float32Array>,
  dtype: 'bf16' | 'f32',
): Pick<ModelViews, 'embed' | 'lmHead'> {
  const V = config.vocab_size, H = config.hidden_size
  if (tiedHead(weights) !== tokens.tiedHead)
    throw new ErnieError('ERR_ADAPTER', `mergeAdapter: the adapter's token rows are for a model whose LM head ${tokens.tiedHead ? 'is' : 'is not'} its embedding; this model's ${tokens.tiedHead ? 'is not' : 'is'}`)
  if (weights.embed.rows !== V || weights.embed.cols !== H)
    throw new ErnieError('ERR_ADAPTER', `mergeAdapter: the adapter's token rows are for a [${V}, ${H}] embedding; the model's is [${weights.embed.rows}, ${weights.embed.cols}]`)
  const merged = (view: MatrixView, table: TokenTable): MatrixView => {
    const m = materialize(view)
    const data: WeightArray = dtype === 'f32' ? (m instanceof Float32Array ? m.slice() : bf16ToF32(m)) : m instanceof Float32Array ? f32ToBf16(m) : m === view.data ? m.slice() : m
    writeRows(data, H, tokens[table], tensors.get(tokenRowsName(table))!)
    return { data, offset: 0, rows: V, cols: H, ld: H, transposed: false }
  }
  const embed = tokens.embed_tokens.length > 0 ? merged(weights.embed, 'embed_tokens') : weights.embed
  const lmHead = tiedHead(weights) ? embed : tokens.lm_head.length > 0 ? merged(weights.lmHead, 'lm_head') : weights.lmHead
  return { embed, lmHead }
}
