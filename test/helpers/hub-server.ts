// A fake Hugging Face hub for hub.test.ts, on 127.0.0.1: the API routes resolveModel uses and
// hub-shaped file URLs, with the real hub's headers. LFS files (*.safetensors, *.model) redirect
// from /resolve/ to a second server, a "CDN" on another origin, as the hub redirects to its CDN.
// Faults on demand: a dropped connection, corrupted bytes, a slow stream, a required token.
import { createHash } from 'node:crypto'
import * as http from 'node:http'
import type { AddressInfo } from 'node:net'

export interface FakeRepo {
  id: string
  sha: string
  files: Record<string, Buffer>
}

export interface FakeHubOptions {
  /** Require `Authorization: Bearer <token>` on the hub (never on the CDN). */
  token?: string
  /** Files whose first body is cut off halfway (the socket destroyed). */
  dropOnce?: string[]
  /** Files served with one byte changed. */
  corrupt?: string[]
  /** Stream bodies in 16 KiB pieces, 2 ms apart. */
  slow?: boolean
  /** Answer every hub request with 503. */
  unavailable?: boolean
  /** Files whose body stops after 10 bytes, the connection left open (a server that hangs). */
  stall?: string[]
  /** Sizes the listing claims for files, whatever their bytes. */
  listedSizes?: Record<string, number>
}

export interface LoggedRequest {
  server: 'hub' | 'cdn'
  method: string
  path: string
  range?: string
  authorization?: string
}

export interface FakeHub {
  endpoint: string
  requests: LoggedRequest[]
  /** Body requests (GET /resolve/ on the hub for small files, GET on the CDN for LFS) for a file. */
  downloads(file: string): LoggedRequest[]
  close(): Promise<void>
}

const isLfs = (name: string) => name.endsWith('.safetensors') || name.endsWith('.model')
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')
export const gitBlobSha1 = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex')
const lfsPointer = (b: Buffer) => Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(b)}\nsize ${b.length}\n`)

export function fileEntry(name: string, bytes: Buffer) {
  if (!isLfs(name)) return { type: 'file', path: name, size: bytes.length, oid: gitBlobSha1(bytes) }
  const pointer = lfsPointer(bytes)
  return { type: 'file', path: name, size: bytes.length, oid: gitBlobSha1(pointer), lfs: { oid: sha256(bytes), size: bytes.length, pointerSize: pointer.length } }
}

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

export async function startFakeHub(repos: FakeRepo[], options: FakeHubOptions = {}): Promise<FakeHub> {
  const requests: LoggedRequest[] = []
  const dropped = new Set<string>()
  const byId = new Map(repos.map((r) => [r.id, r]))
  const byLfsOid = new Map<string, { name: string; bytes: Buffer }>()
  for (const r of repos) for (const [name, bytes] of Object.entries(r.files)) if (isLfs(name)) byLfsOid.set(sha256(bytes), { name, bytes })

  const json = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers })
    res.end(JSON.stringify(body))
  }

  // The file's bytes with Range support, and the requested faults.
  const serveBytes = async (req: http.IncomingMessage, res: http.ServerResponse, name: string, original: Buffer, headers: Record<string, string>) => {
    let bytes = original
    if (options.corrupt?.includes(name)) {
      bytes = Buffer.from(original)
      bytes[bytes.length >> 1] ^= 0x5a
    }
    let start = 0
    let end = bytes.length - 1
    let status = 200
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '')
    if (range) {
      start = Number(range[1])
      end = range[2] ? Math.min(Number(range[2]), end) : end
      if (start >= bytes.length) {
        res.writeHead(416, { 'Content-Range': `bytes */${bytes.length}` })
        return res.end()
      }
      status = 206
      headers['Content-Range'] = `bytes ${start}-${end}/${bytes.length}`
    }
    res.writeHead(status, { ...headers, 'Accept-Ranges': 'bytes', 'Content-Length': String(end - start + 1), 'Content-Type': 'application/octet-stream' })
    if (req.method === 'HEAD') return res.end()
    let body = bytes.subarray(start, end + 1)
    if (options.stall?.includes(name)) return void res.write(body.subarray(0, 10))
    if (options.dropOnce?.includes(name) && !dropped.has(name)) {
      dropped.add(name)
      body = body.subarray(0, body.length >> 1)
      res.write(body, () => setTimeout(() => res.socket?.destroy(), 20))
      return
    }
    if (options.slow) {
      for (let i = 0; i < body.length && !res.destroyed; i += 16384) {
        res.write(body.subarray(i, i + 16384))
        await new Promise((r) => setTimeout(r, 2))
      }
      return res.end()
    }
    res.end(body)
  }

  const cdn = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://x')
    requests.push({ server: 'cdn', method: req.method!, path: url.pathname, range: req.headers.range, authorization: req.headers.authorization })
    const m = /^\/lfs\/([0-9a-f]{64})$/.exec(url.pathname)
    const file = m && byLfsOid.get(m[1])
    if (!file) return json(res, 404, { error: 'no such object' })
    void serveBytes(req, res, file.name, file.bytes, { ETag: `"cdn-${m[1].slice(0, 12)}"` })
  })
  // Another port is another origin, as the real CDN is another host.
  const cdnUrl = await listen(cdn)

  const hub = http.createServer((req, res) => {
    const url = new URL(req.url!, 'http://x')
    requests.push({ server: 'hub', method: req.method!, path: url.pathname, range: req.headers.range, authorization: req.headers.authorization })
    if (options.unavailable) return json(res, 503, { error: 'Service Unavailable' })
    if (options.token && req.headers.authorization !== `Bearer ${options.token}`)
      return json(res, 401, { error: 'Invalid credentials in Authorization header' }, { 'X-Error-Code': 'GatedRepo' })
    const findRepo = (org: string, name: string, rev: string) => {
      const repo = byId.get(`${decodeURIComponent(org)}/${decodeURIComponent(name)}`)
      if (!repo) {
        json(res, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' })
        return undefined
      }
      if (decodeURIComponent(rev) !== 'main' && decodeURIComponent(rev) !== repo.sha) {
        json(res, 404, { error: `Invalid rev id: ${decodeURIComponent(rev)}` }, { 'X-Error-Code': 'RevisionNotFound' })
        return undefined
      }
      return repo
    }

    let m = /^\/api\/models\/([^/]+)\/([^/]+)\/revision\/([^/]+)$/.exec(url.pathname)
    if (m && req.method === 'GET') {
      const repo = findRepo(m[1], m[2], m[3])
      if (!repo) return
      const siblings = Object.entries(repo.files).map(([name, bytes]) => {
        const e = fileEntry(name, bytes)
        return { rfilename: name, size: e.size, blobId: e.oid, ...(e.lfs && { lfs: { sha256: e.lfs.oid, size: e.lfs.size, pointerSize: e.lfs.pointerSize } }) }
      })
      return json(res, 200, { _id: repo.sha.slice(0, 24), id: repo.id, sha: repo.sha, private: false, gated: false, downloads: 0, likes: 0, lastModified: '2026-11-01T00:00:00.000Z', siblings })
    }
    m = /^\/api\/models\/([^/]+)\/([^/]+)\/paths-info\/([^/]+)$/.exec(url.pathname)
    if (m && req.method === 'POST') {
      let body = ''
      req.on('data', (d) => (body += d))
      req.on('end', () => {
        const repo = findRepo(m![1], m![2], m![3])
        if (!repo) return
        const { paths } = JSON.parse(body) as { paths: string[] }
        const listed = (p: string) => {
          const e = fileEntry(p, repo.files[p])
          const size = options.listedSizes?.[p]
          return size === undefined ? e : { ...e, size, ...(e.lfs && { lfs: { ...e.lfs, size } }) }
        }
        json(res, 200, paths.filter((p) => p in repo.files).map(listed))
      })
      return
    }
    m = /^\/([^/]+)\/([^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname)
    if (m && (req.method === 'GET' || req.method === 'HEAD')) {
      const repo = findRepo(m[1], m[2], m[3])
      if (!repo) return
      const name = decodeURIComponent(m[4])
      const bytes = repo.files[name]
      if (!bytes) return json(res, 404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound', 'X-Repo-Commit': repo.sha })
      const e = fileEntry(name, bytes)
      if (e.lfs) {
        res.writeHead(302, {
          Location: `${cdnUrl}/lfs/${e.lfs.oid}`,
          ETag: `"${e.oid}"`,
          'X-Linked-Etag': `"${e.lfs.oid}"`,
          'X-Linked-Size': String(e.lfs.size),
          'X-Repo-Commit': repo.sha,
        })
        return res.end()
      }
      return void serveBytes(req, res, name, bytes, { ETag: `"${e.oid}"`, 'X-Repo-Commit': repo.sha })
    }
    json(res, 404, { error: `no route ${req.method} ${url.pathname}` })
  })
  const endpoint = await listen(hub)

  return {
    endpoint,
    requests,
    downloads: (file) =>
      requests.filter((r) =>
        r.method !== 'GET'
          ? false
          : isLfs(file)
            ? r.server === 'cdn' && byLfsOid.get(r.path.slice('/lfs/'.length))?.name === file
            : r.server === 'hub' && r.path.includes('/resolve/') && r.path.endsWith(`/${file}`),
      ),
    close: async () => {
      for (const s of [hub, cdn]) {
        s.closeAllConnections()
        await new Promise((resolve) => s.close(resolve))
      }
    },
  }
}
