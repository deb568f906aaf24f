// The Hugging Face cache layout, shared with Python's huggingface_hub and transformers:
//   <cache>/models--<org>--<name>/
//     refs/<revision>            the commit hash a branch or tag last resolved to (no newline)
//     blobs/<etag>               file contents, named by sha256 (LFS files) or git blob sha1
//     snapshots/<commit>/<file>  relative symlinks into blobs/
import { parseJsonBytes } from '../io/json'
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { readSmallFile } from '../io/read'

const COMMIT = /^[0-9a-f]{40}$/

export function isCommitHash(revision: string): boolean {
  return COMMIT.test(revision)
}

export function repoFolder(cacheDir: string, repo: string): string {
  return path.join(cacheDir, `models--${repo.split('/').join('--')}`)
}

/** A repo file name that stays inside the directory it is joined to, on POSIX and Windows alike. */
export function isSafeRelativePath(name: string): boolean {
  if (name === '' || name.includes('\0')) return false
  const parts = name.split(/[\\/]/)
  return !parts.includes('..') && !name.startsWith('/') && !name.startsWith('\\') && !parts.some((p) => /^[a-zA-Z]:/.test(p))
}

export async function exists(p: string): Promise<boolean> {
  return fs.promises.stat(p).then(
    () => true,
    () => false,
  )
}

/** The commit a revision points at in the cache, if known. */
export async function cachedCommit(storage: string, revision: string): Promise<string | undefined> {
  if (isCommitHash(revision)) return revision
  try {
    const commit = (await readSmallFile(path.join(storage, 'refs', revision), 'config')).toString('utf8').trim()
    return isCommitHash(commit) ? commit : undefined
  } catch {
    return undefined
  }
}

/** Writes refs/<revision> atomically. */
export async function writeRef(storage: string, revision: string, commit: string): Promise<void> {
  const ref = path.join(storage, 'refs', revision)
  await fs.promises.mkdir(path.dirname(ref), { recursive: true })
  const tmp = `${ref}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  await fs.promises.writeFile(tmp, commit)
  await fs.promises.rename(tmp, ref)
}

/**
 * The files of a snapshot a model cannot do without that are absent: config.json and the weights
 * (model.safetensors, else model.safetensors.index.json and every shard it names).
 */
export async function missingModelFiles(snapshot: string): Promise<string[]> {
  const missing: string[] = []
  if (!(await exists(path.join(snapshot, 'config.json')))) missing.push('config.json')
  const index = path.join(snapshot, 'model.safetensors.index.json')
  if (await exists(path.join(snapshot, 'model.safetensors'))) return missing
  if (await exists(index)) {
    for (const shard of await shardsOf(index)) if (!(await exists(path.join(snapshot, shard)))) missing.push(shard)
  } else {
    missing.push('model.safetensors (or model.safetensors.index.json and its shards)')
  }
  return missing
}

/** The distinct shard files a safetensors index names, in order of first mention. */
export async function shardsOf(indexFile: string): Promise<string[]> {
  let index: unknown
  try {
    index = parseJsonBytes(await readSmallFile(indexFile, 'index'))
  } catch (err) {
    throw new Error(`${indexFile} is not valid JSON: ${(err as Error).message}`)
  }
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap))
    throw new Error(`${indexFile} has no "weight_map" object`)
  const shards = [...new Set(Object.values(weightMap))]
  for (const shard of shards)
    if (typeof shard !== 'string' || !isSafeRelativePath(shard)) throw new Error(`${indexFile} names an invalid shard ${JSON.stringify(shard)}`)
  return shards as string[]
}

/** Points snapshots/<commit>/<file> at its blob: a relative symlink, or a copy where links are not allowed. */
export async function linkSnapshotFile(blob: string, pointer: string): Promise<void> {
  await fs.promises.mkdir(path.dirname(pointer), { recursive: true })
  await fs.promises.rm(pointer, { force: true })
  try {
    await fs.promises.symlink(path.relative(path.dirname(pointer), blob), pointer)
  } catch (err) {
    // Windows without developer mode cannot symlink; huggingface_hub copies there too.
    if ((err as { code?: string }).code !== 'EPERM') throw err
    await fs.promises.copyFile(blob, pointer)
  }
}

/**
 * Runs `fn` holding an exclusive lock file (created with O_EXCL, holding "pid host"). A lock left
 * by a process that died is taken over; so is one from another host untouched for a minute (the
 * holder refreshes its mtime every 10 s).
 */
export async function withLock<T>(lockFile: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
  await fs.promises.mkdir(path.dirname(lockFile), { recursive: true })
  const host = os.hostname()
  for (;;) {
    signal?.throwIfAborted()
    try {
      await fs.promises.writeFile(lockFile, `${process.pid} ${host}`, { flag: 'wx' })
      break
    } catch (err) {
      if ((err as { code?: string }).code !== 'EEXIST') throw err
    }
    if (await isStale(lockFile, host)) {
      await fs.promises.rm(lockFile, { force: true })
      continue
    }
    await sleep(100, signal)
  }
  const heartbeat = setInterval(() => {
    const now = new Date()
    fs.utimes(lockFile, now, now, () => undefined)
  }, 10_000)
  heartbeat.unref()
  try {
    return await fn()
  } finally {
    clearInterval(heartbeat)
    await fs.promises.rm(lockFile, { force: true })
  }
}

async function isStale(lockFile: string, host: string): Promise<boolean> {
  let text: string
  let mtime: number
  try {
    text = (await readSmallFile(lockFile, 'config')).toString('utf8')
    mtime = (await fs.promises.stat(lockFile)).mtimeMs
  } catch {
    return false // gone already: the next attempt takes it
  }
  const [pid, owner] = text.split(' ')
  if (owner === host && /^\d+$/.test(pid)) {
    try {
      process.kill(Number(pid), 0)
      return false
    } catch (err) {
      return (err as { code?: string }).code === 'ESRCH'
    }
  }
  return Date.now() - mtime > 60_000
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason)
    const done = () => {
      signal?.removeEventListener('abort', abort)
      resolve()
    }
    const timer = setTimeout(done, ms)
    const abort = () => {
      clearTimeout(timer)
      reject(signal!.reason)
    }
    signal?.addEventListener('abort', abort, { once: true })
  })
}
