// bf16 / f16 / f32 conversions of weight arrays, rounding as the engine's kernels do.

/** bf16 bits -> f32. */
export function bf16ToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length)
  const u = new Uint32Array(out.buffer)
  for (let i = 0; i < src.length; i++) u[i] = src[i] << 16
  return out
}

/** f32 -> bf16 bits, rounding to nearest even as the engine's kernels do (NaN kept quiet). */
export function f32ToBf16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length)
  for (let i = 0; i < src.length; i++) {
    const x = u[i]
    out[i] = (x & 0x7fffffff) > 0x7f800000 ? (x >>> 16) | 0x40 : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff
  }
  return out
}

// f16 bits -> bf16 bits (through f32; exact for every f16 value but subnormal rounding).
export function f16ToBf16(src: Uint16Array): Uint16Array {
  const out = new Uint16Array(src.length)
  const f = new Float32Array(1)
  const u = new Uint32Array(f.buffer)
  for (let i = 0; i < src.length; i++) {
    const h = src[i]
    const sign = (h & 0x8000) << 16
    const exp = (h >> 10) & 0x1f
    const man = h & 0x3ff
    if (exp === 0) f[0] = (man / 1024) * 2 ** -14 * (sign ? -1 : 1)
    else if (exp === 31) u[0] = sign | 0x7f800000 | (man << 13)
    else u[0] = sign | ((exp + 112) << 23) | (man << 13)
    const x = u[0]
    out[i] = (x & 0x7fffffff) > 0x7f800000 ? (x >>> 16) | 0x40 : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff
  }
  return out
}
