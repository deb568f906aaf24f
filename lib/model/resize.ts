// Growing the vocabulary of a checkpoint: new token rows for the embedding (and an untied LM head),
// for special tokens a tokenizer adds past the rows the checkpoint has (Tokenizer.withSpecialTokens).
import { ErnieError, rangeError } from '../errors'
import type { ResolvedConfig } from './config'
import { bf16ToF32, f32ToBf16 } from './dtype'
import { detectLayout, type TensorSource, type WeightArray } from './weights'

/**
 * A checkpoint's tensors with the embedding (and an untied `lm_head.weight`) grown from
 * `config.vocab_size` to `vocab` rows. The new rows are the mean of the checkpoint's rows, computed
 * in float64 and rounded to the tensor's dtype: the centre transformers' resize_token_embeddings
 * (mean_resizing) draws new rows around (it adds noise of covariance 1e-9 times the rows'
 * covariance, which this leaves out to stay deterministic). The old rows are copied unchanged, so
 * the model computes exactly what it did on the old tokens.
 */
export class ResizedEmbeddings implements TensorSource {
  readonly description: string
  private readonly grown = new Map<string, { shape: number[]; data: WeightArray }>()

  constructor(
    private readonly inner: TensorSource,
    config: ResolvedConfig,
    readonly vocab: number,
  ) {
    const old = config.vocab_size
    if (!Number.isInteger(vocab) || vocab <= old)
      throw rangeError(`resizeTokenEmbeddings must be an integer above the checkpoint's vocab_size ${old} (rows are only added), got ${String(vocab)}`)
    this.description = `${inner.description} (vocabulary grown from ${old} to ${vocab} rows)`
    const { prefix, layout } = detectLayout(inner)
    const H = config.hidden_size
    this.grow(`${prefix}embed_tokens.weight`, [old, H], 0)
    // Paddle stores an untied head [hidden, vocab]: its tokens are columns.
    if (inner.has('lm_head.weight')) this.grow('lm_head.weight', layout === 'hf' ? [old, H] : [H, old], layout === 'hf' ? 0 : 1)
  }

  private grow(name: string, shape: number[], tokenAxis: 0 | 1): void {
    const actual = this.inner.shape(name)
    if (actual.length !== 2 || actual[0] !== shape[0] || actual[1] !== shape[1])
      throw new ErnieError('ERR_CHECKPOINT', `${this.inner.description}: tensor "${name}" has shape [${actual.join(', ')}], but config.json implies [${shape.join(', ')}]`)
    const src = this.inner.view(name)
    const values = src instanceof Float32Array ? src : bf16ToF32(src)
    const [rows, cols] = shape
    const tokens = shape[tokenAxis]
    const width = shape[1 - tokenAxis]
    // the mean token vector, in float64
    const sum = new Float64Array(width)
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) sum[tokenAxis === 0 ? c : r] += values[r * cols + c]
    const mean = new Float32Array(width)
    for (let i = 0; i < width; i++) mean[i] = sum[i] / tokens
    const meanStored: WeightArray = src instanceof Float32Array ? mean : f32ToBf16(mean)
    const added = this.vocab - tokens
    const newShape = tokenAxis === 0 ? [this.vocab, cols] : [rows, this.vocab]
    const data: WeightArray = src instanceof Float32Array ? new Float32Array(newShape[0] * newShape[1]) : new Uint16Array(newShape[0] * newShape[1])
    if (tokenAxis === 0) {
      data.set(src)
      for (let k = 0; k < added; k++) data.set(meanStored, (tokens + k) * cols)
    } else {
      for (let r = 0; r < rows; r++) {
        data.set(src.subarray(r * cols, (r + 1) * cols), r * this.vocab)
        data.fill(meanStored[r], r * this.vocab + cols, (r + 1) * this.vocab)
      }
    }
    this.grown.set(name, { shape: newShape, data })
  }

  names(): string[] {
    return this.inner.names()
  }
  has(name: string): boolean {
    return this.inner.has(name)
  }
  shape(name: string): number[] {
    return this.grown.get(name)?.shape ?? this.inner.shape(name)
  }
  view(name: string): WeightArray {
    return this.grown.get(name)?.data ?? this.inner.view(name)
  }
}

/** The config of a model whose vocabulary was grown to `vocab` rows. */
export function resizedConfig(config: ResolvedConfig, vocab: number): ResolvedConfig {
  return { ...config, vocab_size: vocab }
}

/** The config and tensors of a checkpoint, grown to `vocab` rows when a size is given (the load option resizeTokenEmbeddings). */
export function withVocabulary(config: ResolvedConfig, source: TensorSource, vocab: number | undefined): { config: ResolvedConfig; source: TensorSource } {
  if (vocab === undefined) return { config, source }
  return { config: resizedConfig(config, vocab), source: new ResizedEmbeddings(source, config, vocab) }
}
