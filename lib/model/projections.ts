// The seven projections of a decoder layer, as the engine states them once (native/engine/model.h
// kProjections, exported by the addon as `projections`): PEFT's module name, the key of the
// engine's weight views, the block that holds it in HF tensor names, and its [out, in] shape in
// model dimensions.
import { projections } from '../native'
import type { ResolvedConfig } from './config'

export type Projection = 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj'
export type ProjectionKey = 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down'
/** A model dimension: hidden_size, intermediate_size, heads * head_dim ('q'), kv_heads * head_dim ('kv'). */
export type ModelDim = 'hidden' | 'intermediate' | 'q' | 'kv'

export interface ProjectionSpec {
  name: Projection
  key: ProjectionKey
  module: 'self_attn' | 'mlp'
  out: ModelDim
  in: ModelDim
}

/** In PEFT's order: q, k, v, o, gate, up, down. */
export const PROJECTION_SPECS: readonly ProjectionSpec[] = Object.freeze(projections.map((p) => Object.freeze({ ...p })))
export const PROJECTIONS: readonly Projection[] = Object.freeze(PROJECTION_SPECS.map((p) => p.name))

export function projectionSpec(proj: Projection): ProjectionSpec {
  const spec = PROJECTION_SPECS.find((p) => p.name === proj)
  if (!spec) throw new Error(`unknown projection ${proj}`)
  return spec
}

export function modelDim(cfg: ResolvedConfig, dim: ModelDim): number {
  if (dim === 'hidden') return cfg.hidden_size
  if (dim === 'intermediate') return cfg.intermediate_size
  return (dim === 'q' ? cfg.num_attention_heads : cfg.num_key_value_heads) * cfg.head_dim
}

/** [out, in] of a projection. */
export function projectionShape(cfg: ResolvedConfig, proj: Projection): [number, number] {
  const spec = projectionSpec(proj)
  return [modelDim(cfg, spec.out), modelDim(cfg, spec.in)]
}

/** The projection's path under a layer in HF names: 'self_attn.q_proj'. */
export function modulePath(proj: Projection): string {
  return `${projectionSpec(proj).module}.${proj}`
}
