// The Hugging Face side of a saved classifier (format version 2): config.json as transformers'
// decoder sequence classifiers read it (labels, pad token, architecture), the head as their
// `score` Linear, the trained model or the LoRA adapter under HF / PEFT names at the directory's
// root; and the reading of such directories made elsewhere (transformers, PEFT).
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieError } from '../errors'
import { writeFileDurable } from '../io/atomic'
import { openSafetensors, saveSafetensors, type TensorToSave } from '../io/safetensors'
import type { ModelType } from '../model/config'
import { bf16ToF32 } from '../model/dtype'
import { SafetensorsSource } from '../model/load'
import type { LoraAdapter } from '../model/lora'
import { checkpointTensors, type CheckpointParts } from '../model/save'
import { CLASSIFICATION_HEAD } from '../model/weights'
import type { Pooling } from './encode'
import { HEAD_BIAS, HEAD_WEIGHT, type Head } from './head'
import type { Method } from './options'
import { parseJsonBytes } from '../io/json'
import { readSmallFile, readSmallFileSync } from '../io/read'

/** transformers' module name of a decoder classifier's head: a Linear [classes, hidden] without bias. */
export const SCORE_MODULE = CLASSIFICATION_HEAD
/** The head method's head in transformers' names (the base is referenced, not copied). */
export const SCORE_FILE = 'score.safetensors'
export const MODEL_FILE = 'model.safetensors'
export const ADAPTER_CONFIG_FILE = 'adapter_config.json'
const CONFIG_FILE = 'config.json'

/**
 * transformers' sequence-classification class per model type. transformers has
 * Qwen3ForSequenceClassification (GenericForSequenceClassification: last non-pad token, score
 * without bias); it has no ERNIE-4.5 one (Ernie4_5ForCausalLM and Ernie4_5Model only), so the
 * name written for ERNIE-4.5 is the one such a class would have, and the README says how to
 * define it.
 */
export const SEQUENCE_CLASSIFIERS: Readonly<Record<ModelType, { name: string; inTransformers: boolean }>> = {
  qwen3: { name: 'Qwen3ForSequenceClassification', inTransformers: true },
  ernie4_5: { name: 'Ernie4_5ForSequenceClassification', inTransformers: false },
}

/**
 * What a classifier is in Hugging Face terms:
 *   'sequence-classification'  last-token pooling and a linear head: config.json names the
 *                               *ForSequenceClassification class, the head is score.weight;
 *   'causal-lm'                the generative method: the trained model or adapter is a causal LM;
 *   'backbone'                 mean / first pooling or an MLP head, which transformers' classes do
 *                               not express: the trained model or adapter only, the head in this
 *                               package's head.safetensors alone (config.json says so).
 */
export type HfForm = 'sequence-classification' | 'causal-lm' | 'backbone'

export function hfFormOf(method: Method, pooling: Pooling, head: Head | undefined): HfForm {
  if (method === 'generative') return 'causal-lm'
  return pooling === 'last' && head?.spec.kind === 'linear' ? 'sequence-classification' : 'backbone'
}

/**
 * The linear head as transformers' score Linear. The head standardises its input (the head
 * method): logits = W ((h - mean) / std) + b = (W / std) h + (b - W (mean / std)), folded exactly
 * (in float64, rounded once to f32). transformers' score has no bias: `bias` is written as
 * score.bias, which transformers leaves unused (README).
 */
export function scoreTensors(head: Head): { weight: TensorToSave; bias: TensorToSave } {
  const H = head.inputSize
  const C = head.classes
  const W = head.params.get(HEAD_WEIGHT)!
  const b = head.params.get(HEAD_BIAS)!
  const weight = new Float32Array(C * H)
  const bias = new Float32Array(C)
  for (let c = 0; c < C; c++) {
    let shift = b[c]
    for (let j = 0; j < H; j++) {
      const std = head.featureStd ? head.featureStd[j] : 1
      const w = W[c * H + j] / std
      weight[c * H + j] = w
      if (head.featureMean) shift -= w * head.featureMean[j]
    }
    bias[c] = shift
  }
  return { weight: { dtype: 'F32', shape: [C, H], data: weight }, bias: { dtype: 'F32', shape: [C], data: bias } }
}

/** What the saver hands over: the classifier's parts that the HF files are made of. */
export interface HfParts {
  /** The model's config and the weights to write (an export's have the adapter merged). */
  model: CheckpointParts
  form: HfForm
  method: Method
  pooling: Pooling
  labels: readonly string[]
  padId: number
  /** The classifier appends an EOS before pooling (EncodeSettings.appendEos). */
  appendEos: boolean
  head: Head | undefined
  adapter: LoraAdapter | undefined
  /** Write the model's weights (trained, or with no directory to refer to). */
  saveModel: boolean
  /** adapter_config.json's base_model_name_or_path. */
  baseName: string
}

/** config.json: the base model's config, the labels, the pad token, the class and a note of what is where. */
export function hfConfig(p: HfParts): Record<string, unknown> {
  const { arch: _arch, ...config } = p.model.config
  const seqCls = p.form === 'sequence-classification'
  const labelled = p.form !== 'causal-lm'
  return {
    ...config,
    ...(seqCls ? { architectures: [SEQUENCE_CLASSIFIERS[config.model_type].name] } : {}),
    ...(labelled
      ? {
          id2label: Object.fromEntries(p.labels.map((n, i) => [String(i), n])),
          label2id: Object.fromEntries(p.labels.map((n, i) => [n, i])),
          num_labels: p.labels.length,
        }
      : {}),
    pad_token_id: p.padId,
    ernie_sentiment: {
      classifier: 'classifier.json',
      method: p.method,
      ...(labelled ? { pooling: p.pooling, append_eos: p.appendEos } : {}),
      head: seqCls
        ? `score.weight (${p.saveModel && p.method === 'full' ? MODEL_FILE : p.adapter ? 'adapter_model.safetensors' : SCORE_FILE}); score.bias is this package's head bias, which transformers' score Linear does not have`
        : p.form === 'backbone'
          ? `head.safetensors only: transformers' sequence classifiers pool the last token with a linear head, this classifier ${p.pooling === 'last' ? 'has an MLP head' : `pools '${p.pooling}'`}`
          : 'none: the label is the answer the causal LM scores highest after the prompt (classifier.json)',
    },
  }
}

/**
 * Writes the HF files into `dir` (the save's temporary directory, where the tokenizer files
 * already are): config.json, and model.safetensors, the PEFT adapter or score.safetensors.
 */
export async function writeHfFiles(dir: string, p: HfParts): Promise<void> {
  const seqCls = p.form === 'sequence-classification'
  const score = seqCls && p.head ? scoreTensors(p.head) : undefined
  if (p.saveModel) {
    const tensors = checkpointTensors(p.model)
    if (score && p.method === 'full') Object.assign(tensors, { [`${SCORE_MODULE}.weight`]: score.weight, [`${SCORE_MODULE}.bias`]: score.bias })
    await saveSafetensors(path.join(dir, MODEL_FILE), tensors, { format: 'pt' })
  }
  if (p.adapter)
    await p.adapter.writeFiles(dir, {
      taskType: seqCls ? 'SEQ_CLS' : 'CAUSAL_LM',
      modulesToSave: score ? { [SCORE_MODULE]: { weight: score.weight, bias: score.bias } } : undefined,
      baseModel: p.baseName,
    })
  else if (score && p.method === 'head') await saveSafetensors(path.join(dir, SCORE_FILE), { [`${SCORE_MODULE}.weight`]: score.weight, [`${SCORE_MODULE}.bias`]: score.bias }, { format: 'pt' })
  if (seqCls && p.appendEos) await askTokenizerForEos(dir)
  await writeFileDurable(path.join(dir, CONFIG_FILE), JSON.stringify(hfConfig(p), null, 2) + '\n')
}

// Tokenizer classes whose transformers tokenizers honour add_eos_token (LlamaTokenizer and its
// fast twin append the EOS after the text when it is true).
const EOS_APPENDING_TOKENIZERS = ['LlamaTokenizer', 'LlamaTokenizerFast']

/**
 * The classifier pools an EOS appended after the text: where transformers' tokenizer can be told
 * to append it too (add_eos_token), the copied tokenizer_config.json says so, and transformers
 * then pools the same token. Other tokenizers are left as they are (README).
 */
async function askTokenizerForEos(dir: string): Promise<void> {
  const file = path.join(dir, 'tokenizer_config.json')
  const bytes = await readSmallFile(file, 'tokenizer-config').catch(() => undefined)
  if (bytes === undefined) return
  const text = bytes.toString('utf8')
  const config = JSON.parse(text)
  if (!EOS_APPENDING_TOKENIZERS.includes(config?.tokenizer_class) || config.add_eos_token === true) return
  // a copy in the save's temporary directory: replaced, not written through
  await fs.promises.unlink(file)
  await writeFileDurable(file, JSON.stringify({ ...config, add_eos_token: true }, null, 2) + '\n')
}

// --- reading a Hugging Face classifier made elsewhere ---

/** A sequence classifier in a Hugging Face directory, as far as it is read before its model loads. */
export interface HfClassifier {
  /** 'full': config.json names a *ForSequenceClassification and model.safetensors holds score.weight; 'lora': a PEFT SEQ_CLS adapter. */
  method: 'full' | 'lora'
  /** Class names by id (config.json's id2label), when the directory has them. */
  labels: string[] | undefined
  /** Where the model is: the directory itself ('full') or the adapter's base_model_name_or_path. */
  modelSource: string | undefined
  /** The head in transformers' names, read from model.safetensors ('full'; a LoRA adapter's is read with the adapter). */
  score?: { weight: Float32Array; bias: Float32Array | undefined; shape: number[] }
}

function readJson(file: string): Record<string, unknown> | undefined {
  if (!fs.existsSync(file)) return undefined
  let raw: unknown
  try {
    raw = parseJsonBytes(readSmallFileSync(file, 'config'))
  } catch (e) {
    if (e instanceof ErnieError) throw e
    throw new ErnieError('ERR_CLASSIFIER', `${file}: invalid JSON (${(e as Error).message})`, { cause: e })
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ErnieError('ERR_CLASSIFIER', `${file}: expected a JSON object`)
  return raw as Record<string, unknown>
}

/**
 * config.json's id2label as names in id order (ids 0..n-1 written as transformers writes them,
 * each once, distinct names), checked against num_labels when both are there (transformers
 * refuses a disagreement).
 */
function labelsOf(config: Record<string, unknown>, file: string): string[] | undefined {
  const map = config.id2label
  const numLabels = config.num_labels
  if (numLabels !== undefined && numLabels !== null && !(Number.isInteger(numLabels) && (numLabels as number) >= 1))
    throw new ErnieError('ERR_CLASSIFIER', `${file}: num_labels must be a positive integer, got ${JSON.stringify(numLabels)}`)
  // num_labels alone: transformers names the classes LABEL_0, LABEL_1, ...
  if (map === undefined || map === null) return typeof numLabels === 'number' ? defaultLabels(numLabels) : undefined
  if (typeof map !== 'object' || Array.isArray(map)) throw new ErnieError('ERR_CLASSIFIER', `${file}: id2label must map ids to names`)
  const entries = Object.entries(map as Record<string, unknown>)
  const names: string[] = new Array(entries.length)
  for (const [id, name] of entries) {
    const i = /^(0|[1-9]\d*)$/.test(id) ? Number(id) : NaN
    if (!(i < entries.length) || names[i] !== undefined || typeof name !== 'string')
      throw new ErnieError('ERR_CLASSIFIER', `${file}: id2label must map the ids 0..${entries.length - 1} to names, got ${JSON.stringify(map)}`)
    names[i] = name
  }
  const twice = names.find((n, i) => names.indexOf(n) !== i)
  if (twice !== undefined) throw new ErnieError('ERR_CLASSIFIER', `${file}: id2label names two classes ${JSON.stringify(twice)}`)
  if (typeof numLabels === 'number' && numLabels !== names.length)
    throw new ErnieError('ERR_CLASSIFIER', `${file}: num_labels is ${numLabels} but id2label names ${names.length} classes`)
  return names
}

// transformers' sequence classifiers score by problem_type: softmax for single-label (the default
// with two or more labels), sigmoid per class for multi-label, the raw value for regression (the
// default with one label). This package's classifiers are the first kind.
function checkProblemType(config: Record<string, unknown>, file: string): void {
  const type = config.problem_type
  if (type === undefined || type === null || type === 'single_label_classification') return
  throw new ErnieError(
    'ERR_CLASSIFIER',
    `${file}: problem_type ${JSON.stringify(type)}: this package's classifiers are single-label (softmax over the classes); ${typeof type === 'string' ? 'a multi-label or regression head scores differently' : 'expected a string'}`,
  )
}

/** transformers' names for classes it was not told: LABEL_0, LABEL_1, ... */
export function defaultLabels(classes: number): string[] {
  return Array.from({ length: classes }, (_, i) => `LABEL_${i}`)
}

/**
 * Reads what a Hugging Face sequence-classification directory without classifier.json holds:
 * a transformers checkpoint (config.json naming a *ForSequenceClassification, score.weight in its
 * weights) or a PEFT adapter with task_type SEQ_CLS whose modules_to_save holds score.
 * Anything else is ErnieError ERR_CLASSIFIER saying what is missing.
 */
export function readHfClassifier(dir: string): HfClassifier {
  const configFile = path.join(dir, CONFIG_FILE)
  const adapterFile = path.join(dir, ADAPTER_CONFIG_FILE)
  const config = readJson(configFile)
  const adapter = readJson(adapterFile)
  const labels = config ? labelsOf(config, configFile) : undefined
  if (config) checkProblemType(config, configFile)
  if (adapter) {
    if (adapter.task_type !== 'SEQ_CLS')
      throw new ErnieError('ERR_CLASSIFIER', `${adapterFile}: task_type is ${JSON.stringify(adapter.task_type)}; a classifier's PEFT adapter has task_type "SEQ_CLS" (and no classifier.json is here)`)
    const saved = adapter.modules_to_save
    if (!Array.isArray(saved) || !saved.includes(SCORE_MODULE))
      throw new ErnieError('ERR_CLASSIFIER', `${adapterFile}: modules_to_save does not hold "${SCORE_MODULE}", the classification head (got ${JSON.stringify(saved)})`)
    const base = adapter.base_model_name_or_path
    return { method: 'lora', labels, modelSource: typeof base === 'string' && base.length > 0 ? base : undefined }
  }
  if (!config) throw new ErnieError('ERR_CLASSIFIER', `${dir}: no classifier.json, ${CONFIG_FILE} or ${ADAPTER_CONFIG_FILE}; is it a saved classifier?`)
  const archs = Array.isArray(config.architectures) ? (config.architectures as unknown[]) : []
  if (!archs.some((a) => typeof a === 'string' && a.endsWith('ForSequenceClassification')))
    throw new ErnieError('ERR_CLASSIFIER', `${configFile}: architectures ${JSON.stringify(config.architectures)} name no *ForSequenceClassification class, and ${dir} has no classifier.json`)
  const weights = path.join(dir, MODEL_FILE)
  if (!fs.existsSync(weights) && !fs.existsSync(path.join(dir, 'model.safetensors.index.json')))
    throw new ErnieError('ERR_CLASSIFIER', `${dir}: no ${MODEL_FILE} beside ${CONFIG_FILE}`)
  const file = openSafetensors(dir)
  try {
    const src = new SafetensorsSource(file)
    // the head is no part of the model the loader checks: its values are checked here
    const f32 = (name: string) => {
      const v = src.view(name)
      const out = v instanceof Float32Array ? Float32Array.from(v) : bf16ToF32(v)
      const bad = out.findIndex((x) => !Number.isFinite(x))
      if (bad >= 0) throw new ErnieError('ERR_CLASSIFIER', `${file.path}: tensor "${name}" holds ${out[bad]} at element ${bad}; a classification head must be finite`)
      return out
    }
    const name = `${SCORE_MODULE}.weight`
    if (!src.has(name)) throw new ErnieError('ERR_CLASSIFIER', `${file.path}: no tensor "${name}" (the sequence classifier's head)`)
    const shape = src.shape(name)
    const biasName = `${SCORE_MODULE}.bias`
    return { method: 'full', labels, modelSource: dir, score: { weight: f32(name), bias: src.has(biasName) ? f32(biasName) : undefined, shape } }
  } finally {
    file.dispose()
  }
}
