// exportModel: ernie-tiny with its PEFT adapter merged, written in the HF layout and in the
// ERNIEKit / Paddle one, read back by fromPretrained. References independent of the writer:
// the in-memory merged model (mergeAdapter) for the outputs; the ernie-tiny-paddle fixture (made
// by another tool from the same weights) for the Paddle names, shapes and bytes; the test
// oracle's own Paddle -> HF conversion (test/helpers/oracle.ts) for the merged Paddle weights.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import { ErnieModel, exportModel, LoraAdapter } from '../../lib/index'
import { readSafetensorsForTest } from '../helpers/helpers'
import { readConfig, readWeights } from '../helpers/oracle'
import { FIXTURES, goldenInput } from '../helpers/precision-helpers'

const TINY = path.join(FIXTURES, 'ernie-tiny')
const PADDLE = path.join(FIXTURES, 'ernie-tiny-paddle')
const ADAPTER = path.join(TINY, 'adapter')
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-export-'))
t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))

/** The largest |a - b| over the positions whose mask is 1. */
function maxDiff(a: Float32Array, b: Float32Array, mask: Int32Array, width: number): number {
  let worst = 0
  for (let tok = 0; tok < mask.length; tok++) {
    if (!mask[tok]) continue
    for (let j = 0; j < width; j++) worst = Math.max(worst, Math.abs(a[tok * width + j] - b[tok * width + j]))
  }
  return worst
}

/** A safetensors header as { name: [dtype, shape] }. */
function header(file: string): Record<string, [string, number[]]> {
  return Object.fromEntries([...readSafetensorsForTest(file)].map(([n, v]) => [n, [v.dtype, v.shape]]))
}

t.test('ernie-tiny alone, exported in the Paddle layout, is the ernie-tiny-paddle fixture tensor for tensor', async (t) => {
  const out = path.join(root, 'plain-paddle')
  await exportModel(TINY, out, { layout: 'paddle' })
  const ours = readSafetensorsForTest(path.join(out, 'model.safetensors'))
  const theirs = readSafetensorsForTest(path.join(PADDLE, 'model.safetensors'))
  t.same(header(path.join(out, 'model.safetensors')), header(path.join(PADDLE, 'model.safetensors')), 'the same names, dtypes and shapes')
  const differing = [...theirs].filter(([n, v]) => Buffer.compare(Buffer.from(v.raw.buffer), Buffer.from(ours.get(n)!.raw.buffer)) !== 0).map(([n]) => n)
  t.same(differing, [], 'the same bytes')
  const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'))
  t.same(config.architectures, JSON.parse(fs.readFileSync(path.join(PADDLE, 'config.json'), 'utf8')).architectures, "ERNIEKit's class name")
  t.ok(fs.existsSync(path.join(out, 'tokenizer.model')), 'tokenizer copied')
})

t.test('and back: ernie-tiny-paddle exported in the HF layout is ernie-tiny tensor for tensor', async (t) => {
  const out = path.join(root, 'paddle-to-hf')
  await exportModel(PADDLE, out)
  const ours = readSafetensorsForTest(path.join(out, 'model.safetensors'))
  const theirs = readSafetensorsForTest(path.join(TINY, 'model.safetensors'))
  t.same(header(path.join(out, 'model.safetensors')), header(path.join(TINY, 'model.safetensors')), 'the same names, dtypes and shapes')
  t.same([...theirs].filter(([n, v]) => Buffer.compare(Buffer.from(v.raw.buffer), Buffer.from(ours.get(n)!.raw.buffer)) !== 0).map(([n]) => n), [], 'the same bytes')
  t.same(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).architectures, ['Ernie4_5ForCausalLM'], "transformers' class name")
})

t.test('ernie-tiny + adapter merged, in both layouts: fromPretrained reads each back to the in-memory merged model', async (t) => {
  const { input, mask } = goldenInput('ernie-tiny')
  for (const dtype of ['bf16', 'f32'] as const) {
    const merged = await ErnieModel.fromPretrained(TINY)
    const adapter = await LoraAdapter.load(ADAPTER, merged)
    await merged.mergeAdapter(adapter, { dtype })
    adapter.dispose()
    const H = merged.config.hidden_size
    const dirs = { hf: path.join(root, `merged-hf-${dtype}`), paddle: path.join(root, `merged-paddle-${dtype}`) }
    for (const layout of ['hf', 'paddle'] as const) {
      await exportModel(TINY, dirs[layout], { adapter: ADAPTER, layout, dtype })
      const back = await ErnieModel.fromPretrained(dirs[layout])
      t.equal(back.weights.layout, layout, `${dtype} ${layout}: read in its layout`)
      t.same(back.ignoredTensors, [], 'every tensor used')
      for (const precision of ['fp32', 'bf16'] as const) {
        const a = (await merged.forward(input, { precision, output: ['hidden', 'logits'] }))
        const b = (await back.forward(input, { precision, output: ['hidden', 'logits'] }))
        const dh = maxDiff(b.hidden!, a.hidden!, mask, H)
        const dl = maxDiff(b.logits!, a.logits!, mask, merged.config.vocab_size)
        t.comment(`${dtype} merge, ${layout} export, ${precision} products: max |hidden diff| ${dh}, max |logit diff| ${dl}`)
        // the same weights, bit for bit (the merge rounds once, to `dtype`, in both): the same outputs
        t.equal(dh, 0, `${dtype} merge, ${layout} export, ${precision}: identical hidden states`)
        t.equal(dl, 0, `${dtype} merge, ${layout} export, ${precision}: identical logits`)
      }
      await back.dispose()
    }
    // the Paddle file, converted back by the test's own reader, holds exactly the HF file's weights
    const c = readConfig(dirs.paddle)
    const fromPaddle = readWeights(dirs.paddle, c), fromHf = readWeights(dirs.hf, c)
    t.same([...fromPaddle.keys()].sort(), [...fromHf.keys()].sort(), `${dtype}: the same HF names after conversion`)
    t.same([...fromHf].filter(([n, v]) => fromPaddle.get(n)!.some((x, i) => x !== v[i])).map(([n]) => n), [], `${dtype}: the same values`)
    // the Paddle names and shapes are the fixture's whatever the dtype (f32 where the merge kept f32)
    const ours = header(path.join(dirs.paddle, 'model.safetensors'))
    const fixture = header(path.join(PADDLE, 'model.safetensors'))
    t.same(Object.fromEntries(Object.entries(ours).map(([n, [, s]]) => [n, s])), Object.fromEntries(Object.entries(fixture).map(([n, [, s]]) => [n, s])), `${dtype}: the fixture's names and shapes`)
    const fused = ours['ernie.layers.0.self_attn.qkv_proj.weight'][0]
    t.equal(fused, dtype === 'f32' ? 'F32' : 'BF16', `${dtype}: merged projections stored as ${fused}`)
    t.equal(ours['ernie.layers.0.input_layernorm.weight'][0], 'BF16', 'norms stay bf16')
    await merged.dispose()
  }
})

t.test('an ErnieModel and a LoraAdapter object export too, leaving the model as it was', async (t) => {
  const model = await ErnieModel.fromPretrained(TINY)
  const adapter = await LoraAdapter.load(ADAPTER, model)
  t.teardown(async () => {
    adapter.dispose()
    await model.dispose()
  })
  const { input, mask } = goldenInput('ernie-tiny')
  const before = (await model.forward(input, { precision: 'fp32' })).hidden!
  await exportModel(model, path.join(root, 'from-object'), { adapter })
  const after = (await model.forward(input, { precision: 'fp32' })).hidden!
  t.equal(maxDiff(after, before, mask, model.config.hidden_size), 0, 'the model is not merged in place')
  const a = readSafetensorsForTest(path.join(root, 'from-object', 'model.safetensors'))
  const b = readSafetensorsForTest(path.join(root, 'merged-hf-bf16', 'model.safetensors'))
  t.same([...a].filter(([n, v]) => Buffer.compare(Buffer.from(v.raw.buffer), Buffer.from(b.get(n)!.raw.buffer)) !== 0).map(([n]) => n), [], 'the same file as from the directories')
})

t.test('what cannot be exported is a typed error, before anything is written', async (t) => {
  const qwen = path.join(root, 'qwen-paddle')
  await t.rejects(exportModel(path.join(FIXTURES, 'qwen3-tiny'), qwen, { layout: 'paddle' }), { code: 'ERR_UNSUPPORTED_MODEL', message: /Paddle layout is ERNIE-4\.5's; a qwen3 model has none/ })
  t.notOk(fs.existsSync(qwen), 'nothing written')
  await t.rejects(exportModel(TINY, path.join(root, 'x'), { layout: 'onnx' as never }), { code: 'ERR_OUT_OF_RANGE', message: /layout must be one of hf, paddle, got "onnx"/ })
  const model = await ErnieModel.fromPretrained(TINY)
  t.teardown(() => model.dispose())
  await t.rejects(exportModel(model, TINY), { code: 'ERR_EXISTS', message: /the directory the model was loaded from/ })
  // an adapter made for another model
  const qwenModel = await ErnieModel.fromPretrained(path.join(FIXTURES, 'qwen3-tiny'))
  t.teardown(() => qwenModel.dispose())
  const other = await LoraAdapter.load(path.join(FIXTURES, 'qwen3-tiny', 'adapter'), qwenModel)
  t.teardown(() => other.dispose())
  await t.rejects(exportModel(model, path.join(root, 'misfit'), { adapter: other }), { code: 'ERR_ADAPTER', message: /does not fit this model: layer 0 q_proj/ })
  await t.rejects(qwenModel.save(path.join(root, 'qwen-save'), { layout: 'paddle' }), { code: 'ERR_UNSUPPORTED_MODEL' }, 'save refuses it too')
})

t.test("ErnieModel.save(dir, { layout: 'paddle' }) writes what exportModel writes without an adapter", async (t) => {
  const model = await ErnieModel.fromPretrained(TINY)
  t.teardown(() => model.dispose())
  await model.save(path.join(root, 'saved-paddle'), { layout: 'paddle' })
  t.equal(
    Buffer.compare(fs.readFileSync(path.join(root, 'saved-paddle', 'model.safetensors')), fs.readFileSync(path.join(root, 'plain-paddle', 'model.safetensors'))),
    0,
    'the same file',
  )
})
