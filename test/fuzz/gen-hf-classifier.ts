// A saved classifier in its Hugging Face form only (no classifier.json): a PEFT SEQ_CLS adapter
// beside config.json ('lora'), or a transformers *ForSequenceClassification checkpoint ('full'),
// with config.json's labels and classification fields, the adapter's config or the weights
// changed. The verdicts follow what transformers / PEFT read from these files (id2label and
// num_labels agree, problem_type single-label, score.weight [classes, hidden], score.bias
// optional, task_type SEQ_CLS with score in modules_to_save) and this package's refusal of what it
// would compute differently.
import * as fs from 'node:fs'
import * as path from 'node:path'

import type { FileContent, Generated, HfClassifierKind, Rng, Verdict } from './case'
import { brokenJson, describe, readTensors, REMOVED, tensorChange, withKey, type Tensor } from './mutate'

const CONFIG = 'config.json'
const ADAPTER_CONFIG = 'adapter_config.json'
const WEIGHTS: Record<HfClassifierKind, string> = { lora: 'adapter_model.safetensors', full: 'model.safetensors' }

interface Saved {
  config: Record<string, unknown>
  adapterConfig?: Record<string, unknown>
  tensors: Tensor[]
}
const saved = new Map<string, Saved>()
function savedForm(dir: string, kind: HfClassifierKind): Saved {
  let s = saved.get(dir)
  if (!s) {
    const json = (f: string) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'))
    s = { config: json(CONFIG), adapterConfig: kind === 'lora' ? json(ADAPTER_CONFIG) : undefined, tensors: readTensors(fs.readFileSync(path.join(dir, WEIGHTS[kind]))) }
    saved.set(dir, s)
  }
  return s
}

type Change = [file: string, key: string, value: unknown, verdict: Verdict]

/** A config.json field: the labels and classification keys, both forms. */
function configChange(rng: Rng, kind: HfClassifierKind): Change {
  const c = (key: string, value: unknown, verdict: Verdict): Change => [CONFIG, key, value, verdict]
  switch (rng.int(0, 5)) {
    case 0: {
      const v = rng.pick<unknown>([{ 0: 'neg', 1: 'pos' }, { 1: 'pos', 0: 'neg' }, REMOVED, null, { 0: 'a' }, { 0: 'a', 2: 'b' }, { 0: 'a', 1: 'a' }, { 0: 'a', 1: 2 }, {}, ['a', 'b'], 'a,b', { '0.0': 'a', 1: 'b' }])
      // absent: transformers' LABEL_0, LABEL_1; names must be two, distinct, for ids 0 and 1
      const names = v && typeof v === 'object' && !Array.isArray(v) ? Object.entries(v as object) : undefined
      const ok = v === REMOVED || v === null || (names !== undefined && names.length === 2 && names.every(([id, n]) => (id === '0' || id === '1') && typeof n === 'string') && names[0][1] !== names[1][1])
      return c('id2label', v, ok ? 'accept' : 'reject')
    }
    case 1: {
      // transformers refuses a num_labels that disagrees with id2label; the weights have two rows
      const v = rng.pick<unknown>([2, REMOVED, null, 3, 1, '2', 0])
      return c('num_labels', v, v === 2 || v === REMOVED || v === null ? 'accept' : 'reject')
    }
    case 2: {
      // multi-label (sigmoid) and regression heads score differently from a softmax classifier
      const v = rng.pick<unknown>(['single_label_classification', null, REMOVED, 'multi_label_classification', 'regression', 'x', 3])
      return c('problem_type', v, v === 'single_label_classification' || v === null || v === REMOVED ? 'accept' : 'reject')
    }
    case 3: {
      // a LoRA directory's base model is named by adapter_config.json; its config.json is read for the labels only
      const v = rng.pick<unknown>([['Ernie4_5ForSequenceClassification'], ['Qwen3ForSequenceClassification'], ['Ernie4_5ForCausalLM'], [], REMOVED, 'Ernie4_5ForSequenceClassification'])
      const seqCls = Array.isArray(v) && v.some((a) => String(a).endsWith('ForSequenceClassification'))
      return c('architectures', v, kind === 'lora' || seqCls ? 'accept' : 'reject')
    }
    case 4: {
      // label2id is the inverse map transformers keeps beside id2label and never reads to classify
      const v = rng.pick<unknown>([{ negative: 0, positive: 1 }, REMOVED, null, { a: 5 }])
      return c('label2id', v, 'accept')
    }
    default: {
      // the model's own keys: read for a full checkpoint, not for a LoRA directory (the base's are)
      const [key, v, ok] = rng.pick<[string, unknown, boolean]>([
        ['hidden_size', 65, false],
        ['rope_scaling', { rope_type: 'linear', factor: 2 }, false],
        ['use_bias', true, false],
        ['rms_norm_eps', 1e-6, true],
        ['ernie_sentiment', REMOVED, true],
        ['x_fuzz', [1, { y: null }], true],
      ])
      return c(key, v, kind === 'lora' || ok ? 'accept' : 'reject')
    }
  }
}

/** An adapter_config.json field that matters to a classifier. */
function adapterChange(rng: Rng): Change {
  const a = (key: string, value: unknown, verdict: Verdict): Change => [ADAPTER_CONFIG, key, value, verdict]
  switch (rng.int(0, 2)) {
    case 0: {
      const v = rng.pick<unknown>(['SEQ_CLS', 'CAUSAL_LM', REMOVED, null, 'seq_cls'])
      return a('task_type', v, v === 'SEQ_CLS' ? 'accept' : 'reject')
    }
    case 1: {
      // PEFT's SEQ_CLS default lists "classifier" too, which a decoder does not have
      const v = rng.pick<unknown>([['score'], ['classifier', 'score'], [], REMOVED, null, 'score', ['classifier']])
      return a('modules_to_save', v, Array.isArray(v) && v.includes('score') ? 'accept' : 'reject')
    }
    default: {
      // the base model: the fixture by path; no hub is reachable from the test (HF_HUB_OFFLINE)
      const v = rng.pick<unknown>([REMOVED, '', null, 'no-such-org/no-such-model', '/nonexistent/model', 7])
      return a('base_model_name_or_path', v, 'reject')
    }
  }
}

export function hfClassifierCase(rng: Rng, dirs: Record<HfClassifierKind, string>): Generated {
  const kind = rng.pick<HfClassifierKind>(['lora', 'full'])
  const s = savedForm(dirs[kind], kind)
  const target = (files: Record<string, FileContent | null>) => ({ kind: 'hf-classifier' as const, source: kind, files })
  const what = (x: string) => `${kind}: ${x}`
  const choice = rng.int(0, 9)
  if (choice <= 4) {
    const [file, key, value, verdict] = kind === 'lora' && rng.chance(0.4) ? adapterChange(rng) : configChange(rng, kind)
    const base = file === CONFIG ? s.config : s.adapterConfig!
    // a base model that cannot load is named by the directory and the model's name
    return { verdict, what: what(`${file}: ${key} ${describe(value)}`), target: target({ [file]: JSON.stringify(withKey(base, key, value), null, 2) }), names: [file, WEIGHTS[kind], ''] }
  }
  if (choice === 5) {
    const file = kind === 'lora' && rng.chance(0.5) ? ADAPTER_CONFIG : CONFIG
    const [w, content] = brokenJson(rng, JSON.stringify(file === CONFIG ? s.config : s.adapterConfig, null, 2))
    return { verdict: 'reject', what: what(`${file}: ${w}`), target: target({ [file]: content }), names: [file] }
  }
  if (choice === 6) {
    // the tokenizer: a LoRA classifier falls back on its base model's, a full checkpoint has no other
    const [w, files, verdict] = rng.pick<[string, Record<string, FileContent | null>, Verdict]>([
      ['tokenizer files removed', { 'tokenizer.model': null, 'tokenizer_config.json': null }, kind === 'lora' ? 'accept' : 'reject'],
      ['tokenizer_config.json removed', { 'tokenizer_config.json': null }, 'accept'],
      ['tokenizer.model empty', { 'tokenizer.model': '' }, 'reject'],
    ])
    return { verdict, what: what(w), target: target(files), names: ['tokenizer.model', ''] }
  }
  // the head's tensors, or any other
  const score = s.tensors.filter((t) => /(^|\.)score\.(weight|bias)$/.test(t.name))
  const onScore = rng.chance(0.6)
  const c = tensorChange(rng, s.tensors, () => rng.pick(onScore ? score : s.tensors))
  // score.bias is optional (transformers' score Linear has none): without it, the classifier still classifies
  const verdict = c.what.endsWith('score.bias removed') ? 'accept' : c.verdict
  return { verdict, what: what(`${WEIGHTS[kind]}: ${c.what}`), target: target({ [WEIGHTS[kind]]: c.content }), names: [WEIGHTS[kind], ''] }
}
