// The batcher that coalesces concurrent predict calls (and the server's requests): batch sizes,
// order, splitting, the bounded queue, aborts and failures, against a run function of the test's.
import t from 'tap'
import { Batcher } from '../../lib/classifier/batcher'

/** A run function that doubles its inputs and records each batch. */
function recorder(delayMs = 0) {
  const batches: number[][] = []
  const run = async (items: number[]) => {
    batches.push([...items])
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs))
    return items.map((x) => x * 2)
  }
  return { batches, run }
}

t.test('concurrent single-item requests share full batches, in arrival order', async (t) => {
  const { batches, run } = recorder()
  const b = new Batcher(run, { maxBatch: 32 })
  const results = await Promise.all(Array.from({ length: 100 }, (_, i) => b.submit([i])))
  t.same(results, Array.from({ length: 100 }, (_, i) => [i * 2]), 'each caller gets its own output')
  t.same(batches.map((x) => x.length), [32, 32, 32, 4])
  t.same(batches.flat(), Array.from({ length: 100 }, (_, i) => i), 'in arrival order')
})

t.test('a request larger than a batch is split and resolves whole', async (t) => {
  const { batches, run } = recorder()
  const b = new Batcher(run, { maxBatch: 32 })
  const [big, small] = await Promise.all([b.submit(Array.from({ length: 70 }, (_, i) => i)), b.submit([1000])])
  t.same(big, Array.from({ length: 70 }, (_, i) => i * 2))
  t.same(small, [2000])
  t.same(batches.map((x) => x.length), [32, 32, 7], 'the small request rides in the last part')
})

t.test('maxWaitMs lets a later request join a batch that is not full', async (t) => {
  const { batches, run } = recorder()
  const b = new Batcher(run, { maxBatch: 8, maxWaitMs: 200 })
  const first = b.submit([1])
  await new Promise((r) => setTimeout(r, 20))
  const second = b.submit([2])
  t.same(await Promise.all([first, second]), [[2], [4]])
  t.same(batches, [[1, 2]], 'one batch')
})

t.test('the queue is bounded: a request past maxQueue is refused at once', async (t) => {
  const { run } = recorder(30)
  const b = new Batcher(run, { maxBatch: 2, maxQueue: 4 })
  const accepted = [b.submit([1, 2]), b.submit([3, 4])]
  await t.rejects(b.submit([5]), { code: 'ERR_QUEUE_FULL', message: /the queue holds 4 items, and 1 more would pass its limit of 4/ })
  t.same(await Promise.all(accepted), [[2, 4], [6, 8]])
  t.same(await b.submit([5]), [10], 'accepted again once the queue drained')
})

t.test('an aborted request leaves the queue; the others are untouched', async (t) => {
  const { batches, run } = recorder(20)
  const b = new Batcher(run, { maxBatch: 1 })
  const ac = new AbortController()
  const first = b.submit([1])
  const second = b.submit([2], ac.signal)
  const third = b.submit([3])
  ac.abort(new Error('stop'))
  await t.rejects(second, { message: 'stop' })
  t.same(await Promise.all([first, third]), [[2], [6]])
  t.same(batches, [[1], [3]], 'the aborted item never ran')
  await t.rejects(b.submit([4], AbortSignal.abort(new Error('already'))), { message: 'already' })
})

t.test('a failing batch rejects its requests; the next batch runs', async (t) => {
  let calls = 0
  const b = new Batcher(async (items: number[]) => {
    calls++
    if (items.includes(13)) throw new Error('unlucky')
    return items
  }, { maxBatch: 2 })
  const results = await Promise.allSettled([b.submit([12]), b.submit([13]), b.submit([14])])
  t.same(results.map((r) => r.status), ['rejected', 'rejected', 'fulfilled'])
  t.equal(calls, 2)
  b.close()
  await t.rejects(b.submit([1]), { code: 'ERR_DISPOSED' })
})

t.test('the next batch forms once the running one has started all its work, not before', async (t) => {
  // Each batch says it has started all its work 20 ms in and ends 100 ms in; the timeline is recorded.
  const events: string[] = []
  const batcher = (saysStarted: boolean) =>
    new Batcher(
      async (items: number[], _signal, onAllStarted) => {
        events.push(`start ${items.join(',')}`)
        if (saysStarted)
          setTimeout(() => {
            events.push(`all started ${items.join(',')}`)
            onAllStarted()
          }, 20)
        await new Promise((r) => setTimeout(r, 100))
        events.push(`end ${items.join(',')}`)
        return items
      },
      { maxBatch: 2 },
    )
  const overlapping = batcher(true)
  t.same(await Promise.all([1, 2, 3, 4, 5].map((x) => overlapping.submit([x]))), [[1], [2], [3], [4], [5]])
  t.same(
    events,
    ['start 1,2', 'all started 1,2', 'start 3,4', 'all started 3,4', 'start 5', 'all started 5', 'end 1,2', 'end 3,4', 'end 5'],
    'each batch forms as soon as the one before has started all its work, while that one is still running',
  )
  events.length = 0
  const oneAtATime = batcher(false)
  await Promise.all([1, 2, 3].map((x) => oneAtATime.submit([x])))
  t.same(events, ['start 1,2', 'end 1,2', 'start 3', 'end 3'], 'a run that never says it has started all its work runs alone')
})
