// The tokenizer's JSON files read at their exact JSON types (regressions the structural fuzz,
// test/fuzz/gen-tokenizer.ts, found): "true" is not true, ids are int32, special tokens are not
// empty, the bytes are UTF-8, and a pipeline nested thousands deep is an error about the file
// rather than a stack overflow. Each error is a TokenizerError naming the file.
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import { Tokenizer, sentencePieceToTokenizerJson } from '../../lib/index'
import { tempDir } from '../helpers/classifier-helpers'

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'ernie-tiny')
const MODEL = fs.readFileSync(path.join(FIXTURE, 'tokenizer.model'))
const CONFIG = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>
const JSON_FORM = JSON.parse(JSON.stringify(sentencePieceToTokenizerJson(MODEL))) as Record<string, unknown>

/** A tokenizer directory: tokenizer.model (or tokenizer.json) and tokenizer_config.json, with `files` written over them. */
function dir(t: Parameters<typeof tempDir>[0], files: Record<string, string | Uint8Array>, form: 'tokenizer.model' | 'tokenizer.json' = 'tokenizer.model'): string {
  const d = tempDir(t, 'ernie-tok-strict-')
  fs.writeFileSync(path.join(d, form), form === 'tokenizer.model' ? MODEL : JSON.stringify(JSON_FORM))
  fs.writeFileSync(path.join(d, 'tokenizer_config.json'), JSON.stringify(CONFIG))
  for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(d, name), content)
  return d
}

const config = (extra: Record<string, unknown>) => ({ 'tokenizer_config.json': JSON.stringify({ ...CONFIG, ...extra }) })

async function refused(t: Tap.Test, d: string, file: string, message: RegExp, what: string): Promise<void> {
  await t.rejects(Tokenizer.fromDirectory(d), { name: 'TokenizerError', code: 'ERR_TOKENIZER_JSON', file: path.join(d, file), message }, what)
}

t.test('tokenizer_config.json: flags are booleans, lengths positive integers, special tokens not empty', async (t) => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ add_bos_token: 'true' }, /"add_bos_token" must be true or false, got "true"/],
    [{ add_eos_token: 1 }, /"add_eos_token" must be true or false, got 1/],
    [{ clean_up_tokenization_spaces: 'false' }, /"clean_up_tokenization_spaces" must be true or false/],
    [{ model_max_length: true }, /"model_max_length" must be a positive integer, got true/],
    [{ model_max_length: '512' }, /"model_max_length" must be a positive integer, got "512"/],
    [{ model_max_length: -1 }, /"model_max_length" must be a positive integer/],
    [{ eos_token: '' }, /"eos_token" must be a string \(not empty\)/],
    [{ eos_token: { content: '</s>', lstrip: 'true' } }, /"eos_token": "lstrip" must be true or false, got "true"/],
    [{ additional_special_tokens: [{ content: '<x>', special: 'yes' }] }, /additional_special_tokens\[0\]": "special" must be true or false/],
    [{ added_tokens_decoder: { '1e20': { content: '<new>' } } }, /added_tokens_decoder\["1e20"\] needs a decimal id in \[0, 2147483647\]/],
    [{ added_tokens_decoder: { '6000.0': { content: '<new>' } } }, /added_tokens_decoder\["6000\.0"\] needs a decimal id/],
    [{ added_tokens_decoder: { 2147483648: { content: '<new>' } } }, /added_tokens_decoder\["2147483648"\]/],
    [{ added_tokens_decoder: { 6000: { content: '<new>', special: 'true' } } }, /added_tokens_decoder\["6000"\]: "special" must be true or false/],
    [{ added_tokens_decoder: { 6000: { content: '' } } }, /added_tokens_decoder\["6000"\]: needs a non-empty string "content"/],
  ]
  for (const [extra, message] of cases) await refused(t, dir(t, config(extra)), 'tokenizer_config.json', message, JSON.stringify(extra))
  // what transformers writes stays accepted: its "no limit" length, null flags, a new special token by id
  const tok = await Tokenizer.fromDirectory(dir(t, config({ model_max_length: 1e30, add_bos_token: null, added_tokens_decoder: { 6000: { content: '<new>', special: true, lstrip: false, rstrip: false, normalized: false, single_word: false } } })))
  t.equal(tok.modelMaxLength, undefined, '1e30: no limit')
  t.equal(tok.vocabSize, 6001)
  t.same(tok.encode('<new>', { parseSpecial: true }), [6000])
})

t.test('added_tokens.json and special_tokens_map.json: errors name their own file', async (t) => {
  for (const id of [-1, 1.5, '6000', 2 ** 31, 1e20]) {
    const d = dir(t, { 'added_tokens.json': JSON.stringify({ '<new>': id }) })
    await refused(t, d, 'added_tokens.json', /"<new>": a token needs non-empty content and an integer id in \[0, 2147483647\]/, `id ${id}`)
  }
  await refused(t, dir(t, { 'added_tokens.json': JSON.stringify({ '': 6000 }) }), 'added_tokens.json', /"": a token needs non-empty content/, 'empty content')
  await refused(t, dir(t, { 'special_tokens_map.json': JSON.stringify({ eos_token: { content: '</s>', rstrip: 1 } }) }), 'special_tokens_map.json', /"eos_token": "rstrip" must be true or false, got 1/, 'a flag of the wrong type')
  const tok = await Tokenizer.fromDirectory(dir(t, { 'added_tokens.json': JSON.stringify({ '<new>': 6000 }) }))
  t.same(tok.encode('a<new>'), [...tok.encode('a'), 6000], 'a valid added token is matched')
})

t.test('JSON files must be UTF-8: bytes that are not are an error, not U+FFFD', async (t) => {
  const text = JSON.stringify({ ...CONFIG, eos_token: '</s>X' })
  const bytes = Buffer.from(text, 'latin1')
  bytes[bytes.indexOf('X')] = 0xff
  await refused(t, dir(t, { 'tokenizer_config.json': bytes }), 'tokenizer_config.json', /invalid JSON: not valid UTF-8/, 'tokenizer_config.json')
  const json = Buffer.from(JSON.stringify(JSON_FORM).replace('"<unk>"', '"<unkX>"'), 'latin1')
  json[json.indexOf('X')] = 0xff
  await refused(t, dir(t, { 'tokenizer.json': json }, 'tokenizer.json'), 'tokenizer.json', /invalid JSON: not valid UTF-8/, 'tokenizer.json')
})

t.test('tokenizer.json: added tokens typed and int32; pipelines nested thousands deep refused', async (t) => {
  const added = JSON_FORM.added_tokens as object[]
  const withToken = (tok: Record<string, unknown>) => JSON.stringify({ ...JSON_FORM, added_tokens: [...added, tok] })
  const token = { content: '<new>', lstrip: false, rstrip: false, normalized: false, single_word: false, special: true }
  await refused(t, dir(t, { 'tokenizer.json': withToken({ id: 6000, ...token, special: 'true' }) }, 'tokenizer.json'), 'tokenizer.json', /added_tokens\[16\]: "special" must be true or false/, 'special "true"')
  await refused(t, dir(t, { 'tokenizer.json': withToken({ id: 2 ** 31, ...token }) }, 'tokenizer.json'), 'tokenizer.json', /added_tokens\[16\] needs an integer "id" in \[0, 2147483647\]/, 'id 2^31')
  for (const [key, list] of [['normalizer', 'normalizers'], ['pre_tokenizer', 'pretokenizers'], ['post_processor', 'processors'], ['decoder', 'decoders']]) {
    const text = JSON.stringify({ ...JSON_FORM, [key]: '__x__' }).replace('"__x__"', `{"type":"Sequence","${list}":[`.repeat(20_000) + '{"type":"Strip"}' + ']}'.repeat(20_000))
    await refused(t, dir(t, { 'tokenizer.json': text }, 'tokenizer.json'), 'tokenizer.json', new RegExp(`"${key}" nests deeper than 64 levels`), `${key} in 20,000 Sequences`)
  }
})
