// safetensors (https://github.com/huggingface/safetensors) read through a memory mapping, and
// written atomically. Layout: u64 little-endian header length N, N bytes of JSON header
// { "__metadata__"?: {string: string}, name: { dtype, shape, data_offsets: [begin, end] } },
// then the data area; offsets are relative to the start of the data area.
import { parseJsonBytes } from './json'
import { constants as bufferConstants } from 'node:buffer'
import * as fs from 'node:fs'
import { endianness } from 'node:os'
import * as path from 'node:path'
import { explainWriteFailure, temporarySibling } from './atomic'
import { FileCopy, type FileBytes } from './file-copy'
import { MappedFile } from './mmap'
import { readSmallFileSync } from './read'
import { pauseForTest } from './test-pause'

/** Element types this module reads and writes (all the byte-sized ones of the format). */
export type Dtype =
  | 'BOOL'
  | 'U8'
  | 'I8'
  | 'F8_E4M3'
  | 'F8_E5M2'
  | 'F8_E8M0'
  | 'U16'
  | 'I16'
  | 'F16'
  | 'BF16'
  | 'U32'
  | 'I32'
  | 'F32'
  | 'U64'
  | 'I64'
  | 'F64'

export type TensorArray =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array

type TensorArrayConstructor = {
  new (buffer: ArrayBuffer, byteOffset?: number, length?: number): TensorArray
  new (length: number): TensorArray
  readonly BYTES_PER_ELEMENT: number
}

// The typed array each dtype is viewed as. BF16 and F16 come as their raw 16-bit patterns (the
// engine's kernels take bf16 as Uint16Array); FP8 and BOOL as bytes.
const ARRAY_OF: Record<Dtype, TensorArrayConstructor> = {
  BOOL: Uint8Array,
  U8: Uint8Array,
  I8: Int8Array,
  F8_E4M3: Uint8Array,
  F8_E5M2: Uint8Array,
  F8_E8M0: Uint8Array,
  U16: Uint16Array,
  I16: Int16Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  U32: Uint32Array,
  I32: Int32Array,
  F32: Float32Array,
  U64: BigUint64Array,
  I64: BigInt64Array,
  F64: Float64Array,
}

/** Bytes per element of a dtype. */
export function dtypeSize(dtype: Dtype): number {
  return ARRAY_OF[dtype].BYTES_PER_ELEMENT
}
export function isDtype(x: unknown): x is Dtype {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(ARRAY_OF, x)
}

export interface TensorInfo {
  dtype: Dtype
  shape: number[]
  /** Offset of the first byte in `file` (absolute: the header is already counted). */
  byteOffset: number
  byteLength: number
  /** The file holding the tensor (one of the shards for a sharded set). */
  file: string
}

export type SafetensorsErrorCode =
  | 'ERR_SAFETENSORS_TRUNCATED' // shorter than its own header says
  | 'ERR_SAFETENSORS_HEADER' // header too large, not UTF-8 JSON, not an object, malformed entry
  | 'ERR_SAFETENSORS_DTYPE'
  | 'ERR_SAFETENSORS_SHAPE'
  | 'ERR_SAFETENSORS_OFFSETS' // byte length or data_offsets wrong, outside the data area
  | 'ERR_SAFETENSORS_OVERLAP'
  | 'ERR_SAFETENSORS_GAP' // bytes of the data area that no tensor explains (a gap, or a tail)
  | 'ERR_SAFETENSORS_METADATA'
  | 'ERR_SAFETENSORS_INDEX' // sharded index: malformed, or disagreeing with its shards
  | 'ERR_SAFETENSORS_NO_TENSOR' // view() of a name the file does not hold
  | 'ERR_SAFETENSORS_DISPOSED'
  | 'ERR_SAFETENSORS_ARGUMENT' // saveSafetensors given something it cannot write

/** A malformed file, or a request it cannot satisfy. `file` and (when one is at fault) `tensor` say where. */
export class SafetensorsError extends Error {
  readonly code: SafetensorsErrorCode
  readonly file: string
  readonly tensor: string | undefined
  constructor(code: SafetensorsErrorCode, file: string, message: string, tensor?: string) {
    super(`${file}${tensor !== undefined ? `: tensor '${tensor}'` : ''}: ${message}`)
    this.name = 'SafetensorsError'
    this.code = code
    this.file = file
    this.tensor = tensor
  }
}

/** A safetensors file or a sharded set, open for reading. */
export interface Safetensors extends Disposable, AsyncDisposable {
  /** The file, or the index file of a sharded set. */
  readonly path: string
  /** Every tensor by name (an object without prototype). */
  readonly tensors: Readonly<Record<string, TensorInfo>>
  /** `__metadata__` of the file (of the first shard for a set); empty if absent. */
  readonly metadata: Readonly<Record<string, string>>
  has(name: string): boolean
  /**
   * The tensor's elements, viewing the mapped file without a copy: Uint16Array for BF16/F16 (raw
   * bits), Float32Array for F32, Int32Array for I32, BigInt64Array for I64, Uint8Array for
   * BOOL/U8/FP8, and so on. The same array is returned on each call; it is private to this
   * process (writes never reach the file) and becomes empty after dispose().
   */
  view(name: string): TensorArray
  /**
   * Throws an Error with code ERR_FILE_CHANGED (and `path`) when a file of the set was truncated
   * or rewritten in place since it was opened: its views could crash the process (SIGBUS) or
   * change under the reader. Native calls check by themselves; read views in bulk after this.
   */
  checkUnchanged(): void
  /**
   * Reads the files into memory of this process's own and lets go of the mappings (call before
   * any view): afterwards nothing done to the files on disk reaches the tensors. Asynchronous,
   * in chunks; the memory is the files' size (the mapping shared the page cache).
   */
  readIntoMemory(): Promise<void>
  dispose(): void
}

// The reference implementation refuses headers above 100 MB; so do we, before parsing.
const MAX_HEADER_BYTES = 100_000_000

function assertLittleEndian(): void {
  if (endianness() !== 'LE') throw new Error('safetensors: big-endian hosts are not supported')
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x)
}

/** Parses and checks a header against a data area of `dataLength` bytes starting at `dataStart`. */
function parseHeader(
  file: string,
  headerText: string,
  dataStart: number,
  dataLength: number,
): { tensors: Record<string, TensorInfo>; metadata: Record<string, string> } {
  const fail = (code: SafetensorsErrorCode, msg: string, tensor?: string): never => {
    throw new SafetensorsError(code, file, msg, tensor)
  }
  let json: unknown
  try {
    json = JSON.parse(headerText)
  } catch (err) {
    fail('ERR_SAFETENSORS_HEADER', `the header is not valid JSON (${(err as Error).message})`)
  }
  if (!isPlainObject(json)) fail('ERR_SAFETENSORS_HEADER', 'the header is not a JSON object')
  const header = json as Record<string, unknown>

  const metadata: Record<string, string> = Object.create(null)
  const tensors: Record<string, TensorInfo> = Object.create(null)
  const ranges: { name: string; begin: number; end: number }[] = []
  for (const name of Object.keys(header)) {
    const entry = header[name]
    if (name === '__metadata__') {
      if (entry === null) continue
      if (!isPlainObject(entry)) fail('ERR_SAFETENSORS_METADATA', '__metadata__ must be an object of strings')
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string')
          fail('ERR_SAFETENSORS_METADATA', `__metadata__['${k}'] must be a string, got ${JSON.stringify(v)}`)
        metadata[k] = v as string
      }
      continue
    }
    if (!isPlainObject(entry)) fail('ERR_SAFETENSORS_HEADER', 'the entry is not an object', name)
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>
    if (!isDtype(dtype)) fail('ERR_SAFETENSORS_DTYPE', `unknown or unsupported dtype ${JSON.stringify(dtype)}`, name)
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      fail('ERR_SAFETENSORS_SHAPE', `shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`, name)
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offsets[0] > offsets[1]
    )
      fail('ERR_SAFETENSORS_OFFSETS', `data_offsets must be [begin, end] with 0 <= begin <= end, got ${JSON.stringify(offsets)}`, name)
    const dims = shape as number[]
    const [begin, end] = offsets as [number, number]
    const size = dtypeSize(dtype as Dtype)
    // Past 2^53 the product is inexact, but then it exceeds any safe-integer byte count anyway.
    const elements = dims.includes(0) ? 0 : dims.reduce((p, d) => p * d, 1)
    const expected = elements * size
    if (end - begin !== expected)
      fail(
        'ERR_SAFETENSORS_OFFSETS',
        `holds ${end - begin} bytes, but shape [${dims.join(', ')}] of ${dtype} needs ${expected}`,
        name,
      )
    if (end > dataLength)
      fail('ERR_SAFETENSORS_OFFSETS', `data_offsets [${begin}, ${end}] run past the data area (${dataLength} bytes)`, name)
    tensors[name] = { dtype: dtype as Dtype, shape: dims.slice(), byteOffset: dataStart + begin, byteLength: end - begin, file }
    ranges.push({ name, begin, end })
  }
  // The tensors must tile the data area exactly, as the reference implementation requires: a
  // byte no tensor explains means the header and the data disagree (a header length one byte
  // short reads every tensor shifted by one), and shared bytes mean two tensors alias.
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end)
  let covered = 0
  let last: (typeof ranges)[number] | undefined
  for (const cur of ranges) {
    if (cur.begin < covered)
      fail('ERR_SAFETENSORS_OVERLAP', `data_offsets [${cur.begin}, ${cur.end}] overlap tensor '${last!.name}' at [${last!.begin}, ${last!.end}]`, cur.name)
    if (cur.begin > covered)
      fail('ERR_SAFETENSORS_GAP', `data_offsets [${cur.begin}, ${cur.end}] leave bytes [${covered}, ${cur.begin}) of the data area to no tensor`, cur.name)
    covered = cur.end
    last = cur
  }
  if (covered !== dataLength)
    fail('ERR_SAFETENSORS_GAP', `the data area holds ${dataLength} bytes but the tensors cover ${covered}: the header length or the offsets are wrong, or bytes were appended`)
  return { tensors, metadata }
}

class SafetensorsFile implements Safetensors {
  readonly path: string
  readonly tensors: Readonly<Record<string, TensorInfo>>
  readonly metadata: Readonly<Record<string, string>>
  #file: FileBytes
  readonly #views = new Map<string, TensorArray>()
  #whole: ArrayBuffer | undefined

  constructor(file: string) {
    assertLittleEndian()
    this.path = file
    try {
      this.#file = new MappedFile(file)
    } catch (err) {
      if ((err as { code?: string }).code === 'ERR_EMPTY_FILE')
        throw new SafetensorsError('ERR_SAFETENSORS_TRUNCATED', file, 'the file is empty (at least an 8-byte header length is needed)')
      throw err
    }
    try {
      const size = this.#file.byteLength
      if (size < 8)
        throw new SafetensorsError('ERR_SAFETENSORS_TRUNCATED', file, `${size} bytes: too short to hold the 8-byte header length`)
      const n = new DataView(this.#file.buffer(0, 8)).getBigUint64(0, true)
      if (n > BigInt(MAX_HEADER_BYTES))
        throw new SafetensorsError('ERR_SAFETENSORS_HEADER', file, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`)
      const headerLength = Number(n)
      if (8 + headerLength > size)
        throw new SafetensorsError(
          'ERR_SAFETENSORS_TRUNCATED',
          file,
          `header length ${headerLength} runs past the end of the ${size}-byte file`,
        )
      const headerBytes = this.#file.bytes(8, headerLength)
      if (headerBytes[0] !== 0x7b) throw new SafetensorsError('ERR_SAFETENSORS_HEADER', file, 'the header does not start with "{"')
      let text: string
      try {
        text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes)
      } catch {
        throw new SafetensorsError('ERR_SAFETENSORS_HEADER', file, 'the header is not valid UTF-8')
      }
      const parsed = parseHeader(file, text, 8 + headerLength, size - 8 - headerLength)
      this.tensors = parsed.tensors
      this.metadata = parsed.metadata
    } catch (err) {
      this.#file.dispose()
      throw err
    }
  }

  has(name: string): boolean {
    return Object.prototype.hasOwnProperty.call(this.tensors, name)
  }

  /** Swaps the mapping for a private copy of the file (before any view is handed out). */
  async readIntoMemory(): Promise<void> {
    if (this.#views.size > 0) throw new Error(`safetensors: ${this.path}: readIntoMemory() after view()`)
    const copy = await FileCopy.read(this.path, this.#file.byteLength)
    // What was validated is what was copied: the mapped file has not changed meanwhile.
    this.#file.checkUnchanged()
    this.#file.dispose()
    this.#file = copy
    this.#whole = undefined
  }

  view(name: string): TensorArray {
    if (this.#file.disposed) throw new SafetensorsError('ERR_SAFETENSORS_DISPOSED', this.path, 'view() after dispose()', name)
    const cached = this.#views.get(name)
    if (cached) return cached
    if (!this.has(name)) throw new SafetensorsError('ERR_SAFETENSORS_NO_TENSOR', this.path, 'no such tensor', name)
    const info = this.tensors[name]
    const Ctor = ARRAY_OF[info.dtype]
    const count = info.byteLength / Ctor.BYTES_PER_ELEMENT
    let view: TensorArray
    if (info.byteLength === 0) {
      view = new Ctor(0)
    } else if (info.byteOffset % Ctor.BYTES_PER_ELEMENT === 0) {
      // The mapping starts on a page boundary, so the view's memory is aligned for its type. One
      // ArrayBuffer over the whole file serves every tensor: V8 accounts each large external
      // ArrayBuffer as memory pressure, and one per tensor triggers a garbage collection storm
      // (60 ms instead of 1 ms for a 720 MB checkpoint). Past the largest ArrayBuffer Node allows
      // (4 GiB on Node 20), each tensor gets its own.
      if (this.#file.byteLength <= bufferConstants.MAX_LENGTH) {
        this.#whole ??= this.#file.buffer()
        view = new Ctor(this.#whole, info.byteOffset, count)
      } else {
        view = new Ctor(this.#file.buffer(info.byteOffset, info.byteLength), 0, count)
      }
    } else {
      // A misaligned tensor (no writer we know of makes one: HF's pads the header to 8 bytes and
      // orders tensors by element size). JS would accept the unaligned memory, but native kernels
      // read it as aligned, so this one tensor is copied.
      view = new Ctor(count)
      new Uint8Array(view.buffer).set(this.#file.bytes(info.byteOffset, info.byteLength))
    }
    this.#views.set(name, view)
    return view
  }

  checkUnchanged(): void {
    this.#file.checkUnchanged()
  }

  dispose(): void {
    this.#views.clear()
    this.#whole = undefined
    this.#file.dispose()
  }
  [Symbol.dispose](): void {
    this.dispose()
  }
  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose()
  }
}

/** model.safetensors.index.json and its shards, read as one set of tensors. */
class ShardedSafetensors implements Safetensors {
  readonly path: string
  readonly tensors: Readonly<Record<string, TensorInfo>>
  readonly metadata: Readonly<Record<string, string>>
  /** The index's own `metadata` (e.g. `total_size`), as written. */
  readonly indexMetadata: Readonly<Record<string, unknown>>
  readonly #shards: SafetensorsFile[] = []
  readonly #shardOf: Record<string, SafetensorsFile> = Object.create(null)

  constructor(indexPath: string) {
    this.path = indexPath
    const fail = (msg: string, tensor?: string): never => {
      throw new SafetensorsError('ERR_SAFETENSORS_INDEX', indexPath, msg, tensor)
    }
    let index: unknown
    try {
      index = parseJsonBytes(readSmallFileSync(indexPath, 'index'))
    } catch (err) {
      if ((err as { code?: string }).code) throw err // the reader's or the file system's own error (ENOENT...)
      fail(`not valid JSON (${(err as Error).message})`)
    }
    if (!isPlainObject(index) || !isPlainObject(index.weight_map)) fail('expected an object with a "weight_map" object')
    const { weight_map: weightMap, metadata } = index as { weight_map: Record<string, unknown>; metadata?: unknown }
    if (metadata !== undefined && metadata !== null && !isPlainObject(metadata)) fail('"metadata" must be an object')
    this.indexMetadata = (metadata as Record<string, unknown>) ?? {}

    const dir = path.dirname(indexPath)
    const byFile = new Map<string, SafetensorsFile>()
    const tensors: Record<string, TensorInfo> = Object.create(null)
    try {
      for (const [name, shard] of Object.entries(weightMap)) {
        if (typeof shard !== 'string' || shard === '') fail(`weight_map value must be a file name, got ${JSON.stringify(shard)}`, name)
        const file = shard as string
        // Shards live beside the index: no absolute paths, no way out of the directory.
        if (path.isAbsolute(file) || path.win32.isAbsolute(file) || file.split(/[\\/]/).includes('..'))
          fail(`shard '${file}' must be a relative path inside the index's directory`, name)
        let opened = byFile.get(file)
        if (!opened) {
          opened = new SafetensorsFile(path.join(dir, file))
          byFile.set(file, opened)
          this.#shards.push(opened)
        }
        if (!opened.has(name)) fail(`listed in shard '${file}', which does not hold it`, name)
      }
      // Every tensor of every shard, each in exactly one shard.
      for (const shard of this.#shards) {
        for (const name of Object.keys(shard.tensors)) {
          if (this.#shardOf[name]) fail(`held by both '${this.#shardOf[name].path}' and '${shard.path}'`, name)
          this.#shardOf[name] = shard
          tensors[name] = shard.tensors[name]
        }
      }
    } catch (err) {
      for (const shard of this.#shards) shard.dispose()
      throw err
    }
    this.tensors = tensors
    this.metadata = this.#shards[0]?.metadata ?? Object.create(null)
  }

  has(name: string): boolean {
    return Object.prototype.hasOwnProperty.call(this.tensors, name)
  }
  view(name: string): TensorArray {
    const shard = this.#shardOf[name]
    if (!shard) throw new SafetensorsError('ERR_SAFETENSORS_NO_TENSOR', this.path, 'no such tensor', name)
    return shard.view(name)
  }
  checkUnchanged(): void {
    for (const shard of this.#shards) shard.checkUnchanged()
  }
  async readIntoMemory(): Promise<void> {
    for (const shard of this.#shards) await shard.readIntoMemory()
  }
  dispose(): void {
    for (const shard of this.#shards) shard.dispose()
  }
  [Symbol.dispose](): void {
    this.dispose()
  }
  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose()
  }
}

/**
 * Opens a safetensors checkpoint through a memory mapping: a `.safetensors` file, a
 * `*.safetensors.index.json` (its shards as one set), or a directory holding model.safetensors
 * or else model.safetensors.index.json (transformers' order). The header is validated in full
 * before anything is returned; a malformed file throws SafetensorsError naming the file and tensor.
 */
export function openSafetensors(source: string): Safetensors {
  let file = source
  if (fs.statSync(source).isDirectory()) {
    const single = path.join(source, 'model.safetensors')
    file = fs.existsSync(single) ? single : path.join(source, 'model.safetensors.index.json')
  }
  return file.endsWith('.index.json') ? new ShardedSafetensors(file) : new SafetensorsFile(file)
}

export interface TensorToSave {
  dtype: Dtype
  shape: readonly number[]
  /** The elements in row-major order: the dtype's typed array (Uint16Array for BF16/F16), or raw bytes. */
  data: ArrayBufferView
}

/** The bytes of a safetensors file's header, padded with spaces so the data area starts 8-aligned. */
function encodeHeader(
  file: string,
  tensors: Record<string, TensorToSave>,
  metadata: Record<string, string> | undefined,
): { header: Buffer; order: string[] } {
  const fail = (msg: string, tensor?: string): never => {
    throw new SafetensorsError('ERR_SAFETENSORS_ARGUMENT', file, msg, tensor)
  }
  const header: Record<string, unknown> = Object.create(null) // a tensor may be called __proto__
  if (metadata !== undefined) {
    if (!isPlainObject(metadata)) fail('metadata must be an object of strings')
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== 'string') fail(`metadata['${k}'] must be a string`)
    header.__metadata__ = { ...metadata }
  }
  // Larger elements first (then by name), as HF's writer does: every offset stays aligned to its
  // element size.
  const order = Object.keys(tensors).sort((a, b) => {
    const d = dtypeSize(tensors[b].dtype) - dtypeSize(tensors[a].dtype)
    return d !== 0 ? d : a < b ? -1 : a > b ? 1 : 0
  })
  let offset = 0
  for (const name of order) {
    if (name === '__metadata__') fail('the name __metadata__ is reserved', name)
    const t = tensors[name]
    if (!isPlainObject(t)) fail('must be an object { dtype, shape, data }', name)
    if (!isDtype(t.dtype)) fail(`unknown dtype ${JSON.stringify(t.dtype)}`, name)
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      fail(`shape must be an array of non-negative integers, got ${JSON.stringify(t.shape)}`, name)
    if (!ArrayBuffer.isView(t.data)) fail('data must be a typed array', name)
    const Ctor = ARRAY_OF[t.dtype]
    if (!(t.data instanceof Ctor) && !(t.data instanceof Uint8Array))
      fail(`data for ${t.dtype} must be a ${Ctor.name} or raw bytes (Uint8Array), got ${t.data.constructor.name}`, name)
    const bytes = t.shape.reduce((p, d) => p * d, 1) * Ctor.BYTES_PER_ELEMENT
    if (t.data.byteLength !== bytes)
      fail(`data holds ${t.data.byteLength} bytes, shape [${t.shape.join(', ')}] of ${t.dtype} needs ${bytes}`, name)
    header[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes] }
    offset += bytes
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8')
  const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, 0x20)
  json.copy(padded)
  return { header: padded, order }
}

async function writeAll(fh: fs.promises.FileHandle, bytes: Uint8Array): Promise<void> {
  const CHUNK = 16 << 20 // one write(2) moves at most ~2 GiB; stay well below
  for (let done = 0; done < bytes.length; ) {
    const { bytesWritten } = await fh.write(bytes, done, Math.min(CHUNK, bytes.length - done))
    done += bytesWritten
  }
}

/**
 * Writes a safetensors file atomically: to a temporary file in the same directory, flushed to disk
 * (fsync), then renamed over `file`. A crash at any point leaves either the old file or the new one
 * at `file`, never a mix (a stray `.<name>.<pid>.<random>.tmp` can remain). Processes that have the
 * old file mapped keep reading the old contents.
 */
export async function saveSafetensors(
  file: string,
  tensors: Record<string, TensorToSave>,
  metadata?: Record<string, string>,
): Promise<void> {
  assertLittleEndian()
  if (!isPlainObject(tensors)) throw new SafetensorsError('ERR_SAFETENSORS_ARGUMENT', file, 'tensors must be an object of { dtype, shape, data }')
  const { header, order } = encodeHeader(file, tensors, metadata)
  const target = path.resolve(file)
  const dir = path.dirname(target)
  const tmp = temporarySibling(target)
  const previous = await fs.promises.stat(target).catch(() => undefined)
  const fh = await fs.promises.open(tmp, 'wx').catch((err) => {
    throw explainWriteFailure(err, target, previous && 'file')
  })
  let closed = false
  try {
    pauseForTest('safetensors:opened')
    const length = Buffer.alloc(8)
    length.writeBigUInt64LE(BigInt(header.length))
    await writeAll(fh, length)
    await writeAll(fh, header)
    for (const [i, name] of order.entries()) {
      const d = tensors[name].data
      await writeAll(fh, new Uint8Array(d.buffer, d.byteOffset, d.byteLength))
      if (i === 0) pauseForTest('safetensors:partial')
    }
    // An existing file keeps its permissions.
    if (previous) await fh.chmod(previous.mode & 0o7777)
    await fh.sync()
    await fh.close()
    closed = true
    pauseForTest('safetensors:synced')
    await fs.promises.rename(tmp, target)
    pauseForTest('safetensors:renamed')
  } catch (err) {
    if (!closed) await fh.close().catch(() => undefined)
    await fs.promises.unlink(tmp).catch(() => undefined)
    throw explainWriteFailure(err, target, previous && 'file')
  }
  // Make the rename itself durable. Directories cannot be opened for fsync on Windows: skip there.
  if (process.platform !== 'win32') {
    const d = await fs.promises.open(dir, 'r')
    try {
      await d.sync()
    } finally {
      await d.close()
    }
  }
}
