// LoraAdapter.load on a damaged PEFT adapter (regressions the structural fuzz,
// test/fuzz/gen-adapter.ts, found): adapter_config.json's fields at their JSON types ("true" is
// PEFT's true), features the engine would ignore refused, target_modules matched as PEFT matches
// them (on RE2: a pattern cannot backtrack for ever), weights that are not finite refused, a
// directory in the weights' place named. Each error is ERR_ADAPTER naming the file.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import { ErnieModel, LoraAdapter } from '../../lib/model/index'
import { saveSafetensors, type TensorToSave } from '../../lib/io/safetensors'
import { tempDir } from '../helpers/classifier-helpers'
import { readSafetensorsForTest } from '../helpers/helpers'

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'ernie-tiny')
const ADAPTER = path.join(FIXTURE, 'adapter')
const CONFIG = JSON.parse(fs.readFileSync(path.join(ADAPTER, 'adapter_config.json'), 'utf8')) as Record<string, unknown>

let model: ErnieModel
t.before(async () => {
  model = await ErnieModel.fromPretrained(FIXTURE, { tokenizer: false })
})
t.teardown(() => model.dispose())

/** A copy of the fixture adapter with adapter_config.json's fields changed (undefined removes one). */
function adapterDir(t: Parameters<typeof tempDir>[0], fields: Record<string, unknown> = {}): string {
  const d = tempDir(t, 'ernie-lora-strict-')
  fs.copyFileSync(path.join(ADAPTER, 'adapter_model.safetensors'), path.join(d, 'adapter_model.safetensors'))
  fs.writeFileSync(path.join(d, 'adapter_config.json'), JSON.stringify({ ...CONFIG, ...fields }))
  return d
}

async function logitsWith(dir: string): Promise<Float32Array> {
  const adapter = await LoraAdapter.load(dir, model)
  try {
    return (await model.forward({ inputIds: [[1, 5, 6, 7, 8, 2]] }, { output: ['logits'], adapter })).logits!
  } finally {
    adapter.dispose()
  }
}

t.test('fields of the wrong JSON type, and features the engine would ignore, are refused naming adapter_config.json', async (t) => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ use_rslora: 'true' }, /use_rslora must be true or false, got "true"/],
    [{ fan_in_fan_out: 'false' }, /fan_in_fan_out must be true or false, got "false"/],
    [{ use_dora: 'true' }, /use_dora must be true or false/],
    [{ lora_bias: true }, /lora_bias \(a bias on lora_B\) is not supported/],
    [{ layer_replication: [[0, 2]] }, /layer_replication is not supported/],
    [{ rank_pattern: 'x' }, /rank_pattern must be an object, got "x"/],
    [{ modules_to_save: 'score' }, /modules_to_save must be a list of module names, got "score"/],
    [{ r: '4' }, /r must be an integer in \[1, 4096\], got "4"/],
    [{ lora_alpha: null }, /lora_alpha must be a number, got null/],
    [{ lora_dropout: 1 }, /lora_dropout must be a number in \[0, 1\), got 1/],
  ]
  for (const [fields, message] of cases) {
    const d = adapterDir(t, fields)
    await t.rejects(LoraAdapter.load(d, model), { code: 'ERR_ADAPTER', message: new RegExp(`^${path.join(d, 'adapter_config.json').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: ${message.source}`) }, JSON.stringify(fields))
  }
  const text = Buffer.from(JSON.stringify({ ...CONFIG, base_model_name_or_path: 'ernie-tinyX' }), 'latin1')
  text[text.indexOf('X')] = 0xff
  const d = adapterDir(t)
  fs.writeFileSync(path.join(d, 'adapter_config.json'), text)
  await t.rejects(LoraAdapter.load(d, model), { code: 'ERR_ADAPTER', message: /adapter_config\.json: invalid JSON \(not valid UTF-8\)/ }, 'bytes that are not UTF-8')
})

t.test('target_modules are matched as PEFT matches them, in linear time', async (t) => {
  const original = await logitsWith(ADAPTER)
  const suffixes = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj']
  t.same(await logitsWith(adapterDir(t, { target_modules: suffixes })), original, 'dotted suffixes matching every layer: the same adapter')
  t.same(await logitsWith(adapterDir(t, { target_modules: '.*\\.(q|k|v|o|gate|up|down)_proj' })), original, 'a pattern matching whole names: the same adapter')
  // layer 0's modules only: PEFT would adapt layer 0 and leave layer 1's tensors unused
  const layer0 = suffixes.map((s) => `model.layers.0.${s}`)
  await t.rejects(LoraAdapter.load(adapterDir(t, { target_modules: layer0 }), model), { code: 'ERR_ADAPTER', message: /adapts q_proj in layers 0 only; the engine adapts a projection in every layer/ })
  await t.rejects(LoraAdapter.load(adapterDir(t, { target_modules: ['mlp.q_proj'] }), model), { code: 'ERR_ADAPTER', message: /target module "mlp\.q_proj" names none of q_proj/ })
  // a JS RegExp backtracks for 2^30 steps on these against the 30-character module names: a
  // regression hangs this test until tap's timeout fails it
  for (const pattern of ['(.*)*x', '(.|.)*x$'])
    await t.rejects(LoraAdapter.load(adapterDir(t, { target_modules: pattern }), model), { code: 'ERR_ADAPTER', message: /matches none of/ }, pattern)
  await t.rejects(LoraAdapter.load(adapterDir(t, { target_modules: '(?=q)' }), model), { code: 'ERR_ADAPTER', message: /is not a regular expression this reader runs/ })
})

t.test('weights: non-finite values and a directory in the file\'s place are named', async (t) => {
  const tensors = readSafetensorsForTest(path.join(ADAPTER, 'adapter_model.safetensors'))
  const name = 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight'
  for (const bad of [NaN, Infinity]) {
    const d = adapterDir(t)
    const out: Record<string, TensorToSave> = {}
    for (const [n, v] of tensors) {
      const data = new Float32Array(v.raw.buffer.slice(v.raw.byteOffset, v.raw.byteOffset + v.raw.byteLength))
      if (n === name) data[7] = bad
      out[n] = { dtype: 'F32', shape: v.shape, data }
    }
    await saveSafetensors(path.join(d, 'adapter_model.safetensors'), out)
    await t.rejects(LoraAdapter.load(d, model), { code: 'ERR_ADAPTER', message: new RegExp(`adapter_model\\.safetensors: tensor "${name.replace(/\./g, '\\.')}" holds ${bad} at element 7`) }, String(bad))
  }
  const d = adapterDir(t)
  fs.rmSync(path.join(d, 'adapter_model.safetensors'))
  fs.mkdirSync(path.join(d, 'adapter_model.safetensors'))
  await t.rejects(LoraAdapter.load(d, model), { code: 'ERR_ADAPTER', message: /adapter_model\.safetensors: is a directory, not the adapter's weights/ })
})
