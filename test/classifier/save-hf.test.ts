// What a saved classifier records and how it travels: the settings a training actually used
// (defaults resolved), the bundled model by its name, and the directory as a Hugging Face one
// (config.json with the labels and the sequence-classification class, the head as score.weight,
// model.safetensors in HF names for 'full', a PEFT SEQ_CLS adapter for 'lora'). The other way,
// Hugging Face directories written here by hand (tensors from known arrays, config.json as
// transformers / PEFT write it) load as classifiers whose class scores match a float64
// computation in this file: the model's pooled hidden state times the test's own score matrix.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier } from '../../lib/classifier/index'
import { openSafetensors, saveSafetensors, type TensorToSave } from '../../lib/io/safetensors'
import { ErnieModel } from '../../lib/model/index'
import { FIXTURES, readTsv, tempDir, TINY, TRAIN } from '../helpers/classifier-helpers'

const QWEN = path.join(FIXTURES, 'qwen3-tiny')
const BUNDLED = path.join(__dirname, '..', '..', 'models', 'ernie-4.5-tiny-zh')
const SEVEN = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']
const dir = tempDir(t, 'ernie-save-hf-')
const train = readTsv(TRAIN)
const data = (n: number) => train.texts.slice(0, n).map((text, i) => ({ text, label: train.labels[i] }))
const TEXTS = ['房间很干净，服务也周到', '太差了，再也不来', '一般般吧', '']
/** Texts with tokens (an empty text has nothing for transformers to pool). */
const WORDS = TEXTS.filter((x) => x.length > 0)

const readJson = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8'))

/** name -> { dtype, shape } of a safetensors file, read from its header here. */
function header(file: string): Record<string, { dtype: string; shape: number[] }> {
  const buf = fs.readFileSync(file)
  const n = Number(buf.readBigUInt64LE(0))
  const h = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'))
  delete h.__metadata__
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k, { dtype: (v as { dtype: string }).dtype, shape: (v as { shape: number[] }).shape }]))
}

/** A tensor of a safetensors file as float64 (F32 or BF16, widened here). */
function tensor64(file: string, name: string): Float64Array {
  using st = openSafetensors(file)
  const info = st.tensors[name]
  const v = st.view(name)
  if (info.dtype === 'F32') return Float64Array.from(v as Float32Array)
  if (info.dtype !== 'BF16') throw new Error(`${name}: ${info.dtype}`)
  const bits = new Uint32Array(1)
  const f = new Float32Array(bits.buffer)
  return Float64Array.from(v as Uint16Array, (u) => ((bits[0] = u << 16), f[0]))
}

/** softmax(W h + b) in float64, W [C, H]. */
function scores64(W: ArrayLike<number>, b: ArrayLike<number> | undefined, h: ArrayLike<number>, C: number): number[] {
  const H = h.length
  const z = Array.from({ length: C }, (_, c) => {
    let s = b ? b[c] : 0
    for (let j = 0; j < H; j++) s += W[c * H + j] * h[j]
    return s
  })
  const m = Math.max(...z)
  const e = z.map((x) => Math.exp(x - m))
  const sum = e.reduce((a, x) => a + x, 0)
  return e.map((x) => x / sum)
}

/** Each text's final hidden state at its last token, the text encoded as `ids(text)`. */
async function lastHidden(modelDir: string, ids: (tok: NonNullable<ErnieModel['tokenizer']>, text: string) => number[], texts: string[], tokenizerDir = modelDir): Promise<Float32Array[]> {
  const model = await ErnieModel.fromPretrained(modelDir, { precision: 'fp32', tokenizer: false })
  const { Tokenizer } = await import('../../lib/tokenizer/index')
  const tok = await Tokenizer.fromDirectory(tokenizerDir)
  try {
    const out: Float32Array[] = []
    for (const text of texts) out.push((await model.forward({ inputIds: [ids(tok, text)] }, { output: ['lastHidden'] })).lastHidden!)
    return out
  } finally {
    await model.dispose()
  }
}

function near(t: { ok(ok: boolean, message: string): unknown }, got: number[], want: number[], tol: number, what: string): void {
  const err = Math.max(...got.map((g, i) => Math.abs(g - want[i])))
  t.ok(err <= tol, `${what}: largest difference ${err.toExponential(2)} (bound ${tol})`)
}

t.test('head on the bundled model: the settings used, the bundled model by name, score.safetensors', async (t) => {
  const clf = new ErnieClassifier({ method: 'head', maxLength: 48, seed: 7, precision: 'fp32' })
  t.teardown(() => clf.dispose())
  const result = await clf.fit(data(160), { epochs: 2 })
  const out = path.join(dir, 'head-bundled')
  await clf.save(out)

  const text = fs.readFileSync(path.join(out, 'classifier.json'), 'utf8')
  const meta = JSON.parse(text)
  t.same({ kind: meta.base.kind, ref: meta.base.ref }, { kind: 'bundled', ref: 'ernie-4.5-tiny-zh' }, 'the bundled model by its name')
  t.notOk(text.includes(path.resolve(BUNDLED)) || text.includes('node_modules'), 'no absolute path to the package in classifier.json')
  t.equal(meta.version, 2)

  // the settings: what was passed, and what the defaults resolved to, consistent with the run
  const s = meta.training.settings
  t.equal(s.method, 'head')
  t.equal(s.epochs, 2)
  t.equal(s.seed, 7)
  t.equal(s.maxLength, 48)
  t.equal(s.pooling, 'last')
  t.equal(s.precision, 'fp32')
  t.same(s.head, { kind: 'linear' })
  t.ok(Number.isInteger(s.batchSize) && s.batchSize > 0, `batchSize ${s.batchSize}`)
  t.equal(s.totalSteps, 2 * Math.ceil(160 / s.batchSize), 'totalSteps from the batch size used')
  t.equal(result.steps, s.totalSteps)
  t.equal(s.warmupSteps, 0, 'no warmup (the schedule starts at the peak)')
  t.equal(result.history[0].learningRate, s.learningRate, 'the first step ran at the recorded learning rate')
  t.ok(['linear', 'cosine', 'constant'].includes(s.schedule) && typeof s.weightDecay === 'number' && typeof s.optimizer === 'string' && typeof s.maxGradNorm === 'number')
  t.same(meta.training.options, { epochs: 2 }, 'the options passed are kept apart')
  const report = fs.readFileSync(path.join(out, 'report.html'), 'utf8')
  t.match(report, /Settings used/)
  t.match(report, new RegExp(`<th>learningRate</th><td>${String(s.learningRate).replace('.', '\\.')}</td>`), 'report: the learning rate used')
  t.match(report, /ernie-4\.5-tiny-zh \(bundled with the package\)/)

  // config.json as transformers reads it
  const base = readJson(path.join(BUNDLED, 'config.json'))
  const config = readJson(path.join(out, 'config.json'))
  t.same(config.architectures, ['Ernie4_5ForSequenceClassification'])
  t.equal(config.model_type, 'ernie4_5')
  t.equal(config.hidden_size, base.hidden_size)
  t.same(config.id2label, { 0: 'negative', 1: 'positive' })
  t.same(config.label2id, { negative: 0, positive: 1 })
  t.equal(config.num_labels, 2)
  t.equal(config.pad_token_id, base.pad_token_id, "the base's pad token")
  t.equal(readJson(path.join(out, 'tokenizer_config.json')).add_eos_token, true, 'the LlamaTokenizer config asks transformers to append the EOS')
  const H = base.hidden_size
  t.same(header(path.join(out, 'score.safetensors')), { 'score.weight': { dtype: 'F32', shape: [2, H] }, 'score.bias': { dtype: 'F32', shape: [2] } })
  t.notOk(fs.existsSync(path.join(out, 'model.safetensors')), 'the frozen base is referenced, not copied')

  // score.weight / score.bias are the standardised head folded: the same logits for any input
  const headFile = path.join(out, 'head.safetensors')
  const [W, b, mean, std] = ['classifier.weight', 'classifier.bias', 'classifier.feature_mean', 'classifier.feature_std'].map((n) => tensor64(headFile, n))
  const Ws = tensor64(path.join(out, 'score.safetensors'), 'score.weight')
  const bs = tensor64(path.join(out, 'score.safetensors'), 'score.bias')
  let worst = 0
  for (let trial = 0; trial < 5; trial++) {
    const h = Float64Array.from({ length: H }, (_, j) => mean[j] + std[j] * Math.sin(1.7 * j + trial))
    for (let c = 0; c < 2; c++) {
      let own = b[c]
      let hf = bs[c]
      for (let j = 0; j < H; j++) {
        own += (W[c * H + j] * (h[j] - mean[j])) / std[j]
        hf += Ws[c * H + j] * h[j]
      }
      worst = Math.max(worst, Math.abs(own - hf) / Math.max(1, Math.abs(own)))
    }
  }
  t.ok(worst < 1e-5, `folded head = standardised head (relative difference ${worst.toExponential(2)})`)

  // the HF form predicts what the classifier predicts: last token after an appended EOS
  const preds = await clf.predict(TEXTS)
  const eos = base.eos_token_id
  const hidden = await lastHidden(BUNDLED, (tok, x) => [...tok.encode(x), eos], TEXTS)
  TEXTS.forEach((x, i) => near(t, scores64(Ws, bs, hidden[i], 2), [preds[i].scores.negative, preds[i].scores.positive], 1e-4, `"${x}" through score.weight`))

  const loaded = await ErnieClassifier.load(out)
  t.teardown(() => loaded.dispose())
  t.same(await loaded.predict(TEXTS), preds, 'identical predictions after load')

  // a save of an earlier version: format 1, the bundled model as another installation's absolute path
  const old = path.join(dir, 'head-old')
  fs.cpSync(out, old, { recursive: true })
  const oldMeta = { ...meta, version: 1, base: { ...meta.base, kind: 'path', ref: '/elsewhere/app/node_modules/ernie-sentiment/models/ernie-4.5-tiny-zh' } }
  fs.writeFileSync(path.join(old, 'classifier.json'), JSON.stringify(oldMeta))
  const fromOld = await ErnieClassifier.load(old)
  t.teardown(() => fromOld.dispose())
  t.same(await fromOld.predict(TEXTS), preds, 'an old save naming the bundled model by path still loads')
})

t.test('mean pooling: no sequence-classification form, and config.json says where the head is', async (t) => {
  const clf = new ErnieClassifier({ model: TINY, method: 'head', pooling: 'mean', maxLength: 32 })
  t.teardown(() => clf.dispose())
  await clf.fit(data(64), { epochs: 1 })
  const out = path.join(dir, 'head-mean')
  await clf.save(out)
  const config = readJson(path.join(out, 'config.json'))
  t.same(config.architectures, readJson(path.join(TINY, 'config.json')).architectures, "the base's class: transformers' classifiers pool the last token")
  t.match(config.ernie_sentiment.head, /head\.safetensors only/)
  t.equal(config.ernie_sentiment.pooling, 'mean')
  t.notOk(fs.existsSync(path.join(out, 'score.safetensors')))
  const loaded = await ErnieClassifier.load(out)
  t.teardown(() => loaded.dispose())
  t.same(await loaded.predict(TEXTS), await clf.predict(TEXTS), 'identical predictions after load')
})

t.test('lora: a PEFT SEQ_CLS adapter with the head in modules_to_save', async (t) => {
  const clf = new ErnieClassifier({ model: TINY, method: 'lora', lora: { r: 4, alpha: 8 }, maxLength: 32, precision: 'fp32' })
  t.teardown(() => clf.dispose())
  await clf.fit(data(64), { maxSteps: 3, learningRate: 1e-2, batchSize: 16, warmupSteps: 1 })
  const out = path.join(dir, 'lora')
  await clf.save(out)
  const s = readJson(path.join(out, 'classifier.json')).training.settings
  t.match(s, { method: 'lora', learningRate: 1e-2, batchSize: 16, maxSteps: 3, totalSteps: 3, warmupSteps: 1, pooling: 'last', maxLength: 32 })
  t.same(s.lora, { r: 4, alpha: 8, dropout: 0, targetModules: SEVEN, useRslora: false })

  const peft = readJson(path.join(out, 'adapter_config.json'))
  t.match(peft, { peft_type: 'LORA', task_type: 'SEQ_CLS', r: 4, lora_alpha: 8, base_model_name_or_path: path.resolve(TINY) })
  t.same(peft.modules_to_save, ['score'])
  t.same(peft.target_modules, SEVEN)
  const cfg = readJson(path.join(TINY, 'config.json'))
  const dims: Record<string, [number, number]> = {
    q_proj: [cfg.num_attention_heads * cfg.head_dim, cfg.hidden_size],
    k_proj: [cfg.num_key_value_heads * cfg.head_dim, cfg.hidden_size],
    v_proj: [cfg.num_key_value_heads * cfg.head_dim, cfg.hidden_size],
    o_proj: [cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim],
    gate_proj: [cfg.intermediate_size, cfg.hidden_size],
    up_proj: [cfg.intermediate_size, cfg.hidden_size],
    down_proj: [cfg.hidden_size, cfg.intermediate_size],
  }
  const want: Record<string, { dtype: string; shape: number[] }> = {
    'base_model.model.score.weight': { dtype: 'F32', shape: [2, cfg.hidden_size] },
    'base_model.model.score.bias': { dtype: 'F32', shape: [2] },
  }
  for (let l = 0; l < cfg.num_hidden_layers; l++)
    for (const p of SEVEN) {
      const m = `base_model.model.model.layers.${l}.${p.endsWith('_proj') && ['gate_proj', 'up_proj', 'down_proj'].includes(p) ? 'mlp' : 'self_attn'}.${p}`
      want[`${m}.lora_A.weight`] = { dtype: 'F32', shape: [4, dims[p][1]] }
      want[`${m}.lora_B.weight`] = { dtype: 'F32', shape: [dims[p][0], 4] }
    }
  t.same(header(path.join(out, 'adapter_model.safetensors')), want, "PEFT's names (no adapter name) and shapes")
  t.same(readJson(path.join(out, 'config.json')).architectures, ['Ernie4_5ForSequenceClassification'])
  // no standardisation in a lora head: score is the head itself
  t.same([...tensor64(path.join(out, 'adapter_model.safetensors'), 'base_model.model.score.weight')], [...tensor64(path.join(out, 'head.safetensors'), 'classifier.weight')])

  const loaded = await ErnieClassifier.load(out)
  t.teardown(() => loaded.dispose())
  const preds = await clf.predict(TEXTS)
  t.same(await loaded.predict(TEXTS), preds, 'identical predictions after load')

  // the layout of version 1: a CAUSAL_LM adapter in adapter/, no score in it
  const old = path.join(dir, 'lora-v1')
  fs.cpSync(out, old, { recursive: true })
  fs.mkdirSync(path.join(old, 'adapter'))
  const { modules_to_save: _m, ...causal } = { ...peft, task_type: 'CAUSAL_LM' }
  fs.writeFileSync(path.join(old, 'adapter', 'adapter_config.json'), JSON.stringify(causal))
  const loraOnly = Object.fromEntries(Object.entries(fixtureTensorsF32(path.join(out, 'adapter_model.safetensors'))).filter(([n]) => !n.includes('.score.')))
  await saveSafetensors(path.join(old, 'adapter', 'adapter_model.safetensors'), loraOnly)
  for (const f of ['adapter_config.json', 'adapter_model.safetensors']) fs.rmSync(path.join(old, f))
  fs.writeFileSync(path.join(old, 'classifier.json'), JSON.stringify({ ...readJson(path.join(out, 'classifier.json')), version: 1 }))
  const fromOld = await ErnieClassifier.load(old)
  t.teardown(() => fromOld.dispose())
  t.same(await fromOld.predict(TEXTS), preds, 'a version 1 directory (adapter/) still loads')
})

t.test('full: model.safetensors in HF names with score.weight', async (t) => {
  const clf = new ErnieClassifier({ model: QWEN, method: 'full', maxLength: 32 })
  t.teardown(() => clf.dispose())
  await clf.fit(data(32), { maxSteps: 2, batchSize: 16 })
  const out = path.join(dir, 'full')
  await clf.save(out)
  const meta = readJson(path.join(out, 'classifier.json'))
  t.same({ kind: meta.base.kind, ref: meta.base.ref, trainedFrom: meta.base.trainedFrom }, { kind: 'saved', ref: '.', trainedFrom: path.resolve(QWEN) })
  const config = readJson(path.join(out, 'config.json'))
  t.same(config.architectures, ['Qwen3ForSequenceClassification'])
  t.equal(config.model_type, 'qwen3')
  const fixture = header(path.join(QWEN, 'model.safetensors'))
  const saved = header(path.join(out, 'model.safetensors'))
  const H = readJson(path.join(QWEN, 'config.json')).hidden_size
  t.same(
    Object.fromEntries(Object.entries(saved).map(([k, v]) => [k, v.shape])),
    { ...Object.fromEntries(Object.entries(fixture).map(([k, v]) => [k, v.shape])), 'score.weight': [2, H], 'score.bias': [2] },
    "the fixture's tensor names and shapes, and the head",
  )
  t.notOk(fs.existsSync(path.join(out, 'model')), 'no model/ directory')
  const loaded = await ErnieClassifier.load(out)
  t.teardown(() => loaded.dispose())
  const preds = await clf.predict(TEXTS)
  t.same(await loaded.predict(TEXTS), preds, 'identical predictions after load')
  await t.rejects(ErnieClassifier.load(out, { model: QWEN }), { code: 'ERR_BASE_MODEL' })

  // the layout of version 1: the model in model/
  const old = path.join(dir, 'full-v1')
  fs.cpSync(out, old, { recursive: true })
  fs.mkdirSync(path.join(old, 'model'))
  fs.copyFileSync(path.join(QWEN, 'config.json'), path.join(old, 'model', 'config.json'))
  // Version 1 kept the head in head.safetensors only: its model file has no score tensors.
  const decoder = Object.fromEntries(Object.entries(fixtureTensorsOf(path.join(old, 'model.safetensors'))).filter(([n]) => !n.startsWith('score.')))
  await saveSafetensors(path.join(old, 'model', 'model.safetensors'), decoder)
  fs.rmSync(path.join(old, 'model.safetensors'))
  fs.writeFileSync(path.join(old, 'classifier.json'), JSON.stringify({ ...meta, version: 1, base: { ...meta.base, ref: 'model' } }))
  const fromOld = await ErnieClassifier.load(old)
  t.teardown(() => fromOld.dispose())
  t.same(await fromOld.predict(TEXTS), preds, 'a version 1 directory (model/) still loads')
})

// --- Hugging Face directories written by hand ---

/** The fixture's weights as they are (BF16), for a checkpoint written here. */
function fixtureTensors(dirOf: string): Record<string, TensorToSave> {
  using st = openSafetensors(dirOf)
  return Object.fromEntries(Object.keys(st.tensors).map((n) => [n, { dtype: st.tensors[n].dtype, shape: st.tensors[n].shape, data: (st.view(n) as Uint16Array).slice() }]))
}

/** Every tensor of a file, copied as stored. */
function fixtureTensorsOf(file: string): Record<string, TensorToSave> {
  using st = openSafetensors(file)
  return Object.fromEntries(Object.keys(st.tensors).map((n) => [n, { dtype: st.tensors[n].dtype, shape: st.tensors[n].shape, data: st.view(n).slice() as TensorToSave['data'] }]))
}

/** The F32 tensors of a file (an adapter), copied. */
function fixtureTensorsF32(file: string): Record<string, TensorToSave> {
  using st = openSafetensors(file)
  return Object.fromEntries(Object.keys(st.tensors).map((n) => [n, { dtype: 'F32' as const, shape: st.tensors[n].shape, data: (st.view(n) as Float32Array).slice() }]))
}

const known = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => 0.5 * Math.sin(0.37 * i + k))

t.test('a transformers Qwen3ForSequenceClassification directory loads and scores as transformers would', async (t) => {
  const hf = path.join(dir, 'hf-qwen3')
  fs.mkdirSync(hf)
  const cfg = readJson(path.join(QWEN, 'config.json'))
  const H = cfg.hidden_size
  fs.writeFileSync(
    path.join(hf, 'config.json'),
    JSON.stringify({ ...cfg, architectures: ['Qwen3ForSequenceClassification'], id2label: { 0: 'neg', 1: 'neu', 2: 'pos' }, label2id: { neg: 0, neu: 1, pos: 2 }, pad_token_id: 0 }),
  )
  fs.copyFileSync(path.join(QWEN, 'tokenizer.model'), path.join(hf, 'tokenizer.model'))
  // a Llama-style tokenizer that adds BOS, as transformers' LlamaTokenizer does by default
  fs.writeFileSync(path.join(hf, 'tokenizer_config.json'), JSON.stringify({ ...readJson(path.join(QWEN, 'tokenizer_config.json')), add_bos_token: true, add_eos_token: false }))
  const score = known(3 * H, 1)
  await saveSafetensors(path.join(hf, 'model.safetensors'), { ...fixtureTensors(QWEN), 'score.weight': { dtype: 'F32', shape: [3, H], data: score } })

  const clf = await ErnieClassifier.load(hf, { precision: 'fp32' })
  t.teardown(() => clf.dispose())
  t.same(clf.labels, ['neg', 'neu', 'pos'], 'labels from id2label')
  t.equal(clf.method, 'full')
  const preds = await clf.predict(WORDS)
  const bos = cfg.bos_token_id
  const hidden = await lastHidden(QWEN, (tok, x) => [bos, ...tok.encode(x)], WORDS)
  WORDS.forEach((x, i) => near(t, [preds[i].scores.neg, preds[i].scores.neu, preds[i].scores.pos], scores64(score, undefined, hidden[i], 3), 1e-5, `"${x}": BOS + text, last token, score without bias`))
})

t.test('a PEFT SEQ_CLS adapter directory loads onto its base and scores as the merged model', async (t) => {
  const cfg = readJson(path.join(TINY, 'config.json'))
  const H = cfg.hidden_size
  const r = 2
  const alpha = 6
  const q = cfg.num_attention_heads * cfg.head_dim
  const kv = cfg.num_key_value_heads * cfg.head_dim
  const targets: Array<[string, number]> = [['q_proj', q], ['v_proj', kv]]
  const adapterDir = path.join(dir, 'peft-seq-cls')
  fs.mkdirSync(adapterDir)
  fs.writeFileSync(
    path.join(adapterDir, 'adapter_config.json'),
    JSON.stringify({ peft_type: 'LORA', task_type: 'SEQ_CLS', r, lora_alpha: alpha, lora_dropout: 0, bias: 'none', target_modules: ['q_proj', 'v_proj'], modules_to_save: ['classifier', 'score'], base_model_name_or_path: TINY }),
  )
  const tensors: Record<string, TensorToSave> = {}
  const lora: Record<string, { A: Float32Array; B: Float32Array; out: number }> = {}
  let k = 2
  for (let l = 0; l < cfg.num_hidden_layers; l++)
    for (const [p, out] of targets) {
      const A = known(r * H, k++)
      const B = known(out * r, k++)
      const m = `model.layers.${l}.self_attn.${p}`
      lora[m] = { A, B, out }
      tensors[`base_model.model.${m}.lora_A.weight`] = { dtype: 'F32', shape: [r, H], data: A }
      tensors[`base_model.model.${m}.lora_B.weight`] = { dtype: 'F32', shape: [out, r], data: B }
    }
  const score = known(2 * H, 99)
  tensors['base_model.model.score.weight'] = { dtype: 'F32', shape: [2, H], data: score }
  await saveSafetensors(path.join(adapterDir, 'adapter_model.safetensors'), tensors)

  const clf = await ErnieClassifier.load(adapterDir, { precision: 'fp32' })
  t.teardown(() => clf.dispose())
  t.same(clf.labels, ['LABEL_0', 'LABEL_1'], "transformers' names when there is no id2label")
  t.equal(clf.method, 'lora')
  const preds = await clf.predict(WORDS)

  // the reference: the base with W + (alpha / r) B A merged here in float64, stored F32
  const merged = path.join(dir, 'peft-merged')
  fs.mkdirSync(merged)
  for (const f of ['config.json', 'tokenizer.model', 'tokenizer_config.json']) fs.copyFileSync(path.join(TINY, f), path.join(merged, f))
  const weights = fixtureTensors(TINY)
  for (const [m, { A, B, out }] of Object.entries(lora)) {
    const W = tensor64(path.join(TINY, 'model.safetensors'), `${m}.weight`)
    const sum = new Float32Array(out * H)
    for (let i = 0; i < out; i++)
      for (let j = 0; j < H; j++) {
        let d = 0
        for (let x = 0; x < r; x++) d += B[i * r + x] * A[x * H + j]
        sum[i * H + j] = W[i * H + j] + (alpha / r) * d
      }
    weights[`${m}.weight`] = { dtype: 'F32', shape: [out, H], data: sum }
  }
  await saveSafetensors(path.join(merged, 'model.safetensors'), weights)
  const hidden = await lastHidden(merged, (tok, x) => tok.encode(x), WORDS)
  WORDS.forEach((x, i) => near(t, [preds[i].scores.LABEL_0, preds[i].scores.LABEL_1], scores64(score, undefined, hidden[i], 2), 1e-4, `"${x}" with the adapter = merged model`))
})

t.test('what load cannot read gets a typed error naming it', async (t) => {
  const make = (name: string) => {
    const d = path.join(dir, name)
    fs.mkdirSync(d)
    return d
  }
  await t.rejects(ErnieClassifier.load(make('empty')), { code: 'ERR_CLASSIFIER', message: /no classifier\.json, config\.json or adapter_config\.json/ })
  await t.rejects(ErnieClassifier.load(TINY), { code: 'ERR_CLASSIFIER', message: /name no \*ForSequenceClassification/ }, 'a causal LM is not a classifier')
  await t.rejects(ErnieClassifier.load(path.join(TINY, 'adapter')), { code: 'ERR_CLASSIFIER', message: /task_type is "CAUSAL_LM"/ })

  const noScore = make('no-score')
  fs.writeFileSync(path.join(noScore, 'config.json'), JSON.stringify({ ...readJson(path.join(TINY, 'config.json')), architectures: ['Ernie4_5ForSequenceClassification'] }))
  fs.copyFileSync(path.join(TINY, 'model.safetensors'), path.join(noScore, 'model.safetensors'))
  await t.rejects(ErnieClassifier.load(noScore), { code: 'ERR_CLASSIFIER', message: /no tensor "score\.weight"/ })

  const badShape = make('bad-shape')
  fs.copyFileSync(path.join(noScore, 'config.json'), path.join(badShape, 'config.json'))
  await saveSafetensors(path.join(badShape, 'model.safetensors'), { ...fixtureTensors(TINY), 'score.weight': { dtype: 'F32', shape: [2, 7], data: known(14, 0) } })
  await t.rejects(ErnieClassifier.load(badShape), { code: 'ERR_CLASSIFIER', message: /score\.weight has shape \[2, 7\]/ })

  const noHead = make('no-head')
  fs.writeFileSync(path.join(noHead, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', task_type: 'SEQ_CLS', r: 2, target_modules: ['q_proj'], base_model_name_or_path: TINY }))
  await t.rejects(ErnieClassifier.load(noHead), { code: 'ERR_CLASSIFIER', message: /modules_to_save does not hold "score"/ })

  // classifier.json cannot send load outside the classifier's directory, or to a path posing as a bundled name.
  const meta = { format: 'ernie-sentiment-classifier', version: 2, method: 'head', labels: { names: ['negative', 'positive'], numericIsIndex: true }, maxLength: 32, truncation: 'head', pooling: 'last', appendEos: true }
  for (const [name, base, message] of [
    ['escape', { kind: 'saved', ref: '../x' }, /base\.ref "\.\.\/x" leaves the classifier's directory/],
    ['absolute', { kind: 'saved', ref: TINY }, /leaves the classifier's directory/],
    ['bundled-path', { kind: 'bundled', ref: '../../x' }, /base\.ref "\.\.\/\.\.\/x" is not a bundled model's name/],
    ['no-base', undefined, /"base" must be \{ kind: hub \| path \| bundled \| saved, ref: string \}/],
  ] as const) {
    const d = make(name)
    fs.writeFileSync(path.join(d, 'classifier.json'), JSON.stringify({ ...meta, base }))
    await t.rejects(ErnieClassifier.load(d), { code: 'ERR_CLASSIFIER', message }, name)
  }
})
