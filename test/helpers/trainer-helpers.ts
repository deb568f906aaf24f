// Shared by the trainer tests: a tiny random model and a small token data set.
import { ErnieModel } from '../../lib/model/index'
import type { LmExample } from '../../lib/train/index'
import { rng } from './helpers'

/** A 2-layer decoder small enough for hundreds of training steps in a second on one core. */
export const TINY = {
  model_type: 'ernie4_5',
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 16,
  vocab_size: 256,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
  max_position_embeddings: 512,
  pad_token_id: 0,
}

/**
 * A random model. Weights with a larger spread than HF's 0.02 (std 0.3) give logits a range
 * wide enough for a frozen base plus LoRA to fit the data.
 */
export function tinyModel(seed = 1, std = 0.3): ErnieModel {
  return ErnieModel.random(TINY, { seed, std })
}

/**
 * `n` sequences of 7 to 16 tokens; each starts with its own token, so every next token is
 * determined by its prefix and a model can fit them exactly.
 */
export function tokenData(n: number, seed = 5): LmExample[] {
  const r = rng(seed)
  return Array.from({ length: n }, (_, i) => ({
    inputIds: [3 + i, ...Array.from({ length: 6 + Math.floor(r() * 10) }, () => 3 + Math.floor(r() * 250))],
  }))
}
