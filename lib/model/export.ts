// A model, with a LoRA adapter merged, written as a standalone checkpoint in the HF or the
// ERNIEKit / Paddle layout (exportModel). The merge is mergeAdapter's; the writer is save.ts's.
import * as path from 'node:path'

import { ErnieError, typeError } from '../errors'
import { LoraAdapter } from './lora'
import { mergedViews } from './merge'
import { ErnieModel } from './model'
import { checkPaddleModel } from './paddle-layout'
import { resolveLayout, writeCheckpoint, type SaveOptions } from './save'

export interface ExportOptions extends SaveOptions {
  /** A LoRA adapter to merge into the weights written: a LoraAdapter made for the model, or a PEFT adapter directory. */
  adapter?: LoraAdapter | string
  /** The merged projections' dtype, as mergeAdapter's: 'bf16' (default: the checkpoint's own) or 'f32'. */
  dtype?: 'bf16' | 'f32'
}

/**
 * Writes `model` (an ErnieModel, or a directory or hub id loaded for the purpose) to `outDir` as a
 * standalone checkpoint: config.json, model.safetensors and the tokenizer files, in the HF layout
 * (default) or ERNIEKit's (`layout: 'paddle'`, ERNIE-4.5 only), with `adapter` merged
 * (W + scale B A in f32, then rounded to `dtype`). The model itself is left as it was.
 * ErnieModel.fromPretrained(outDir) reads either layout back.
 */
export async function exportModel(model: ErnieModel | string, outDir: string, options: ExportOptions = {}): Promise<void> {
  if (typeof outDir !== 'string' || outDir.length === 0) throw typeError('exportModel: outDir must be a directory path')
  if (!(model instanceof ErnieModel) && typeof model !== 'string') throw typeError('exportModel: model must be an ErnieModel, a directory or a hub id')
  if (options.adapter !== undefined && !(options.adapter instanceof LoraAdapter) && typeof options.adapter !== 'string')
    throw typeError('exportModel: adapter must be a LoraAdapter or a PEFT adapter directory')
  const layout = resolveLayout(options.layout, 'exportModel')
  const m = typeof model === 'string' ? await ErnieModel.fromPretrained(model, { tokenizer: false }) : model
  try {
    m.native()
    if (layout === 'paddle') checkPaddleModel(m.config, 'exportModel')
    // the checkpoint would replace the files its own weights are mapped from
    if (m.directory && path.resolve(m.directory) === path.resolve(outDir))
      throw new ErnieError('ERR_EXISTS', `exportModel: ${path.resolve(outDir)} is the directory the model was loaded from; export to another`)
    const adapter = typeof options.adapter === 'string' ? await LoraAdapter.load(options.adapter, m) : options.adapter
    try {
      const weights = adapter ? await m.track(mergedViews(m.weights, adapter, { dtype: options.dtype })) : m.weights
      await writeCheckpoint({ config: m.config, weights, directory: m.directory }, outDir, layout)
    } finally {
      if (typeof options.adapter === 'string') adapter?.dispose()
    }
  } finally {
    if (typeof model === 'string') await m.dispose()
  }
}
