// Persistence: a classifier saved to a directory (classifier.json, the head, the adapter, the
// tokenizer, the model when it was trained, report.html) and loaded back onto its base model.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { LabelSet } from '../data'
import { resolveModelDevice } from '../device'
import { PRECISIONS } from '../precision'
import { AbortError, ErnieError, typeError } from '../errors'
import { LoraAdapter } from '../model/lora'
import { ErnieModel } from '../model/model'
import { copyModelFiles, Tokenizer } from '../tokenizer'
import { packageRoot } from './bundled'
import type { ClassifierCore } from './core'
import { CLASSIFIER_FILE, FORMAT, HEAD_FILE, type BaseArchitecture, type BaseModelRef, type ClassifierJson } from './format'
import { Head } from './head'
import { checkSignal, hubOptionsOf, METHODS, throwIfAborted, type ErnieClassifierOptions, type LoadOptions } from './options'

/** ErnieClassifier.save. */
export async function saveClassifier(core: ClassifierCore, dir: string): Promise<void> {
  if (typeof dir !== 'string' || dir.length === 0) throw typeError('save: dir must be a directory path')
  await core.ensureReady()
  core.checkUsable('save')
  const { writeDirectoryAtomically, writeFileDurable } = await import('../io/atomic')
  const { saveSafetensors } = await import('../io/safetensors')
  const { renderReport } = await import('./report')
  const info = await fs.promises.stat(dir).catch(() => undefined)
  if (info && !info.isDirectory()) throw new ErnieError('ERR_EXISTS', `save: ${path.resolve(dir)} is a file`)
  const existing = info ? await fs.promises.readdir(dir) : undefined
  if (existing && existing.length > 0 && !existing.includes(CLASSIFIER_FILE))
    throw new ErnieError('ERR_EXISTS', `save: ${path.resolve(dir)} holds other files and no ${CLASSIFIER_FILE}; choose an empty or new directory`)
  const model = core.model_!
  const method = core.method_!
  const saveModel = method === 'full' || (method === 'generative' && core.gen?.tuning === 'full') || core.base!.kind === 'saved'
  const base: BaseModelRef = saveModel ? { kind: 'saved', ref: 'model' } : core.base!
  const meta: ClassifierJson = {
    format: FORMAT,
    version: 1,
    method,
    labels: core.labelSet!.toJSON(),
    maxLength: core.maxLength,
    truncation: core.truncation,
    pooling: core.pooling,
    precision: core.precision,
    appendEos: true,
    head: core.head ? (core.head.spec.kind === 'mlp' ? { kind: 'mlp', hiddenSize: core.head.spec.hiddenSize } : { kind: 'linear' }) : undefined,
    lora: core.adapter ? { ...core.adapter.config } : undefined,
    generative: core.gen ? { tuning: core.gen.tuning, prompt: core.gen.prompt, labelWords: Object.fromEntries(core.labelSet!.names.map((n, i) => [n, core.gen!.words[i]])) } : undefined,
    base: {
      ...base,
      ...(saveModel && core.base!.kind !== 'saved' ? { trainedFrom: core.base!.ref } : {}),
      ...architectureOf(model),
      numParameters: model.numParameters,
    },
    seed: core.seed,
    training: core.training,
    metrics: core.metrics_,
    library: { name: 'ernie-sentiment', version: libraryVersion() },
    savedAt: new Date().toISOString(),
  }
  await core.track(
    writeDirectoryAtomically(
      dir,
      async (tmp) => {
        if (core.head) await saveSafetensors(path.join(tmp, HEAD_FILE), core.head.tensors(), { format: 'pt' })
        if (core.adapter) {
          await fs.promises.mkdir(path.join(tmp, 'adapter'))
          await core.adapter.writeFiles(path.join(tmp, 'adapter'))
        }
        if (saveModel) await model.save(path.join(tmp, 'model'))
        if (core.tokenizerDir) await copyModelFiles(core.tokenizerDir, tmp)
        await writeFileDurable(path.join(tmp, CLASSIFIER_FILE), JSON.stringify(meta, null, 2) + '\n')
        await writeFileDurable(path.join(tmp, 'report.html'), renderReport(meta))
      },
      { keepOtherFiles: false },
    ),
  )
}

/**
 * ErnieClassifier.load; `create` makes the classifier (and gives its state) from the options
 * classifier.json records.
 */
export async function loadClassifier<C extends { dispose(): Promise<void> }>(
  dir: string,
  options: LoadOptions,
  create: (options: ErnieClassifierOptions) => { clf: C; core: ClassifierCore },
): Promise<C> {
  if (typeof dir !== 'string' || dir.length === 0) throw typeError('load: dir must be a directory path')
  resolveModelDevice(options.device, 'load: device')
  const signal = checkSignal(options.signal, 'load')
  const hub = hubOptionsOf(options, 'load')
  throwIfAborted(signal, 'load')
  // the base model, resolved (and downloaded) with the hub options; an abort there is an AbortError
  const fromPretrained = (source: string, tokenizer?: false) =>
    ErnieModel.fromPretrained(source, { tokenizer, device: options.device, ...hub, signal }).catch((e: unknown) => {
      throw signal?.aborted ? new AbortError('load', signal) : e
    })
  const file = path.join(dir, CLASSIFIER_FILE)
  let meta: ClassifierJson
  try {
    meta = JSON.parse(await fs.promises.readFile(file, 'utf8'))
  } catch (e) {
    const code = (e as { code?: string }).code
    throw new ErnieError('ERR_CLASSIFIER', code ? `${file}: cannot read (${code}); is ${dir} a saved classifier?` : `${file}: invalid JSON (${(e as Error).message})`, { cause: e })
  }
  if (!meta || meta.format !== FORMAT || meta.version !== 1) throw new ErnieError('ERR_CLASSIFIER', `${file}: not a classifier this version reads (format ${JSON.stringify(meta?.format)}, version ${JSON.stringify(meta?.version)})`)
  if (!METHODS.includes(meta.method)) throw new ErnieError('ERR_CLASSIFIER', `${file}: unknown method ${JSON.stringify(meta.method)}`)
  if (meta.precision !== undefined && !PRECISIONS.includes(meta.precision))
    throw new ErnieError('ERR_CLASSIFIER', `${file}: unknown precision ${JSON.stringify(meta.precision)} (expected ${PRECISIONS.join(', ')})`)

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
    base = { kind: 'saved', ref: 'model' }
  } else {
    try {
      model = await fromPretrained(meta.base.ref, false)
    } catch (e) {
      if (e instanceof AbortError) throw e
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
    core.attachModel(model)
    core.base = base
    core.method_ = meta.method
    core.ready = Promise.resolve()
    core.training = meta.training
    core.metrics_ = meta.metrics
    if (meta.head) {
      const { openSafetensors } = await import('../io/safetensors')
      using st = openSafetensors(path.join(dir, HEAD_FILE))
      core.head = Head.fromTensors(
        meta.head.kind === 'mlp' ? { kind: 'mlp', hiddenSize: meta.head.hiddenSize! } : { kind: 'linear' },
        c.hidden_size,
        meta.labels.names.length,
        (name) => (st.has(name) ? (st.view(name) as Float32Array) : undefined),
        path.join(dir, HEAD_FILE),
      )
    }
    if (meta.lora) core.adapter = await LoraAdapter.load(path.join(dir, 'adapter'), model)
    if (meta.method === 'generative') core.generative()
    throwIfAborted(signal, 'load')
  } catch (e) {
    await clf.dispose()
    throw e
  }
  return clf
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
