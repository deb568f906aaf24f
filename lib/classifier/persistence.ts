// Persistence: a classifier saved to a directory and loaded back onto its base model. The
// directory (format version 2) is this package's (classifier.json, head.safetensors, report.html)
// and also a Hugging Face one (hf-format.ts): config.json, the tokenizer, and the trained model or
// the PEFT adapter at its root. Load reads those, version 1 directories, and Hugging Face
// sequence classifiers made elsewhere.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { LabelSet } from '../data'
import { resolveModelDevice } from '../device'
import { AbortError, ErnieError, typeError } from '../errors'
import { openSafetensors } from '../io/safetensors'
import type { WeightLayout } from '../model/layout'
import { LoraAdapter } from '../model/lora'
import { writeCheckpoint } from '../model/save'
import type { ModelViews } from '../model/weights'
import { ErnieModel } from '../model/model'
import { copyModelFiles, hasTokenizerFiles, Tokenizer } from '../tokenizer'
import { BUNDLED_MODEL, bundledModelDir, bundledModelPath, bundledNameOf, packageRoot } from './bundled'
import { readClassifierJson } from './classifier-json'
import type { ClassifierCore } from './core'
import { CLASSIFIER_FILE, FORMAT, FORMAT_VERSION, HEAD_FILE, type BaseArchitecture, type BaseModelRef, type ClassifierJson } from './format'
import { Head, HEAD_BIAS, HEAD_WEIGHT, type HeadSpec } from './head'
import { defaultLabels, hfFormOf, readHfClassifier, SCORE_MODULE, writeHfFiles } from './hf-format'
import { checkSignal, DEFAULT_MAX_LENGTH, hubOptionsOf, throwIfAborted, type ErnieClassifierOptions, type LoadOptions, type Method } from './options'
import { headRecord } from './settings'

/** The base as a save records it: the bundled model by its name, never by where it is installed. */
function portableBase(base: BaseModelRef): BaseModelRef {
  if (base.kind === 'path' && bundledNameOf(base.ref)) return { kind: 'bundled', ref: BUNDLED_MODEL }
  return base
}

/**
 * Where a recorded base model is now: a bundled one in this installation; a directory recorded
 * by an older save that was another installation's bundled model, this installation's.
 */
function locateBase(base: BaseModelRef, file: string): string {
  if (base.kind === 'bundled') {
    const dir = bundledModelDir(base.ref)
    if (!dir) throw new ErnieError('ERR_BASE_MODEL', `${file}: the bundled model "${base.ref}" is not in this installation (${bundledModelPath(base.ref)}); pass { model: <directory | hub id> } to load()`)
    return dir
  }
  if (base.kind === 'path' && !fs.existsSync(base.ref) && bundledNameOf(base.ref)) return bundledModelDir() ?? base.ref
  return base.ref
}

/**
 * What an export changes in what save writes: the weights (the adapter merged into them), the
 * method and tuning they now run as, and the layout of model.safetensors.
 */
export interface ClassifierExport {
  weights: ModelViews
  method: Method
  tuning: 'full' | undefined
  layout: WeightLayout
}

/** ErnieClassifier.save, and with `exporting` ErnieClassifier.export. */
export async function saveClassifier(core: ClassifierCore, dir: string, exporting?: ClassifierExport): Promise<void> {
  const what = exporting ? 'export' : 'save'
  if (typeof dir !== 'string' || dir.length === 0) throw typeError(`${what}: dir must be a directory path`)
  await core.ensureReady()
  core.checkUsable(what)
  const { writeDirectoryAtomically, writeFileDurable } = await import('../io/atomic')
  const { saveSafetensors } = await import('../io/safetensors')
  const { renderReport } = await import('./report')
  const info = await fs.promises.stat(dir).catch(() => undefined)
  if (info && !info.isDirectory()) throw new ErnieError('ERR_EXISTS', `${what}: ${path.resolve(dir)} is a file`)
  const existing = info ? await fs.promises.readdir(dir) : undefined
  if (existing && existing.length > 0 && !existing.includes(CLASSIFIER_FILE))
    throw new ErnieError('ERR_EXISTS', `${what}: ${path.resolve(dir)} holds other files and no ${CLASSIFIER_FILE}; choose an empty or new directory`)
  const model = core.model_!
  const method = exporting?.method ?? core.method_!
  // an export's adapter is in its weights
  const adapter = exporting ? undefined : core.adapter
  const tuning = exporting?.tuning ?? core.gen?.tuning
  const base = portableBase(core.base!)
  const saveModel = exporting !== undefined || method === 'full' || (method === 'generative' && tuning === 'full') || base.kind === 'saved'
  const meta: ClassifierJson = {
    format: FORMAT,
    version: FORMAT_VERSION,
    method,
    labels: core.labelSet!.toJSON(),
    maxLength: core.maxLength,
    truncation: core.truncation,
    pooling: core.pooling,
    precision: core.precision,
    appendEos: core.appendEos,
    head: headRecord(core),
    lora: adapter ? { ...adapter.config } : undefined,
    generative: core.gen ? { tuning: tuning!, prompt: core.gen.prompt, labelWords: Object.fromEntries(core.labelSet!.names.map((n, i) => [n, core.gen!.words[i]])) } : undefined,
    base: {
      ...(saveModel ? { kind: 'saved', ref: '.' } : base),
      ...(saveModel && base.kind !== 'saved' ? { trainedFrom: base.ref } : {}),
      ...architectureOf(model),
      numParameters: model.numParameters,
    },
    ...(exporting ? { exported: { from: core.method_!, layout: exporting.layout, adapterMerged: core.adapter !== undefined } } : {}),
    seed: core.seed,
    training: core.training,
    metrics: core.metrics_,
    library: { name: 'ernie-sentiment', version: libraryVersion() },
    savedAt: new Date().toISOString(),
  }
  const weights = { config: model.config, weights: exporting?.weights ?? model.weights }
  await core.track(
    writeDirectoryAtomically(
      dir,
      async (tmp) => {
        if (core.head) await saveSafetensors(path.join(tmp, HEAD_FILE), core.head.tensors(), { format: 'pt' })
        if (core.tokenizerDir) await copyModelFiles(core.tokenizerDir, tmp)
        if (saveModel && model.directory) await copyModelFiles(model.directory, tmp, ['generation_config.json'])
        // ERNIEKit's layout is a checkpoint directory of its own (the head in head.safetensors only)
        if (exporting?.layout === 'paddle') await writeCheckpoint(weights, tmp, 'paddle')
        else
          await writeHfFiles(tmp, {
            model: weights,
            form: hfFormOf(method, core.pooling, core.head),
            method,
            pooling: core.pooling,
            labels: core.labelSet!.names,
            padId: core.padId(),
            appendEos: core.appendEos,
            head: core.head,
            adapter,
            saveModel,
            baseName: base.ref,
          })
        await writeFileDurable(path.join(tmp, CLASSIFIER_FILE), JSON.stringify(meta, null, 2) + '\n')
        await writeFileDurable(path.join(tmp, 'report.html'), renderReport(meta))
      },
      { keepOtherFiles: false },
    ),
  )
}

type Create<C> = (options: ErnieClassifierOptions) => { clf: C; core: ClassifierCore }

/**
 * ErnieClassifier.load; `create` makes the classifier (and gives its state) from the options
 * classifier.json records. A directory without classifier.json is read as a Hugging Face
 * sequence classifier.
 */
// The model a load runs on, resolved (and downloaded) with the load's hub options; an abort of
// its signal there is an AbortError.
function modelLoader(options: LoadOptions): { signal: AbortSignal | undefined; fromPretrained: (source: string, tokenizer?: false) => Promise<ErnieModel> } {
  const signal = checkSignal(options.signal, 'load')
  const hub = hubOptionsOf(options, 'load')
  throwIfAborted(signal, 'load')
  const fromPretrained = (source: string, tokenizer?: false) =>
    ErnieModel.fromPretrained(source, { tokenizer, device: options.device, ...hub, signal }).catch((e: unknown) => {
      throw signal?.aborted ? new AbortError('load', signal) : e
    })
  return { signal, fromPretrained }
}

export async function loadClassifier<C extends { dispose(): Promise<void> }>(dir: string, options: LoadOptions, create: Create<C>): Promise<C> {
  if (typeof dir !== 'string' || dir.length === 0) throw typeError('load: dir must be a directory path')
  resolveModelDevice(options.device, 'load: device')
  const { signal, fromPretrained } = modelLoader(options)
  if (!fs.existsSync(path.join(dir, CLASSIFIER_FILE)) && fs.existsSync(dir) && fs.statSync(dir).isDirectory()) return loadHfClassifier(dir, options, create)
  const { meta, file } = await readClassifierJson(dir)

  let model: ErnieModel
  let owns = true
  let base: BaseModelRef = { kind: meta.base.kind, ref: meta.base.ref }
  if (options.model !== undefined && meta.base.kind === 'saved' && meta.base.trainedFrom !== undefined)
    throw new ErnieError('ERR_BASE_MODEL', `${file}: this classifier trained its model's own weights (saved in ${path.join(dir, meta.base.ref)}); it cannot run on another base model`)
  if (options.model instanceof ErnieModel) {
    model = options.model
    owns = false
  } else if (typeof options.model === 'string') {
    model = await fromPretrained(options.model)
    base = fs.existsSync(options.model) ? { kind: 'path', ref: path.resolve(options.model) } : { kind: 'hub', ref: options.model }
  } else if (meta.base.kind === 'saved') {
    model = await fromPretrained(path.join(dir, meta.base.ref), false)
    base = { kind: 'saved', ref: '.' }
  } else {
    try {
      model = await fromPretrained(locateBase(meta.base, file), false)
    } catch (e) {
      if (e instanceof AbortError || (e instanceof ErnieError && e.code === 'ERR_BASE_MODEL')) throw e
      throw new ErnieError(
        'ERR_BASE_MODEL',
        `${file}: cannot load the base model ${JSON.stringify(meta.base.ref)} (${(e as Error).message}); pass { model: <directory | hub id> } to load()`,
        { cause: e },
      )
    }
  }
  if (signal?.aborted) {
    if (owns) await model.dispose()
    throw new AbortError('load', signal)
  }
  const fail = (msg: string): never => {
    if (owns) void model.dispose()
    throw new ErnieError('ERR_BASE_MODEL', `${file}: ${msg}`)
  }
  const arch = architectureOf(model)
  const differ = (Object.keys(arch) as Array<keyof BaseArchitecture>).filter((k) => meta.base[k] !== undefined && meta.base[k] !== arch[k])
  if (differ.length > 0)
    fail(`the base model is not the one this classifier was trained on: ${differ.map((k) => `${k} ${JSON.stringify(arch[k])} (trained on ${JSON.stringify(meta.base[k])})`).join(', ')}`)
  const c = model.config

  const { clf, core } = create({
    model,
    method: meta.method,
    labels: meta.labels.names,
    maxLength: meta.maxLength,
    truncation: meta.truncation,
    pooling: meta.pooling,
    head: meta.head?.kind === 'mlp' ? { hiddenSize: meta.head.hiddenSize! } : 'linear',
    tuning: meta.generative?.tuning,
    prompt: meta.generative?.prompt,
    labelWords: meta.generative?.labelWords,
    seed: meta.seed,
    precision: options.precision ?? (process.env.ERNIE_PRECISION ? undefined : meta.precision),
  })
  try {
    core.ownsModel = owns
    core.labelSet = LabelSet.fromJSON(meta.labels)
    core.tokenizer = await Tokenizer.fromDirectory(dir)
    core.tokenizerDir = path.resolve(dir)
    core.appendEos = meta.appendEos !== false
    core.attachModel(model)
    core.base = base
    core.method_ = meta.method
    core.ready = Promise.resolve()
    core.training = meta.training
    core.metrics_ = meta.metrics
    if (meta.head) core.head = readHead(meta, dir, c.hidden_size)
    // version 1 kept the adapter in adapter/; version 2 at the root, with the head in modules_to_save
    if (meta.lora) core.adapter = await LoraAdapter.load(meta.version === 1 ? path.join(dir, 'adapter') : dir, model, { modulesToSave: [SCORE_MODULE] })
    if (meta.method === 'generative') core.generative()
    throwIfAborted(signal, 'load')
  } catch (e) {
    await clf.dispose()
    throw e
  }
  return clf
}

/** head.safetensors as classifier.json describes it: F32 tensors of the head's shapes. */
function readHead(meta: ClassifierJson, dir: string, hiddenSize: number): Head {
  const file = path.join(dir, HEAD_FILE)
  const spec: HeadSpec = meta.head!.kind === 'mlp' ? { kind: 'mlp', hiddenSize: meta.head!.hiddenSize! } : { kind: 'linear' }
  if (!fs.existsSync(file)) throw new ErnieError('ERR_CLASSIFIER', `${file}: missing; ${CLASSIFIER_FILE} records a ${spec.kind} head`)
  using st = openSafetensors(file)
  return Head.fromTensors(spec, hiddenSize, meta.labels.names.length, (name) => {
    if (!st.has(name)) return undefined
    const { dtype, shape } = st.tensors[name]
    if (dtype !== 'F32') throw new ErnieError('ERR_CLASSIFIER', `${file}: tensor "${name}" is ${dtype}; a head is stored as F32`)
    return { data: st.view(name) as Float32Array, shape }
  }, file)
}

/**
 * A Hugging Face sequence classifier (hf-format.ts readHfClassifier) as an ErnieClassifier: its
 * model, or base model and LoRA adapter, and its score head; texts encoded with the tokenizer's
 * own special tokens and pooled at the last one, as transformers does.
 */
async function loadHfClassifier<C extends { dispose(): Promise<void> }>(dir: string, options: LoadOptions, create: Create<C>): Promise<C> {
  const { fromPretrained } = modelLoader(options)
  const hf = readHfClassifier(dir)
  if (hf.method === 'full' && options.model !== undefined)
    throw new ErnieError('ERR_BASE_MODEL', `${dir}: this classifier's model weights are its own (${path.join(dir, 'model.safetensors')}); it cannot run on another base model`)
  let model: ErnieModel
  let owns = true
  let base: BaseModelRef
  if (options.model instanceof ErnieModel) {
    model = options.model
    owns = false
    base = model.directory ? { kind: 'path', ref: model.directory } : { kind: 'saved', ref: '.' }
  } else {
    const source = options.model ?? hf.modelSource
    if (source === undefined)
      throw new ErnieError('ERR_BASE_MODEL', `${path.join(dir, 'adapter_config.json')}: no base_model_name_or_path; pass { model: <directory | hub id> } to load()`)
    try {
      model = await fromPretrained(source)
    } catch (e) {
      if (e instanceof AbortError) throw e
      throw new ErnieError('ERR_BASE_MODEL', `${dir}: cannot load the model ${JSON.stringify(source)} (${(e as Error).message})${hf.method === 'lora' ? '; pass { model: <directory | hub id> } to load()' : ''}`, { cause: e })
    }
    base = hf.method === 'full' ? { kind: 'saved', ref: '.' } : fs.existsSync(source) ? { kind: 'path', ref: path.resolve(source) } : { kind: 'hub', ref: source }
  }
  let adapter: LoraAdapter | undefined
  try {
    const H = model.config.hidden_size
    let score = hf.score
    if (hf.method === 'lora') {
      adapter = await LoraAdapter.load(dir, model, { modulesToSave: [SCORE_MODULE] })
      const saved = adapter.savedModules.get(SCORE_MODULE)
      // transformers' score Linear has a weight (and this package's export a bias): nothing else to apply
      const other = [...(saved?.keys() ?? [])].find((k) => k !== 'weight' && k !== 'bias')
      if (other !== undefined) throw new ErnieError('ERR_CLASSIFIER', `${path.join(dir, 'adapter_model.safetensors')}: tensor "base_model.model.${SCORE_MODULE}.${other}" is no part of the classification head (weight, bias)`)
      const weight = saved?.get('weight')
      if (!weight) throw new ErnieError('ERR_CLASSIFIER', `${path.join(dir, 'adapter_model.safetensors')}: no tensor "base_model.model.${SCORE_MODULE}.weight" (the classification head)`)
      score = { weight: weight.data, bias: saved!.get('bias')?.data, shape: weight.shape }
    }
    const [C, width] = score!.shape
    if (score!.shape.length !== 2 || width !== H || !(C >= 1))
      throw new ErnieError('ERR_CLASSIFIER', `${dir}: ${SCORE_MODULE}.weight has shape [${score!.shape.join(', ')}], the model needs [classes, ${H}]`)
    // transformers reads a one-label head as regression (problem_type's default), not as a class
    if (C < 2) throw new ErnieError('ERR_CLASSIFIER', `${dir}: ${SCORE_MODULE}.weight has one row: a regression head in transformers' terms, not a classifier of two or more classes`)
    if (score!.bias && score!.bias.length !== C) throw new ErnieError('ERR_CLASSIFIER', `${dir}: ${SCORE_MODULE}.bias has ${score!.bias.length} values for ${C} classes`)
    const labels = hf.labels ?? defaultLabels(C)
    if (labels.length !== C) throw new ErnieError('ERR_CLASSIFIER', `${path.join(dir, 'config.json')}: id2label names ${labels.length} classes, ${SCORE_MODULE}.weight has ${C}`)
    const hasTokenizer = hasTokenizerFiles(dir)
    const tokenizer = hasTokenizer ? await Tokenizer.fromDirectory(dir) : model.tokenizer
    if (!tokenizer) throw new ErnieError('ERR_NO_TOKENIZER', `${dir}: no tokenizer here or with the base model`)
    const positions = Math.min(tokenizer.modelMaxLength ?? Infinity, model.config.max_position_embeddings ?? Infinity)
    const bias = score!.bias ?? new Float32Array(C)
    const head = Head.fromTensors({ kind: 'linear' }, H, C, (name) => (name === HEAD_WEIGHT ? { data: score!.weight, shape: score!.shape } : name === HEAD_BIAS ? { data: bias, shape: [C] } : undefined), dir)
    const { clf, core } = create({
      model,
      method: hf.method,
      labels,
      maxLength: Number.isFinite(positions) ? positions : DEFAULT_MAX_LENGTH,
      pooling: 'last',
      precision: options.precision,
    })
    core.ownsModel = owns
    core.tokenizer = tokenizer
    core.tokenizerDir = hasTokenizer ? path.resolve(dir) : model.directory
    core.appendEos = false
    core.attachModel(model)
    core.base = base
    core.method_ = hf.method
    core.ready = Promise.resolve()
    core.head = head
    core.adapter = adapter
    return clf
  } catch (e) {
    adapter?.dispose()
    if (owns) await model.dispose()
    throw e
  }
}

function architectureOf(model: ErnieModel): BaseArchitecture {
  const c = model.config
  return {
    modelType: c.model_type,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numHiddenLayers: c.num_hidden_layers,
    numAttentionHeads: c.num_attention_heads,
    numKeyValueHeads: c.num_key_value_heads,
    headDim: c.head_dim,
    vocabSize: c.vocab_size,
  }
}

function libraryVersion(): string {
  try {
    return JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')).version ?? 'unknown'
  } catch {
    return 'unknown'
  }
}
