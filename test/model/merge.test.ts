// An adapter saved, loaded and merged gives the outputs of the unmerged one; the merged model
// exports as a standalone checkpoint. On every (ISA, precision), each forward is held to the
// golden lora.hidden within FACTOR x the error of the float64 oracle (test/helpers/oracle.ts)
// computing the same thing at the same precision (test/helpers/precision-helpers.ts).
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { ErnieModel, LoraAdapter } from '../../lib/index'
import { forEachIsaAndPrecision, maskedRelErr, roundBf16 } from '../helpers/helpers'
import { PROJECTIONS, forward, loraName, projectionShape, weightName, type Weights } from '../helpers/oracle'
import { FIXTURES, cached, fixture, goldenErr, goldenInput, oracleLora, oraclePrecision, withinBound, type FixtureName } from '../helpers/precision-helpers'

/**
 * The fixture's weights with the golden adapter merged as mergeAdapter does: W + scale B A
 * (here in float64; the engine's f32 sum differs from it by f32 rounding), then held as f32 or
 * rounded to bf16 (nearest even), the merged checkpoint's dtype.
 */
function mergedWeights(name: FixtureName, dtype: 'f32' | 'bf16'): Weights {
  const { config: c, weights, adapter } = fixture(name)
  const out: Weights = new Map(weights)
  for (let l = 0; l < c.num_hidden_layers; l++)
    for (const proj of PROJECTIONS) {
      const [rows, cols] = projectionShape(c, proj)
      const A = adapter!.tensors.get(loraName(l, proj, 'A'))!, B = adapter!.tensors.get(loraName(l, proj, 'B'))!
      const r = A.length / cols
      const W = weights.get(weightName(l, proj))!
      const merged = new Float64Array(rows * cols)
      for (let o = 0; o < rows; o++)
        for (let i = 0; i < cols; i++) {
          let s = 0
          for (let q = 0; q < r; q++) s += B[o * r + q] * A[q * cols + i]
          const v = W[o * cols + i] + adapter!.scale * s
          merged[o * cols + i] = dtype === 'bf16' ? roundBf16(v) : Math.fround(v)
        }
      out.set(weightName(l, proj), merged)
    }
  return out
}

for (const name of ['ernie-tiny', 'qwen3-tiny'] as const) {
  t.test(`${name}: save -> load -> merge equals the unmerged adapter and the golden, at every precision`, async (t) => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-merge-'))
    t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
    const { input, mask } = goldenInput(name)
    const f = fixture(name)
    const H = f.config.hidden_size

    const model = await ErnieModel.fromPretrained(path.join(FIXTURES, name))
    const adapter = await LoraAdapter.load(path.join(FIXTURES, name, 'adapter'), model)
    await adapter.save(path.join(tmp, 'adapter'))
    const reloaded = await LoraAdapter.load(path.join(tmp, 'adapter'), model)

    for (const dtype of ['f32', 'bf16'] as const) {
      const m = await ErnieModel.fromPretrained(path.join(FIXTURES, name))
      await m.mergeAdapter(reloaded, { dtype })
      await forEachIsaAndPrecision(async (isa, precision) => {
        // The merged projections are stored as `dtype`: an f32 merge leaves only f32 x f32
        // products in the hidden states, which round at 'bf16' alone.
        const p = oraclePrecision(isa, precision, dtype === 'bf16')
        const ref = cached(`merged|${name}|${dtype}|${p.name}`, () => forward(f.config, mergedWeights(name, dtype), f.batch, { precision: p }).hidden)
        const merged = (await m.forward(input, { precision })).hidden!
        const what = `${dtype} merge, ${isa} ${precision} (oracle ${p.name})`
        withinBound(t, `${what} vs golden lora.hidden`, goldenErr(name, merged, 'lora.hidden', H), goldenErr(name, ref, 'lora.hidden', H))
        // The unmerged adapter at the same precision: the same function, within its own bound,
        // so the two agree to within the sum of their precisions' errors.
        if (dtype === 'f32') {
          const pu = oraclePrecision(isa, precision)
          const unmerged = (await model.forward(input, { adapter: reloaded, precision })).hidden!
          withinBound(t, `unmerged, ${isa} ${precision} (oracle ${pu.name}) vs golden lora.hidden`, goldenErr(name, unmerged, 'lora.hidden', H), goldenErr(name, oracleLora(name, pu).hidden, 'lora.hidden', H))
        }
      })
      // a standalone checkpoint: no adapter needed to reproduce it
      const merged = (await m.forward(input)).hidden!
      const out = path.join(tmp, `merged-${dtype}`)
      await m.save(out)
      const standalone = await ErnieModel.fromPretrained(out)
      const again = (await standalone.forward(input)).hidden!
      t.equal(maskedRelErr(again, merged, mask, H), 0, `${dtype}: saved merged checkpoint reloads to identical outputs`)
      await standalone.dispose()
      await m.dispose()
    }
    await t.rejects(model.mergeAdapter({} as LoraAdapter), { name: 'TypeError' })
    adapter.dispose()
    reloaded.dispose()
    await model.dispose()
  })
}
