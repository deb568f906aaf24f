// Small files read whole (configs, tokenizers, the shard index): only regular files, each kind
// with a size cap, so a config.json that is /dev/zero, a FIFO or a 100 GB file is an error naming
// it instead of unbounded memory or a frozen process. Weights are never read this way: they are
// memory-mapped (mmap.ts), which refuses what is not a regular file with the same codes.
import * as fs from 'node:fs'
import { ErnieError } from '../errors'

const MiB = 1 << 20

/**
 * The largest file of each kind read whole, in bytes (the README's "Files and their limits" repeats
 * them). Each is several times the largest real file of its kind.
 */
export const FILE_SIZE_LIMITS = {
  /** config.json, adapter_config.json, hub refs and locks: a few KB in real use. */
  config: 1 * MiB,
  /** classifier.json: a few KB and the training's loss at every step (~65 bytes a step: 20 MB at 300k steps). */
  classifier: 256 * MiB,
  /** tokenizer_config.json, special_tokens_map.json, added_tokens.json: Qwen3's is 10 KB, Gemma 3's (6k added tokens) 1.2 MB. */
  'tokenizer-config': 16 * MiB,
  /** tokenizer.json: Qwen3's is 11 MB, Gemma 3's (262k tokens) 33 MB. */
  'tokenizer.json': 64 * MiB,
  /** tokenizer.model: ERNIE-4.5's (103k pieces) is under 2 MB, Gemma 3's (262k) under 5 MB. */
  'tokenizer.model': 32 * MiB,
  /** model.safetensors.index.json: DeepSeek-V3's (91k tensors) is under 10 MB. */
  index: 32 * MiB,
  /** trainer_state.json and pretrain_log.json: the example order (~8 bytes an example) and the loss history. */
  'training-state': 256 * MiB,
} as const

export type SmallFileKind = keyof typeof FILE_SIZE_LIMITS

/** A file that is not a regular file (EISDIR, ERR_NOT_A_FILE) or is past its kind's size cap (ERR_FILE_TOO_LARGE). */
export class FileError extends ErnieError {
  /** The file at fault. */
  readonly path: string
  constructor(code: 'EISDIR' | 'ERR_NOT_A_FILE' | 'ERR_FILE_TOO_LARGE', path: string, message: string) {
    super(code, `${path}: ${message}`)
    this.name = 'FileError'
    this.path = path
  }
}

// O_NONBLOCK: opening a FIFO that slipped past the stat (a path swapped in between) returns at once
// instead of waiting for a writer; the fstat of the open file then refuses it. (0 where absent: Windows.)
const OPEN_FLAGS = fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0)

function checkRegular(file: string, info: fs.Stats): void {
  if (info.isFile()) return
  if (info.isDirectory()) throw new FileError('EISDIR', file, 'is a directory, not a file')
  const what = info.isFIFO() ? 'a FIFO' : info.isCharacterDevice() ? 'a character device' : info.isBlockDevice() ? 'a block device' : info.isSocket() ? 'a socket' : 'not a regular file'
  throw new FileError('ERR_NOT_A_FILE', file, `is ${what}, not a regular file`)
}

function tooLarge(file: string, kind: SmallFileKind, size: number | undefined): FileError {
  const limit = FILE_SIZE_LIMITS[kind]
  const is = size === undefined ? 'grew past' : `is ${size} bytes, past`
  return new FileError('ERR_FILE_TOO_LARGE', file, `${is} the ${limit / MiB} MiB limit for a ${kind} file`)
}

// Reads into a buffer sized from fstat, growing (up to the cap plus one byte) if the file grows.
function initialBuffer(file: string, kind: SmallFileKind, info: fs.Stats): Buffer {
  checkRegular(file, info)
  if (info.size > FILE_SIZE_LIMITS[kind]) throw tooLarge(file, kind, info.size)
  return Buffer.allocUnsafe(info.size + 1)
}

function grown(buf: Buffer, file: string, kind: SmallFileKind): Buffer {
  const limit = FILE_SIZE_LIMITS[kind]
  if (buf.length > limit) throw tooLarge(file, kind, undefined)
  const next = Buffer.allocUnsafe(Math.min(limit + 1, buf.length * 2))
  buf.copy(next)
  return next
}

/**
 * @internal
 * A file opened for reading only if it is a regular file (stat before opening, fstat after, so a
 * device, FIFO or swapped path is refused with a FileError), for readers that stream it.
 */
export async function openRegularFile(file: string): Promise<fs.promises.FileHandle> {
  checkRegular(file, await fs.promises.stat(file))
  const handle = await fs.promises.open(file, OPEN_FLAGS)
  try {
    checkRegular(file, await handle.stat())
    return handle
  } catch (err) {
    await handle.close()
    throw err
  }
}

/**
 * @internal
 * A whole small file of a given kind: a regular file (stat before opening, fstat after, so a
 * device, FIFO or swapped path is refused) no larger than FILE_SIZE_LIMITS[kind]. Errors: FileError
 * (EISDIR, ERR_NOT_A_FILE, ERR_FILE_TOO_LARGE), or the file system's own (ENOENT, EACCES, ...).
 */
export async function readSmallFile(file: string, kind: SmallFileKind): Promise<Buffer> {
  const handle = await openRegularFile(file)
  try {
    let buf = initialBuffer(file, kind, await handle.stat())
    let n = 0
    for (;;) {
      if (n === buf.length) buf = grown(buf, file, kind)
      const { bytesRead } = await handle.read(buf, n, buf.length - n, n)
      if (bytesRead === 0) return buf.subarray(0, n)
      n += bytesRead
    }
  } finally {
    await handle.close()
  }
}

/**
 * @internal readSmallFile for synchronous callers (the same checks and caps). */
export function readSmallFileSync(file: string, kind: SmallFileKind): Buffer {
  checkRegular(file, fs.statSync(file))
  const fd = fs.openSync(file, OPEN_FLAGS)
  try {
    let buf = initialBuffer(file, kind, fs.fstatSync(fd))
    let n = 0
    for (;;) {
      if (n === buf.length) buf = grown(buf, file, kind)
      const bytesRead = fs.readSync(fd, buf, n, buf.length - n, n)
      if (bytesRead === 0) return buf.subarray(0, n)
      n += bytesRead
    }
  } finally {
    fs.closeSync(fd)
  }
}
