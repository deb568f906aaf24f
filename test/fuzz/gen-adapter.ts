// The ernie-tiny fixture's PEFT LoRA adapter (adapter_config.json: r 4, alpha 8, all seven
// projections; adapter_model.safetensors: F32 under PEFT's names) with its config's fields or its
// tensors changed. The verdicts follow PEFT's LoraConfig (which fields change the computation,
// their defaults, their JSON types) and what LoraAdapter.load says it refuses rather than ignores:
// DoRA, biases, fan_in_fan_out, per-module ranks, layer subsets, modules saved whole.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { verdictOfChanges, type FileContent, type Generated, type Rng, type Verdict } from './case'
import { ADAPTER_DIR } from './fixtures'
import { brokenJson, deepArray, describe, readTensors, REMOVED, tensorChange, withKey, type Tensor } from './mutate'

const CONFIG = 'adapter_config.json'
const WEIGHTS = 'adapter_model.safetensors'
const SEVEN = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']

let fixture: { config: Record<string, unknown>; tensors: Tensor[] } | undefined
function adapterFixture() {
  fixture ??= {
    config: JSON.parse(fs.readFileSync(path.join(ADAPTER_DIR, CONFIG), 'utf8')),
    tensors: readTensors(fs.readFileSync(path.join(ADAPTER_DIR, WEIGHTS))),
  }
  return fixture
}

const moduleOf = (m: string) => `${m === 'gate_proj' || m === 'up_proj' || m === 'down_proj' ? 'mlp' : 'self_attn'}.${m}`

type Field = [key: string, value: unknown, verdict: Verdict, why?: string]

const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v)

/** A field of adapter_config.json set to a value, with its verdict. */
function fieldChange(rng: Rng): Field {
  const f = (key: string, values: unknown[], verdict: (v: unknown) => Verdict | [Verdict, string]): Field => {
    const v = rng.pick(values)
    const r = verdict(v)
    return Array.isArray(r) ? [key, v, r[0], r[1]] : [key, v, r]
  }
  const ok = (b: boolean): Verdict => (b ? 'accept' : 'reject')
  const nullWhy = 'PEFT takes null as the value itself (and fails on it); this reader takes its default'
  switch (rng.int(0, 15)) {
    case 0:
      return f('peft_type', ['LORA', REMOVED, 'PREFIX_TUNING', 'lora', null, 1], (v) =>
        v === REMOVED ? ['either', 'PEFT needs peft_type to pick the config class; this reader takes an absent one as LORA, the only type it reads'] : ok(v === 'LORA'))
    case 1:
      // the tensors are rank 4: another rank (PEFT's default 8 when absent) does not fit them
      return f('r', [4, 8, 2, 0, -4, '4', 1e308, REMOVED, null, [4]], (v) => ok(v === 4))
    case 2:
      return f('lora_alpha', [8, 16, 0.5, 0, -8, '8', REMOVED, null, true], (v) => (v === null ? ['either', nullWhy] : ok(v === REMOVED || num(v))))
    case 3:
      return f('lora_dropout', [0, 0.1, 0.99, 1, -0.1, '0', REMOVED, null], (v) => (v === null ? ['either', nullWhy] : ok(v === REMOVED || (num(v) && (v as number) >= 0 && (v as number) < 1))))
    case 4:
      return f('bias', ['none', REMOVED, 'all', 'lora_only', null, false], (v) => ok(v === 'none' || v === REMOVED))
    case 5:
      return f('use_rslora', [false, true, REMOVED, 'true', 'false', 1, null], (v) => ok(v === false || v === true || v === REMOVED || v === null))
    case 6:
      return f('fan_in_fan_out', [false, true, REMOVED, 'false', 0, null], (v) => ok(v === false || v === REMOVED || v === null))
    case 7:
      return f('use_dora', [false, true, REMOVED, 'true', null], (v) => ok(v === false || v === REMOVED || v === null))
    case 8:
      return f(
        'target_modules',
        [
          [...SEVEN].reverse(),
          SEVEN.map((m) => `model.layers.0.${moduleOf(m)}`),
          SEVEN.map(moduleOf),
          'all-linear',
          '.*(q|k|v|o|gate|up|down)_proj',
          '(.*)*x',
          '(a|aa)+$',
          '(',
          'q_proj',
          ['q_proj', 'v_proj'],
          ['lm_head'],
          ['q_proj', 3],
          [],
          null,
          REMOVED,
          deepArray(3),
        ],
        // the tensors are for all seven in every layer: a subset, or names of layer 0's modules only
        // (PEFT matches a list entry as the end of a module's name), leaves tensors unused; a
        // pattern matching none (PEFT full-matches a string against each module's name) adapts nothing
        (v) => ok(v === 'all-linear' || v === '.*(q|k|v|o|gate|up|down)_proj' || (Array.isArray(v) && v.length === 7 && !String(v[0]).startsWith('model.layers.0.'))),
      )
    case 9:
      return f('modules_to_save', [null, REMOVED, [], ['score'], 'score', [3]], (v) => ok(v === null || v === REMOVED || (Array.isArray(v) && v.length === 0)))
    case 10:
      return f('layers_to_transform', [null, REMOVED, [0], 0, [0, 1]], (v) => ok(v === null || v === REMOVED))
    case 11:
      return f(rng.pick(['rank_pattern', 'alpha_pattern']), [{}, REMOVED, null, { q_proj: 8 }, 'x', [1]], (v) => ok(v === REMOVED || v === null || (typeof v === 'object' && !Array.isArray(v) && Object.keys(v as object).length === 0)))
    case 12:
      return f('lora_bias', [false, REMOVED, true, 'true'], (v) => ok(v === false || v === REMOVED))
    case 13:
      return f('layer_replication', [null, REMOVED, [[0, 2]], 'x'], (v) => ok(v === null || v === REMOVED))
    case 14:
      // fields of the adapter as a file, not of the computation
      return f(rng.pick(['task_type', 'base_model_name_or_path', 'revision']), ['CAUSAL_LM', 'SEQ_CLS', null, REMOVED, 'x'], () => 'accept')
    default:
      return f(rng.pick(['inference_mode', 'init_lora_weights', 'x_fuzz', 'megatron_config']), [true, false, 'gaussian', null, { a: [1] }], () => 'accept')
  }
}

export function adapterCase(rng: Rng): Generated {
  const { config, tensors } = adapterFixture()
  const target = (files: Record<string, FileContent | null>) => ({ kind: 'adapter' as const, files })
  const kind = rng.int(0, 9)
  if (kind <= 4) {
    let cfg = config
    const changes: Array<{ key: string; verdict: Verdict; why?: string }> = []
    const whats: string[] = []
    for (let i = 0, n = rng.pick([1, 1, 2]); i < n; i++) {
      const [key, value, v, reason] = fieldChange(rng)
      if (changes.some((c) => c.key === key)) continue // a field changed once per case
      cfg = withKey(cfg, key, value)
      whats.push(`${key} ${describe(value)}`)
      changes.push({ key, verdict: v, why: reason })
    }
    const { verdict, why } = verdictOfChanges(changes)
    // a rank other than the tensors' is named by the weights file, whose shapes disagree
    return { verdict, why, what: `${CONFIG}: ${whats.join(', ')}`, target: target({ [CONFIG]: JSON.stringify(cfg, null, 2) }), names: [CONFIG, WEIGHTS] }
  }
  if (kind === 5) {
    const [what, content] = brokenJson(rng, JSON.stringify(config, null, 2))
    return { verdict: 'reject', what: `${CONFIG}: ${what}`, target: target({ [CONFIG]: content }), names: [CONFIG] }
  }
  if (kind === 6) {
    const [what, content] = rng.pick<[string, FileContent | null]>([
      ['removed', null],
      ['a directory', { special: 'directory' }],
      ['a FIFO', { special: 'fifo' }],
      ['empty', ''],
    ])
    return { verdict: 'reject', what: `${WEIGHTS} ${what}`, target: target({ [WEIGHTS]: content }), names: [WEIGHTS, ''] }
  }
  const c = tensorChange(rng, tensors)
  return { verdict: c.verdict, what: `${WEIGHTS}: ${c.what}`, target: target({ [WEIGHTS]: c.content }), names: [WEIGHTS] }
}
