// Token ids given to forward (the ernie-tiny fixture: vocabulary 6016, 4096 positions): ids inside
// the vocabulary compute finite logits; an id outside it, one that is not an integer, ragged or
// empty batches, a mask of the wrong shape are refused with a typed error naming the argument.
import type { Generated, Rng } from './case'

const VOCAB = 6016
const POSITIONS = 4096

export function idsCase(rng: Rng): Generated {
  const B = rng.int(1, 3)
  const T = rng.int(1, 8)
  const rows = Array.from({ length: B }, () => Array.from({ length: T }, () => rng.int(0, VOCAB - 1)))
  const at = () => [rng.int(0, B - 1), rng.int(0, T - 1)] as const
  const kind = rng.int(0, 11)
  const target = (inputIds: unknown, attentionMask?: unknown) => ({ kind: 'ids' as const, inputIds, attentionMask })
  const accept = (what: string, inputIds: unknown, attentionMask?: unknown): Generated => ({ verdict: 'accept', what, target: target(inputIds, attentionMask), names: [] })
  const reject = (what: string, name: string, inputIds: unknown, attentionMask?: unknown): Generated => ({ verdict: 'reject', what, target: target(inputIds, attentionMask), names: [name] })
  if (kind === 0) return accept(`${B}x${T} ids in the vocabulary`, rows)
  if (kind === 1) {
    const edge = rows.map((r) => r.map(() => rng.pick([0, VOCAB - 1])))
    return accept(`${B}x${T} ids 0 and ${VOCAB - 1}`, edge)
  }
  if (kind === 2) {
    // right padding: each row keeps at least its first token
    const mask = rows.map(() => {
      const keep = rng.int(1, T)
      return Array.from({ length: T }, (_, t) => (t < keep ? 1 : 0))
    })
    return accept(`${B}x${T} ids, right-padded mask`, rows, mask)
  }
  if (kind === 3) {
    const [b, t] = at()
    const bad = rng.pick([VOCAB, VOCAB + 1, 2 ** 31 - 1, -1, -(2 ** 31)])
    rows[b][t] = bad
    return reject(`id ${bad} at [${b}, ${t}]`, 'inputIds', rows)
  }
  if (kind === 4) {
    const [b, t] = at()
    const bad = rng.pick([1.5, NaN, Infinity, '5', null, 2 ** 40, -0.5])
    ;(rows[b] as unknown[])[t] = bad
    return reject(`id ${String(bad)} at [${b}, ${t}]`, 'inputIds', rows)
  }
  if (kind === 5) {
    const data = Int32Array.from(rows.flat())
    const i = rng.int(0, data.length - 1)
    data[i] = rng.pick([VOCAB, -1, 2 ** 31 - 1])
    return reject(`Int32Array id ${data[i]} at ${i}`, 'inputIds', { data, shape: [B, T] })
  }
  if (kind === 6) {
    const data = Int32Array.from(rows.flat())
    const shape = rng.pick([[B, T + 1], [T, B + 1], [B * T], [0, T], [B, -T]])
    return reject(`Int32Array of ${data.length} with shape ${JSON.stringify(shape)}`, 'inputIds', { data, shape })
  }
  if (kind === 7) {
    if (B > 1) rows[B - 1].push(1)
    else rows.push([])
    return reject('ragged rows', 'inputIds', rows)
  }
  if (kind === 8) return reject('an empty batch', 'inputIds', rng.pick([[], [[]]]))
  if (kind === 9) return reject(`${POSITIONS + 1} tokens (max_position_embeddings ${POSITIONS})`, 'inputIds', [Array.from({ length: POSITIONS + 1 }, (_, i) => i % VOCAB)])
  if (kind === 10) {
    const mask = rng.pick([rows.map((r) => r.slice(1)), [rows[0]].slice(0, B - 1), rows.map((r) => r.map(() => 2)), rows.map((r) => r.map(() => -1))])
    return reject(`a mask ${JSON.stringify(mask).slice(0, 40)}`, 'attentionMask', rows, mask)
  }
  return reject(`inputIds ${kind}`, 'inputIds', rng.pick(['hello', 42, null, { data: [1, 2], shape: [1, 2] }, [1, 2, 3]]))
}
