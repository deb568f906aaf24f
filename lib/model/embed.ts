// Embeddings: one pooled (optionally L2-normalised) final hidden state per text.
import { rangeError, typeError } from '../errors'
import type { Precision } from '../precision'
import type { ModelContext } from './context'
import { POOLINGS, type Pooling } from './forward'

export interface EmbedOptions {
  pooling?: Pooling
  normalize?: boolean
  maxLength?: number
  batchSize?: number
  /** Default: the model's `precision`. */
  precision?: Precision
}

/** ErnieModel.embed. */
export async function embedTexts(model: ModelContext, texts: string | string[], options: EmbedOptions = {}): Promise<Float32Array[]> {
  const list = typeof texts === 'string' ? [texts] : texts
  if (!Array.isArray(list) || list.some((x) => typeof x !== 'string')) throw typeError('embed: texts must be a string or an array of strings')
  const tok = model.requireTokenizer('embed')
  const pooling = options.pooling ?? 'last'
  if (!POOLINGS.includes(pooling)) throw rangeError(`embed: pooling must be 'last', 'mean' or 'first', got ${JSON.stringify(pooling)}`)
  const precision = model.callPrecision(options.precision, 'embed: precision')
  const batchSize = options.batchSize ?? 16
  const H = model.config.hidden_size
  const out: Float32Array[] = []
  for (let i = 0; i < list.length; i += batchSize) {
    const enc = tok.encodeBatch(list.slice(i, i + batchSize), { maxLength: options.maxLength ?? 512, padding: false, truncation: true })
    // an empty text (whitespace only, say) still gets one token to pool
    for (const row of enc.inputIds) if (row.length === 0) row.push(tok.unkTokenId ?? tok.padTokenId ?? 0)
    const T = Math.max(...enc.inputIds.map((r) => r.length))
    const pad = tok.padTokenId ?? 0
    const ids = enc.inputIds.map((r) => [...r, ...new Array<number>(T - r.length).fill(pad)])
    const mask = enc.inputIds.map((r) => [...r.map(() => 1), ...new Array<number>(T - r.length).fill(0)])
    // pooled by the engine (last-token pooling runs the last layer on those rows alone)
    const { pooled } = await model.forward({ inputIds: ids, attentionMask: mask }, { output: ['pooled'], pooling, precision })
    ids.forEach((_, b) => {
      const v = pooled!.slice(b * H, (b + 1) * H)
      if (options.normalize) {
        const norm = Math.hypot(...v) || 1
        for (let j = 0; j < H; j++) v[j] /= norm
      }
      out.push(v)
    })
  }
  return out
}
