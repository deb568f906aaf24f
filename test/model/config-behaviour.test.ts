// config.json keys that ask for behaviour the engine does not implement (biases, RoPE scaling,
// sliding-window attention, dropout, LayerNorm, quantization, ...) are refused with a typed error
// naming the file, the key and the value; the values released checkpoints ship (ERNIE-4.5-0.3B-PT's
// and Qwen3-0.6B's config.json, written out below as they are published) load, and so do keys
// that change nothing. Where config.json leaves a key out, the value is transformers' default.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import { ErnieModel, resolveConfig } from '../../lib/model/index'
import { randomTensors } from '../../lib/model/load'
import { bf16ToF32 } from '../../lib/model/dtype'

const FIXTURES = path.join(__dirname, '..', 'fixtures')
const fixtureConfig = (name: string): Record<string, unknown> => JSON.parse(fs.readFileSync(path.join(FIXTURES, name, 'config.json'), 'utf8'))
const ERNIE = fixtureConfig('ernie-tiny')
const QWEN = fixtureConfig('qwen3-tiny')

// baidu/ERNIE-4.5-0.3B-PT's config.json as published on the Hugging Face hub.
const ERNIE_0_3B_PT = {
  architectures: ['Ernie4_5ForCausalLM'],
  bos_token_id: 1,
  eos_token_id: 2,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 1024,
  intermediate_size: 3072,
  max_position_embeddings: 131072,
  model_type: 'ernie4_5',
  num_attention_heads: 16,
  num_hidden_layers: 18,
  num_key_value_heads: 2,
  pad_token_id: 0,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.54.0.dev0',
  use_bias: false,
  use_cache: true,
  vocab_size: 103424,
}

// Qwen/Qwen3-0.6B's config.json as published.
const QWEN3_0_6B = {
  architectures: ['Qwen3ForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 1024,
  initializer_range: 0.02,
  intermediate_size: 3072,
  max_position_embeddings: 40960,
  max_window_layers: 28,
  model_type: 'qwen3',
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: null,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.51.0',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
}

const WHERE = '/models/x/config.json'
const refuse = (cfg: Record<string, unknown>) => () => resolveConfig(cfg, WHERE)

t.test('the configs released checkpoints ship load, with the values the engine computes', async (t) => {
  const ernie = resolveConfig(ERNIE_0_3B_PT, WHERE)
  t.equal(ernie.rope_theta, 500000)
  t.equal(ernie.head_dim, 128)
  const qwen = resolveConfig(QWEN3_0_6B, WHERE)
  t.equal(qwen.rope_theta, 1000000)
  t.equal(qwen.num_key_value_heads, 8)
  // a window length with use_sliding_window false is not used (transformers sets it to null)
  t.ok(resolveConfig({ ...QWEN3_0_6B, sliding_window: 32768 }, WHERE), 'Qwen3 with sliding_window 32768, use_sliding_window false')
  // transformers 5 writes the RoPE parameters as rope_parameters, rope_theta inside, and layer_types
  const v5 = { ...QWEN3_0_6B, rope_scaling: undefined, rope_theta: undefined, rope_parameters: { rope_type: 'default', rope_theta: 1000000 }, layer_types: Array(28).fill('full_attention') }
  t.equal(resolveConfig(v5, WHERE).rope_theta, 1000000, "transformers 5's rope_parameters: the base inside it")
  t.equal(resolveConfig({ ...ERNIE_0_3B_PT, rope_scaling: { type: 'default' } }, WHERE).rope_theta, 500000, 'the default RoPE named (older key "type")')
  // ERNIE's Paddle-era config keys at their neutral values
  t.ok(resolveConfig({ ...ERNIE_0_3B_PT, use_rmsnorm: true, compression_ratio: 1.0, attention_probs_dropout_prob: 0.0, hidden_dropout_prob: 0.0, use_flash_attention: true, fuse_rms_norm: false, ignored_index: -100 }, WHERE))
  // sliding-window keys on ERNIE-4.5: transformers' Ernie4_5Config has none and ignores them
  t.ok(resolveConfig({ ...ERNIE_0_3B_PT, use_sliding_window: true, sliding_window: 4096, layer_types: ['sliding_attention'] }, WHERE))
  // keys that change nothing
  t.ok(resolveConfig({ ...QWEN3_0_6B, output_hidden_states: true, return_dict: false, pruned_heads: {}, quantization_config: null, auto_map: { AutoConfig: 'x.Y' }, dtype: 'bfloat16' }, WHERE))
})

t.test('every fixture config and the bundled model load', async (t) => {
  const dirs = [
    ...['ernie-tiny', 'ernie-tiny-paddle', 'qwen3-tiny'].map((n) => path.join(FIXTURES, n)),
    ...['ernie-tiny', 'ernie-tiny-paddle', 'qwen3-tiny'].map((n) => path.join(__dirname, '..', '..', '..', 'shared', 'fixtures', n)).filter((d) => fs.existsSync(d)),
    path.join(__dirname, '..', '..', 'models', 'ernie-4.5-tiny-zh'),
  ]
  for (const dir of dirs) {
    const file = path.join(dir, 'config.json')
    t.doesNotThrow(() => resolveConfig(JSON.parse(fs.readFileSync(file, 'utf8')), file), file)
  }
})

t.test('biases, LayerNorm, dropout, partial RoPE, pruned heads and quantization are refused, naming key and value', async (t) => {
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ ...ERNIE_0_3B_PT, use_bias: true }, 'use_bias', /"use_bias": true asks for a bias on every attention and MLP projection \(Ernie4_5Config\); the engine implements false only/],
    [{ ...QWEN3_0_6B, attention_bias: true }, 'attention_bias', /"attention_bias": true asks for a bias on q_proj, k_proj, v_proj and o_proj/],
    [{ ...QWEN3_0_6B, mlp_bias: true }, 'mlp_bias', /"mlp_bias": true asks for a bias on the MLP projections/],
    [{ ...ERNIE_0_3B_PT, use_rmsnorm: false }, 'use_rmsnorm', /"use_rmsnorm": false asks for LayerNorm in place of RMSNorm/],
    [{ ...QWEN3_0_6B, partial_rotary_factor: 0.5 }, 'partial_rotary_factor', /"partial_rotary_factor": 0.5 asks for RoPE on only part of each head; the engine implements 1 only/],
    [{ ...ERNIE_0_3B_PT, compression_ratio: 2 }, 'compression_ratio', /"compression_ratio": 2 asks for RoPE positions divided by it/],
    [{ ...QWEN3_0_6B, attention_dropout: 0.1 }, 'attention_dropout', /"attention_dropout": 0.1 asks for dropout on the attention weights in training/],
    [{ ...ERNIE_0_3B_PT, hidden_dropout_prob: 0.1 }, 'hidden_dropout_prob', /"hidden_dropout_prob": 0.1 asks for dropout on the hidden states/],
    [{ ...ERNIE_0_3B_PT, attention_probs_dropout_prob: 0.1 }, 'attention_probs_dropout_prob', /"attention_probs_dropout_prob": 0.1/],
    [{ ...QWEN3_0_6B, pruned_heads: { 0: [1] } }, 'pruned_heads', /"pruned_heads": \{"0":\[1\]\} asks for attention heads removed/],
    [{ ...QWEN3_0_6B, quantization_config: { quant_method: 'gptq', bits: 4 } }, 'quantization_config', /"quantization_config": .*gptq.* asks for quantized weights/],
  ]
  for (const [cfg, key, message] of cases) {
    t.throws(refuse(cfg), { name: 'ErnieError', code: 'ERR_UNSUPPORTED_MODEL', message }, key)
    t.throws(refuse(cfg), { message: new RegExp(`^${WHERE}: `) }, `${key}: the file named`)
  }
  // the wrong JSON type is a config error, not a model the engine lacks
  t.throws(refuse({ ...ERNIE_0_3B_PT, use_bias: 'false' }), { code: 'ERR_CONFIG', message: /"use_bias" must be a boolean \(false here\), got "false"/ })
  t.throws(refuse({ ...QWEN3_0_6B, attention_dropout: '0' }), { code: 'ERR_CONFIG', message: /"attention_dropout" must be a number/ })
})

t.test('RoPE scaling of any kind but the default is refused', async (t) => {
  const scalings = [
    { rope_type: 'yarn', factor: 4.0, original_max_position_embeddings: 32768 },
    { type: 'linear', factor: 2.0 },
    { rope_type: 'dynamic', factor: 2.0 },
    { rope_type: 'llama3', factor: 8.0, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    { rope_type: 'longrope', short_factor: [1], long_factor: [2] },
  ]
  for (const s of scalings) {
    t.throws(refuse({ ...QWEN3_0_6B, rope_scaling: s }), { code: 'ERR_UNSUPPORTED_MODEL', message: /"rope_scaling": .* asks for ".*" RoPE scaling; the engine computes the default RoPE only/ }, JSON.stringify(s))
    t.throws(refuse({ ...QWEN3_0_6B, rope_scaling: null, rope_parameters: { ...s, rope_theta: 1000000 } }), { code: 'ERR_UNSUPPORTED_MODEL', message: /"rope_parameters": / }, `rope_parameters ${JSON.stringify(s)}`)
  }
  t.throws(refuse({ ...ERNIE_0_3B_PT, rope_scaling: { rope_type: 'default', factor: 2 } }), { code: 'ERR_UNSUPPORTED_MODEL', message: /holds "factor", which the default RoPE does not read/ })
  t.throws(refuse({ ...ERNIE_0_3B_PT, rope_scaling: { rope_type: 'default', partial_rotary_factor: 0.5 } }), { code: 'ERR_UNSUPPORTED_MODEL', message: /partial_rotary_factor/ })
  t.throws(refuse({ ...ERNIE_0_3B_PT, rope_scaling: 'yarn' }), { code: 'ERR_CONFIG', message: /"rope_scaling" must be null or an object, got "yarn"/ })
  t.throws(refuse({ ...ERNIE_0_3B_PT, rope_parameters: { rope_type: 'default', rope_theta: 10000 } }), { code: 'ERR_CONFIG', message: /"rope_theta" is 500000 but "rope_parameters" says 10000/ })
  t.throws(refuse({ ...ERNIE_0_3B_PT, rope_theta: undefined, rope_parameters: { rope_type: 'default', rope_theta: 1e308 } }), { code: 'ERR_CONFIG', message: /"rope_theta" must be a number in \(1, 1000000000\]/ }, 'the inner base is range-checked')
})

t.test("Qwen3's sliding-window attention is refused wherever transformers would use it", async (t) => {
  const sliding = { ...QWEN3_0_6B, use_sliding_window: true, sliding_window: 4096 }
  // layers max_window_layers.. slide: with 28 of 28 layers, none does
  t.ok(resolveConfig(sliding, WHERE), 'max_window_layers 28 of 28 layers: no layer slides')
  t.throws(refuse({ ...sliding, max_window_layers: 20 }), {
    code: 'ERR_UNSUPPORTED_MODEL',
    message: /^\/models\/x\/config\.json: "use_sliding_window": true with "sliding_window": 4096 asks for sliding-window attention in layers 20 and up; the engine implements full attention only/,
  })
  // transformers' default max_window_layers (28) when absent: layers 28.. of a 36-layer model
  t.throws(refuse({ ...sliding, max_window_layers: undefined, num_hidden_layers: 36 }), { code: 'ERR_UNSUPPORTED_MODEL', message: /from max_window_layers \(absent: 28\)/ })
  // layer_types decides alone when given
  t.throws(refuse({ ...QWEN3_0_6B, layer_types: [...Array(27).fill('full_attention'), 'sliding_attention'] }), {
    code: 'ERR_UNSUPPORTED_MODEL',
    message: /"layer_types": .* asks for "sliding_attention" at layer 27; the engine implements "full_attention" only/,
  })
  t.ok(resolveConfig({ ...sliding, max_window_layers: 0, layer_types: Array(28).fill('full_attention') }, WHERE), 'layer_types all full attention')
  t.throws(refuse({ ...QWEN3_0_6B, layer_types: ['full_attention'] }), { code: 'ERR_CONFIG', message: /"layer_types" must be a list of 28 attention kinds/ })
  t.throws(refuse({ ...QWEN3_0_6B, use_sliding_window: 'false' }), { code: 'ERR_CONFIG', message: /"use_sliding_window" must be true or false/ })
  t.throws(refuse({ ...QWEN3_0_6B, sliding_window: -1 }), { code: 'ERR_CONFIG', message: /"sliding_window" must be null or a positive integer/ })
  t.throws(refuse({ ...QWEN3_0_6B, max_window_layers: 1.5 }), { code: 'ERR_CONFIG', message: /"max_window_layers" must be a non-negative integer/ })
})

t.test('keys config.json leaves out or sets to null take the value transformers gives them', async (t) => {
  // num_key_value_heads null: one per attention head (Ernie4_5Config, Qwen3Config)
  t.equal(resolveConfig({ ...ERNIE, num_key_value_heads: null }).num_key_value_heads, ERNIE.num_attention_heads)
  t.throws(() => resolveConfig({ ...ERNIE, num_key_value_heads: undefined }), { code: 'ERR_CONFIG', message: /"num_key_value_heads" must be a positive integer, got undefined/ }, 'absent: required (the class defaults differ)')
  // head_dim null: hidden_size / num_attention_heads; absent: transformers' 128, which these tiny configs are not
  t.equal(resolveConfig({ ...QWEN, head_dim: null }).head_dim, 16)
  t.throws(() => resolveConfig({ ...QWEN, head_dim: undefined }, WHERE), {
    code: 'ERR_CONFIG',
    message: /config\.json: no "head_dim": transformers reads an absent head_dim as 128, ERNIE's Paddle code as hidden_size \/ num_attention_heads \(16\)/,
  })
  t.equal(resolveConfig({ ...ERNIE_0_3B_PT, hidden_size: 2048, head_dim: undefined }).head_dim, 128, 'absent where both readers agree (2048 / 16 = 128)')
  // tie_word_embeddings absent: Ernie4_5Config ties, Qwen3Config does not
  t.equal(resolveConfig({ ...ERNIE, tie_word_embeddings: undefined }).tie_word_embeddings, true)
  t.equal(resolveConfig({ ...QWEN, tie_word_embeddings: undefined }).tie_word_embeddings, false)
  t.equal(resolveConfig({ ...QWEN, tie_word_embeddings: null }).tie_word_embeddings, false)
})

t.test('a Qwen3 checkpoint without tie_word_embeddings needs its lm_head, as in transformers', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-cfg-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  fs.copyFileSync(path.join(FIXTURES, 'qwen3-tiny', 'model.safetensors'), path.join(dir, 'model.safetensors'))
  const { tie_word_embeddings: _tied, ...untied } = QWEN
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(untied))
  await t.rejects(ErnieModel.fromPretrained(dir, { tokenizer: false }), { code: 'ERR_CHECKPOINT', message: /missing tensor "lm_head\.weight" \(tie_word_embeddings is false\)/ })
})

t.test('fromPretrained names the config file of a refused key', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-cfg-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  fs.copyFileSync(path.join(FIXTURES, 'ernie-tiny', 'model.safetensors'), path.join(dir, 'model.safetensors'))
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...ERNIE, rope_scaling: { rope_type: 'linear', factor: 2 } }))
  const file = path.join(dir, 'config.json')
  await t.rejects(ErnieModel.fromPretrained(dir, { tokenizer: false }), { code: 'ERR_UNSUPPORTED_MODEL', message: `${file}: "rope_scaling": {"rope_type":"linear","factor":2} asks for "linear" RoPE scaling; the engine computes the default RoPE only (rope_scaling null)` })
  // and ErnieModel.random, which has no file, names its argument
  t.throws(() => ErnieModel.random({ ...ERNIE, use_bias: true }), { code: 'ERR_UNSUPPORTED_MODEL', message: /^config: "use_bias": true/ })
})

t.test("ErnieModel.random draws its weights with the config's initializer_range", async (t) => {
  const std = (cfg: Record<string, unknown>, options = {}) => {
    const w = bf16ToF32(randomTensors(resolveConfig(cfg), { seed: 3, ...options }).view('model.embed_tokens.weight') as Uint16Array)
    let sum = 0, sq = 0
    for (const x of w) (sum += x), (sq += x * x)
    const mean = sum / w.length
    return Math.sqrt(sq / w.length - mean * mean)
  }
  // 6016 x 64 normal draws: the sample deviation is within 1% of the true one (its own relative
  // error is about 1 / sqrt(2n) = 0.1%; bf16 rounding adds under 0.4% per value, unbiased)
  const close = (got: number, want: number, what: string) => t.ok(Math.abs(got - want) / want < 0.01, `${what}: ${got} vs ${want}`)
  close(std({ ...ERNIE, initializer_range: 0.3 }), 0.3, 'initializer_range 0.3')
  close(std({ ...ERNIE, initializer_range: undefined }), 0.02, 'absent: 0.02')
  close(std({ ...ERNIE, initializer_range: 0.3 }, { std: 0.05 }), 0.05, 'the std option wins')
  t.throws(() => resolveConfig({ ...ERNIE, initializer_range: -1 }), { code: 'ERR_CONFIG', message: /"initializer_range" must be a number in \(0, 1\]/ })
})
