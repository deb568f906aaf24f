// config.json with its fields and JSON corrupted: values of the wrong JSON type or outside their
// physical range, required keys removed, unknown keys added, the JSON itself broken. The
// verdicts follow ModelConfig (lib/model/config.ts: which keys are required, their types) and
// the checkpoint: a size the weights do not have is wrong however well typed.
import type { Generated, ModelFixture, Rng, Verdict } from './case'
import { checkpoint } from './fixtures'

const FILE = 'config.json'
const FIXTURE_NAMES: readonly ModelFixture[] = ['ernie-tiny', 'qwen3-tiny', 'ernie-tiny-paddle']

/** A JSON literal written as is (placeholders in the serialized text are replaced by it). */
class Raw {
  constructor(readonly text: string) {}
}
const REMOVED = Symbol('removed')
type Value = unknown

const SIZES = ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads', 'vocab_size'] as const
const isInt = (v: Value) => typeof v === 'number' && Number.isInteger(v)
const isTokenId = (v: Value, vocab: number) => isInt(v) && (v as number) >= 0 && (v as number) < vocab
const absent = (v: Value) => v === REMOVED || v === null

/**
 * The verdict for `key` set to `v` in fixture config `cfg` (everything else as it was). Raw
 * literals: '1e400' parses to Infinity; 'NaN' and 'Infinity' are not JSON; '<n>.0' parses to n.
 */
function verdictFor(key: string, v: Value, cfg: Record<string, unknown>): { verdict: Verdict; why?: string } {
  if (v instanceof Raw) {
    if (v.text === 'NaN' || v.text === 'Infinity' || v.text === '-Infinity') return { verdict: 'reject' }
    if (/^-?\d+\.0$/.test(v.text)) {
      const n = Number(v.text)
      if (isInt(cfg[key]) && cfg[key] === n && (SIZES as readonly string[]).includes(key))
        return { verdict: 'either', why: 'JSON has one number type: 64.0 is the integer 64 to a JavaScript reader and a float to Python, whose transformers would refuse it as a size' }
      return verdictFor(key, n, cfg)
    }
    return verdictFor(key, Number(v.text), cfg)
  }
  const ok = (b: boolean): { verdict: Verdict } => ({ verdict: b ? 'accept' : 'reject' })
  const V = cfg.vocab_size as number
  switch (key) {
    case 'model_type':
      return ok(v === cfg.model_type)
    case 'hidden_size':
    case 'intermediate_size':
    case 'num_hidden_layers':
    case 'num_attention_heads':
    case 'num_key_value_heads':
    case 'vocab_size':
      // the weights have these sizes: any other value (or type) describes another model
      return ok(v === cfg[key])
    case 'head_dim': {
      // null derives hidden_size / num_attention_heads; absent is transformers' 128, refused where that differs
      const derived = (cfg.hidden_size as number) / (cfg.num_attention_heads as number)
      if (v === null) return ok(derived === cfg.head_dim)
      if (v === REMOVED) return ok(derived === 128 && cfg.head_dim === 128)
      return ok(v === cfg.head_dim)
    }
    case 'rms_norm_eps':
      return ok(typeof v === 'number' && v > 0 && v <= 0.1)
    case 'rope_theta':
      return ok(typeof v === 'number' && v > 1 && v <= 1e9)
    case 'max_position_embeddings':
      return ok(absent(v) || (isInt(v) && (v as number) > 0))
    case 'tie_word_embeddings':
      // the fixtures have no lm_head.weight: only a tied head finds its weights; absent, transformers
      // ties ERNIE-4.5's (Ernie4_5Config) and not Qwen3's (Qwen3Config)
      return ok(v === true || (absent(v) && cfg.model_type === 'ernie4_5'))
    case 'hidden_act':
      return ok(absent(v) || v === 'silu' || v === 'swish')
    case 'pad_token_id':
    case 'bos_token_id':
      return ok(absent(v) || isTokenId(v, V))
    case 'eos_token_id':
      return ok(absent(v) || isTokenId(v, V) || (Array.isArray(v) && v.length > 0 && v.every((x) => isTokenId(x, V))))
    case 'architectures':
      return ok(absent(v) || (Array.isArray(v) && v.every((a) => typeof a === 'string')))
    case 'torch_dtype':
      return ok(absent(v) || typeof v === 'string')
    default:
      return { verdict: 'accept' } // keys the engine does not read
  }
}

const READ_KEYS = [
  'model_type',
  ...SIZES,
  'head_dim',
  'rms_norm_eps',
  'rope_theta',
  'max_position_embeddings',
  'tie_word_embeddings',
  'hidden_act',
  'pad_token_id',
  'bos_token_id',
  'eos_token_id',
  'architectures',
  'torch_dtype',
]
// Keys the engine does not read and that change nothing in the computation it does.
const UNKNOWN_KEYS = ['use_cache', 'transformers_version', 'x_fuzz', 'comment', '_name_or_path', 'auto_map', 'output_hidden_states', 'id2label']

/**
 * Keys that ask for behaviour (lib/model/config-behaviour.ts): values the engine implements (or
 * transformers ignores for the fixture's model type), then values asking for something else or of
 * the wrong type. Each entry is the keys it sets.
 */
function behaviourValues(cfg: Record<string, unknown>): Array<[Record<string, Value>[], Record<string, Value>[]]> {
  const qwen = cfg.model_type === 'qwen3'
  const layers = cfg.num_hidden_layers as number
  const theta = cfg.rope_theta as number
  const one = (key: string, same: Value[], other: Value[]): [Record<string, Value>[], Record<string, Value>[]] => [same.map((v) => ({ [key]: v })), other.map((v) => ({ [key]: v }))]
  const window: Record<string, Value>[] = [
    { use_sliding_window: true, sliding_window: 64 },
    { use_sliding_window: true, sliding_window: 64, max_window_layers: layers - 1 },
  ]
  return [
    one('use_bias', [false, null], [true, 'false', 1]),
    one('attention_bias', [false, null], [true, 'true']),
    one('mlp_bias', [false], [true]),
    one('use_rmsnorm', [true, null], [false]),
    one('partial_rotary_factor', [1, null], [0.5, 0, '1']),
    one('compression_ratio', [1, null], [2, 0.5]),
    one('attention_dropout', [0, null], [0.1, 1, new Raw('1e400'), 'x']),
    one('hidden_dropout_prob', [0], [0.1]),
    one('attention_probs_dropout_prob', [0], [0.2]),
    one('pruned_heads', [{}, null], [{ 0: [1] }, [], 'x']),
    one('quantization_config', [null], [{ quant_method: 'gptq', bits: 4 }, {}]),
    one('rope_scaling', [null, { rope_type: 'default' }, { type: 'default' }], [{ rope_type: 'yarn', factor: 4, original_max_position_embeddings: 4096 }, { type: 'linear', factor: 2 }, { rope_type: 'default', factor: 2 }, 'linear', [1]]),
    one('rope_parameters', [{ rope_type: 'default', rope_theta: theta }, { rope_theta: theta }], [{ rope_type: 'default', rope_theta: theta * 2 }, { rope_type: 'dynamic', factor: 2 }, { rope_type: 'default', rope_theta: 1e308 }]),
    ...(qwen ? [one('layer_types', [Array(layers).fill('full_attention'), null], [[...Array(layers - 1).fill('full_attention'), 'sliding_attention'], ['full_attention'], 'full_attention'])] : []),
    [
      [{ use_sliding_window: false, sliding_window: 4096 }, { use_sliding_window: true, sliding_window: null }, { use_sliding_window: true, sliding_window: 64, max_window_layers: layers }, ...(qwen ? [] : window)],
      [...(qwen ? window : []), ...(qwen ? [{ use_sliding_window: 'yes' }, { sliding_window: -1 }] : [])],
    ],
  ]
}

/** A value for `key`: the same, another valid one, or one of the wrong type or range. */
function valueFor(rng: Rng, key: string, cfg: Record<string, unknown>): Value {
  const v = cfg[key]
  const n = typeof v === 'number' ? v : 4
  const V = cfg.vocab_size as number
  const valid: Record<string, Value[]> = {
    model_type: ['ernie4_5', 'qwen3'],
    rms_norm_eps: [1e-6, 1e-5, 1e-3, 0.1],
    rope_theta: [10000, 1e6, 1e9, 1.5],
    max_position_embeddings: [1, 6, 512, 131072],
    pad_token_id: [0, V - 1],
    bos_token_id: [1, V - 1],
    eos_token_id: [2, [2, 3], V - 1],
    architectures: [['Ernie4_5ForCausalLM'], [], ['Qwen3ForSequenceClassification']],
    torch_dtype: ['float32', 'bfloat16', 'float16'],
    hidden_act: ['silu', 'swish'],
    tie_word_embeddings: [true, false],
  }
  const wrong: Value[] = [
    String(v),
    [v],
    {},
    true,
    false,
    null,
    REMOVED,
    '',
    -n,
    0,
    n + 0.5,
    n * 2,
    n + 1,
    1e308,
    -1,
    new Raw('1e400'),
    new Raw('NaN'),
    new Raw('Infinity'),
    new Raw(`${n}.0`),
    'gelu',
    [],
    ['Ernie4_5ForCausalLM', 3],
    V,
  ]
  return rng.chance(0.35) && valid[key] ? rng.pick(valid[key]) : rng.pick(wrong)
}

function serialize(cfg: Record<string, Value>, indent: number | undefined): string {
  const raws: string[] = []
  const text = JSON.stringify(
    cfg,
    (_k, v) => {
      if (v instanceof Raw) {
        raws.push(v.text)
        return `\u0000RAW${raws.length - 1}\u0000`
      }
      return v
    },
    indent,
  )
  return text.replace(/"\\u0000RAW(\d+)\\u0000"/g, (_m, i) => raws[Number(i)])
}

const describe = (v: Value) => (v === REMOVED ? 'removed' : v instanceof Raw ? v.text : JSON.stringify(v))

/** Field mutations (one to three keys), then the file written; or the JSON text itself broken. */
export function configCase(rng: Rng): Generated {
  const fixture = rng.pick(FIXTURE_NAMES)
  const base = checkpoint(fixture).config
  const what = (s: string) => `${fixture}: ${s}`
  const probe = (cfg: Record<string, Value>) => {
    const m = cfg.max_position_embeddings
    return isInt(m) && (m as number) > 0 ? Math.min(6, m as number) : 6
  }
  const model = (text: string | Uint8Array | null, probeLength = 6) => ({ kind: 'model' as const, fixture, files: { [FILE]: text }, probeLength })
  const kind = rng.int(0, 11)

  if (kind >= 10) {
    // a key asking for behaviour: a value the engine implements, or another
    const [same, other] = rng.pick(behaviourValues(base))
    const asks = other.length > 0 && rng.chance(0.5)
    const set = rng.pick(asks ? other : same)
    const cfg: Record<string, Value> = { ...base, ...set }
    const text = serialize(cfg, rng.pick([2, undefined]))
    const desc = Object.entries(set).map(([k, v]) => `${k} ${describe(v)}`).join(', ')
    return { verdict: asks ? 'reject' : 'accept', what: what(desc), target: model(text), names: [FILE] }
  }
  if (kind <= 6) {
    const cfg: Record<string, Value> = { ...base }
    const changes: string[] = []
    let verdict: Verdict = 'accept'
    let why: string | undefined
    const keys = rng.shuffle(READ_KEYS).slice(0, rng.pick([1, 1, 1, 2, 3]))
    for (const key of keys) {
      const v = valueFor(rng, key, base)
      const r = verdictFor(key, v, base)
      if (v === REMOVED) delete cfg[key]
      else cfg[key] = v
      changes.push(`${key} ${describe(v)}`)
      if (r.verdict === 'reject') verdict = 'reject'
      else if (r.verdict === 'either' && verdict === 'accept') ((verdict = 'either'), (why = r.why))
    }
    if (rng.chance(0.3)) {
      const key = rng.pick(UNKNOWN_KEYS)
      const v = rng.pick<Value>([1, 'x', null, [1, 2], { a: 1 }, new Raw('1e400'), -5])
      cfg[key] = v
      changes.push(`unknown ${key} ${describe(v)}`)
    }
    const text = serialize(cfg, rng.pick([2, undefined]))
    return { verdict, why, what: what(changes.join(', ')), target: model(text, probe(cfg)), names: [FILE, 'model.safetensors'] }
  }
  const text = JSON.stringify(base, null, 2)
  // RFC 8259 section 8.1: JSON exchanged between systems must be UTF-8 (Python's reader refuses other bytes)
  const latin1 = Buffer.from(text.replace('"bfloat16"', '"bfloat16\u00ff"'), 'latin1')
  const j = rng.int(0, 12)
  const broken: Array<[string, string | Uint8Array | null, Verdict]> = [
    ['keys shuffled, unknown keys added', serialize({ ...Object.fromEntries(rng.shuffle(Object.entries(base))), x_fuzz: [1, { y: null }], transformers_version: '4.54.0' }, undefined), 'accept'],
    ['JSON cut short', text.slice(0, rng.int(0, text.length - 2)), 'reject'],
    ['top level an array', `[${text}]`, 'reject'],
    ['top level a string', JSON.stringify(text), 'reject'],
    ['top level null', 'null', 'reject'],
    ['a UTF-8 BOM first', '\ufeff' + text, 'reject'],
    ['a trailing comma', text.replace(/\n}$/, ',\n}'), 'reject'],
    ['a // comment', `// fuzz\n${text}`, 'reject'],
    ['empty', '', 'reject'],
    ['config.json removed', null, 'reject'],
    ['CRLF line ends and tabs', JSON.stringify(base, null, '\t').replace(/\n/g, '\r\n'), 'accept'],
    ['a single quote', text.replace('"model_type"', "'model_type'"), 'reject'],
    ['a byte 0xff (not UTF-8) in torch_dtype', latin1, 'reject'],
  ]
  const [desc, content, verdict] = broken[j]
  return { verdict, what: what(desc), target: model(content), names: [FILE] }
}
