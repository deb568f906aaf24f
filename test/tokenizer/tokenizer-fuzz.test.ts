// Fuzzing the readers with mutated files (seeded): every attempt either loads a tokenizer that
// encodes and decodes consistently, or throws the TokenizerError for its kind of file, naming the
// file — never another exception, a hang or a crash.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { SentencePieceModel, Tokenizer, TokenizerError, sentencePieceToTokenizerJson } from '../../lib/index'
import { tempDir } from '../helpers/classifier-helpers'
import { rng } from '../helpers/helpers'
import { MODELS, modelBytes, type FixtureModel } from '../helpers/tokenizer-helpers'

// Text that walks many paths: CJK, NFKC-relevant forms, combining marks, emoji, digits, spaces, controls.
const SAMPLE = ' 价格 299 元，ＦＵＬＬ　ｶﾞ①ﬁ e\u0301 😈👍🏽 \t\n<s>~~~~!!。。 ℌ𝔢\u200b\ufeff end  '
const TEXTS = [SAMPLE, '房间很干净，服务也周到', 'hello world 123']

interface Codec {
  encode(text: string): number[]
  decode(ids: number[]): string
  size: number
}

/**
 * The round trip a loaded tokenizer must give: ids inside its vocabulary, and a decoded text
 * that is the text itself for a lossless model (ernie_style_bpe: identity normalizer, byte
 * fallback) or else a fixed point, what it normalizes to (unigram: NFKC). `fixedPoint: false`
 * asks only for valid ids and well-formed text. Returns a failure, or undefined.
 */
function roundTripProblem(c: Codec, lossless: boolean, fixedPoint = true): string | undefined {
  for (const text of TEXTS) {
    const ids = c.encode(text)
    const bad = ids.find((id) => !Number.isInteger(id) || id < 0 || id >= c.size)
    if (bad !== undefined) return `id ${bad} outside 0..${c.size - 1}`
    const back = c.decode(ids)
    if (/\p{Cs}/u.test(back)) return `${JSON.stringify(text)} decodes to a lone surrogate`
    if (lossless && back !== text) return `${JSON.stringify(text)} decodes to ${JSON.stringify(back)}`
    if (fixedPoint && c.decode(c.encode(back)) !== back) return `${JSON.stringify(back)} is not a fixed point of the round trip`
  }
  return undefined
}

type Outcome = 'loaded' | 'rejected' | 'failed'

/**
 * One mutated input: `load` returns the tokenizer's codec, which must round-trip (see
 * roundTripProblem), or throws a TokenizerError with `code` naming `file` (a rejection). Any
 * other exception, or a loaded tokenizer that throws or fails the round trip, fails the test.
 */
async function attempt(
  t: { fail(msg: string): void },
  label: string,
  expected: { code: 'ERR_TOKENIZER_MODEL' | 'ERR_TOKENIZER_JSON'; file: string },
  load: () => Codec | Promise<Codec>,
  check: (c: Codec) => string | undefined,
): Promise<Outcome> {
  let codec: Codec
  try {
    codec = await load()
  } catch (e) {
    if (e instanceof TokenizerError && e.code === expected.code && e.message.includes(expected.file)) return 'rejected'
    t.fail(`${label}: not a ${expected.code} naming ${expected.file}: ${e instanceof Error ? `${e.name} ${(e as { code?: string }).code}: ${e.message}` : String(e)}`)
    return 'failed'
  }
  try {
    const problem = check(codec)
    if (problem === undefined) return 'loaded'
    t.fail(`${label}: loaded, but ${problem}`)
  } catch (e) {
    t.fail(`${label}: loaded, then threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`)
  }
  return 'failed'
}

const lossless = (name: FixtureModel) => name === 'ernie_style_bpe'
const spCodec = (m: SentencePieceModel): Codec => ({ encode: (x) => m.encode(x), decode: (ids) => m.decode(ids), size: m.size })
const tokCodec = (tok: Tokenizer): Codec => ({ encode: (x) => tok.encode(x), decode: (ids) => tok.decode(ids), size: tok.vocabSize })

function mutate(src: Uint8Array, next: () => number): { bytes: Uint8Array; how: string } {
  const int = (n: number) => Math.floor(next() * n)
  const kind = int(5)
  const out = src.slice()
  switch (kind) {
    case 0: {
      const flips = 1 + int(8)
      for (let i = 0; i < flips; i++) out[int(out.length)] ^= 1 << int(8)
      return { bytes: out, how: `${flips} bit flips` }
    }
    case 1: {
      const cut = int(src.length)
      return { bytes: src.slice(0, cut), how: `truncated at ${cut}` }
    }
    case 2: {
      const at = int(out.length)
      const n = 1 + int(16)
      for (let i = 0; i < n && at + i < out.length; i++) out[at + i] = int(256)
      return { bytes: out, how: `${n} random bytes at ${at}` }
    }
    case 3: {
      const at = int(src.length)
      const n = 1 + int(64)
      const junk = Uint8Array.from({ length: n }, () => int(256))
      const bytes = new Uint8Array(src.length + n)
      bytes.set(src.subarray(0, at))
      bytes.set(junk, at)
      bytes.set(src.subarray(at), at + n)
      return { bytes, how: `${n} bytes inserted at ${at}` }
    }
    default: {
      // Overwrite a length-ish byte near a piece boundary: large varints are the nasty case.
      const at = int(out.length)
      out[at] = 0xff
      if (at + 1 < out.length) out[at + 1] = 0xff
      return { bytes: out, how: `0xffff at ${at}` }
    }
  }
}

t.test('mutated tokenizer.model files: load and round-trip, or ERR_TOKENIZER_MODEL naming the file', async (t) => {
  const perModel = 300
  for (const name of MODELS) {
    const src = modelBytes(name)
    const next = rng(name === 'unigram' ? 7 : 3)
    const file = `${name}-mutated.model`
    const counts: Record<Outcome, number> = { loaded: 0, rejected: 0, failed: 0 }
    for (let i = 0; i < perModel; i++) {
      const { bytes, how } = mutate(src, next)
      const model = { current: undefined as SentencePieceModel | undefined }
      const outcome = await attempt(
        t,
        `${name} #${i} (${how})`,
        { code: 'ERR_TOKENIZER_MODEL', file },
        () => spCodec((model.current = SentencePieceModel.fromBytes(bytes, file))),
        // the model itself, then the Tokenizer built on it
        (c) => roundTripProblem(c, lossless(name)) ?? roundTripProblem(tokCodec(Tokenizer.fromSentencePiece(model.current!)), lossless(name)),
      )
      counts[outcome]++
    }
    t.comment(`${name}: ${counts.loaded} loaded, ${counts.rejected} rejected`)
    t.equal(counts.failed, 0, `${name}: every mutated file loaded and round-tripped, or was rejected with ERR_TOKENIZER_MODEL`)
    t.ok(counts.loaded > 0 && counts.rejected > 0, `${name}: both outcomes occur`)
  }
})

t.test('mutated charsmaps: load and give valid ids and text, or ERR_TOKENIZER_MODEL', async (t) => {
  // Flip bits only inside the double array of unigram.model's precompiled charsmap.
  const proto = SentencePieceModel.fromBytes(modelBytes('unigram')).proto
  const charsmap = proto.normalizerSpec.precompiledCharsmap
  const next = rng(11)
  const counts: Record<Outcome, number> = { loaded: 0, rejected: 0, failed: 0 }
  for (let i = 0; i < 200; i++) {
    const broken = charsmap.slice()
    const flips = 1 + Math.floor(next() * 64)
    for (let k = 0; k < flips; k++) broken[4 + Math.floor(next() * (broken.length - 4))] ^= 1 << Math.floor(next() * 8)
    const load = () => spCodec(SentencePieceModel.fromProto({ ...proto, normalizerSpec: { ...proto.normalizerSpec, precompiledCharsmap: broken } }, 'charsmap.model'))
    // A corrupt map may normalize anything to anything (not to a fixed point): only ids and text are checked.
    counts[await attempt(t, `charsmap #${i}`, { code: 'ERR_TOKENIZER_MODEL', file: 'charsmap.model' }, load, (c) => roundTripProblem(c, false, false))]++
  }
  t.equal(counts.failed, 0, `${counts.loaded} of 200 corrupt charsmaps loaded and normalized without reading out of bounds, ${counts.rejected} rejected`)
  t.ok(counts.loaded > 0, 'some load')
})

t.test('mutated tokenizer.json files: load and round-trip, or ERR_TOKENIZER_JSON naming the file', async (t) => {
  const next = rng(5)
  const int = (n: number) => Math.floor(next() * n)
  const dir = tempDir(t, 'ernie-fuzz-')
  const file = path.join(dir, 'tokenizer.json')
  for (const name of MODELS) {
    const text = JSON.stringify(sentencePieceToTokenizerJson(modelBytes(name)))
    const counts: Record<Outcome, number> = { loaded: 0, rejected: 0, failed: 0 }
    for (let i = 0; i < 60; i++) {
      let mutated: string
      let how: string
      if (i % 3 === 0) {
        // Text-level damage: a cut or a changed character (mostly invalid JSON).
        const at = int(text.length)
        mutated = i % 2 ? text.slice(0, at) : text.slice(0, at) + String.fromCharCode(32 + int(90)) + text.slice(at + 1)
        how = `text damage at ${at}`
      } else {
        // Structural damage: a key removed or a value of the wrong type somewhere in the tree.
        const json = JSON.parse(text)
        const path: string[] = []
        let node = json
        for (let depth = 0; depth < 4 && node && typeof node === 'object'; depth++) {
          const keys = Object.keys(node)
          if (keys.length === 0) break
          const key = keys[int(keys.length)]
          if (depth === 3 || typeof node[key] !== 'object' || node[key] === null || int(3) === 0) {
            const replacement = [undefined, null, 7, 'x', [], {}, true][int(7)]
            if (replacement === undefined) delete node[key]
            else node[key] = replacement
            path.push(`${key}=${JSON.stringify(replacement)}`)
            break
          }
          path.push(key)
          node = node[key]
        }
        mutated = JSON.stringify(json)
        how = path.join('.')
      }
      // through the file, so that JSON syntax errors are the library's to report
      fs.writeFileSync(file, mutated)
      const load = async () => tokCodec(await Tokenizer.fromDirectory(dir))
      counts[await attempt(t, `${name} json #${i} (${how})`, { code: 'ERR_TOKENIZER_JSON', file }, load, (c) => roundTripProblem(c, lossless(name)))]++
    }
    t.comment(`${name}: ${counts.loaded} loaded, ${counts.rejected} rejected`)
    t.equal(counts.failed, 0, `${name}: every mutated file loaded and round-tripped, or was rejected with ERR_TOKENIZER_JSON`)
    t.ok(counts.loaded > 0 && counts.rejected > 0, `${name}: both outcomes occur`)
  }
})
