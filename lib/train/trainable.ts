// What a language-model task trains (LmTask, DpoTask): a LoRA adapter's tensors (PEFT names), the
// model's own weights under full training (HF names, fp32 masters with bf16 compute copies), or
// both; and what the Trainer asks a task about them.
import { ErnieError, rangeError } from '../errors'
import { checkpointShapes } from '../model/layout'
import type { FullTrainingOptions, ErnieModel } from '../model/model'
import type { LoraAdapter } from '../model/lora'

export class TrainableSet {
  /** The parameters by name, updated in place by the optimiser. */
  readonly params = new Map<string, Float32Array>()
  /** Whether the base weights train (full training). */
  readonly trainBase: boolean
  private readonly shapes = new Map<string, readonly number[]>()

  /** `what` names the task in errors. Full training is enabled on the model here when it is not yet. */
  constructor(
    private readonly model: ErnieModel,
    adapter: LoraAdapter | undefined,
    fullTraining: boolean | FullTrainingOptions | undefined,
    what: string,
  ) {
    if (!adapter && !fullTraining) throw rangeError(`${what}: nothing to train: give an adapter, fullTraining, or both`)
    this.trainBase = !!fullTraining
    if (this.trainBase && model.trainableWeights.size === 0) model.enableFullTraining(typeof fullTraining === 'object' ? fullTraining : {})
    if (adapter) for (const [name, t] of adapter.tensors) this.params.set(name, t), this.shapes.set(name, adapter.shapeOf(name))
    if (this.trainBase) {
      const shapes = checkpointShapes(model.config)
      for (const [name, t] of model.trainableWeights) this.params.set(name, t), this.shapes.set(name, shapes.get(name)!)
    }
    if (this.params.size === 0) throw new ErnieError('ERR_STATE', `${what}: every weight is frozen and there is no adapter`)
  }

  /** The bf16 copies the engine computes with, rewritten after each update (full training). */
  computeCopies(): ReadonlyMap<string, Uint16Array> {
    return this.trainBase ? this.model.computeWeights : new Map()
  }

  paramShape(name: string): readonly number[] {
    return this.shapes.get(name) ?? [this.params.get(name)!.length]
  }
}
