// Random benchmark inputs (speed, not statistics, matters here).
export function randomF32Fast(n: number, seed: number): Float32Array {
  const out = new Float32Array(n)
  let x = seed * 2654435761
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0
    out[i] = x / 4294967296 - 0.5
  }
  return out
}

export function randomBf16Fast(n: number, seed: number): Uint16Array {
  const f = randomF32Fast(n, seed)
  const u = new Uint32Array(f.buffer)
  const out = new Uint16Array(n)
  for (let i = 0; i < n; i++) out[i] = u[i] >>> 16
  return out
}
