// ErnieModel: an ERNIE-4.5 or Qwen3 decoder loaded from a checkpoint (or made at random),
// running on the native engine. Weights stay where the checkpoint mapping put them; the whole
// layer stack runs in one native call per batch, off the JS thread.
//
// The class is the model's face; its work lives beside it: load.ts (checkpoints in), save.ts
// (checkpoints out), forward.ts (batches), train.ts (loss, gradients, full training), merge.ts
// (LoRA merge), embed.ts, generate.ts, engine.ts (the native handle), layout.ts (HF names and
// shapes), dtype.ts (bf16 conversions).
import { resolveModelDevice } from '../device'
import { resolvePrecision, type Precision } from '../precision'
import { ErnieError, rangeError, typeError } from '../errors'
import { NativeModel } from '../native'
import type { ChatMessage, Tokenizer } from '../tokenizer'
import { resolveConfig, type ModelConfig, type ResolvedConfig } from './config'
import { embedTexts, type EmbedOptions } from './embed'
import { nativeModelOptions, type NativeModelHandle } from './engine'
import { POOLINGS, flatten, toFlatBatch, type ForwardInput, type ForwardOptions, type ForwardResult, type TokenBatch } from './forward'
import { chatReply, chatStream, type ChatResult } from './chat'
import { generateStream, generateText, type GenerateChunk, type GenerateOptions, type GenerateResult } from './generate'
import { loadPretrained, randomTensors, type FromPretrainedOptions, type ModelParts, type RandomOptions } from './load'
import { LoraAdapter } from './lora'
import { mergedViews } from './merge'
import { withVocabulary } from './resize'
import { saveModel, type SaveOptions } from './save'
import { fullTrainingViews, runLoss, runLossAndGrad, type FullTrainingOptions, type LossAndGradOptions } from './train'
import { mapWeights, type ModelViews, type TensorSource } from './weights'

export type { TokenBatch, ForwardInput, ForwardOptions, ForwardResult, FlatBatch } from './forward'
export { toFlatBatch } from './forward'
export type { NativeModelHandle } from './engine'
export { nativeModelOptions } from './engine'
export { MemoryTensors, SafetensorsSource, randomTensors, readConfig, type RandomOptions, type ModelParts, type FromPretrainedOptions } from './load'
export { checkpointShapes, type WeightLayout } from './layout'
export type { SaveOptions } from './save'
export { bf16ToF32, f32ToBf16 } from './dtype'
export { gradientSpec, type Objective, type FullTrainingOptions } from './train'
export type { EmbedOptions } from './embed'
export type { GenerateOptions, GenerateResult, GenerateChunk, FinishReason } from './generate'
export type { SamplingOptions } from './sampling'
export type { ChatResult } from './chat'

export class ErnieModel implements AsyncDisposable {
  readonly config: ResolvedConfig
  /** Where the checkpoint was loaded from, when it came from disk. */
  readonly directory: string | undefined
  /** @internal The engine's weight views (replaced by enableFullTraining). */ weights: ModelViews
  /** @internal */ readonly source: TensorSource
  /** @internal */ handle: NativeModelHandle | undefined
  /** The checkpoint's tokenizer, when it has one. */
  readonly tokenizer: Tokenizer | undefined
  /** Where the weights live and the model graph runs. */
  readonly device: 'cpu' | 'cuda'
  /** Tensors of the checkpoint no part of the model uses, loaded past with `unusedTensors: 'ignore'` (empty otherwise). */
  readonly ignoredTensors: readonly string[]
  private precisionAsked: Precision = resolvePrecision()
  private readonly release: (() => void) | undefined
  private readonly running = new Set<Promise<unknown>>()
  private full: { masters: Map<string, Float32Array>; compute: Map<string, Uint16Array> } | undefined

  /**
   * The precision of the model's matrix products when a call does not say (README "Precision"):
   * 'fp32', 'bf16' or 'auto'. `precisionInForce(model.precision)` tells what 'auto' means here.
   */
  get precision(): Precision {
    return this.precisionAsked
  }
  set precision(value: Precision) {
    this.precisionAsked = resolvePrecision(value, 'ErnieModel.precision')
  }

  /** @internal The precision of one call: its option, else the model's. */
  callPrecision(requested: unknown, what: string): Precision {
    return requested === undefined ? this.precisionAsked : resolvePrecision(requested, what)
  }

  /** Use fromPretrained() or random(), which assemble the parts. */
  constructor(parts: ModelParts) {
    this.config = parts.config
    this.weights = parts.weights
    this.source = parts.source
    this.release = parts.release
    this.directory = parts.directory
    this.tokenizer = parts.tokenizer
    this.device = parts.device ?? 'cpu'
    this.ignoredTensors = parts.ignoredTensors ?? []
    this.handle = new NativeModel(nativeModelOptions(parts.config, parts.weights, this.device))
  }

  /**
   * Loads a checkpoint: a local directory, or a hub id such as 'baidu/ERNIE-4.5-0.3B-PT' resolved
   * through the Hugging Face cache (downloading when allowed). The safetensors file is memory-mapped
   * and its bf16 weights are used in place: nothing is copied.
   */
  static fromPretrained(source: string, options: FromPretrainedOptions = {}): Promise<ErnieModel> {
    return loadPretrained(source, options, (parts) => new ErnieModel(parts))
  }

  /** A randomly initialised model (bf16 weights in memory) from config.json's own keys. */
  static random(config: ModelConfig | Record<string, unknown>, options: RandomOptions = {}): ErnieModel {
    const device = resolveModelDevice(options.device, 'random: device')
    const precision = resolvePrecision(options.precision, 'random: precision')
    const checkpointConfig = resolveConfig(config)
    const { config: cfg, source } = withVocabulary(checkpointConfig, randomTensors(checkpointConfig, options), options.resizeTokenEmbeddings)
    const model = new ErnieModel({ config: cfg, weights: mapWeights(cfg, source), source, device })
    model.precision = precision
    return model
  }

  /** @internal The native handle, or an error if disposed. */
  native(): NativeModelHandle {
    if (!this.handle) throw new ErnieError('ERR_DISPOSED', 'this ErnieModel has been disposed')
    return this.handle
  }

  /** @internal Tracks a native call so dispose() can wait for it. */
  track<T>(p: Promise<T>): Promise<T> {
    this.running.add(p)
    const done = () => this.running.delete(p)
    p.then(done, done)
    return p
  }

  /** Hidden states and/or logits for a padded batch of token ids. */
  async forward(input: ForwardInput, options: ForwardOptions = {}): Promise<ForwardResult> {
    const handle = this.native()
    const precision = this.callPrecision(options.precision, 'forward: precision')
    const b = toFlatBatch(input, this.config.max_position_embeddings)
    const want = options.output ?? ['hidden']
    const n = b.batch * b.seq
    const result: ForwardResult = { shape: [b.batch, b.seq] }
    if (want.includes('hidden')) result.hidden = new Float32Array(n * this.config.hidden_size)
    if (want.includes('logits')) result.logits = new Float32Array(n * this.config.vocab_size)
    if (want.includes('lastHidden')) result.lastHidden = new Float32Array(b.batch * this.config.hidden_size)
    if (want.includes('pooled')) result.pooled = new Float32Array(b.batch * this.config.hidden_size)
    if (options.head) result.headLogits = new Float32Array(b.batch * options.head.classes)
    const targets = options.targets === undefined ? undefined : flatten(options.targets, 'targets', [b.batch, b.seq]).data
    if (targets) result.rowLogProbs = new Float64Array(b.batch)
    if (options.pooling !== undefined && !POOLINGS.includes(options.pooling))
      throw rangeError(`forward: pooling must be one of ${POOLINGS.join(', ')}, got ${JSON.stringify(options.pooling)}`)
    await this.track(
      handle.forward({
        ...b,
        hidden: result.hidden,
        logits: result.logits,
        lastHidden: result.lastHidden,
        pooled: result.pooled,
        pooling: options.pooling,
        head: options.head,
        headLogits: result.headLogits,
        targets,
        rowLogProbs: result.rowLogProbs,
        adapter: options.adapter?.handle,
        singleThread: options.singleThread,
        precision,
      }),
    )
    return result
  }

  /**
   * Mean next-token cross-entropy and its gradients, in one native call (forward, loss,
   * backward). `labels` are unshifted as in HF (position t predicts labels[t + 1]); -100 is
   * ignored; without labels, the input ids with padding ignored. Gradients are f32: PEFT
   * names for the adapter's tensors, HF names ([out, in]) for base weights with trainBase.
   * Pass `grads` (from a previous call) to add into it instead of allocating.
   */
  lossAndGrad(input: ForwardInput & { labels?: TokenBatch }, options: LossAndGradOptions = {}): Promise<{ loss: number; count: number; grads: Map<string, Float32Array> }> {
    return runLossAndGrad(this, input, options, this.full?.masters)
  }

  /**
   * The mean next-token cross-entropy and its token count, without gradients (evaluation): a
   * forward and the loss, no backward. Same label conventions as lossAndGrad.
   */
  loss(
    input: ForwardInput & { labels?: TokenBatch },
    options: { adapter?: LoraAdapter; precision?: Precision } = {},
  ): Promise<{ loss: number; count: number }> {
    return runLoss(this, input, options)
  }

  /**
   * Makes the base weights trainable (full fine-tuning): each weight not frozen gets an owned
   * fp32 master copy (HF name, [out, in]) and, with bf16 compute (the default), an owned bf16
   * copy the engine computes with; the native model is rebuilt to read them. Frozen weights (HF
   * names matching a `freeze` pattern) stay as they are and get no gradient. Afterwards
   * lossAndGrad with `trainBase` fills gradients for the trainable weights only; an optimiser
   * updates the masters in place and refreshes the bf16 copies (adamwStep's `paramsBf16`).
   * Returns the masters (also `trainableWeights`). Call it when no other call is running.
   */
  enableFullTraining(options: FullTrainingOptions = {}): Map<string, Float32Array> {
    this.native()
    if (this.full) throw new ErnieError('ERR_STATE', 'enableFullTraining: full training is already enabled for this model')
    if (this.running.size > 0) throw new ErnieError('ERR_BUSY', 'enableFullTraining: wait for the running calls to finish first')
    const { views, masters, copies } = fullTrainingViews(this.config, this.weights, options)
    const handle = new NativeModel(nativeModelOptions(this.config, views, this.device, false))
    this.handle?.dispose()
    this.handle = handle
    this.weights = views
    this.full = { masters, compute: copies }
    return masters
  }

  /**
   * Folds a LoRA adapter into the weights it adapts: W' = W + scale B A, computed in f32 and
   * kept as f32 or rounded to bf16 (the default, as PEFT's merge_and_unload keeps the model's
   * dtype). The model then no longer needs the adapter; save() exports the merged checkpoint.
   * The products run off the JS thread; other calls wait for the merge (ERR_BUSY meanwhile).
   */
  async mergeAdapter(adapter: LoraAdapter, options: { dtype?: 'bf16' | 'f32' } = {}): Promise<void> {
    this.native()
    if (!(adapter instanceof LoraAdapter)) throw typeError('mergeAdapter: expected a LoraAdapter')
    if (this.full) throw new ErnieError('ERR_STATE', 'mergeAdapter: not with full training enabled; merge before enableFullTraining')
    if (this.running.size > 0) throw new ErnieError('ERR_BUSY', 'mergeAdapter: wait for the running calls to finish first')
    const views = await this.track(mergedViews(this.weights, adapter, options))
    const handle = new NativeModel(nativeModelOptions(this.config, views, this.device))
    this.handle?.dispose()
    this.handle = handle
    this.weights = views
  }

  /** The fp32 master weights that train (HF names), after enableFullTraining; empty before. */
  get trainableWeights(): ReadonlyMap<string, Float32Array> {
    return this.full?.masters ?? new Map()
  }

  /** The bf16 copies the engine computes with, by HF name (empty with f32 compute or before enableFullTraining). */
  get computeWeights(): ReadonlyMap<string, Uint16Array> {
    return this.full?.compute ?? new Map()
  }

  /**
   * Writes a standalone checkpoint directory: config.json, model.safetensors (weights as they
   * are held: bf16 or f32) and the tokenizer files of the directory the model came from. In the
   * HF layout by default (HF names, [out, in]) whatever layout the weights were read in, or with
   * `layout: 'paddle'` in ERNIEKit's (ERNIE-4.5 only). exportModel merges an adapter first.
   */
  save(dir: string, options: SaveOptions = {}): Promise<void> {
    return saveModel(this, dir, options)
  }

  /** @internal */
  requireTokenizer(what: string): Tokenizer {
    if (!this.tokenizer) throw new ErnieError('ERR_NO_TOKENIZER', `${what} needs a tokenizer; this model was loaded without one`)
    return this.tokenizer
  }

  /**
   * One vector per text: the final hidden state pooled over each text's tokens (last token by
   * default, as Qwen3-Embedding does; or mean, or first), optionally L2-normalised.
   */
  embed(texts: string | string[], options: EmbedOptions = {}): Promise<Float32Array[]> {
    return embedTexts(this, texts, options)
  }

  /**
   * Continues a prompt (text, token ids, or chat messages through the model's chat template, which
   * then also ends at the template's end-of-turn token) with a KV cache: greedy by default, or
   * sampled with temperature, topK and topP (seeded); repetitionPenalty, stop strings, eos ids and
   * an AbortSignal. `onText` sees the text as it is decoded (generateStream's chunks).
   */
  generate(prompt: string | number[] | ChatMessage[], options: GenerateOptions = {}): Promise<GenerateResult> {
    return generateText(this, prompt, options)
  }

  /**
   * generate() as an async iterator of chunks, one per decoded token, each with the text that
   * became final with it (never half a character, never part of a stop string), and a last chunk
   * with the rest and the finishReason: `for await (const { text } of model.generateStream(p))`.
   * Bad options throw here; leaving the loop early frees the cache.
   */
  generateStream(prompt: string | number[] | ChatMessage[], options: GenerateOptions = {}): AsyncGenerator<GenerateChunk, void, undefined> {
    return generateStream(this, prompt, options)
  }

  /**
   * Answers a conversation: the messages rendered by the tokenizer's chat template with the
   * generation prompt, generated until the template's end-of-turn token (or eos). Returns the
   * answer as `message` ({ role: 'assistant', content }) with generate()'s result.
   */
  chat(messages: ChatMessage[], options: GenerateOptions = {}): Promise<ChatResult> {
    return chatReply(this, messages, options)
  }

  /** chat() as a stream of chunks, as generateStream(). */
  chatStream(messages: ChatMessage[], options: GenerateOptions = {}): AsyncGenerator<GenerateChunk, void, undefined> {
    return chatStream(this, messages, options)
  }

  /** Parameters of the model (the tied embedding counted once). */
  get numParameters(): number {
    let n = 0
    for (const name of this.source.names()) n += this.source.shape(name).reduce((a, b) => a * b, 1)
    return n
  }

  /** Waits for running calls, then frees the native model and unmaps the checkpoint. */
  async dispose(): Promise<void> {
    await Promise.allSettled([...this.running])
    this.handle?.dispose()
    this.handle = undefined
    this.release?.()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose()
  }
}
