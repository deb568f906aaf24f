// Embeddings: one pooled (optionally L2-normalised) final hidden state per text.
import { rangeError, typeError } from '../errors'
import type { Precision } from '../precision'
import type { ModelContext } from './context'
import { yieldToEventLoop } from '../util/event-loop'
import { coreBatches, forwardInput, padRows, runBatchesPerCore } from './batches'
import { POOLINGS, type Pooling } from './forward'

export interface EmbedOptions {
  pooling?: Pooling
  normalize?: boolean
  maxLength?: number
  /** Texts per forward pass (default 16): sorted by length, one batch per core at a time. */
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
  // tokenized a few at a time, the event loop running in between (a long list would hold it)
  const rows: number[][] = []
  for (let i = 0; i < list.length; i += 64) {
    if (i > 0) await yieldToEventLoop()
    const enc = tok.encodeBatch(list.slice(i, i + 64), { maxLength: options.maxLength ?? 512, padding: false, truncation: true })
    // an empty text (whitespace only, say) still gets one token to pool
    for (const r of enc.inputIds) rows.push(r.length === 0 ? [tok.unkTokenId ?? tok.padTokenId ?? 0] : r)
  }
  const pad = tok.padTokenId ?? 0
  const out = new Array<Float32Array>(list.length)
  // length-sorted batches, one per core (model/batches.ts), pooled by the engine (last-token
  // pooling runs the last layer on those rows alone)
  await runBatchesPerCore(coreBatches(rows.map((r) => r.length), batchSize), async (idx, singleThread) => {
    const padded = padRows(
      idx.map((k) => rows[k]),
      pad,
    )
    const { pooled } = await model.forward(forwardInput(padded), { output: ['pooled'], pooling, precision, singleThread })
    idx.forEach((k, b) => {
      const v = pooled!.slice(b * H, (b + 1) * H)
      if (options.normalize) {
        const norm = Math.hypot(...v) || 1
        for (let j = 0; j < H; j++) v[j] /= norm
      }
      out[k] = v
    })
  })
  return out
}
