// The tokenizing thread's side of EncodeThread (encode-thread.ts): the tokenizer rebuilt from what
// the classifier's was made from, then each request's texts encoded as encodeTexts encodes them and
// sent back as one Int32Array of ids and one of row lengths (transferred, not copied).
import { parentPort, workerData } from 'node:worker_threads'
import { Tokenizer, type TokenizerSource } from '../tokenizer/tokenizer'
import { encodeTexts, type EncodeSettings } from './encode'

const tok = Tokenizer.fromSource(workerData as TokenizerSource)

// Texts per encodeTexts call: the ids go into the flat buffer chunk by chunk, so that a large run
// never holds every row at once as well.
const CHUNK = 4096

parentPort!.on('message', ({ id, texts, settings }: { id: number; texts: string[]; settings: EncodeSettings }) => {
  try {
    const lengths = new Int32Array(texts.length)
    let ids = new Int32Array(Math.max(1024, texts.length * 32))
    let used = 0
    for (let i = 0; i < texts.length; i += CHUNK) {
      encodeTexts(tok, texts.slice(i, i + CHUNK), settings).forEach((row, k) => {
        if (used + row.length > ids.length) {
          const grown = new Int32Array(Math.max(2 * ids.length, used + row.length))
          grown.set(ids.subarray(0, used))
          ids = grown
        }
        ids.set(row, used)
        used += row.length
        lengths[i + k] = row.length
      })
    }
    if (used < ids.length) ids = ids.slice(0, used) // what is sent stays whole in the caller's memory
    parentPort!.postMessage({ id, ids, lengths }, [ids.buffer, lengths.buffer])
  } catch (e) {
    const err = e as Error & { code?: string }
    parentPort!.postMessage({ id, error: { name: err.name, code: err.code, message: err.message } })
  }
})
