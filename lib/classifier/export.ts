// ErnieClassifier.export: the classifier as a directory whose model holds everything it runs
// with (its LoRA adapter merged into the weights), in the HF layout or ERNIEKit's, written by
// save (persistence.ts) and read back by ErnieClassifier.load.
import { mergedViews } from '../model/merge'
import { checkPaddleModel } from '../model/paddle-layout'
import { resolveLayout, type SaveOptions } from '../model/save'
import type { ClassifierCore } from './core'
import { saveClassifier } from './persistence'

export interface ExportOptions extends SaveOptions {
  /** The merged projections' dtype (mergeAdapter's): 'bf16' (default: the checkpoint's own) or 'f32'. */
  dtype?: 'bf16' | 'f32'
}

export async function exportClassifier(core: ClassifierCore, dir: string, options: ExportOptions = {}): Promise<void> {
  const layout = resolveLayout(options.layout, 'export')
  await core.ensureReady()
  core.checkUsable('export')
  const model = core.model_!
  if (layout === 'paddle') checkPaddleModel(model.config, 'export')
  const adapter = core.adapter
  const weights = adapter ? await core.track(model.track(mergedViews(model.weights, adapter, { dtype: options.dtype }))) : model.weights
  // with the adapter merged, the weights are the classifier's own: 'lora' runs as 'full'
  const method = core.method_ === 'lora' ? 'full' : core.method_!
  const tuning = core.gen ? 'full' : undefined
  await saveClassifier(core, dir, { weights, method, tuning, layout })
}
