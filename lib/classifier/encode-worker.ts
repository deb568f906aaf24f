// The tokenizing thread's side of EncodeThread (encode-thread.ts): the tokenizer rebuilt from what
// the classifier's was made from, then each request's texts encoded as encodeTexts encodes them and
// sent back as one Int32Array of ids and one of row lengths (transferred, not copied).
import { parentPort, workerData } from 'node:worker_threads'
import { Tokenizer, type TokenizerSource } from '../tokenizer/tokenizer'
import { encodeTexts, type EncodeSettings } from './encode'

const tok = Tokenizer.fromSource(workerData as TokenizerSource)

parentPort!.on('message', ({ id, texts, settings }: { id: number; texts: string[]; settings: EncodeSettings }) => {
  try {
    const rows = encodeTexts(tok, texts, settings)
    const lengths = Int32Array.from(rows, (r) => r.length)
    const ids = new Int32Array(lengths.reduce((a, b) => a + b, 0))
    let at = 0
    for (const r of rows) ids.set(r, at), (at += r.length)
    parentPort!.postMessage({ id, ids, lengths }, [ids.buffer, lengths.buffer])
  } catch (e) {
    const err = e as Error & { code?: string }
    parentPort!.postMessage({ id, error: { name: err.name, code: err.code, message: err.message } })
  }
})
