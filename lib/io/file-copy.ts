// A file's bytes read into memory of this process's own: what `mmap: false` loads weights into,
// so that nothing done to the file afterwards (truncated, rewritten, on a network share that goes
// away) can reach the model. Read asynchronously, in chunks, off the JS thread.
import { constants as bufferConstants } from 'node:buffer'
import { openRegularFile } from './read'

/** A file's bytes as SafetensorsFile reads them: mapped (MappedFile) or a private copy (FileCopy). */
export interface FileBytes {
  readonly path: string
  readonly byteLength: number
  readonly disposed: boolean
  /** The bytes [offset, offset + length) as an ArrayBuffer. */
  buffer(offset?: number, length?: number): ArrayBuffer
  /** The bytes [offset, offset + length) as a Uint8Array. */
  bytes(offset?: number, length?: number): Uint8Array
  /** Throws ERR_FILE_CHANGED when the bytes can no longer be read safely (a mapped file truncated). */
  checkUnchanged(): void
  dispose(): void
}

const CHUNK = 16 << 20

export class FileCopy implements FileBytes {
  private held: ArrayBuffer | undefined

  private constructor(
    readonly path: string,
    bytes: ArrayBuffer,
  ) {
    this.held = bytes
  }

  /** The whole file, read into memory; `expectedLength` (the size it was validated at) must still hold. */
  static async read(path: string, expectedLength: number): Promise<FileCopy> {
    if (expectedLength > bufferConstants.MAX_LENGTH)
      throw Object.assign(new RangeError(`${path}: ${expectedLength} bytes exceed the largest buffer Node can hold (${bufferConstants.MAX_LENGTH}); load it memory-mapped (mmap: true) or as smaller shards`), {
        code: 'ERR_FILE_TOO_LARGE',
        path,
      })
    const handle = await openRegularFile(path)
    try {
      const bytes = new ArrayBuffer(expectedLength)
      const view = new Uint8Array(bytes)
      let n = 0
      while (n < expectedLength) {
        const { bytesRead } = await handle.read(view, n, Math.min(CHUNK, expectedLength - n), n)
        if (bytesRead === 0) break
        n += bytesRead
      }
      const { size } = await handle.stat()
      if (n !== expectedLength || size !== expectedLength)
        throw Object.assign(new Error(`'${path}' changed on disk while being read (${expectedLength} bytes expected, ${size} now)`), { code: 'ERR_FILE_CHANGED', path })
      return new FileCopy(path, bytes)
    } finally {
      await handle.close()
    }
  }

  get byteLength(): number {
    return this.held?.byteLength ?? 0
  }
  get disposed(): boolean {
    return this.held === undefined
  }
  buffer(offset = 0, length = this.byteLength - offset): ArrayBuffer {
    const all = this.live()
    return offset === 0 && length === all.byteLength ? all : all.slice(offset, offset + length)
  }
  bytes(offset = 0, length = this.byteLength - offset): Uint8Array {
    return new Uint8Array(this.live(), offset, length)
  }
  /** A private copy cannot change under its reader. */
  checkUnchanged(): void {}
  /** Lets go of the memory; views handed out keep what they reference until garbage-collected. */
  dispose(): void {
    this.held = undefined
  }

  private live(): ArrayBuffer {
    if (!this.held) throw Object.assign(new Error(`FileCopy: '${this.path}' was disposed`), { code: 'ERR_DISPOSED' })
    return this.held
  }
}
