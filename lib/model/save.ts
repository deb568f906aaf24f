// A model written as a standalone checkpoint directory (ErnieModel.save, exportModel): the
// package's one checkpoint writer, in the HF layout or the ERNIEKit / Paddle one.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { rangeError } from '../errors'
import { saveSafetensors, type TensorToSave } from '../io/safetensors'
import { copyModelFiles, TOKENIZER_FILES } from '../tokenizer'
import type { ResolvedConfig } from './config'
import type { ModelContext } from './context'
import { checkpointShapes, hfTensor, type WeightLayout } from './layout'
import { PADDLE_ARCHITECTURE, paddleTensors } from './paddle-layout'
import type { ModelViews } from './weights'

export const LAYOUTS: readonly WeightLayout[] = ['hf', 'paddle']

/** What a checkpoint is written from: a config, weight views, and where the tokenizer files are. */
export interface CheckpointParts {
  readonly config: ResolvedConfig
  readonly weights: ModelViews
  readonly directory?: string | undefined
}

export interface SaveOptions {
  /**
   * 'hf' (default): transformers' names (`model.layers.N.self_attn.q_proj.weight`), [out, in].
   * 'paddle': ERNIEKit's (`ernie.` names, [in, out], fused qkv_proj and up_gate_proj); ERNIE-4.5
   * models only (ErnieError ERR_UNSUPPORTED_MODEL for Qwen3).
   */
  layout?: WeightLayout
}

/** The layout option checked: 'hf' when absent. */
export function resolveLayout(layout: unknown, what: string): WeightLayout {
  if (layout === undefined) return 'hf'
  if (!LAYOUTS.includes(layout as WeightLayout)) throw rangeError(`${what}: layout must be one of ${LAYOUTS.join(', ')}, got ${JSON.stringify(layout)}`)
  return layout as WeightLayout
}

// transformers' class for an ERNIE-4.5 causal LM (ERNIEKit's is PADDLE_ARCHITECTURE)
const HF_ERNIE_ARCHITECTURE = 'Ernie4_5ForCausalLM'

/** The weights under their names in `layout`, as they are held (BF16, or F32 where trained or merged in f32). */
export function checkpointTensors(parts: CheckpointParts, layout: WeightLayout = 'hf'): Record<string, TensorToSave> {
  const tensors: Record<string, TensorToSave> = {}
  const entries =
    layout === 'paddle'
      ? paddleTensors(parts.config, parts.weights)
      : new Map([...checkpointShapes(parts.config)].map(([name, shape]) => [name, { shape, data: hfTensor(parts.weights, name, shape) }]))
  for (const [name, { shape, data }] of entries) tensors[name] = { dtype: data instanceof Float32Array ? 'F32' : 'BF16', shape, data }
  return tensors
}

/**
 * config.json of a checkpoint in `layout`: the model's, naming ERNIEKit's class in the Paddle
 * layout (which holds a causal LM, ERNIE-4.5 only), and transformers' for a model read from it.
 */
export function checkpointConfig(config: ResolvedConfig, layout: WeightLayout): Record<string, unknown> {
  const { arch: _arch, ...rest } = config
  if (layout === 'paddle') return { ...rest, architectures: [PADDLE_ARCHITECTURE] }
  const fromPaddle = (config.architectures ?? []).includes(PADDLE_ARCHITECTURE)
  return fromPaddle ? { ...rest, architectures: [HF_ERNIE_ARCHITECTURE] } : rest
}

/** config.json, model.safetensors and the tokenizer files (of the directory the weights came from) in `dir`. */
export async function writeCheckpoint(parts: CheckpointParts, dir: string, layout: WeightLayout): Promise<void> {
  const tensors = checkpointTensors(parts, layout)
  await fs.promises.mkdir(dir, { recursive: true })
  // transformers reads the 'pt' format tag; Paddle's checkpoints carry none
  await saveSafetensors(path.join(dir, 'model.safetensors'), tensors, layout === 'hf' ? { format: 'pt' } : undefined)
  const tmp = path.join(dir, `.config.json.${process.pid}.tmp`)
  await fs.promises.writeFile(tmp, JSON.stringify(checkpointConfig(parts.config, layout), null, 2) + '\n')
  await fs.promises.rename(tmp, path.join(dir, 'config.json'))
  if (parts.directory && path.resolve(parts.directory) !== path.resolve(dir))
    await copyModelFiles(parts.directory, dir, [...TOKENIZER_FILES, 'generation_config.json'])
}

/** ErnieModel.save. */
export async function saveModel(model: ModelContext, dir: string, options: SaveOptions = {}): Promise<void> {
  model.native()
  await writeCheckpoint(model, dir, resolveLayout(options.layout, 'save'))
}
