// Memory-mapped files: a file's bytes as ArrayBuffers without a copy (native/addon/mmap.cc).
import { constants as bufferConstants } from 'node:buffer'
import { NativeMappedFile } from '../native'

/**
 * A whole file mapped into memory (private copy-on-write: writing into a view changes this
 * process's copy of the page, never the file). `buffer(offset, length)` exposes any range as an
 * ArrayBuffer without copying. `dispose()` (or `using`) detaches every ArrayBuffer handed out, so
 * views kept past it read as empty, then unmaps; a native job still reading the memory delays the
 * unmap to its end. Without dispose() the mapping goes when the object and all its buffers are
 * garbage-collected.
 *
 * Opening errors carry `code` (ENOENT, EACCES, EISDIR, ERR_EMPTY_FILE, ERR_NOT_A_FILE) and `path`.
 * Truncating or rewriting the file in place while it is mapped would make reads of it crash the
 * process (SIGBUS past a new end) or change under the reader: checkUnchanged() (which every native
 * call runs on the mappings it reads) turns that into ERR_FILE_CHANGED. Replacing the file by a
 * rename, as saveSafetensors does, is safe: the mapping keeps the old bytes.
 */
export class MappedFile implements Disposable, AsyncDisposable {
  private readonly handle: NativeMappedFile

  constructor(path: string) {
    if (typeof path !== 'string') throw new TypeError(`MappedFile: 'path' must be a string, got ${typeof path}`)
    this.handle = new NativeMappedFile(path)
  }

  get path(): string {
    return this.handle.path
  }
  get byteLength(): number {
    return this.handle.byteLength
  }
  get disposed(): boolean {
    return this.handle.disposed
  }

  /**
   * The bytes [offset, offset + length) as an ArrayBuffer over the mapping. Each call makes a new
   * ArrayBuffer (cache it). One ArrayBuffer is limited to buffer.constants.MAX_LENGTH (4 GiB on
   * Node 20): map larger files piecewise.
   */
  buffer(offset = 0, length = this.byteLength - offset): ArrayBuffer {
    if (length > bufferConstants.MAX_LENGTH)
      throw Object.assign(
        new RangeError(
          `MappedFile: ${length} bytes of '${this.path}' exceed the largest ArrayBuffer Node ${process.versions.node} ` +
            `can create over external memory (${bufferConstants.MAX_LENGTH}); ask for a smaller range`,
        ),
        { code: 'ERR_OUT_OF_RANGE' },
      )
    return this.handle.buffer(offset, length)
  }

  /** The bytes [offset, offset + length) as a Uint8Array over the mapping. */
  bytes(offset = 0, length = this.byteLength - offset): Uint8Array {
    return new Uint8Array(this.buffer(offset, length))
  }

  /**
   * Throws an Error with code ERR_FILE_CHANGED (and `path`) when the file was truncated or
   * rewritten in place since it was mapped: reading a view then could crash the process (SIGBUS).
   * Native calls check by themselves; JS code that reads views in bulk calls this first. A file
   * replaced by a rename is no change: the mapping keeps the old file's bytes.
   */
  checkUnchanged(): void {
    this.handle.checkUnchanged()
  }

  /** Detaches every ArrayBuffer this file handed out and unmaps it. Idempotent. */
  dispose(): void {
    this.handle.dispose()
  }
  [Symbol.dispose](): void {
    this.dispose()
  }
  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose()
  }
}
