// One file from the hub into the cache: resumable (HTTP Range from blobs/<etag>.incomplete),
// verified against the hub's record (size; sha256 for LFS files, git blob sha1 for the rest),
// reported (onProgress), abortable (AbortSignal), and locked against a concurrent download of
// the same blob. The listing it verifies against is api.ts's paths-info. (@huggingface/hub, once
// used for the listing, downloads whole files only: no resume, size cap or check.)
import { createHash, type Hash } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { exists, linkSnapshotFile, sleep, withLock } from './cache'
import { HubError } from './errors'

export interface DownloadProgress {
  repo: string
  /** The file's name in the repo. */
  file: string
  /** Bytes present so far (a resumed download starts at what was already on disk). */
  loaded: number
  total: number
  /** 'cached': already in the cache, nothing fetched; 'downloading': bytes arriving; 'done': verified and in place. */
  status: 'cached' | 'downloading' | 'done'
}

/** What the hub's file listing says about one file. */
export interface RemoteFile {
  path: string
  size: number
  /** Git blob sha1 (of the LFS pointer, for an LFS file). */
  oid?: string
  lfs?: { oid: string; size: number }
}

export interface DownloadContext {
  repo: string
  /** <cache>/models--org--name */
  storage: string
  cacheDir: string
  endpoint: string
  commit: string
  /** fetch with the token and the signal applied. */
  fetch: typeof fetch
  signal?: AbortSignal
  onProgress?: (p: DownloadProgress) => void
  retries: number
}

/** The blob name (= etag) and how to check the bytes. */
function expectation(ctx: DownloadContext, f: RemoteFile): { etag: string; size: number; hash: () => Hash; algorithm: string } {
  if (f.lfs) {
    if (!/^[0-9a-f]{64}$/.test(f.lfs.oid))
      throw new HubError('ERR_HUB_RESPONSE', `${ctx.repo}: the hub lists ${f.path} as LFS without a sha256 (${f.lfs.oid})`, { repo: ctx.repo, file: f.path })
    return { etag: f.lfs.oid, size: f.lfs.size, hash: () => createHash('sha256'), algorithm: 'sha256' }
  }
  if (!f.oid || !/^[0-9a-f]{40}$/.test(f.oid))
    throw new HubError('ERR_HUB_RESPONSE', `${ctx.repo}: the hub lists ${f.path} without a git object id`, { repo: ctx.repo, file: f.path })
  const size = f.size
  return { etag: f.oid, size, hash: () => createHash('sha1').update(`blob ${size}\0`), algorithm: 'git blob sha1' }
}

function resolveUrl(ctx: DownloadContext, file: string): string {
  return `${ctx.endpoint}/${ctx.repo}/resolve/${ctx.commit}/${file.split('/').map(encodeURIComponent).join('/')}`
}

/** Makes snapshots/<commit>/<file> available, downloading its blob unless the cache has it. */
export async function ensureFile(ctx: DownloadContext, f: RemoteFile): Promise<string> {
  const pointer = path.join(ctx.storage, 'snapshots', ctx.commit, f.path)
  const { etag, size, hash, algorithm } = expectation(ctx, f)
  if (await exists(pointer)) {
    ctx.onProgress?.({ repo: ctx.repo, file: f.path, loaded: size, total: size, status: 'cached' })
    return pointer
  }
  const blob = path.join(ctx.storage, 'blobs', etag)
  const lock = path.join(ctx.cacheDir, '.locks', path.basename(ctx.storage), `${etag}.node.lock`)
  await fs.promises.mkdir(path.dirname(blob), { recursive: true })
  await withLock(lock, ctx.signal, async () => {
    const present = await fs.promises.stat(blob).catch(() => undefined)
    if (present?.size === size) {
      ctx.onProgress?.({ repo: ctx.repo, file: f.path, loaded: size, total: size, status: 'cached' })
      return
    }
    await fetchBlob(ctx, f, blob, size, hash, algorithm)
    ctx.onProgress?.({ repo: ctx.repo, file: f.path, loaded: size, total: size, status: 'done' })
  })
  await linkSnapshotFile(blob, pointer)
  return pointer
}

// Errors worth another attempt from where the bytes stopped: the connection, not the content.
function retryable(err: unknown): boolean {
  if (err instanceof HubError) return err.code === 'ERR_HUB_NETWORK' || err.code === 'ERR_HUB_TIMEOUT'
  return err instanceof TypeError || (err as { code?: string })?.code === 'ECONNRESET'
}

async function fetchBlob(
  ctx: DownloadContext,
  f: RemoteFile,
  blob: string,
  size: number,
  newHash: () => Hash,
  algorithm: string,
): Promise<void> {
  const incomplete = `${blob}.incomplete`
  const url = resolveUrl(ctx, f.path)
  const details = { repo: ctx.repo, file: f.path }
  let hash = newHash()
  for (let attempt = 0; ; attempt++) {
    ctx.signal?.throwIfAborted()
    // What is already on disk (from an earlier attempt or run) is kept and hashed again.
    let offset = (await fs.promises.stat(incomplete).catch(() => undefined))?.size ?? 0
    if (offset > size) {
      await fs.promises.rm(incomplete, { force: true })
      offset = 0
    }
    hash = newHash()
    if (offset > 0) for await (const chunk of fs.createReadStream(incomplete, { end: offset - 1 })) hash.update(chunk as Buffer)
    try {
      if (offset < size) {
        await checkFreeSpace(ctx, f, path.dirname(incomplete), size - offset)
        const response = await ctx.fetch(url, {
          headers: { 'Accept-Encoding': 'identity', ...(offset > 0 ? { Range: `bytes=${offset}-` } : {}) },
        })
        if (response.status === 401 || response.status === 403)
          throw new HubError('ERR_HUB_AUTH', `${ctx.repo}: ${f.path}: HTTP ${response.status}; the repo may be private or gated (set HF_TOKEN)`, details)
        if (response.status === 404) throw new HubError('ERR_HUB_NOT_FOUND', `${ctx.repo}: ${f.path} not found at ${ctx.commit}`, details)
        if (response.status >= 500 || response.status === 429)
          throw new HubError('ERR_HUB_NETWORK', `${ctx.repo}: ${f.path}: HTTP ${response.status} from ${url}`, details)
        let start = 0
        if (response.status === 206) {
          const range = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(response.headers.get('content-range') ?? '')
          start = range ? Number(range[1]) : -1
        } else if (response.status !== 200) {
          throw new HubError('ERR_HUB_HTTP', `${ctx.repo}: ${f.path}: unexpected HTTP ${response.status} from ${url}`, details)
        }
        if (start !== offset) {
          // The server ignored the Range or answered another one: start over.
          if (start !== 0) {
            await response.body?.cancel()
            throw new HubError('ERR_HUB_NETWORK', `${ctx.repo}: ${f.path}: asked for bytes from ${offset}, got a range starting at ${start}`, details)
          }
          offset = 0
          hash = newHash()
        }
        await receive(ctx, f, response, incomplete, offset, size, hash)
      }
      break
    } catch (err) {
      if (ctx.signal?.aborted) throw ctx.signal.reason
      if (!retryable(err) || attempt >= ctx.retries) {
        if (!retryable(err)) throw err
        throw new HubError(
          err instanceof HubError ? err.code : 'ERR_HUB_NETWORK',
          `${ctx.repo}: downloading ${f.path} failed after ${attempt + 1} attempt(s): ${(err as Error).message}` +
            (((err as Error).cause as Error | undefined)?.message ? ` (${((err as Error).cause as Error).message})` : '') +
            '; run again to resume from what was received',
          { ...details, cause: err },
        )
      }
      await sleep(Math.min(2000, 100 * 2 ** attempt), ctx.signal)
    }
  }

  const actualSize = (await fs.promises.stat(incomplete)).size
  const digest = hash.digest('hex')
  const expected = path.basename(blob)
  if (actualSize !== size || digest !== expected) {
    await fs.promises.rm(incomplete, { force: true })
    throw new HubError(
      'ERR_HUB_VERIFY',
      `${ctx.repo}: ${f.path} failed verification (${actualSize} bytes, ${algorithm} ${digest}; the hub lists ${size} bytes, ${expected}); ` +
        'the download was discarded',
      details,
    )
  }
  await fs.promises.rename(incomplete, blob)
}

/** Refuses a download the cache's disk cannot hold, before any byte of it is written. */
async function checkFreeSpace(ctx: DownloadContext, f: RemoteFile, dir: string, needed: number): Promise<void> {
  const disk = await fs.promises.statfs(dir).catch(() => undefined)
  if (!disk) return // statfs unsupported here: the write itself will fail with ENOSPC
  const free = disk.bavail * disk.bsize
  if (needed > free)
    throw new HubError(
      'ERR_HUB_NO_SPACE',
      `${ctx.repo}: ${f.path} needs ${needed} more bytes and ${dir} has ${free} free; free space or set HF_HUB_CACHE (or cacheDir) to a larger disk`,
      { repo: ctx.repo, file: f.path },
    )
}

/** Appends a response body to the partial file, hashing and reporting as it goes. */
async function receive(
  ctx: DownloadContext,
  f: RemoteFile,
  response: Response,
  incomplete: string,
  offset: number,
  size: number,
  hash: Hash,
): Promise<void> {
  const out = await fs.promises.open(incomplete, offset > 0 ? 'a' : 'w')
  let loaded = offset
  let failure: unknown
  try {
    ctx.onProgress?.({ repo: ctx.repo, file: f.path, loaded, total: size, status: 'downloading' })
    if (!response.body) throw new HubError('ERR_HUB_NETWORK', `${ctx.repo}: ${f.path}: empty response`, { repo: ctx.repo, file: f.path })
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      if (loaded + chunk.length > size) {
        await response.body.cancel().catch(() => undefined)
        throw new HubError('ERR_HUB_VERIFY', `${ctx.repo}: ${f.path}: the server sent more than the ${size} bytes the hub lists; discarded`, {
          repo: ctx.repo,
          file: f.path,
        })
      }
      for (let done = 0; done < chunk.length; ) done += (await out.write(chunk, done, chunk.length - done)).bytesWritten
      hash.update(chunk)
      loaded += chunk.length
      ctx.onProgress?.({ repo: ctx.repo, file: f.path, loaded, total: size, status: 'downloading' })
    }
  } catch (err) {
    failure = err
  } finally {
    await out.close()
  }
  if (failure) {
    if (failure instanceof HubError && failure.code === 'ERR_HUB_VERIFY') await fs.promises.rm(incomplete, { force: true })
    throw failure
  }
  if (loaded < size)
    throw new HubError('ERR_HUB_NETWORK', `${ctx.repo}: ${f.path}: the connection ended at byte ${loaded} of ${size}`, {
      repo: ctx.repo,
      file: f.path,
    })
}
