// The suite's fuzz seed: fixed so that `npm test` runs the same cases each time; ERNIE_FUZZ_SEED
// varies it (and the CLI's --seed).
export const DEFAULT_SEED = 17

export function suiteSeed(): number {
  const s = process.env.ERNIE_FUZZ_SEED
  if (s === undefined || s === '') return DEFAULT_SEED
  const n = Number(s)
  if (!Number.isInteger(n)) throw new Error(`ERNIE_FUZZ_SEED must be an integer, got ${JSON.stringify(s)}`)
  return n
}
