// Tokenizing off the JavaScript thread: a large run's ids from the worker equal encodeTexts' on
// this thread (SentencePiece and tokenizer.json, added special tokens, both truncations, a 10 MB
// text); the event loop runs while the worker tokenizes; small runs stay here; a tokenizer made
// from a parsed model has no thread; stopping the thread rejects what is pending.
import t from 'tap'
import * as path from 'node:path'

import { encodeTexts, encodeTextsAsync, type EncodeSettings } from '../../lib/classifier/encode'
import { EncodeThread, IN_PLACE_TEXTS } from '../../lib/classifier/encode-thread'
import { SentencePieceModel, sentencePieceToTokenizerJson, Tokenizer } from '../../lib/tokenizer'
import { readTsv, TINY, TRAIN } from '../helpers/classifier-helpers'
import * as fs from 'node:fs'

const texts = readTsv(TRAIN).texts.slice(0, 300)
const settings: EncodeSettings[] = [
  { maxLength: 32, truncation: 'head', appendEos: true },
  { maxLength: 48, truncation: 'head_tail', appendEos: false },
]

t.test('the thread gives the ids encodeTexts gives here', async (t) => {
  const sp = await Tokenizer.fromDirectory(TINY, { prefer: 'tokenizer.model' })
  const json = Tokenizer.fromTokenizerJson(sentencePieceToTokenizerJson(fs.readFileSync(path.join(TINY, 'tokenizer.model'))))
  const added = sp.withSpecialTokens(['<|im_start|>', '<|im_end|>'])
  const long = '房间很干净，'.repeat(1_700_000) // about 10 MB of UTF-8
  for (const [name, tok] of [['tokenizer.model', sp], ['tokenizer.json', json], ['with added special tokens', added]] as const) {
    const thread = EncodeThread.start(tok)!
    t.ok(thread, `${name}: it can move to a thread`)
    for (const s of settings) {
      const input = [...texts, '<|im_start|>user', long]
      t.same(await thread.encode(input, s), encodeTexts(tok, input, s), `${name}, ${s.truncation} ${s.maxLength}: the same ids`)
    }
    await thread.close()
  }
})

t.test('large runs go to the thread and the event loop runs meanwhile; small ones stay here', async (t) => {
  const tok = await Tokenizer.fromDirectory(TINY)
  const thread = EncodeThread.start(tok)!
  t.teardown(() => thread.close())
  let asked = 0
  const counting = () => (asked++, thread)
  const big = Array.from({ length: 8 }, () => '太吵了。'.repeat(400_000))
  let ticked = false
  setImmediate(() => (ticked = true))
  const rows = await encodeTextsAsync(tok, big, settings[0], undefined, counting)
  t.ok(ticked, 'the event loop turned before the run was tokenized')
  t.equal(asked, 1, 'a large run asks for the thread')
  t.same(rows, encodeTexts(tok, big, settings[0]))
  // the rows are views of the one buffer the thread sent: 4 bytes a token, no copy per row
  t.ok(rows!.every((r) => r instanceof Int32Array && r.buffer === rows![0].buffer), 'every row a view of one transferred buffer')
  t.equal(rows![0].buffer.byteLength, 4 * rows!.reduce((n, r) => n + r.length, 0), 'a buffer of exactly the ids')
  await encodeTextsAsync(tok, texts.slice(0, IN_PLACE_TEXTS), settings[0], undefined, counting)
  t.equal(asked, 1, `a run of ${IN_PLACE_TEXTS} short texts is encoded here`)
})

t.test('no thread for a tokenizer made from a parsed model; a stopped thread rejects', async (t) => {
  const model = SentencePieceModel.fromBytes(fs.readFileSync(path.join(TINY, 'tokenizer.model')))
  t.equal(EncodeThread.start(Tokenizer.fromSentencePiece(model)), undefined)
  const thread = EncodeThread.start(await Tokenizer.fromDirectory(TINY))!
  const pending = t.rejects(thread.encode(['房间很干净'.repeat(1_000_000)], settings[0]), { code: 'ERR_DISPOSED' }, 'what was pending')
  await thread.close()
  await pending
  await t.rejects(thread.encode(['x'], settings[0]), { code: 'ERR_DISPOSED' })
})
