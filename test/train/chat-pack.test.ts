// Packing conversations into rows at scale. Past ~100k conversations packConversations threw a
// RangeError (Math.min over every length as arguments), and it scanned the open rows for each
// conversation: O(conversations x rows), minutes at a few hundred thousand.
import t from 'tap'

import { packConversations, type LmExample } from '../../lib/train/index'
import { rng } from '../helpers/helpers'

/** Example i: `length` tokens, each i * 1000 + position (which identify it in a row). */
const example = (i: number, length: number): LmExample => ({ inputIds: Int32Array.from({ length }, (_, p) => i * 1000 + p) })

/** First fit by decreasing length (ties in input order), scanning every row: the rule as stated. */
function referencePacking(lengths: number[], maxLength: number): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b] - lengths[a] || a - b)
  const rows: { members: number[]; length: number }[] = []
  for (const i of order) {
    let row = rows.find((r) => r.length + lengths[i] <= maxLength)
    if (!row) rows.push((row = { members: [], length: 0 }))
    row.members.push(i)
    row.length += lengths[i]
  }
  return rows.map((r) => r.members)
}

const membersOf = (row: LmExample): number[] => {
  const out: number[] = []
  for (let p = 0; p < row.inputIds.length; p++) if (p === 0 || row.segmentIds![p] !== row.segmentIds![p - 1]) out.push(Math.floor(row.inputIds[p] / 1000))
  return out
}

t.test('the rows are first fit by decreasing length, as a scan of every row gives them', async (t) => {
  const random = rng(7)
  for (let trial = 0; trial < 40; trial++) {
    const maxLength = 8 + Math.floor(random() * 120)
    const n = 1 + Math.floor(random() * 300)
    // short and long mixes, with repeated lengths (ties)
    const lengths = Array.from({ length: n }, () => 1 + Math.floor(random() ** (1 + trial % 3) * maxLength))
    const rows = packConversations(lengths.map((len, i) => example(i, len)), maxLength)
    t.same(rows.map(membersOf), referencePacking(lengths, maxLength), `trial ${trial}: ${n} conversations into rows of ${maxLength}`)
  }
})

t.test('300,000 conversations pack: each once, every row within maxLength, few rows', async (t) => {
  const random = rng(11)
  const N = 300_000, maxLength = 256
  const lengths = Array.from({ length: N }, () => 1 + Math.floor(random() * 100))
  const rows = packConversations(lengths.map((len, i) => ({ inputIds: new Int32Array(len).fill(i) })), maxLength)
  const seen = new Uint8Array(N)
  let tokens = 0, overlong = 0, repeated = 0
  for (const row of rows) {
    if (row.inputIds.length > maxLength) overlong++
    tokens += row.inputIds.length
    for (let p = 0; p < row.inputIds.length; p++)
      if (p === 0 || row.segmentIds![p] !== row.segmentIds![p - 1]) {
        const i = row.inputIds[p]
        if (seen[i]++) repeated++
      }
  }
  const total = lengths.reduce((a, b) => a + b, 0)
  t.equal(overlong, 0, 'no row longer than maxLength')
  t.equal(repeated, 0, 'no conversation twice')
  t.equal(seen.reduce((a, b) => a + (b === 1 ? 1 : 0), 0), N, 'every conversation in a row')
  t.equal(tokens, total, 'every token kept')
  // first fit decreasing uses at most 11/9 of the fewest rows possible, + 1
  const fewest = Math.ceil(total / maxLength)
  t.ok(rows.length <= (11 / 9) * fewest + 1, `${rows.length} rows for ${total} tokens (at least ${fewest})`)
})
