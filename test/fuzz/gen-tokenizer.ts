// A tokenizer directory (ernie-tiny's tokenizer.model, or the tokenizer.json made of it, with its
// tokenizer_config.json) with the config's fields, added-token files or the tokenizer file itself
// changed. The verdicts follow what transformers reads from these files and the project's rule that
// JSON types are exact ("true" is not true; transformers would take it as truthy): special tokens
// are non-empty strings or objects with a string content and boolean flags, ids are integers in
// [0, 2^31), lengths positive integers. Bytes flipped inside the tokenizer file may leave a
// valid file: those cases may load, and must then tokenize sanely.
import { verdictOfChanges, type FileContent, type Generated, type Rng, type Verdict } from './case'
import { tokenizerFiles } from './fixtures'
import { brokenJson, deepArray, describe, REMOVED, withKey } from './mutate'

const CONFIG = 'tokenizer_config.json'
type Form = 'tokenizer.model' | 'tokenizer.json'

const isToken = (v: unknown) =>
  (typeof v === 'string' && v !== '') ||
  (typeof v === 'object' && v !== null && !Array.isArray(v) && typeof (v as { content?: unknown }).content === 'string' && (v as { content: string }).content !== '' &&
    ['lstrip', 'rstrip', 'normalized', 'single_word', 'special'].every((k) => (v as Record<string, unknown>)[k] === undefined || typeof (v as Record<string, unknown>)[k] === 'boolean'))

const NEW_ID = 6000 // the model's 6000 pieces are ids 0..5999
const token = (content: string, extra: Record<string, unknown> = {}) => ({ content, lstrip: false, rstrip: false, normalized: false, single_word: false, special: true, ...extra })

type Field = [key: string, value: unknown, verdict: Verdict, why?: string]

function configField(rng: Rng): Field {
  const f = (key: string, values: unknown[], ok: (v: unknown) => boolean | Verdict): Field => {
    const v = rng.pick(values)
    const r = ok(v)
    return [key, v, typeof r === 'boolean' ? (r ? 'accept' : 'reject') : r]
  }
  const absent = (v: unknown) => v === REMOVED || v === null
  switch (rng.int(0, 8)) {
    case 0:
      return f(rng.pick(['add_bos_token', 'add_eos_token', 'clean_up_tokenization_spaces']), [true, false, REMOVED, null, 'true', 'false', 1, 0], (v) => absent(v) || typeof v === 'boolean')
    case 1:
      return f('model_max_length', [512, 4096, 1, 1e30, REMOVED, null, '512', -1, 0, 1.5, true], (v) => absent(v) || (Number.isInteger(v) && (v as number) > 0))
    case 2:
      return f(
        rng.pick(['eos_token', 'bos_token', 'pad_token', 'unk_token', 'sep_token', 'cls_token', 'mask_token']),
        ['</s>', '<s>', '<new>', token('</s>'), { content: '</s>' }, { content: '</s>', __type: 'AddedToken' }, null, REMOVED, 5, { content: 5 }, token('</s>', { lstrip: 'true' }), '', ['</s>'], { content: '' }],
        (v) => absent(v) || isToken(v),
      )
    case 3:
      return f(
        'additional_special_tokens',
        [['<|begin_of_sentence|>'], [], null, REMOVED, ['<new1>', token('<new2>')], '<x>', [5], [{ content: 5 }], [''], [token('<n>', { special: 'yes' })]],
        (v) => absent(v) || (Array.isArray(v) && v.every(isToken)),
      )
    case 4: {
      const good = { [NEW_ID]: token('<new>') }
      const values: unknown[] = [
        good,
        {},
        REMOVED,
        { 1: token('<s>') },
        { x: token('<new>') },
        { '-1': token('<new>') },
        { '1e20': token('<new>') },
        { '2147483648': token('<new>') },
        { '6000.0': token('<new>') },
        { [NEW_ID]: token('') },
        { [NEW_ID]: token('<new>', { special: 'true' }) },
        { [NEW_ID]: { content: 5 } },
        { [NEW_ID]: '<new>' },
        [],
        'x',
      ]
      return f('added_tokens_decoder', values, (v) => v === REMOVED || JSON.stringify(v) === JSON.stringify(good) || JSON.stringify(v) === '{}' || JSON.stringify(v) === JSON.stringify({ 1: token('<s>') }))
    }
    case 5:
      // read only to pick a chat template's kind: other types are not an error until a template is applied
      return f('chat_template', ['{{ messages }}', [{ name: 'default', template: '<|im_start|>{{ x }}' }], REMOVED, null, 5, [5]], (v) => (typeof v === 'number' || Array.isArray(v) ? (Array.isArray(v) && typeof v[0] === 'object' ? 'accept' : 'either') : true))
    case 6:
      // not read by the tokenizer itself
      return f('tokenizer_class', ['LlamaTokenizer', 'Qwen2TokenizerFast', REMOVED, 5], () => 'accept')
    default:
      return f(rng.pick(['x_fuzz', 'padding_side', 'legacy', 'sp_model_kwargs', 'deep']), [1, 'left', true, {}, [1, [2, [3]]], null, JSON.parse(deepArray(2000))], () => 'accept')
  }
}

/** added_tokens.json ({ content: id }) or special_tokens_map.json, written beside the tokenizer. */
function extraFile(rng: Rng): [file: string, value: unknown, verdict: Verdict, why?: string] {
  if (rng.chance(0.5)) {
    const [v, verdict, why] = rng.pick<[unknown, Verdict, string?]>([
      [{ '<new>': NEW_ID }, 'accept'],
      [{ '<s>': 1 }, 'accept'],
      [{ '<new>': NEW_ID + 5 }, 'either', "transformers' slow tokenizers refuse ids that do not follow the vocabulary; the fast ones take them"],
      [{ '<new>': String(NEW_ID) }, 'reject'],
      [{ '<new>': -1 }, 'reject'],
      [{ '<new>': 1.5 }, 'reject'],
      [{ '<new>': 2 ** 31 }, 'reject'],
      [{ '<new>': 1e20 }, 'reject'],
      [{ '': NEW_ID }, 'reject'],
      [['<new>'], 'reject'],
    ])
    return ['added_tokens.json', v, verdict, why]
  }
  const v = rng.pick<unknown>([{ eos_token: '</s>' }, { eos_token: token('</s>') }, { additional_special_tokens: ['<x>'] }, { pad_token: null }, { eos_token: 5 }, { eos_token: { content: '</s>', rstrip: 1 } }, { additional_special_tokens: 'x' }, []])
  const ok = typeof v === 'object' && v !== null && !Array.isArray(v) && Object.entries(v).every(([k, x]) => (k === 'additional_special_tokens' ? Array.isArray(x) && x.every(isToken) : x === null || isToken(x)))
  return ['special_tokens_map.json', v, ok ? 'accept' : 'reject']
}

/** Bytes flipped, cut or inserted in the tokenizer file: it may still be a valid file. */
function damaged(rng: Rng, bytes: Buffer): [string, Buffer] {
  const out = Buffer.from(bytes)
  const kind = rng.int(0, 2)
  if (kind === 0) {
    const n = rng.int(1, 8)
    for (let i = 0; i < n; i++) out[rng.int(0, out.length - 1)] ^= 1 << rng.int(0, 7)
    return [`${n} bits flipped`, out]
  }
  if (kind === 1) {
    const cut = rng.int(0, out.length - 1)
    return [`cut at byte ${cut}`, out.subarray(0, cut)]
  }
  const at = rng.int(0, out.length - 1)
  out[at] = 0xff
  if (at + 1 < out.length) out[at + 1] = 0xff
  return [`0xffff at byte ${at}`, out]
}

/**
 * `depth` Sequences of `listKey` around `leaf`, as JSON text (JSON.stringify of so deep a value
 * would overflow the generator's own stack), placed at `key` of the file.
 */
function nested(json: Record<string, unknown>, key: string, listKey: string, depth: number, leaf: unknown): string {
  const marker = '"__fuzz_nest__"'
  const text = JSON.stringify({ ...json, [key]: '__fuzz_nest__' })
  const inner = `{"type":"Sequence","${listKey}":[`.repeat(depth) + JSON.stringify(leaf) + ']}'.repeat(depth)
  return text.replace(marker, inner)
}

/** tokenizer.json's structure changed: its added tokens, its pipeline nested deep, its regexes (as JSON text). */
function jsonChange(rng: Rng, json: Record<string, unknown>): [string, string, Verdict] {
  const added = json.added_tokens as Array<Record<string, unknown>>
  const addToken = (t: Record<string, unknown>) => ({ ...json, added_tokens: [...added, t] })
  const split = (pattern: Record<string, string>) => ({ ...json, pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern, behavior: 'Isolated', invert: false }, json.pre_tokenizer] } })
  const [what, change, verdict] = rng.pick<[string, unknown, Verdict]>([
    ['an added token', addToken({ id: NEW_ID, ...token('<new>') }), 'accept'],
    ['an added token with special "true"', addToken({ id: NEW_ID, ...token('<new>', { special: 'true' }) }), 'reject'],
    ['an added token with id 1e20', addToken({ id: 1e20, ...token('<new>') }), 'reject'],
    ['an added token with id 2^31', addToken({ id: 2 ** 31, ...token('<new>') }), 'reject'],
    ['an added token with id -1', addToken({ id: -1, ...token('<new>') }), 'reject'],
    ['an added token with empty content', addToken({ id: NEW_ID, ...token('') }), 'reject'],
    ['added_tokens an object', { ...json, added_tokens: { 0: added[0] } }, 'reject'],
    ['the normalizer nested in 20000 Sequences', nested(json, 'normalizer', 'normalizers', 20_000, json.normalizer), 'reject'],
    ['the decoder nested in 20000 Sequences', nested(json, 'decoder', 'decoders', 20_000, json.decoder), 'reject'],
    ['a post-processor nested in 20000 Sequences', nested(json, 'post_processor', 'processors', 20_000, { type: 'ByteLevel' }), 'reject'],
    ['the pre-tokenizer nested in 20000 Sequences', nested(json, 'pre_tokenizer', 'pretokenizers', 20_000, json.pre_tokenizer), 'reject'],
    ['a Split pre-tokenizer on (a|aa)+$ (backtracks on a JS RegExp)', split({ Regex: '(a|aa)+$' }), 'accept'],
    ['a Split pre-tokenizer on a lookahead', split({ Regex: '\\s+(?=x)' }), 'reject'],
    ['model.vocab an array', { ...json, model: { ...(json.model as object), vocab: [] } }, 'reject'],
    ['model.type "Sentencepiece"', { ...json, model: { ...(json.model as object), type: 'Sentencepiece' } }, 'reject'],
  ])
  return [what, typeof change === 'string' ? change : JSON.stringify(change), verdict]
}

export function tokenizerCase(rng: Rng): Generated {
  const form = rng.pick<Form>(['tokenizer.model', 'tokenizer.json'])
  const files = tokenizerFiles(form)
  const config = JSON.parse(files[CONFIG].toString('utf8')) as Record<string, unknown>
  const target = (f: Record<string, FileContent | null>) => ({ kind: 'tokenizer' as const, form, files: f })
  const what = (s: string) => `${form}: ${s}`
  const kind = rng.int(0, 9)
  if (kind <= 3) {
    let cfg = config
    const changes: Array<{ key: string; verdict: Verdict; why?: string }> = []
    const whats: string[] = []
    for (let i = 0, n = rng.pick([1, 1, 2]); i < n; i++) {
      const [key, value, v, reason] = configField(rng)
      if (changes.some((c) => c.key === key)) continue // a field changed once per case
      cfg = withKey(cfg, key, value)
      whats.push(`${key} ${describe(value)}`)
      changes.push({ key, verdict: v, why: reason ?? 'read only when a chat template is applied' })
    }
    const { verdict, why } = verdictOfChanges(changes)
    return { verdict, why, what: what(`${CONFIG}: ${whats.join(', ')}`), target: target({ [CONFIG]: JSON.stringify(cfg, null, 2) }), names: [CONFIG] }
  }
  if (kind === 4) {
    const [file, value, verdict, why] = extraFile(rng)
    return { verdict, why, what: what(`${file}: ${describe(value)}`), target: target({ [file]: JSON.stringify(value) }), names: [file] }
  }
  if (kind === 5) {
    const file = rng.pick([CONFIG, 'special_tokens_map.json', 'added_tokens.json'])
    const [w, content] = brokenJson(rng, file === CONFIG ? JSON.stringify(config, null, 2) : '{ "eos_token": "</s>", "pad_token": "<unk>" }')
    return { verdict: 'reject', what: what(`${file}: ${w}`), target: target({ [file]: content }), names: [file] }
  }
  if (kind === 6) {
    const [w, content] = rng.pick<[string, FileContent | null]>([
      ['removed', null],
      ['a FIFO', { special: 'fifo' }],
      ['a directory', { special: 'directory' }],
      ['a link to /dev/zero', { special: 'symlink', to: '/dev/zero' }],
      ['empty', ''],
    ])
    return { verdict: 'reject', what: what(`${form} ${w}`), target: target({ [form]: content }), names: [form, ''] }
  }
  if (kind === 7 || form === 'tokenizer.model') {
    const [w, bytes] = damaged(rng, files[form])
    return { verdict: 'either', why: 'damaged bytes may leave a valid file, which must then tokenize sanely', what: what(`${form}: ${w}`), target: target({ [form]: bytes }), names: [form] }
  }
  const [w, text, verdict] = jsonChange(rng, JSON.parse(files[form].toString('utf8')))
  return { verdict, what: what(w), target: target({ [form]: text }), names: [form] }
}
