// A LoRA adapter folded into the base weights it adapts (ErnieModel.mergeAdapter).
import { ErnieError, rangeError } from '../errors'
import { gemm } from '../kernels/gemm'
import { bf16ToF32, f32ToBf16 } from './dtype'
import { materialize } from './layout'
import { peftName, type LoraAdapter } from './lora'
import { projectionSpec } from './projections'
import { hasTrainableTokens, mergedTokenViews } from './trainable-tokens'
import type { ModelViews } from './weights'

/** The weight views with the adapter merged: W' = W + scale B A in f32, kept as f32 or rounded to bf16; its token rows written into the embedding (and LM head). */
export async function mergedViews(weights: ModelViews, adapter: LoraAdapter, options: { dtype?: 'bf16' | 'f32' }): Promise<ModelViews> {
  const dtype = options.dtype ?? 'bf16'
  if (dtype !== 'bf16' && dtype !== 'f32') throw rangeError(`mergeAdapter: dtype must be 'bf16' or 'f32', got ${JSON.stringify(dtype)}`)
  const r = adapter.config.r
  const misfit = (what: string) => new ErnieError('ERR_ADAPTER', `mergeAdapter: the adapter does not fit this model: ${what}`)
  if (adapter.modelConfig.num_hidden_layers !== weights.layers.length)
    throw misfit(`it adapts ${adapter.modelConfig.num_hidden_layers} layers, the model has ${weights.layers.length}`)
  const layers: ModelViews['layers'] = []
  for (const [l, layer] of weights.layers.entries()) {
    const out = { ...layer }
    for (const proj of adapter.config.targetModules) {
      const key = projectionSpec(proj).key
      const view = layer[key]
      const a = adapter.tensors.get(peftName(l, proj, 'A')), b = adapter.tensors.get(peftName(l, proj, 'B'))
      if (!a || !b || a.length !== r * view.cols || b.length !== view.rows * r)
        throw misfit(`layer ${l} ${proj} is [${view.rows}, ${view.cols}] here, its A and B hold ${a?.length ?? 0} and ${b?.length ?? 0} values (r = ${r})`)
      const base = materialize(view)
      const w = base instanceof Float32Array ? Float32Array.from(base) : bf16ToF32(base)
      // W[out, in] += scale * B[out, r] . A[r, in], in fp32 whatever the model's precision:
      // the merged weight is then rounded once, to its stored dtype
      await gemm({ c: w, m: view.rows, n: view.cols, accumulate: true, alpha: adapter.scale, segments: [{ a: b, b: a, k: r, bLayout: 'kn' }], precision: 'fp32' })
      const data = dtype === 'f32' ? w : f32ToBf16(w)
      out[key] = { data, offset: 0, rows: view.rows, cols: view.cols, ld: view.cols, transposed: false }
    }
    layers.push(out)
  }
  // Trainable token rows replace the rows they stand for (PEFT merges them by index_copy).
  const tables = hasTrainableTokens(adapter.trainableTokens) ? mergedTokenViews(weights, adapter.modelConfig, adapter.trainableTokens, adapter.tensors, dtype) : {}
  return { ...weights, ...tables, layers }
}
