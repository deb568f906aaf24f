// lengthBatches: texts sorted by length into batches whose rows, padded tokens and share of
// padding stay under their caps, each batch as full as the caps allow; checked on random lengths
// against the caps recomputed here.
import t from 'tap'
import { lengthBatches, MAX_PADDING } from '../../lib/model/batches'
import { rng } from '../helpers/helpers'

const padding = (lengths: readonly number[], batch: readonly number[]) => {
  const width = Math.max(...batch.map((i) => lengths[i]))
  return { padded: width * batch.length, pad: batch.reduce((s, i) => s + width - lengths[i], 0) }
}

t.test('caps hold, every text once, longest first, each batch as full as the caps allow', async (t) => {
  const random = rng(7)
  for (const [n, batchSize, maxTokens] of [[33, 32, 32768], [200, 8, 32768], [500, 64, 2048], [1, 32, 32768]]) {
    const lengths = Array.from({ length: n }, () => 1 + Math.floor(random() ** 2 * 160))
    const batches = lengthBatches(lengths, batchSize, maxTokens)
    t.same(batches.flat().sort((a, b) => a - b), lengths.map((_, i) => i), `${n} texts: each once`)
    const order = batches.flat().map((i) => lengths[i])
    t.ok(order.every((l, k) => k === 0 || l <= order[k - 1]), 'longest first')
    let ok = true
    batches.forEach((b, k) => {
      const { padded, pad } = padding(lengths, b)
      if (b.length > 1) ok &&= b.length <= batchSize && padded <= maxTokens && pad <= MAX_PADDING * padded
      // the next batch's first text would have broken a cap here
      const next = batches[k + 1]?.[0]
      if (next !== undefined) {
        const grown = padding(lengths, [...b, next])
        ok &&= b.length + 1 > batchSize || grown.padded > maxTokens || grown.pad > MAX_PADDING * grown.padded
      }
    })
    t.ok(ok, `${n} texts, batch ${batchSize}, ${maxTokens} tokens: ${batches.length} batches within the caps, none that could have taken the next text`)
  }
  t.same(lengthBatches([10, 10, 10, 10], 3), [[0, 1, 2], [3]], 'equal lengths: batchSize rows')
  t.same(lengthBatches([100, 50, 100, 96], 32), [[0, 2, 3], [1]], 'a text half as long starts a batch of its own')
})
