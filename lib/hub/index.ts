// Model sources: a local directory, or a Hugging Face hub id resolved to a snapshot directory of
// the shared HF cache (downloading what is missing), as transformers' from_pretrained does.
// The hub API calls (commit of a revision, file metadata) are api.ts; the resumable, verified
// download into the cache layout is download.ts.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { HubApiStatusError, pathsInfo, revisionCommit } from './api'
import { cachedCommit, isCommitHash, isSafeRelativePath, missingModelFiles, repoFolder, shardsOf, writeRef } from './cache'
import { ensureFile, type DownloadContext, type DownloadProgress, type RemoteFile } from './download'
import { HubError } from './errors'
import { hubCacheDir, hubEndpoint, hubOffline, hubTimeoutMs, hubToken } from './settings'
import { Watchdog } from './watchdog'

export { HubError, type HubErrorCode } from './errors'
export type { DownloadProgress } from './download'
export { hubCacheDir, hubEndpoint, hubToken, hfHome } from './settings'

export interface ResolveOptions {
  /** Branch, tag or commit hash. Default 'main'. */
  revision?: string
  /** The hub cache. Default: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir?: string
  /** The hub's base URL. Default: HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string
  /** Access token; `false` sends none. Default: HF_TOKEN, else the token file under HF_HOME. */
  token?: string | false
  /** Use only the cache. Default: HF_HUB_OFFLINE. */
  offline?: boolean
  /** More files to fetch when the repo has them (e.g. 'adapter_config.json'). */
  include?: string[]
  /** Called as each file's bytes arrive (and once for each file already cached). */
  onProgress?: (progress: DownloadProgress) => void
  signal?: AbortSignal
  /** Attempts after a dropped connection, per file, each resuming where the last stopped. Default 5. */
  retries?: number
  /** A request receiving nothing (no headers, no bytes) for this long is abandoned (and a download retried). Default: HF_HUB_DOWNLOAD_TIMEOUT seconds, else 30 s. */
  timeoutMs?: number
}

/** Tokenizer and generation files a model repo may ship; fetched when present. */
export const OPTIONAL_MODEL_FILES = [
  'tokenizer.json',
  'tokenizer.model',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'generation_config.json',
] as const

/** huggingface_hub's repo id rule: [namespace/]name of word characters, '-' and '.', no '--' or '..', at most 96 characters. */
export function isRepoId(id: string): boolean {
  return (
    id.length <= 96 &&
    /^([A-Za-z0-9_.-]+\/)?[A-Za-z0-9_.-]+$/.test(id) &&
    !id.includes('--') &&
    !id.includes('..') &&
    !id.split('/').some((part) => /^[-.]|[-.]$/.test(part))
  )
}

function looksLikePath(source: string): boolean {
  return /^(\.|\/|~|\\|[A-Za-z]:)/.test(source) || source.includes('\\') || source.split('/').length > 2
}

/**
 * A directory holding the model: `source` itself when it is a local directory, else the snapshot
 * of hub repo `source` in the HF cache, downloaded first where files are missing: config.json,
 * the tokenizer files the repo has, and model.safetensors or model.safetensors.index.json with its
 * shards. Offline (HF_HUB_OFFLINE or `offline`), or when the hub cannot be reached, a complete
 * cached snapshot is used and anything missing is named in the error.
 */
export async function resolveModel(source: string, options: ResolveOptions = {}): Promise<string> {
  if (typeof source !== 'string' || source === '')
    throw new HubError('ERR_HUB_INVALID_ARGUMENT', `resolveModel: source must be a directory or a hub id, got ${JSON.stringify(source)}`)
  const local = await fs.promises.stat(source).catch(() => undefined)
  if (local?.isDirectory()) return path.resolve(source)
  if (local) throw new HubError('ERR_HUB_INVALID_ARGUMENT', `resolveModel: ${source} is a file; expected a model directory or a hub id`)
  if (!isRepoId(source)) {
    if (looksLikePath(source)) throw new HubError('ERR_HUB_LOCAL_NOT_FOUND', `resolveModel: no such directory: ${path.resolve(source)}`)
    throw new HubError('ERR_HUB_INVALID_ARGUMENT', `resolveModel: ${JSON.stringify(source)} is neither a directory nor a valid hub id (org/name)`)
  }
  return resolveFromHub(source, options)
}

async function resolveFromHub(repo: string, options: ResolveOptions): Promise<string> {
  const { signal } = options
  signal?.throwIfAborted()
  const revision = options.revision ?? 'main'
  if (!isSafeRelativePath(revision)) throw new HubError('ERR_HUB_INVALID_ARGUMENT', `resolveModel: invalid revision ${JSON.stringify(revision)}`)
  const retries = options.retries ?? 5
  if (!Number.isInteger(retries) || retries < 0) throw new HubError('ERR_HUB_INVALID_ARGUMENT', 'resolveModel: retries must be a non-negative integer')
  const cacheDir = path.resolve(options.cacheDir ?? hubCacheDir())
  const storage = repoFolder(cacheDir, repo)
  const offline = hubOffline(options.offline)

  // The snapshot the cache holds for this revision, if it has everything a model needs.
  const fromCache = async (why: string, cause?: unknown): Promise<string> => {
    const commit = await cachedCommit(storage, revision)
    const code = offline ? 'ERR_HUB_OFFLINE_MISSING' : 'ERR_HUB_NETWORK'
    if (!commit)
      throw new HubError(code, `${why}, and ${cacheDir} holds no snapshot of ${repo} at revision '${revision}' (no ${path.join(storage, 'refs', revision)})`, { repo, cause })
    const snapshot = path.join(storage, 'snapshots', commit)
    const missing = await missingModelFiles(snapshot).catch((err: Error) => [`a readable index (${err.message})`])
    if (missing.length) throw new HubError(code, `${why}, and the cached snapshot ${snapshot} of ${repo} lacks ${missing.join(', ')}`, { repo, cause })
    return snapshot
  }

  if (offline) return fromCache(`offline (HF_HUB_OFFLINE or the offline option)`)
  // A commit hash names files that never change: a complete snapshot needs no network at all.
  if (isCommitHash(revision)) {
    const snapshot = path.join(storage, 'snapshots', revision)
    if ((await missingModelFiles(snapshot).catch(() => ['?'])).length === 0) return snapshot
  }

  const endpoint = hubEndpoint(options.endpoint)
  const token = hubToken(options.token)
  const timeoutMs = hubTimeoutMs(options.timeoutMs)
  const origin = new URL(endpoint).origin
  // The token goes to the hub only; redirects to other origins (the CDN) lose it, as fetch does.
  // Every request is watched: one that receives nothing for timeoutMs is abandoned.
  const hubFetch = (async (input: string | URL | Request, init: RequestInit = {}) => {
    const url = input instanceof Request ? input.url : String(input)
    const headers = new Headers(init.headers)
    if (token && new URL(url).origin === origin) headers.set('Authorization', `Bearer ${token}`)
    const watchdog = new Watchdog(timeoutMs, `${repo}: ${url}`, signal)
    try {
      return watchdog.watch(await fetch(input, { ...init, headers, signal: watchdog.signal }))
    } catch (err) {
      watchdog.stop()
      throw err
    }
  }) as typeof fetch

  const apiError = (err: unknown, what: string): never => {
    if (signal?.aborted) throw signal.reason
    if (err instanceof HubApiStatusError) {
      const status = err.status
      const msg = `${repo}: ${what}: HTTP ${status}: ${err.message}`
      if (status === 401 || status === 403)
        throw new HubError('ERR_HUB_AUTH', `${msg}. The repo may be private or gated: set HF_TOKEN (or pass token) to an access token that can read it`, {
          repo,
          cause: err,
        })
      if (status === 404) throw new HubError('ERR_HUB_NOT_FOUND', `${msg}. Check the repo id and revision '${revision}'`, { repo, cause: err })
      throw new HubError('ERR_HUB_HTTP', msg, { repo, cause: err })
    }
    throw new HubError('ERR_HUB_RESPONSE', `${repo}: ${what}: ${(err as Error).message}`, { repo, cause: err })
  }
  const isNetworkFailure = (err: unknown) => (err instanceof TypeError || (err instanceof HubError && err.code === 'ERR_HUB_TIMEOUT')) && !signal?.aborted

  let answered: unknown
  try {
    answered = await revisionCommit(hubFetch, endpoint, repo, revision)
  } catch (err) {
    if (isNetworkFailure(err)) return fromCache(`the hub at ${endpoint} could not be reached (${describe(err)})`, err)
    // A hub in trouble (5xx, rate limit) is treated like an unreachable one, as huggingface_hub does.
    if (err instanceof HubApiStatusError && (err.status >= 500 || err.status === 429))
      return fromCache(`the hub at ${endpoint} answered HTTP ${err.status}`, err)
    return apiError(err, `resolving revision '${revision}'`)
  }
  if (typeof answered !== 'string' || !isCommitHash(answered))
    throw new HubError('ERR_HUB_RESPONSE', `${repo}: the hub gave no commit hash for revision '${revision}'`, { repo })
  const commit = answered
  if (commit !== revision) await writeRef(storage, revision, commit)

  const ctx: DownloadContext = { repo, storage, cacheDir, endpoint, commit, fetch: hubFetch, signal, onProgress: options.onProgress, retries }
  // Metadata (size, sha256 / git oid) of the files that exist among `paths`; the hub skips the others.
  const describeFiles = async (paths: string[]): Promise<Map<string, RemoteFile>> => {
    try {
      const infos = await pathsInfo(hubFetch, endpoint, repo, commit, paths)
      const found = new Map<string, RemoteFile>()
      for (const i of infos) if (i.type === 'file' && paths.includes(i.path)) found.set(i.path, { path: i.path, size: i.size, oid: i.oid, lfs: i.lfs })
      return found
    } catch (err) {
      if (isNetworkFailure(err)) throw new HubError('ERR_HUB_NETWORK', `${repo}: the hub at ${endpoint} could not be reached (${describe(err)})`, { repo, cause: err })
      return apiError(err, 'listing files')
    }
  }

  const extra = (options.include ?? []).filter((f) => {
    if (!isSafeRelativePath(f)) throw new HubError('ERR_HUB_INVALID_ARGUMENT', `resolveModel: include: invalid file name ${JSON.stringify(f)}`)
    return true
  })
  const wanted = ['config.json', ...OPTIONAL_MODEL_FILES, ...extra, 'model.safetensors.index.json', 'model.safetensors']
  const remote = await describeFiles([...new Set(wanted)])
  if (!remote.has('config.json'))
    throw new HubError('ERR_HUB_MISSING_FILES', `${repo} (revision '${revision}') has no config.json: not a transformers model repo`, { repo })
  const index = remote.get('model.safetensors.index.json')
  const single = remote.get('model.safetensors')
  if (!index && !single)
    throw new HubError(
      'ERR_HUB_MISSING_FILES',
      `${repo} (revision '${revision}') has neither model.safetensors nor model.safetensors.index.json; only safetensors weights are supported`,
      { repo },
    )
  for (const name of ['config.json', ...OPTIONAL_MODEL_FILES, ...extra]) {
    const f = remote.get(name)
    if (f) await ensureFile(ctx, f)
  }
  if (single) {
    // transformers' order: the single file when a repo has both.
    await ensureFile(ctx, single)
  } else if (index) {
    const indexFile = await ensureFile(ctx, index)
    let shards: string[]
    try {
      shards = await shardsOf(indexFile)
    } catch (err) {
      throw new HubError('ERR_HUB_RESPONSE', `${repo}: ${(err as Error).message}`, { repo, file: index.path, cause: err })
    }
    const shardFiles = await describeFiles(shards)
    const absent = shards.filter((s) => !shardFiles.has(s))
    if (absent.length) throw new HubError('ERR_HUB_MISSING_FILES', `${repo}: the index names shards the repo lacks: ${absent.join(', ')}`, { repo })
    for (const shard of shards) await ensureFile(ctx, shardFiles.get(shard)!)
  }
  return path.join(storage, 'snapshots', commit)
}

function describe(err: unknown): string {
  const cause = (err as Error).cause as { code?: string; message?: string } | undefined
  return cause?.code ?? cause?.message ?? (err as Error).message
}
