// Tokenizing off the JavaScript thread: a worker thread holding a copy of the classifier's
// tokenizer encodes the texts of large predict and evaluate runs, so that the event loop serves
// requests meanwhile however long the texts (a run of 1,024 coalesced requests, a 10 MB text
// before its truncation). Small runs are encoded in place: a worker's round trip would cost more
// than the few milliseconds they take. One thread per classifier, started on first use and
// stopped by dispose; it does not keep the process alive.
import * as path from 'node:path'
import { Worker } from 'node:worker_threads'

import { ErnieError } from '../errors'
import type { Tokenizer } from '../tokenizer'
import { TokenizerError } from '../tokenizer/errors'
import type { EncodeSettings } from './encode'

/** Runs this small (texts and characters) are encoded on the calling thread. */
export const IN_PLACE_TEXTS = 64
export const IN_PLACE_CHARS = 64 * 1024

interface Reply {
  id: number
  ids?: Int32Array
  lengths?: Int32Array
  error?: { name: string; code?: string; message: string }
}

export class EncodeThread {
  private readonly worker: Worker
  private readonly pending = new Map<number, { resolve: (rows: Int32Array[]) => void; reject: (e: unknown) => void }>()
  private next = 0
  private failed: Error | undefined

  /** A thread for `tok`, or undefined when `tok` cannot be rebuilt in another thread (made from a parsed model). */
  static start(tok: Tokenizer): EncodeThread | undefined {
    const source = tok.source
    return source === undefined ? undefined : new EncodeThread(source)
  }

  private constructor(source: NonNullable<Tokenizer['source']>) {
    // beside this file, compiled or not (the tests run the TypeScript)
    this.worker = new Worker(path.join(__dirname, `encode-worker${path.extname(__filename)}`), { workerData: source })
    this.worker.unref()
    this.worker.on('message', (r: Reply) => this.settle(r))
    this.worker.on('error', (e) => this.fail(new ErnieError('ERR_INTERNAL', `the tokenizing thread failed: ${e.message}`, { cause: e })))
    this.worker.on('exit', (code) => this.fail(new ErnieError('ERR_INTERNAL', `the tokenizing thread exited (code ${code})`)))
  }

  /** encodeTexts(tok, texts, settings), computed in the thread. */
  encode(texts: readonly string[], settings: EncodeSettings): Promise<Int32Array[]> {
    if (this.failed) return Promise.reject(this.failed)
    const id = this.next++
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      if (this.pending.size === 1) this.worker.ref() // a run in flight keeps the process waiting for it
      this.worker.postMessage({ id, texts, settings })
    })
  }

  /** Stops the thread; pending runs are rejected. */
  async close(): Promise<void> {
    this.fail(new ErnieError('ERR_DISPOSED', 'the tokenizing thread was stopped'))
    await this.worker.terminate()
  }

  private settle(r: Reply): void {
    const p = this.pending.get(r.id)
    if (!p) return
    this.pending.delete(r.id)
    if (this.pending.size === 0) this.worker.unref()
    if (r.error) {
      const e = r.error
      p.reject(e.name === 'TokenizerError' && e.code ? new TokenizerError(e.code as never, e.message) : new ErnieError('ERR_INTERNAL', `tokenizing failed: ${e.message}`))
      return
    }
    // each row a view of the one transferred buffer: no copy
    const rows: Int32Array[] = []
    let at = 0
    for (const n of r.lengths!) rows.push(r.ids!.subarray(at, (at += n)))
    p.resolve(rows)
  }

  private fail(err: Error): void {
    if (this.failed) return
    this.failed = err
    for (const p of this.pending.values()) p.reject(err)
    this.pending.clear()
  }
}
