// What ErnieModel's parts (training, embedding, generation, saving) use of the model: its
// config, weights and tokenizer, and its native handle with the tracking of calls on it.
import type { Precision } from '../precision'
import type { Tokenizer } from '../tokenizer'
import type { ResolvedConfig } from './config'
import type { NativeModelHandle } from './engine'
import type { ForwardInput, ForwardOptions, ForwardResult } from './forward'
import type { ModelViews } from './weights'

/** The model as its parts see it (ErnieModel itself). */
export interface ModelContext {
  readonly config: ResolvedConfig
  readonly directory: string | undefined
  readonly tokenizer: Tokenizer | undefined
  readonly weights: ModelViews
  /** The native handle, or an error if disposed. */
  native(): NativeModelHandle
  /** Tracks a native call so dispose() can wait for it. */
  track<T>(p: Promise<T>): Promise<T>
  /** The precision of one call: its option, else the model's. */
  callPrecision(requested: unknown, what: string): Precision
  requireTokenizer(what: string): Tokenizer
  forward(input: ForwardInput, options?: ForwardOptions): Promise<ForwardResult>
}
