// Streaming generation: the stream's chunks (and the onText callback's) join to exactly what
// generate returns, and what is handed out is never changed later: never half of a UTF-8
// character (byte-fallback tokens of Chinese characters and emoji, fed one by one), never any part
// of a stop string, even one spanning tokens. Leaving the stream early frees its cache; bad
// options are typed errors thrown before anything runs.
import t, { type Test } from 'tap'
import * as path from 'node:path'
import { ErnieModel, Tokenizer, type GenerateChunk, type GenerateOptions } from '../../lib/index'
import { NativeKvCache } from '../../lib/native'
import { TextStream } from '../../lib/model/text-stream'
import { tinyModel } from '../helpers/trainer-helpers'

const FIXTURES = path.join(__dirname, '..', 'fixtures')

async function collect(stream: AsyncIterable<GenerateChunk>): Promise<GenerateChunk[]> {
  const chunks: GenerateChunk[] = []
  for await (const c of stream) chunks.push(c)
  return chunks
}

/** Each chunk's text, joined up to it, is a prefix of `final`: nothing handed out is changed afterwards. */
function handedOutIsFinal(t: Test, pieces: string[], final: string, what: string): void {
  let sofar = ''
  const changed = pieces.findIndex((p) => !final.startsWith((sofar += p)))
  t.equal(changed, -1, `${what}: every streamed prefix is a prefix of the final text`)
  t.equal(sofar, final, `${what}: the pieces join to the final text`)
}

for (const name of ['ernie-tiny', 'qwen3-tiny']) {
  t.test(`${name}: the stream and onText give exactly generate's text and tokens`, async (t) => {
    const model = await ErnieModel.fromPretrained(path.join(FIXTURES, name))
    const tok = model.tokenizer!
    const cases: [string, string | number[], GenerateOptions][] = [
      ['greedy', '房间很干净，服务也周到', { maxNewTokens: 40, eosTokenIds: [] }],
      // near-uniform draws over the vocabulary: many byte tokens, which complete characters or not
      ['sampled', '这家酒店', { maxNewTokens: 120, temperature: 4, seed: 7, eosTokenIds: [] }],
      ['sampled, ids', [5, 77, 300, 1024, 42], { maxNewTokens: 120, temperature: 4, seed: 8, eosTokenIds: [] }],
    ]
    let heldBack = 0
    for (const [what, prompt, options] of cases) {
      const whole = await model.generate(prompt, options)
      t.equal(whole.text, tok.decode(whole.tokens, { skipSpecialTokens: true }), `${what}: generate's text is its tokens decoded`)
      const chunks = await collect(model.generateStream(prompt, options))
      t.same(chunks.flatMap((c) => c.tokens), whole.tokens, `${what}: the stream's tokens`)
      t.ok(chunks.slice(0, -1).every((c) => c.tokens.length === 1 && c.finishReason === undefined), `${what}: one token per chunk`)
      t.same([chunks.at(-1)!.tokens, chunks.at(-1)!.finishReason], [[], whole.finishReason], `${what}: the last chunk ends it`)
      handedOutIsFinal(t, chunks.map((c) => c.text), whole.text, what)
      heldBack += chunks.filter((c) => c.tokens.length === 1 && c.text === '').length
      const seen: GenerateChunk[] = []
      const viaCallback = await model.generate(prompt, { ...options, onText: (text, chunk) => (t.equal(text, chunk.text), seen.push(chunk)) })
      t.same(viaCallback, whole, `${what}: generate with onText returns the same`)
      t.same(seen, chunks, `${what}: onText saw the stream's chunks`)
    }
    t.ok(heldBack > 0, `${heldBack} chunks held their text back (an incomplete character)`)
    await model.dispose()
  })
}

t.test('TextStream hands out whole characters only: Chinese and emoji split into byte tokens', async (t) => {
  const tok = await Tokenizer.fromDirectory(path.join(FIXTURES, 'ernie-tiny'))
  const text = '房间鑫很干净😀，饕餮囧'
  const ids = tok.encode(text)
  t.equal(tok.decode(ids), text, 'the ids decode back to the text')
  const byteTokens = ids.filter((id) => /^<0x[0-9A-F]{2}>$/.test(tok.idToPiece(id)!)).length
  t.ok(byteTokens >= 10, `${byteTokens} of the ${ids.length} tokens are single bytes`)
  const stream = new TextStream(tok, [])
  const pieces = ids.map((id) => stream.push(id))
  pieces.push(stream.finish())
  handedOutIsFinal(t, pieces, text, 'byte by byte')
  t.notOk(pieces.some((p) => p.includes('\ufffd')), 'no piece holds a replacement character')
  // the emoji's four bytes: nothing for the first three, the whole emoji with the fourth
  const at = ids.findIndex((id) => tok.idToPiece(id) === '<0xF0>')
  t.same(pieces.slice(at, at + 4), ['', '', '', '😀'])
})

t.test('TextStream never hands out a stop string or its start; a false start is released', async (t) => {
  const tok = await Tokenizer.fromDirectory(path.join(FIXTURES, 'ernie-tiny'))
  const text = '房间很干净，服务很好，早餐很干净了'
  const ids = tok.encode(text)
  t.equal(tok.decode(ids), text)
  // '干净了' first starts at the first '干净' (a false start), and is whole only at the end
  const stream = new TextStream(tok, ['干净了'])
  const pieces = ids.map((id) => (stream.stopped ? '' : stream.push(id)))
  pieces.push(stream.finish())
  t.ok(stream.stopped)
  handedOutIsFinal(t, pieces, '房间很干净，服务很好，早餐很', 'cut before the stop string')
  let sofar = ''
  const leaked = pieces.findIndex((p) => ['干', '干净', '干净了'].some((start) => (sofar += p).endsWith('早餐很' + start)))
  t.equal(leaked, -1, 'the stop string’s start was never out')
  const firstClean = ids.findIndex((_, i) => tok.decode(ids.slice(0, i + 1)).includes('干净，'))
  t.ok(pieces.slice(0, firstClean + 1).join('').endsWith('干净，'), 'the false start 干净 went out once the next character ruled the stop string out')
})

t.test('a stop string spanning two tokens never reaches the stream', async (t) => {
  const model = await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny'))
  const tok = model.tokenizer!
  const full = await model.generate('房间很干净', { maxNewTokens: 30, eosTokenIds: [] })
  // the last character of one token's text and the first of the next, first seen there
  const texts = full.tokens.map((_, i) => tok.decode(full.tokens.slice(0, i + 1)))
  const m = texts.findIndex((x, i) => {
    if (i < 3 || i + 1 >= texts.length) return false
    const own = tok.decode([full.tokens[i]]), next = tok.decode([full.tokens[i + 1]])
    if (!/^\S+$/u.test(own + next) || own.includes('\ufffd') || next.includes('\ufffd')) return false
    return !texts[i + 1].slice(0, -(next.length + 1)).includes(own.slice(-1) + next[0])
  })
  t.ok(m > 0, 'the unstopped text has two neighbouring tokens to stop across')
  const own = tok.decode([full.tokens[m]])
  const stop = own.slice(-1) + tok.decode([full.tokens[m + 1]])[0]
  const expected = full.text.slice(0, full.text.indexOf(stop))
  const chunks = await collect(model.generateStream('房间很干净', { maxNewTokens: 30, eosTokenIds: [], stop: [stop] }))
  t.equal(chunks.at(-1)!.finishReason, 'stop')
  t.same(chunks.flatMap((c) => c.tokens), full.tokens.slice(0, m + 2), `stopped at the token that completed ${JSON.stringify(stop)}`)
  handedOutIsFinal(t, chunks.map((c) => c.text), expected, `stop ${JSON.stringify(stop)}`)
  t.equal((await model.generate('房间很干净', { maxNewTokens: 30, eosTokenIds: [], stop: [stop] })).text, expected, 'generate cuts the same text')
  await model.dispose()
})

t.test('a special token named as a stop string stops at that token', async (t) => {
  const model = await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny'))
  const tok = model.tokenizer!
  const special = new Set(tok.addedTokens.filter((x) => x.special).map((x) => x.id))
  // the first seed whose near-uniform draws hit a special token
  const options: GenerateOptions = { maxNewTokens: 120, temperature: 4, eosTokenIds: [] }
  let seed = 0
  let full = await model.generate('房间', { ...options, seed })
  while (!full.tokens.some((id) => special.has(id)) && seed < 50) full = await model.generate('房间', { ...options, seed: ++seed })
  const at = full.tokens.findIndex((id) => special.has(id))
  t.ok(at >= 0, `seed ${seed} draws special token ${full.tokens[at]} at step ${at}`)
  const stopped = await model.generate('房间', { ...options, seed, stop: [tok.idToPiece(full.tokens[at])!] })
  t.same([stopped.finishReason, stopped.tokens], ['stop', full.tokens.slice(0, at + 1)], 'the tokens end with it')
  t.equal(stopped.text, tok.decode(full.tokens.slice(0, at + 1), { skipSpecialTokens: true }), 'its text is not shown')
  await model.dispose()
})

t.test('leaving the stream early frees its cache; an aborted stream ends with what it has', async (t) => {
  const model = await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny'))
  // generate.ts with a NativeKvCache that keeps every cache it makes: one disposed reads length 0
  const made: InstanceType<typeof NativeKvCache>[] = []
  class KeptKvCache extends NativeKvCache {
    constructor(options: { maxLength: number }) {
      super(options)
      made.push(this)
    }
  }
  const native = await import('../../lib/native')
  const { generateStream, generateText } = t.mockRequire<typeof import('../../lib/model/generate')>('../../lib/model/generate', {
    '../../lib/native': { ...native, NativeKvCache: KeptKvCache },
  })
  const live = () => made.filter((c) => c.length > 0).length
  const full = await generateText(model, '房间很干净', { maxNewTokens: 20, eosTokenIds: [] })
  t.same([made.length, live()], [1, 0], 'generate freed its cache')
  const tokens: number[] = []
  for await (const chunk of generateStream(model, '房间很干净', { maxNewTokens: 20, eosTokenIds: [] })) {
    tokens.push(...chunk.tokens)
    if (tokens.length === 3) t.equal(live(), 1, 'a stream holds its cache while it runs')
    if (tokens.length === 3) break
  }
  t.same([made.length, live()], [2, 0], 'breaking out of for await freed the cache')
  t.same(tokens, full.tokens.slice(0, 3))
  const stream = generateStream(model, '房间很干净', { maxNewTokens: 20 })
  t.equal(made.length, 2, 'nothing is made before the first next()')
  await stream.next()
  t.equal(live(), 1)
  await stream.return(undefined)
  t.same([made.length, live()], [3, 0], 'return() freed it')
  const failing = generateStream(model, '房间很干净', {
    maxNewTokens: 20,
    onText: () => {
      throw new Error('listener failed')
    },
  })
  await t.rejects(failing.next(), { message: 'listener failed' }, "onText's error ends the stream")
  t.same([made.length, live()], [4, 0], 'and frees the cache')
  const controller = new AbortController()
  const aborted: GenerateChunk[] = []
  for await (const chunk of model.generateStream('房间很干净', { maxNewTokens: 20, eosTokenIds: [], signal: controller.signal })) {
    aborted.push(chunk)
    if (aborted.length === 4) controller.abort()
  }
  t.same(aborted.flatMap((c) => c.tokens), full.tokens.slice(0, 4))
  t.equal(aborted.at(-1)!.finishReason, 'aborted')
  t.equal(aborted.map((c) => c.text).join(''), model.tokenizer!.decode(full.tokens.slice(0, 4), { skipSpecialTokens: true }), 'with all the text of its tokens')
  await model.dispose()
})

t.test('bad options are typed errors, thrown by generateStream before anything runs', async (t) => {
  const model = tinyModel()
  const bad: [GenerateOptions, string, RegExp][] = [
    [{ topK: -1 }, 'RangeError', /topK must be an integer >= 0/],
    [{ topK: 2.5 }, 'RangeError', /topK/],
    [{ repetitionPenalty: 0 }, 'RangeError', /repetitionPenalty must be a finite number > 0/],
    [{ repetitionPenalty: NaN }, 'RangeError', /repetitionPenalty/],
    [{ temperature: Infinity }, 'RangeError', /temperature/],
    [{ topP: 1.5 }, 'RangeError', /topP must be in \(0, 1\]/],
    [{ maxNewTokens: 1.5 }, 'RangeError', /maxNewTokens/],
    [{ seed: 0.5 }, 'RangeError', /seed/],
    [{ topK: '3' as unknown as number }, 'TypeError', /topK must be a number/],
    [{ eosTokenIds: [1, 1e9] }, 'RangeError', /eosTokenIds\[1\] = 1000000000 is outside the vocabulary/],
    [{ stop: [''] }, 'TypeError', /stop must be an array of non-empty strings/],
    [{ onText: 'log' as unknown as GenerateOptions['onText'] }, 'TypeError', /onText must be a function/],
  ]
  for (const [options, name, message] of bad) {
    t.throws(() => model.generateStream([5, 6], options), { name, message }, JSON.stringify(options))
    await t.rejects(model.generate([5, 6], options), { name, message })
  }
  t.throws(() => model.generateStream([5, 6], { stop: ['x'] }), { code: 'ERR_NO_TOKENIZER' }, 'stop strings need a tokenizer')
  t.throws(() => model.generateStream([5, 1e9]), { name: 'RangeError', message: /prompt\[1\].*outside the vocabulary/ })
  const r = await model.generate([5, 6], { maxNewTokens: 3 })
  t.same(r.text, '', 'no tokenizer: tokens only')
  t.equal(r.tokens.length + (r.finishReason === 'eos' ? 1 : 0) <= 3, true)
  await model.dispose()
})
