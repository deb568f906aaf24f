// The smallest and the largest of many numbers. Math.min(...xs) passes every element as an
// argument and throws a RangeError (call stack size) past about 100k of them: a long run's
// history, a large dataset's lengths.

/** The smallest value (Infinity for none, as Math.min()). */
export function minOf(values: Iterable<number>): number {
  let m = Infinity
  for (const v of values) if (v < m || Number.isNaN(v)) m = v
  return m
}

/** The largest value (-Infinity for none, as Math.max()). */
export function maxOf(values: Iterable<number>): number {
  let m = -Infinity
  for (const v of values) if (v > m || Number.isNaN(v)) m = v
  return m
}
