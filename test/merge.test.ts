// An adapter saved, loaded and merged gives the outputs of the unmerged one; the merged model
// exports as a standalone checkpoint.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { ErnieModel, LoraAdapter } from '../lib/index'
import { maskedRelErr, readSafetensorsForTest } from './helpers'

const FIXTURES = path.join(__dirname, 'fixtures')

for (const name of ['ernie-tiny', 'qwen3-tiny']) {
  t.test(`${name}: save -> load -> merge equals the unmerged adapter and the golden`, async (t) => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-merge-'))
    t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))
    const golden = readSafetensorsForTest(path.join(FIXTURES, name, 'golden.safetensors'))
    const ids = golden.get('input_ids')!, mask = golden.get('attention_mask')!
    const [B, T] = ids.shape
    const input = { inputIds: { data: ids.raw as Int32Array, shape: [B, T] as [number, number] }, attentionMask: { data: mask.raw as Int32Array, shape: [B, T] as [number, number] } }
    const want = golden.get('lora.hidden')!.raw

    const model = await ErnieModel.fromPretrained(path.join(FIXTURES, name))
    const adapter = await LoraAdapter.load(path.join(FIXTURES, name, 'adapter'), model)
    const unmerged = (await model.forward(input, { adapter })).hidden!
    await adapter.save(path.join(tmp, 'adapter'))
    const reloaded = await LoraAdapter.load(path.join(tmp, 'adapter'), model)

    for (const dtype of ['f32', 'bf16'] as const) {
      const m = await ErnieModel.fromPretrained(path.join(FIXTURES, name))
      m.mergeAdapter(reloaded, { dtype })
      const merged = (await m.forward(input)).hidden!
      const bound = dtype === 'f32' ? 1e-5 : 3e-2
      const vsUnmerged = maskedRelErr(merged, unmerged, mask.raw, m.config.hidden_size)
      t.ok(vsUnmerged < bound, `${dtype} merge vs unmerged adapter: ${vsUnmerged.toExponential(2)} < ${bound}`)
      t.ok(maskedRelErr(merged, want, mask.raw, m.config.hidden_size) < bound, `${dtype} merge vs golden lora.hidden`)
      // a standalone checkpoint: no adapter needed to reproduce it
      const out = path.join(tmp, `merged-${dtype}`)
      await m.save(out)
      const standalone = await ErnieModel.fromPretrained(out)
      const again = (await standalone.forward(input)).hidden!
      t.equal(maskedRelErr(again, merged, mask.raw, m.config.hidden_size), 0, `${dtype}: saved merged checkpoint reloads to identical outputs`)
      await standalone.dispose()
      await m.dispose()
    }
    t.throws(() => model.mergeAdapter({} as LoraAdapter), { name: 'TypeError' })
    adapter.dispose()
    reloaded.dispose()
    await model.dispose()
  })
}
