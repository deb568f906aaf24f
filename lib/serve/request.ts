// Reading and checking a POST /v1/classify body before anything reaches a model: a size limit
// while reading, JSON, then { text } or { texts } of non-empty strings and a known model.

/** A request refused with an HTTP status and a message (and a stable code for clients). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message)
  }
}

/** The body as text; HttpError 413 as soon as it passes `limit` bytes. */
export function readBody(req: import('node:http').IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'])
    if (declared > limit) return reject(new HttpError(413, 'ERR_BODY_TOO_LARGE', `the body is ${declared} bytes; the limit is ${limit}`))
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > limit) {
        req.removeAllListeners('data')
        req.resume()
        reject(new HttpError(413, 'ERR_BODY_TOO_LARGE', `the body passed ${limit} bytes, the limit`))
      } else chunks.push(chunk)
    })
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

export interface ClassifyRequest {
  model: string
  texts: string[]
  single: boolean
}

/** The parsed request, or HttpError 400/404 naming what is wrong. */
export function parseClassifyRequest(body: string, models: readonly string[]): ClassifyRequest {
  let json: unknown
  try {
    json = JSON.parse(body)
  } catch (e) {
    throw new HttpError(400, 'ERR_BAD_JSON', `the body is not JSON: ${(e as Error).message}`)
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new HttpError(400, 'ERR_BAD_REQUEST', 'the body must be a JSON object: {"text": "..."} or {"texts": ["...", ...]}')
  const o = json as Record<string, unknown>
  for (const k of Object.keys(o)) if (!['text', 'texts', 'model'].includes(k)) throw new HttpError(400, 'ERR_BAD_REQUEST', `unknown field "${k}" (expected text or texts, and model)`)
  if (('text' in o) === ('texts' in o)) throw new HttpError(400, 'ERR_BAD_REQUEST', 'give exactly one of "text" (a string) and "texts" (an array of strings)')
  const single = 'text' in o
  const texts = single ? [o.text] : o.texts
  if (!Array.isArray(texts)) throw new HttpError(400, 'ERR_BAD_REQUEST', '"texts" must be an array of strings')
  if (texts.length === 0) throw new HttpError(400, 'ERR_BAD_REQUEST', '"texts" is empty')
  texts.forEach((t, i) => {
    const where = single ? '"text"' : `"texts"[${i}]`
    if (typeof t !== 'string') throw new HttpError(400, 'ERR_BAD_REQUEST', `${where} must be a string, got ${t === null ? 'null' : typeof t}`)
    if (t.length === 0) throw new HttpError(400, 'ERR_BAD_REQUEST', `${where} is empty`)
  })
  let model = o.model
  if (model === undefined) {
    if (models.length > 1) throw new HttpError(400, 'ERR_BAD_REQUEST', `several models are served: name one with "model" (${models.join(', ')})`)
    model = models[0]
  }
  if (typeof model !== 'string') throw new HttpError(400, 'ERR_BAD_REQUEST', '"model" must be a string')
  if (!models.includes(model)) throw new HttpError(404, 'ERR_UNKNOWN_MODEL', `no model "${model}" here (${models.join(', ')})`)
  return { model, texts: texts as string[], single }
}
