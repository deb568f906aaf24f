// Streams a file's lines as raw bytes (never the whole file in memory), so encoding problems are
// seen on the bytes themselves: decoding with replacement would turn a bad byte into U+FFFD,
// which is also a legal character, and the damage could no longer be told apart.
import { isUtf8 } from 'node:buffer'

import { openRegularFile } from '../io/read'
import { DataError } from './errors'

export interface RawLine {
  /** 1-based. */
  line: number
  /** The line's bytes (a view: copy them to keep them past the next line). */
  bytes: Uint8Array
}

/** The longest line read (a review is a few KB): past it a file is not line-structured text (/dev/zero, a binary). */
export const MAX_LINE_BYTES = 16 << 20

/**
 * The file's lines without their terminator: \n, \r\n, or a lone \r (old Mac files), as
 * universal newlines read them; a UTF-8 BOM on line 1 is dropped. Only a regular file is read
 * (a directory, FIFO or device is an io.FileError naming it), and a line longer than
 * MAX_LINE_BYTES is a DataError: memory stays bounded whatever the file holds.
 */
export async function* byteLines(file: string, chunkSize = 1 << 20): AsyncGenerator<RawLine> {
  const handle = await openRegularFile(file).catch((err: NodeJS.ErrnoException) => {
    throw err.code === 'ENOENT' ? new DataError(file, undefined, 'no such file') : err
  })
  try {
    const stream = handle.createReadStream({ highWaterMark: chunkSize, autoClose: false })
    let pending: Buffer[] = []
    let pendingBytes = 0
    let line = 0
    let afterCr = false // the last terminator was \r: a \n right after it belongs to it
    const finish = (): Buffer => {
      let b = pending.length === 1 ? pending[0] : Buffer.concat(pending)
      if (line === 1 && b.length >= 3 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) b = b.subarray(3)
      pending = []
      pendingBytes = 0
      return b
    }
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let start = 0
      if (afterCr && chunk.length > 0 && chunk[0] === 0x0a) start = 1
      afterCr = false
      for (;;) {
        let end = start
        while (end < chunk.length && chunk[end] !== 0x0a && chunk[end] !== 0x0d) end++
        if (end === chunk.length) break
        pending.push(chunk.subarray(start, end))
        line++
        yield { line, bytes: finish() }
        if (chunk[end] === 0x0d) {
          if (end + 1 === chunk.length) afterCr = true
          else if (chunk[end + 1] === 0x0a) end++
        }
        start = end + 1
      }
      if (start < chunk.length) {
        pending.push(chunk.subarray(start))
        pendingBytes += chunk.length - start
        if (pendingBytes > MAX_LINE_BYTES) throw new DataError(file, line + 1, `the line is longer than ${MAX_LINE_BYTES} bytes: not a line-structured text file`)
      }
    }
    if (pendingBytes > 0) {
      line++
      yield { line, bytes: finish() }
    }
  } finally {
    await handle.close()
  }
}

/** Byte offset of the first byte that is not part of well-formed UTF-8, or -1. */
export function firstInvalidUtf8(b: Uint8Array): number {
  if (isUtf8(b)) return -1
  let i = 0
  while (i < b.length) {
    const c = b[i]
    if (c < 0x80) {
      i++
      continue
    }
    let n: number
    let min: number
    if (c >= 0xc2 && c <= 0xdf) (n = 1), (min = 0x80)
    else if (c >= 0xe0 && c <= 0xef) (n = 2), (min = 0x800)
    else if (c >= 0xf0 && c <= 0xf4) (n = 3), (min = 0x10000)
    else return i
    let cp = c & (0x3f >> n) // the lead byte's payload bits
    for (let k = 1; k <= n; k++) {
      const d = b[i + k]
      if (d === undefined || (d & 0xc0) !== 0x80) return i
      cp = (cp << 6) | (d & 0x3f)
    }
    // overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8
    if (cp < min || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return i
    i += n + 1
  }
  return -1
}

const decoder = new TextDecoder('utf-8')

/** Decodes a line already known to be valid. */
export function decodeUtf8(b: Uint8Array): string {
  return decoder.decode(b)
}
