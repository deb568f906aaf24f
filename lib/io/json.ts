// JSON files as the format defines them (RFC 8259 section 8.1: UTF-8, no byte order mark):
// bytes that are not UTF-8 are an error here, not U+FFFD characters quietly parsed into a value.

const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** The value a JSON file's bytes hold. Throws SyntaxError for invalid UTF-8 or JSON (a BOM included), with the reason. */
export function parseJsonBytes(bytes: Uint8Array): unknown {
  let text: string
  try {
    text = decoder.decode(bytes)
  } catch {
    throw new SyntaxError('not valid UTF-8')
  }
  return JSON.parse(text)
}
