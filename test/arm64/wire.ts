// How test/arm64/arm64.test.ts and the probe it runs under emulation (probe.ts) pass typed arrays
// in JSON: their bytes in base64, so that values cross exactly (both ends are little-endian).
const TYPES = { Float32Array, Float64Array, Uint16Array, Int32Array } as const
type TypeName = keyof typeof TYPES
type Typed = InstanceType<(typeof TYPES)[TypeName]>

interface Encoded {
  $typed: TypeName
  base64: string
}

/** JSON.stringify's replacer: the typed arrays above as { $typed, base64 }. */
export function replacer(_key: string, value: unknown): unknown {
  for (const name of Object.keys(TYPES) as TypeName[])
    if (value instanceof TYPES[name]) return { $typed: name, base64: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') }
  return value
}

/** JSON.parse's reviver: the typed arrays replacer encoded, back. */
export function reviver(_key: string, value: unknown): unknown {
  if (typeof value !== 'object' || value === null || !('$typed' in value)) return value
  const { $typed, base64 } = value as Encoded
  const bytes = Buffer.from(base64, 'base64')
  const Type = TYPES[$typed]
  const out: Typed = new Type(bytes.byteLength / Type.BYTES_PER_ELEMENT)
  Buffer.from(out.buffer).set(bytes)
  return out
}
