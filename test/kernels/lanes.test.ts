// runInLanes: every item once, never more than `lanes` in flight, the first error after the rest settle.
import t from 'tap'
import { runInLanes } from '../../lib/util/lanes'

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms))

t.test('runs every item once with at most `lanes` in flight', async (t) => {
  for (const lanes of [1, 2, 3, 10]) {
    const seen: number[] = []
    let inFlight = 0
    let most = 0
    await runInLanes([5, 1, 4, 2, 3, 0, 2], lanes, async (ms) => {
      inFlight++
      most = Math.max(most, inFlight)
      await tick(ms)
      seen.push(ms)
      inFlight--
    })
    t.same([...seen].sort(), [0, 1, 2, 2, 3, 4, 5], `lanes ${lanes}: every item`)
    t.equal(most, Math.min(lanes, 7), `lanes ${lanes}: at most ${Math.min(lanes, 7)} at once`)
  }
  let calls = 0
  await runInLanes([], 2, async () => void calls++)
  t.equal(calls, 0, 'no items, no calls')
})

t.test('a failure stops new items and is thrown once the running ones settle', async (t) => {
  const started: number[] = []
  const finished: number[] = []
  const run = runInLanes([0, 1, 2, 3, 4, 5], 2, async (i) => {
    started.push(i)
    await tick(i === 1 ? 1 : 20)
    if (i === 1) throw new Error('item 1 failed')
    finished.push(i)
  })
  await t.rejects(run, { message: 'item 1 failed' })
  t.same(started, [0, 1], 'nothing starts after the failure')
  t.same(finished, [0], 'the item running beside it finished before the error was thrown')
})
