// Qwen3-Embedding checkpoints: the official repos ship transformers' bare Qwen3Model (config
// architectures ["Qwen3Model"], tensor names without the `model.` prefix, no lm_head). The fixture
// here is qwen3-tiny in that shape (its header rewritten by the test, the tensor bytes untouched):
// the same weights, so it must load strictly and give exactly qwen3-tiny's hidden states, and the
// Qwen3 recipe's first method (a linear head on the frozen embedding model) must train on it.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier } from '../../lib/classifier/index'
import { ErnieModel } from '../../lib/model/index'
import { readTsv, tempDir, TRAIN, TEST } from '../helpers/classifier-helpers'
import { readSafetensorsForTest } from '../helpers/helpers'

const QWEN3 = path.join(__dirname, '..', 'fixtures', 'qwen3-tiny')
const root = tempDir(t, 'ernie-qwen3-embedding-')

/** A safetensors file with its tensors renamed by `rename`; the data bytes are copied as they are. */
function renameTensors(from: string, to: string, rename: (name: string) => string): void {
  const buf = fs.readFileSync(from)
  const n = Number(buf.readBigUInt64LE(0))
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>
  const renamed: Record<string, unknown> = {}
  for (const [name, info] of Object.entries(header)) renamed[name === '__metadata__' ? name : rename(name)] = info
  // the header is padded with spaces to a multiple of 8 bytes, as the format asks
  let json = JSON.stringify(renamed)
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8)
  const length = Buffer.alloc(8)
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)))
  fs.writeFileSync(to, Buffer.concat([length, Buffer.from(json), buf.subarray(8 + n)]))
}

/** qwen3-tiny as Qwen/Qwen3-Embedding-0.6B ships: bare Qwen3Model names and class, tied embeddings. */
function embeddingFixture(name: string, edit: (name: string) => string = (n) => n): string {
  const dir = path.join(root, name)
  fs.mkdirSync(dir)
  for (const f of ['tokenizer.model', 'tokenizer_config.json']) fs.copyFileSync(path.join(QWEN3, f), path.join(dir, f))
  const config = JSON.parse(fs.readFileSync(path.join(QWEN3, 'config.json'), 'utf8'))
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, architectures: ['Qwen3Model'], tie_word_embeddings: true }, null, 2))
  renameTensors(path.join(QWEN3, 'model.safetensors'), path.join(dir, 'model.safetensors'), (n) => edit(n.replace(/^model\./, '')))
  return dir
}

const EMBEDDING = embeddingFixture('qwen3-embedding-tiny')

t.test('a bare Qwen3Model checkpoint (no `model.` prefix) loads strictly, with exactly qwen3-tiny\'s outputs', async (t) => {
  const names = [...readSafetensorsForTest(path.join(EMBEDDING, 'model.safetensors')).keys()]
  t.ok(names.includes('embed_tokens.weight') && names.includes('layers.0.self_attn.q_proj.weight') && names.includes('norm.weight'), 'the fixture has the flat names')
  t.notOk(names.some((n) => n.startsWith('model.') || n === 'lm_head.weight'), 'no prefixed name, no LM head')

  const flat = await ErnieModel.fromPretrained(EMBEDDING)
  const prefixed = await ErnieModel.fromPretrained(QWEN3)
  t.teardown(async () => {
    await flat.dispose()
    await prefixed.dispose()
  })
  t.equal(flat.weights.layout, 'hf')
  t.same(flat.ignoredTensors, [], 'every tensor used')
  t.same(flat.config.architectures, ['Qwen3Model'])
  const input = { inputIds: [[5, 17, 99, 3000, 42, 7], [8, 9, 10, 0, 0, 0]], attentionMask: [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]] }
  for (const precision of ['fp32', 'bf16'] as const) {
    const a = await flat.forward(input, { output: ['hidden', 'logits'], precision })
    const b = await prefixed.forward(input, { output: ['hidden', 'logits'], precision })
    let hidden = 0, logits = 0
    for (let i = 0; i < a.hidden!.length; i++) hidden = Math.max(hidden, Math.abs(a.hidden![i] - b.hidden![i]))
    for (let i = 0; i < a.logits!.length; i++) logits = Math.max(logits, Math.abs(a.logits![i] - b.logits![i]))
    t.equal(hidden, 0, `${precision}: hidden states equal qwen3-tiny's (max |diff| ${hidden})`)
    // tie_word_embeddings: the LM head is the embedding, as in the prefixed checkpoint
    t.equal(logits, 0, `${precision}: logits (tied head) equal qwen3-tiny's (max |diff| ${logits})`)
  }
  const [e1] = await flat.embed('房间很干净', { normalize: true })
  const [e2] = await prefixed.embed('房间很干净', { normalize: true })
  t.same(e1, e2, 'embed() (last-token pooling, L2-normalised) is the same vector')
})

t.test('strict loading still holds for the flat layout', async (t) => {
  // a config with fewer layers than the file: layers.1.* unused, an error naming them
  const fewer = embeddingFixture('fewer-layers')
  const fewerConfig = path.join(fewer, 'config.json')
  fs.writeFileSync(fewerConfig, JSON.stringify({ ...JSON.parse(fs.readFileSync(fewerConfig, 'utf8')), num_hidden_layers: 1 }))
  await t.rejects(ErnieModel.fromPretrained(fewer), { code: 'ERR_CHECKPOINT', message: /tensor\(s\) that no part of the model config\.json describes uses: layers\.1\./ })
  // a missing layer tensor (misnamed) names the flat name
  const missing = embeddingFixture('missing', (n) => (n === 'layers.1.mlp.down_proj.weight' ? 'layers.1.mlp.down.weight' : n))
  await t.rejects(ErnieModel.fromPretrained(missing), { code: 'ERR_CHECKPOINT', message: /missing tensor "layers\.1\.mlp\.down_proj\.weight"/ })
  // no embedding at all: the message lists the layouts looked for
  const none = embeddingFixture('no-embedding', (n) => (n === 'embed_tokens.weight' ? 'embedding.weight' : n))
  await t.rejects(ErnieModel.fromPretrained(none), { code: 'ERR_CHECKPOINT', message: /no embedding tensor \(expected "model\.embed_tokens\.weight".*"embed_tokens\.weight".*"ernie\.embed_tokens\.weight"/ })
  // untied and no LM head: the bare model cannot give logits, said so
  const untied = embeddingFixture('untied')
  const cfgFile = path.join(untied, 'config.json')
  fs.writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(cfgFile, 'utf8')), tie_word_embeddings: false }))
  await t.rejects(ErnieModel.fromPretrained(untied), { code: 'ERR_CHECKPOINT', message: /missing tensor "lm_head\.weight".*bare \*Model checkpoint carries no LM head/ })
})

t.test("method 'head' (the Qwen3 recipe's first method) trains and predicts on the embedding model", async (t) => {
  const train = readTsv(TRAIN)
  const rows = train.texts.slice(0, 48).map((text, i) => ({ text, label: train.labels[i] }))
  const texts = readTsv(TEST).texts.slice(0, 16)
  const options = { method: 'head' as const, maxLength: 64 }
  const fit = { epochs: 5, learningRate: 5e-3, batchSize: 16 }
  const clf = new ErnieClassifier({ model: EMBEDDING, ...options })
  const twin = new ErnieClassifier({ model: QWEN3, ...options })
  t.teardown(async () => {
    await clf.dispose()
    await twin.dispose()
  })
  const result = await clf.fit(rows, fit)
  t.equal(result.data.train.examples, 48)
  t.equal(clf.method, 'head')
  const preds = await clf.predict(texts)
  t.equal(preds.length, texts.length)
  for (const p of preds) {
    t.ok(p.label === 'negative' || p.label === 'positive', `label ${p.label}`)
    t.ok(Math.abs(p.scores.negative + p.scores.positive - 1) < 1e-6, 'scores sum to 1')
  }
  // the same weights under the prefixed names: the same features, the same head, the same answers
  await twin.fit(rows, fit)
  t.same(preds, await twin.predict(texts), "predictions equal those of the same fit on qwen3-tiny")
})
