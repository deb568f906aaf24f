// Streams a file's lines as raw bytes (never the whole file in memory), so encoding problems are
// seen on the bytes themselves: decoding with replacement would turn a bad byte into U+FFFD,
// which is also a legal character, and the damage could no longer be told apart.
import * as fs from 'node:fs'
import { isUtf8 } from 'node:buffer'

export interface RawLine {
  /** 1-based. */
  line: number
  /** The line's bytes (a view: copy them to keep them past the next line). */
  bytes: Uint8Array
}

/** The file's lines without their terminator (\n or \r\n); a UTF-8 BOM on line 1 is dropped. */
export async function* byteLines(file: string, chunkSize = 1 << 20): AsyncGenerator<RawLine> {
  const stream = fs.createReadStream(file, { highWaterMark: chunkSize })
  let pending: Buffer[] = []
  let line = 0
  const finish = (parts: Buffer[]): Buffer => {
    let b = parts.length === 1 ? parts[0] : Buffer.concat(parts)
    if (b.length > 0 && b[b.length - 1] === 0x0d) b = b.subarray(0, b.length - 1)
    if (line === 1 && b.length >= 3 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) b = b.subarray(3)
    return b
  }
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    let start = 0
    for (;;) {
      const nl = chunk.indexOf(0x0a, start)
      if (nl < 0) break
      pending.push(chunk.subarray(start, nl))
      line++
      yield { line, bytes: finish(pending) }
      pending = []
      start = nl + 1
    }
    if (start < chunk.length) pending.push(chunk.subarray(start))
  }
  if (pending.length > 0 && pending.some((p) => p.length > 0)) {
    line++
    yield { line, bytes: finish(pending) }
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
