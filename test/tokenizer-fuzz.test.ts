// Fuzzing the readers with mutated files (seeded): every attempt either loads and tokenizes a
// sample, or throws a TokenizerError — never another exception, a hang or a crash.
import t from 'tap'
import { SentencePieceModel, Tokenizer, TokenizerError, sentencePieceToTokenizerJson } from '../lib/index'
import { rng } from './helpers'
import { MODELS, modelBytes } from './tokenizer-helpers'

// Text that walks many paths: CJK, NFKC-relevant forms, combining marks, emoji, digits, spaces, controls.
const SAMPLE = ' 价格 299 元，ＦＵＬＬ　ｶﾞ①ﬁ e\u0301 😈👍🏽 \t\n<s>~~~~!!。。 ℌ𝔢\u200b\ufeff end  '

type Outcome = 'loaded' | 'rejected'

function attempt(t: { fail(msg: string): void }, label: string, run: () => void): Outcome {
  try {
    run()
    return 'loaded'
  } catch (e) {
    if (e instanceof TokenizerError) return 'rejected'
    t.fail(`${label}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`)
    return 'rejected'
  }
}

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

t.test('mutated tokenizer.model files: load and tokenize, or TokenizerError', async (t) => {
  const perModel = 300
  for (const name of MODELS) {
    const src = modelBytes(name)
    const next = rng(name === 'unigram' ? 7 : 3)
    const counts: Record<Outcome, number> = { loaded: 0, rejected: 0 }
    for (let i = 0; i < perModel; i++) {
      const { bytes, how } = mutate(src, next)
      counts[
        attempt(t, `${name} #${i} (${how})`, () => {
          const model = SentencePieceModel.fromBytes(bytes, `${name}-mutated.model`)
          const ids = model.encode(SAMPLE)
          model.decode(ids)
          const tok = Tokenizer.fromSentencePiece(model)
          tok.decode(tok.encode(SAMPLE, { parseSpecial: true }))
        })
      ]++
    }
    t.equal(counts.loaded + counts.rejected, perModel, `${name}: ${counts.loaded} loaded, ${counts.rejected} rejected`)
    t.ok(counts.loaded > 0 && counts.rejected > 0, `${name}: both outcomes occur`)
  }
})

t.test('mutated charsmaps: lookups stay inside the blob', async (t) => {
  // Flip bits only inside the double array of unigram.model's precompiled charsmap.
  const proto = SentencePieceModel.fromBytes(modelBytes('unigram')).proto
  const charsmap = proto.normalizerSpec.precompiledCharsmap
  const next = rng(11)
  let loaded = 0
  for (let i = 0; i < 200; i++) {
    const broken = charsmap.slice()
    const flips = 1 + Math.floor(next() * 64)
    for (let k = 0; k < flips; k++) broken[4 + Math.floor(next() * (broken.length - 4))] ^= 1 << Math.floor(next() * 8)
    const outcome = attempt(t, `charsmap #${i}`, () => {
      const model = SentencePieceModel.fromProto({ ...proto, normalizerSpec: { ...proto.normalizerSpec, precompiledCharsmap: broken } }, 'charsmap.model')
      model.decode(model.encode(SAMPLE))
    })
    if (outcome === 'loaded') loaded++
  }
  t.ok(loaded > 0, `${loaded} of 200 corrupt charsmaps loaded and normalized without reading out of bounds`)
})

t.test('mutated tokenizer.json files: load and tokenize, or TokenizerError', async (t) => {
  const next = rng(5)
  const int = (n: number) => Math.floor(next() * n)
  for (const name of MODELS) {
    const text = JSON.stringify(sentencePieceToTokenizerJson(modelBytes(name)))
    const counts: Record<Outcome, number> = { loaded: 0, rejected: 0 }
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
      counts[
        attempt(t, `${name} json #${i} (${how})`, () => {
          let parsed: unknown
          try {
            parsed = JSON.parse(mutated)
          } catch (e) {
            throw new TokenizerError('ERR_TOKENIZER_JSON', (e as Error).message)
          }
          const tok = Tokenizer.fromTokenizerJson(parsed, { jsonFile: `${name}-mutated.json` })
          tok.decode(tok.encode(SAMPLE))
        })
      ]++
    }
    t.equal(counts.loaded + counts.rejected, 60, `${name}: ${counts.loaded} loaded, ${counts.rejected} rejected`)
  }
})
