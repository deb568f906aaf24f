// The two hub API calls resolution needs: the commit a revision names, and what the repo holds
// at that commit for a list of paths (size, git oid, LFS sha256). Both are one JSON request each
// (the endpoints huggingface_hub and @huggingface/hub call); the download itself is download.ts.

/** The hub answered with an error status. */
export class HubApiStatusError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

/** One entry of the hub's paths-info answer (type 'file' or 'directory'). */
export interface PathInfo {
  type: string
  path: string
  size: number
  oid?: string
  lfs?: { oid: string; size: number }
}

// An API answer is a few kilobytes; a hub (or something posing as one) sending more is refused
// rather than read into memory without bound.
const MAX_API_RESPONSE_BYTES = 8 << 20

/** The commit hash revision `revision` (branch, tag or hash) of model repo `repo` points at. */
export async function revisionCommit(fetchFn: typeof fetch, endpoint: string, repo: string, revision: string): Promise<unknown> {
  const url = `${endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}?expand=sha`
  const body = await requestJson(fetchFn, url, { headers: { Accept: 'application/json' } })
  return (body as { sha?: unknown } | null)?.sha
}

/** The hub's record of those of `paths` that exist in `repo` at `commit` (the others are left out). */
export async function pathsInfo(fetchFn: typeof fetch, endpoint: string, repo: string, commit: string, paths: string[]): Promise<PathInfo[]> {
  const url = `${endpoint}/api/models/${repo}/paths-info/${encodeURIComponent(commit)}`
  const body = await requestJson(fetchFn, url, {
    method: 'POST',
    headers: { Accept: 'application/json', 'Content-Type': 'application/json' },
    body: JSON.stringify({ paths, expand: true }),
  })
  if (!Array.isArray(body)) throw new Error('malformed paths-info answer: expected an array')
  return body.map((item: unknown, i) => {
    const e = item as Partial<PathInfo> | null
    if (!e || typeof e.path !== 'string' || typeof e.type !== 'string' || (e.type === 'file' && !(Number.isSafeInteger(e.size) && e.size! >= 0)))
      throw new Error(`malformed paths-info answer: entry ${i} lacks a path, type or size`)
    return { type: e.type, path: e.path, size: e.size ?? 0, oid: e.oid, lfs: e.lfs }
  })
}

async function requestJson(fetchFn: typeof fetch, url: string, init: RequestInit): Promise<unknown> {
  const response = await fetchFn(url, init)
  const text = await readCapped(response, url)
  if (!response.ok) {
    // The hub explains failures as JSON { error } (with an X-Error-Code header); anything else is shown as text.
    let detail = text.slice(0, 300)
    try {
      const parsed = JSON.parse(text) as { error?: unknown; message?: unknown }
      if (typeof parsed.error === 'string') detail = parsed.error
      else if (typeof parsed.message === 'string') detail = parsed.message
    } catch {
      /* not JSON: keep the text */
    }
    throw new HubApiStatusError(response.status, detail || response.statusText)
  }
  try {
    return JSON.parse(text)
  } catch {
    throw new Error(`the answer from ${url} is not JSON`)
  }
}

async function readCapped(response: Response, url: string): Promise<string> {
  const declared = Number(response.headers.get('content-length'))
  if (declared > MAX_API_RESPONSE_BYTES) {
    await response.body?.cancel()
    throw new Error(`the answer from ${url} is ${declared} bytes, more than the ${MAX_API_RESPONSE_BYTES} an API answer may be`)
  }
  if (!response.body) return ''
  const reader = response.body.getReader()
  const chunks: Uint8Array[] = []
  let total = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    total += value.byteLength
    if (total > MAX_API_RESPONSE_BYTES) {
      await reader.cancel().catch(() => undefined)
      throw new Error(`the answer from ${url} exceeds the ${MAX_API_RESPONSE_BYTES} bytes an API answer may be`)
    }
    chunks.push(value)
  }
  return new TextDecoder().decode(Buffer.concat(chunks))
}
