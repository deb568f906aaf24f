// A model written as a standalone HF checkpoint directory (ErnieModel.save).
import * as fs from 'node:fs'
import * as path from 'node:path'

import { saveSafetensors, type TensorToSave } from '../io/safetensors'
import { copyModelFiles, TOKENIZER_FILES } from '../tokenizer'
import type { ModelContext } from './context'
import { checkpointShapes, hfTensor } from './layout'

/** The model's weights under their HF names, as they are held (BF16, or F32 where trained). */
export function checkpointTensors(model: ModelContext): Record<string, TensorToSave> {
  model.native()
  const tensors: Record<string, TensorToSave> = {}
  for (const [name, shape] of checkpointShapes(model.config)) {
    const data = hfTensor(model.weights, name, shape)
    tensors[name] = { dtype: data instanceof Float32Array ? 'F32' : 'BF16', shape, data }
  }
  return tensors
}

/** ErnieModel.save: config.json, model.safetensors and the tokenizer files of the model's directory. */
export async function saveModel(model: ModelContext, dir: string): Promise<void> {
  const tensors = checkpointTensors(model)
  await fs.promises.mkdir(dir, { recursive: true })
  await saveSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' })
  const { arch: _arch, ...config } = model.config
  const tmp = path.join(dir, `.config.json.${process.pid}.tmp`)
  await fs.promises.writeFile(tmp, JSON.stringify(config, null, 2) + '\n')
  await fs.promises.rename(tmp, path.join(dir, 'config.json'))
  if (model.directory && path.resolve(model.directory) !== path.resolve(dir))
    await copyModelFiles(model.directory, dir, [...TOKENIZER_FILES, 'generation_config.json'])
}
