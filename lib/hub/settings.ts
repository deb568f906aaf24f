// Where the hub and its cache are, and who we are, read the way the Hugging Face libraries read
// them: HF_ENDPOINT, HF_HUB_CACHE (else HF_HOME/hub, else ~/.cache/huggingface/hub), HF_TOKEN
// (else the token file HF_TOKEN_PATH, else HF_HOME/token), HF_HUB_OFFLINE.
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { HubError } from './errors'

export const DEFAULT_ENDPOINT = 'https://huggingface.co'

// An access token is under 100 bytes; a token file of more is not one.
const MAX_TOKEN_FILE_BYTES = 64 << 10

// huggingface_hub's truthy spellings for boolean variables.
function envTrue(name: string): boolean {
  return ['1', 'ON', 'YES', 'TRUE'].includes((process.env[name] ?? '').trim().toUpperCase())
}

/** HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
export function hfHome(): string {
  if (process.env.HF_HOME) return expandHome(process.env.HF_HOME)
  return path.join(process.env.XDG_CACHE_HOME ? expandHome(process.env.XDG_CACHE_HOME) : path.join(os.homedir(), '.cache'), 'huggingface')
}

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? path.join(os.homedir(), p.slice(1)) : p
}

/** The hub cache directory: HF_HUB_CACHE, else the legacy HUGGINGFACE_HUB_CACHE, else HF_HOME/hub. */
export function hubCacheDir(): string {
  const dir = process.env.HF_HUB_CACHE || process.env.HUGGINGFACE_HUB_CACHE
  return dir ? expandHome(dir) : path.join(hfHome(), 'hub')
}

export function hubEndpoint(explicit?: string): string {
  const url = (explicit ?? process.env.HF_ENDPOINT ?? DEFAULT_ENDPOINT).trim()
  try {
    new URL(url)
  } catch {
    throw new HubError('ERR_HUB_INVALID_ARGUMENT', `the hub endpoint ${JSON.stringify(url)} is not a URL (HF_ENDPOINT or the endpoint option)`)
  }
  return url.replace(/\/+$/, '')
}

export function hubOffline(explicit?: boolean): boolean {
  return explicit ?? (envTrue('HF_HUB_OFFLINE') || envTrue('TRANSFORMERS_OFFLINE'))
}

/**
 * The access token: the explicit one; `false` for none; else HF_TOKEN (or the legacy
 * HUGGING_FACE_HUB_TOKEN); else the token file `huggingface-cli login` writes.
 */
export function hubToken(explicit?: string | false): string | undefined {
  if (explicit === false) return undefined
  if (typeof explicit === 'string') return explicit.trim() || undefined
  const fromEnv = (process.env.HF_TOKEN || process.env.HUGGING_FACE_HUB_TOKEN || '').trim()
  if (fromEnv) return fromEnv
  const file = process.env.HF_TOKEN_PATH ? expandHome(process.env.HF_TOKEN_PATH) : path.join(hfHome(), 'token')
  try {
    // Only a small regular file: a FIFO or a device named by HF_TOKEN_PATH would block or never end.
    const info = fs.statSync(file)
    if (!info.isFile() || info.size > MAX_TOKEN_FILE_BYTES) return undefined
    return fs.readFileSync(file, 'utf8').trim() || undefined
  } catch {
    return undefined
  }
}

/** How long a hub request may receive nothing before it is abandoned: HF_HUB_DOWNLOAD_TIMEOUT (seconds, as huggingface_hub reads it), else 30 s. */
export function hubTimeoutMs(explicit?: number): number {
  if (explicit !== undefined) {
    if (!(Number.isFinite(explicit) && explicit > 0)) throw new HubError('ERR_HUB_INVALID_ARGUMENT', `timeoutMs must be a positive number of milliseconds, got ${explicit}`)
    return explicit
  }
  const fromEnv = process.env.HF_HUB_DOWNLOAD_TIMEOUT?.trim()
  if (!fromEnv) return 30_000
  const seconds = Number(fromEnv)
  if (!(Number.isFinite(seconds) && seconds > 0)) throw new HubError('ERR_HUB_INVALID_ARGUMENT', `HF_HUB_DOWNLOAD_TIMEOUT must be a positive number of seconds, got ${JSON.stringify(fromEnv)}`)
  return seconds * 1000
}
