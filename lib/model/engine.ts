// The native engine's model: the options it is built from (dimensions and weight views). Its
// surface and options are typed with the rest of the binding (lib/addon-types.ts).
import type { NativeMatrix, NativeModelOptions } from '../addon-types'
import { nativeBackend } from '../device'
import type { NativeModel } from '../native'
import type { ResolvedConfig } from './config'
import type { MatrixView, ModelViews } from './weights'

/** The native model object (see native/addon/model.cc). */
export type NativeModelHandle = NativeModel

function nativeMatrix(m: MatrixView): NativeMatrix {
  return { data: m.data, offset: m.offset, rows: m.rows, cols: m.cols, ld: m.ld, transposed: m.transposed }
}

/**
 * The options object of `new NativeModel(...)` for a config and its weight views, on `device`
 * (where the weights are placed once). `prepack`: the CPU engine may keep its bf16 weights
 * packed for bf16 products (AVX512_BF16), as much memory again as they take; false where the
 * weights change between calls (full fine-tuning's compute copies).
 */
export function nativeModelOptions(cfg: ResolvedConfig, v: ModelViews, device: 'cpu' | 'cuda', prepack = true): NativeModelOptions {
  return {
    device: nativeBackend(device),
    prepack,
    dims: {
      hidden: cfg.hidden_size,
      intermediate: cfg.intermediate_size,
      layers: cfg.num_hidden_layers,
      heads: cfg.num_attention_heads,
      kvHeads: cfg.num_key_value_heads,
      headDim: cfg.head_dim,
      vocab: cfg.vocab_size,
      eps: cfg.rms_norm_eps,
      ropeTheta: cfg.rope_theta,
      ropePairing: cfg.arch.ropePairing,
      qkNorm: cfg.arch.qkNorm,
    },
    embed: nativeMatrix(v.embed),
    lmHead: nativeMatrix(v.lmHead),
    finalNorm: v.finalNorm,
    layers: v.layers.map((l) => ({
      q: nativeMatrix(l.q),
      k: nativeMatrix(l.k),
      v: nativeMatrix(l.v),
      o: nativeMatrix(l.o),
      gate: nativeMatrix(l.gate),
      up: nativeMatrix(l.up),
      down: nativeMatrix(l.down),
      inputNorm: l.inputNorm,
      postAttentionNorm: l.postAttentionNorm,
      ...(l.qNorm ? { qNorm: l.qNorm, kNorm: l.kNorm } : {}),
    })),
  }
}
