// Async work over a list with a bounded number of calls in flight: the classifier keeps one
// single-threaded forward per core going this way.

/**
 * Runs work(item) for every item, at most `lanes` at once, each lane taking the next item when
 * its last one settles. After a failure no new item starts; the first error is thrown once the
 * running ones have settled.
 */
export async function runInLanes<T>(items: readonly T[], lanes: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  let failed = false
  let failure: unknown
  const lane = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const item = items[next++]
      try {
        await work(item)
      } catch (e) {
        if (!failed) failure = e
        failed = true
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(lanes, items.length)) }, lane))
  if (failed) throw failure
}
