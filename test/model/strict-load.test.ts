// Strict loading: config.json values outside physical ranges or of the wrong JSON type, tensors
// no part of the model uses (a truncated config, two layouts in one file), NaN / infinity in
// the weights, and rows longer than max_position_embeddings are each a typed error naming the
// file and the place, never a model that loads and computes garbage. The checkpoints are copies
// of the fixtures altered by the test, with the test's own safetensors reader.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { saveSafetensors, type TensorToSave } from '../../lib/io/safetensors'
import { ErnieModel } from '../../lib/model/index'
import { readSafetensorsForTest } from '../helpers/helpers'

const FIXTURES = path.join(__dirname, '..', 'fixtures')
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-strict-'))
t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
let counter = 0

type Tensors = ReturnType<typeof readSafetensorsForTest>

/** A copy of fixture `name` with its config edited and its tensors replaced, if given. */
async function variant(name: string, edit: { config?: (c: Record<string, unknown>) => void; tensors?: (ts: Tensors) => void }): Promise<string> {
  const dir = path.join(root, `${name}-${counter++}`)
  fs.cpSync(path.join(FIXTURES, name), dir, { recursive: true })
  if (edit.config) {
    const c = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'))
    edit.config(c)
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(c))
  }
  if (edit.tensors) {
    const ts = readSafetensorsForTest(path.join(FIXTURES, name, 'model.safetensors'))
    edit.tensors(ts)
    const out: Record<string, TensorToSave> = {}
    for (const [n, v] of ts) out[n] = { dtype: v.dtype as TensorToSave['dtype'], shape: v.shape, data: v.raw }
    await saveSafetensors(path.join(dir, 'model.safetensors'), out)
  }
  return dir
}

t.test('config.json: values outside physical ranges and wrong JSON types name the file and key', async (t) => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['rms_norm_eps', 1e30, /"rms_norm_eps" must be a number in \(0, 0\.1\]/],
    ['rms_norm_eps', 0, /"rms_norm_eps" must be a number/],
    ['rope_theta', 1e308, /"rope_theta" must be a number in \(1, 1000000000\]/],
    ['rope_theta', '500000', /"rope_theta" must be a number/],
    ['max_position_embeddings', -1, /"max_position_embeddings" must be a positive integer, got -1/],
    ['max_position_embeddings', 2.5, /"max_position_embeddings" must be a positive integer/],
    ['tie_word_embeddings', 'false', /"tie_word_embeddings" must be true or false, got "false"/],
    ['eos_token_id', '2', /"eos_token_id" must be a token id or a list of them, got "2"/],
    ['eos_token_id', [2, 6016], /"eos_token_id" must be a token id or a list of them/],
    ['pad_token_id', 6016, /"pad_token_id" must be a token id \(an integer in \[0, vocab_size\)\), got 6016/],
    ['hidden_act', 7, /"hidden_act" must be a string/],
    ['architectures', 'Ernie4_5ForCausalLM', /"architectures" must be a list of class names/],
  ]
  for (const [key, value, message] of cases) {
    const dir = await variant('ernie-tiny', { config: (c) => (c[key] = value) })
    await t.rejects(ErnieModel.fromPretrained(dir), { code: 'ERR_CONFIG', message }, `${key}: ${JSON.stringify(value)}`)
    await t.rejects(ErnieModel.fromPretrained(dir), { message: new RegExp(path.join(dir, 'config.json').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) }, 'the file named')
  }
  // What released checkpoints hold stays accepted: a list of EOS ids, null ids.
  const ok = await variant('ernie-tiny', { config: (c) => ((c.eos_token_id = [2, 1]), (c.pad_token_id = null)) })
  const model = await ErnieModel.fromPretrained(ok)
  await model.dispose()
})

t.test('rows longer than max_position_embeddings are refused, in forward, training and generation', async (t) => {
  const dir = await variant('ernie-tiny', { config: (c) => (c.max_position_embeddings = 4) })
  const model = await ErnieModel.fromPretrained(dir)
  t.teardown(() => model.dispose())
  const fits = await model.forward({ inputIds: [[5, 6, 7, 8]] })
  t.same(fits.shape, [1, 4], 'four positions fit')
  await t.rejects(model.forward({ inputIds: [[5, 6, 7, 8, 9, 10]] }), { code: 'ERR_SEQUENCE_TOO_LONG', message: /rows of 6 tokens exceed the model's max_position_embeddings \(4\)/ })
  await t.rejects(model.loss({ inputIds: [[5, 6, 7, 8, 9]] }), { code: 'ERR_SEQUENCE_TOO_LONG' })
  await t.rejects(model.generate([5, 6, 7], { maxNewTokens: 2 }), { code: 'ERR_SEQUENCE_TOO_LONG', message: /prompt of 3 tokens plus maxNewTokens 2 exceeds .* \(4\)/ })
})

t.test('tensors no part of the model uses: an error naming them, or ignored on request and listed', async (t) => {
  // num_hidden_layers 1 on the 2-layer checkpoint: layer 1 would be dropped without a word.
  const truncated = await variant('ernie-tiny', { config: (c) => (c.num_hidden_layers = 1) })
  const layer1 = [...readSafetensorsForTest(path.join(FIXTURES, 'ernie-tiny', 'model.safetensors')).keys()].filter((n) => n.startsWith('model.layers.1.')).sort()
  t.ok(layer1.length >= 7, `the fixture's layer 1 has ${layer1.length} tensors`)
  await t.rejects(ErnieModel.fromPretrained(truncated), {
    code: 'ERR_CHECKPOINT',
    message: new RegExp(`model\\.safetensors: ${layer1.length} tensor\\(s\\) that no part of the model config\\.json describes uses: model\\.layers\\.1\\..*\\(num_hidden_layers 1, hf layout\\)`),
  })
  const loose = await ErnieModel.fromPretrained(truncated, { unusedTensors: 'ignore' })
  t.same([...loose.ignoredTensors].sort(), layer1, 'ignored on request, and listed')
  await loose.dispose()
  const full = await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny'))
  t.same(full.ignoredTensors, [], 'a checkpoint that matches its config ignores nothing')
  await full.dispose()

  // Both layouts in one file: the HF set is used, the Paddle set would be silently ignored.
  const paddle = readSafetensorsForTest(path.join(FIXTURES, 'ernie-tiny-paddle', 'model.safetensors'))
  const both = await variant('ernie-tiny', { tensors: (ts) => paddle.forEach((v, n) => ts.set(n, v)) })
  await t.rejects(ErnieModel.fromPretrained(both), { code: 'ERR_CHECKPOINT', message: /tensor\(s\) that no part .* uses: ernie\./ })

  // A sequence classifier's head (transformers' score Linear) is explained by a config naming a
  // *ForSequenceClassification class: loaded past, listed; elsewhere it is unexplained.
  const score = { dtype: 'F32', shape: [2, 64], raw: new Float32Array(128) }
  const seqCls = await variant('ernie-tiny', { config: (c) => (c.architectures = ['Ernie4_5ForSequenceClassification']), tensors: (ts) => ts.set('score.weight', score) })
  const clsModel = await ErnieModel.fromPretrained(seqCls)
  t.same(clsModel.ignoredTensors, ['score.weight'], 'the head is not the decoder\'s: listed as ignored')
  await clsModel.dispose()
  const stray = await variant('ernie-tiny', { tensors: (ts) => ts.set('score.weight', score) })
  await t.rejects(ErnieModel.fromPretrained(stray), { code: 'ERR_CHECKPOINT', message: /1 tensor\(s\) .* uses: score\.weight/ })

  // A buffer the engine derives itself (older HF files saved RoPE's inverse frequencies) is explained.
  const withInvFreq = await variant('ernie-tiny', {
    tensors: (ts) => ts.set('model.layers.0.self_attn.rotary_emb.inv_freq', { dtype: 'F32', shape: [16], raw: new Float32Array(16).fill(1) }),
  })
  const m = await ErnieModel.fromPretrained(withInvFreq)
  t.same(m.ignoredTensors, [])
  await m.dispose()
})

t.test('NaN or infinity in the weights is refused, naming the tensor and element, unless allowed', async (t) => {
  const name = 'model.layers.1.mlp.down_proj.weight'
  const poisoned = async (bits: number, at: number) =>
    variant('ernie-tiny', {
      tensors: (ts) => {
        const w = ts.get(name)!
        t.equal(w.dtype, 'BF16', 'the fixture stores bf16')
        ;(w.raw as Uint16Array)[at] = bits
      },
    })
  await t.rejects(ErnieModel.fromPretrained(await poisoned(0x7fc0, 1234)), { code: 'ERR_CHECKPOINT', message: new RegExp(`tensor "${name.replace(/\./g, '\\.')}" holds NaN at element 1234`) })
  await t.rejects(ErnieModel.fromPretrained(await poisoned(0xff80, 7)), { code: 'ERR_CHECKPOINT', message: /holds an infinity at element 7; pass allowNonFinite: true/ })
  const allowed = await ErnieModel.fromPretrained(await poisoned(0x7fc0, 1234), { allowNonFinite: true })
  const out = await allowed.forward({ inputIds: [[5, 6, 7]] })
  t.ok(Array.from(out.hidden!).some((x) => Number.isNaN(x)), 'allowed, the NaN reaches the output: the refusal is what kept it out')
  await allowed.dispose()

  // f32 weights are scanned too.
  const f32 = await variant('ernie-tiny', {
    tensors: (ts) => {
      const w = ts.get('model.norm.weight')!
      const values = Float32Array.from(w.raw as Uint16Array, (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0])
      values[3] = -Infinity
      ts.set('model.norm.weight', { dtype: 'F32', shape: w.shape, raw: values })
    },
  })
  await t.rejects(ErnieModel.fromPretrained(f32), { code: 'ERR_CHECKPOINT', message: /tensor "model\.norm\.weight" holds an infinity at element 3/ })
})

// Found by the structural fuzz test (test/fuzz): a byte that is not UTF-8 was read as U+FFFD and
// the file loaded; a directory without weights gave a bare ENOENT naming an index file.
t.test('config.json must be UTF-8; a directory without model.safetensors is named', async (t) => {
  const dir = await variant('ernie-tiny', {})
  const file = path.join(dir, 'config.json')
  fs.writeFileSync(file, Buffer.from(fs.readFileSync(file, 'latin1').replace('"bfloat16"', '"bfloat16\u00ff"'), 'latin1'))
  await t.rejects(ErnieModel.fromPretrained(dir), { code: 'ERR_CONFIG', message: `${file}: invalid JSON (not valid UTF-8)` })
  fs.writeFileSync(file, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), fs.readFileSync(path.join(FIXTURES, 'ernie-tiny', 'config.json'))]))
  await t.rejects(ErnieModel.fromPretrained(dir), { code: 'ERR_CONFIG', message: /invalid JSON/ }, 'a BOM is no JSON (as Python reads it)')

  const bare = await variant('ernie-tiny', {})
  fs.rmSync(path.join(bare, 'model.safetensors'))
  await t.rejects(ErnieModel.fromPretrained(bare), { code: 'ERR_MODEL_NOT_FOUND', message: `${path.join(bare, 'model.safetensors')}: no such file (nor a sharded model.safetensors.index.json) beside config.json` })
})

t.test('forward inputs: ids past 32 bits and mask values other than 0 and 1 are refused, not wrapped or read as 1', async (t) => {
  const model = await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny'), { tokenizer: false })
  t.teardown(() => model.dispose())
  // 2^40 stored in an Int32Array is 0, a valid id
  await t.rejects(model.forward({ inputIds: [[1, 2 ** 40, 3]] }), { code: 'ERR_OUT_OF_RANGE', message: 'inputIds: row 0, position 1 holds 1099511627776, outside the 32-bit integer range' })
  await t.rejects(model.forward({ inputIds: [[1, 2, 3]], attentionMask: [[1, 2, 1]] }), { code: 'ERR_OUT_OF_RANGE', message: /attentionMask: row 0, position 1 holds 2; a mask holds 1 for tokens and 0 for padding/ })
  await t.rejects(model.forward({ inputIds: { data: Int32Array.of(1, 2), shape: [1, 2] }, attentionMask: { data: Int32Array.of(1, -1), shape: [1, 2] } }), { code: 'ERR_OUT_OF_RANGE', message: /position 1 holds -1/ })
  const padded = await model.forward({ inputIds: [[1, 2, 3], [4, 5, 0]], attentionMask: [[1, 1, 1], [1, 1, 0]] })
  t.same(padded.shape, [2, 3], 'a 0/1 mask runs')
})

// Found by the structural fuzz test: a null max_position_embeddings (absent, as transformers
// reads it) was kept as null, compared as 0, and every input was "longer than (null)".
t.test('null in config.json means absent', async (t) => {
  const dir = await variant('ernie-tiny', { config: (c) => ((c.max_position_embeddings = null), (c.head_dim = 32), (c.bos_token_id = null)) })
  const model = await ErnieModel.fromPretrained(dir)
  t.teardown(() => model.dispose())
  t.notOk('max_position_embeddings' in model.config || 'bos_token_id' in model.config, 'left out of the resolved config')
  const { shape } = await model.forward({ inputIds: [[1, 5, 6, 7, 8, 2]] })
  t.same(shape, [1, 6], 'a row of 6 tokens runs')
  const { finishReason } = await model.generate([1, 5, 6], { maxNewTokens: 2 })
  t.ok(finishReason === 'length' || finishReason === 'eos', `and generation (${finishReason})`)
})
