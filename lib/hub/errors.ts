export type HubErrorCode =
  | 'ERR_HUB_INVALID_ARGUMENT' // a source that is neither a directory nor a valid repo id, a bad option
  | 'ERR_HUB_LOCAL_NOT_FOUND' // a local path that does not exist
  | 'ERR_HUB_OFFLINE_MISSING' // offline (or the hub unreachable) and the cache lacks files
  | 'ERR_HUB_NETWORK' // the hub could not be reached, or the connection kept failing
  | 'ERR_HUB_AUTH' // 401/403: private or gated repo, missing or wrong token
  | 'ERR_HUB_NOT_FOUND' // 404: no such repo, revision or file
  | 'ERR_HUB_HTTP' // any other unexpected status
  | 'ERR_HUB_RESPONSE' // a reply that does not make sense (missing hashes, a bad index)
  | 'ERR_HUB_MISSING_FILES' // the repo lacks what a model needs (config.json, safetensors weights)
  | 'ERR_HUB_VERIFY' // a download whose size or hash differs from the hub's record
  | 'ERR_HUB_TIMEOUT' // a request that received nothing for the idle timeout
  | 'ERR_HUB_NO_SPACE' // the cache's disk has less free space than a file the hub lists

/** A failure to resolve or download a model; `code` says which, the message what to do about it. */
export class HubError extends Error {
  readonly code: HubErrorCode
  readonly repo: string | undefined
  readonly file: string | undefined
  constructor(code: HubErrorCode, message: string, details: { repo?: string; file?: string; cause?: unknown } = {}) {
    super(message, details.cause !== undefined ? { cause: details.cause } : undefined)
    this.name = 'HubError'
    this.code = code
    this.repo = details.repo
    this.file = details.file
  }
}
