// PEFT adapter directories: the fixtures' real PEFT adapters load and give the golden LoRA
// forward (on every (ISA, precision), within 3x the same-precision oracle's error); save ->
// load is exact; saves are atomic and keep other files; bad directories fail with errors
// naming the file and what is wrong.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { ErnieModel, LoraAdapter } from '../../lib/model/index'
import { openSafetensors, saveSafetensors } from '../../lib/io/safetensors'
import { setNumThreads } from '../../lib/kernels/index'
import { forEachIsaAndPrecision, maskedRelErr, readSafetensorsForTest } from '../helpers/helpers'
import { goldenErr, goldenInput, oracleLora, oraclePrecision, withinBound } from '../helpers/precision-helpers'
import { tinyModel } from '../helpers/trainer-helpers'

setNumThreads(1)
const FIXTURES = path.join(__dirname, '..', 'fixtures')
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-adapter-'))
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }))

for (const name of ['ernie-tiny', 'qwen3-tiny'] as const) {
  t.test(`${name}: the PEFT adapter directory loads and gives the golden lora.hidden, at every precision`, async (t) => {
    const model = await ErnieModel.fromPretrained(path.join(FIXTURES, name), { tokenizer: false })
    const adapter = await LoraAdapter.load(path.join(FIXTURES, name, 'adapter'), model)
    t.equal(adapter.config.r, 4)
    t.equal(adapter.config.alpha, 8)
    t.equal(adapter.scale, 2)
    t.same(adapter.config.targetModules, ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'])
    t.equal(adapter.tensors.size, 2 * 7 * model.config.num_hidden_layers)
    const golden = readSafetensorsForTest(path.join(FIXTURES, name, 'golden.safetensors'))
    // the tensors are the golden's own LoRA weights
    for (const [n, data] of adapter.tensors) t.same(Array.from(data), Array.from(golden.get(`lora.${n}`)!.raw), n)
    const { input, mask } = goldenInput(name)
    const H = model.config.hidden_size
    await forEachIsaAndPrecision(async (isa, precision) => {
      const p = oraclePrecision(isa, precision)
      const out = await model.forward(input, { adapter, precision })
      const what = `${isa} ${precision} (oracle ${p.name}): lora.hidden relative error`
      withinBound(t, what, goldenErr(name, out.hidden!, 'lora.hidden', H), goldenErr(name, oracleLora(name, p).hidden, 'lora.hidden', H))
    })
    const base = await model.forward(input)
    const baseErr = maskedRelErr(base.hidden!, golden.get('lora.hidden')!.raw, mask, H)
    t.ok(baseErr > 1e-2, `without the adapter the output differs (${baseErr.toExponential(2)})`)
    adapter.dispose()
    await model.dispose()
  })
}

t.test('save -> load round trip is exact, in PEFT layout', async (t) => {
  const model = await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny'), { tokenizer: false })
  const a = LoraAdapter.create(model, { r: 3, alpha: 12, targetModules: ['q_proj', 'down_proj'], useRslora: true, seed: 9 })
  // give B values so the adapter does something
  for (const [n, d] of a.tensors) if (n.includes('lora_B')) for (let i = 0; i < d.length; i++) d[i] = Math.sin(i * 0.37 + n.length) * 0.1
  const dir = path.join(tmp, 'round-trip')
  await a.save(dir)
  t.same(fs.readdirSync(dir).sort(), ['adapter_config.json', 'adapter_model.safetensors'])
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'))
  t.match(cfg, { peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 3, lora_alpha: 12, use_rslora: true, bias: 'none', target_modules: ['q_proj', 'down_proj'] })
  t.equal(cfg.base_model_name_or_path, path.join(FIXTURES, 'ernie-tiny'), 'the base model directory is recorded')
  {
    using st = openSafetensors(path.join(dir, 'adapter_model.safetensors'))
    t.equal(Object.keys(st.tensors).length, 2 * 2 * model.config.num_hidden_layers)
    const qa = st.tensors['base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight']
    t.same([qa.dtype, qa.shape], ['F32', [3, 64]], 'A is [r, in], F32')
    const db = st.tensors['base_model.model.model.layers.0.mlp.down_proj.lora_B.weight']
    t.same(db.shape, [64, 3], 'B is [out, r]')
    t.equal(st.metadata.format, 'pt')
  }
  const b = await LoraAdapter.load(dir, model)
  t.same(b.config, a.config)
  for (const [n, d] of a.tensors) t.ok(Buffer.from(d.buffer).equals(Buffer.from(b.tensors.get(n)!.buffer)), `${n} bit-identical`)
  const input = { inputIds: [[5, 17, 200, 3, 99, 1000]] }
  const ya = await model.forward(input, { adapter: a })
  const yb = await model.forward(input, { adapter: b })
  t.same(Array.from(yb.hidden!), Array.from(ya.hidden!), 'same outputs')
  a.dispose()
  b.dispose()
  await model.dispose()
})

t.test('save replaces an adapter atomically and keeps unrelated files', async (t) => {
  const model = tinyModel()
  const dir = path.join(tmp, 'replace')
  const first = LoraAdapter.create(model, { r: 2, seed: 1 })
  await first.save(dir)
  fs.writeFileSync(path.join(dir, 'README.md'), 'my notes\n')
  const second = LoraAdapter.create(model, { r: 4, seed: 2 })
  await second.save(dir)
  t.same(fs.readdirSync(dir).sort(), ['README.md', 'adapter_config.json', 'adapter_model.safetensors'])
  t.equal(fs.readFileSync(path.join(dir, 'README.md'), 'utf8'), 'my notes\n', 'other files are kept')
  const back = await LoraAdapter.load(dir, model)
  t.equal(back.config.r, 4, 'the new adapter replaced the old')
  t.same(fs.readdirSync(tmp).filter((f) => f.startsWith('.')), [], 'no temporary directory left beside it')

  // A save that fails midway (adapter_config.json written, then a tensor the writer refuses)
  // leaves the old adapter whole.
  const key = [...second.tensors.keys()].at(-1)!
  const kept = second.tensors.get(key)!
  second.tensors.set(key, new Float32Array(1))
  await t.rejects(second.save(dir), { code: 'ERR_SAFETENSORS_ARGUMENT' })
  second.tensors.set(key, kept)
  const still = await LoraAdapter.load(dir, model)
  t.equal(still.config.r, 4, 'the previous adapter is intact')
  t.same(fs.readdirSync(tmp).filter((f) => f.startsWith('.')), [], 'the failed temporary directory was removed')
  for (const a of [first, second, back, still]) a.dispose()
  await model.dispose()
})

t.test('bad adapter directories fail with ERR_ADAPTER naming the problem', async (t) => {
  const model = await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny'), { tokenizer: false })
  const src = path.join(FIXTURES, 'ernie-tiny', 'adapter')
  const config = JSON.parse(fs.readFileSync(path.join(src, 'adapter_config.json'), 'utf8'))
  let n = 0
  const variant = async (mutate: (dir: string) => void | Promise<void>) => {
    const dir = path.join(tmp, `bad-${n++}`)
    fs.cpSync(src, dir, { recursive: true })
    await mutate(dir)
    return dir
  }
  const writeConfig = (dir: string, c: object) => fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(c))
  const cases: Array<[string, (dir: string) => void | Promise<void>, RegExp]> = [
    ['missing directory', (d) => fs.rmSync(d, { recursive: true }), /adapter_config\.json: cannot read \(ENOENT\)/],
    ['invalid JSON', (d) => fs.writeFileSync(path.join(d, 'adapter_config.json'), '{r: 4'), /invalid JSON/],
    ['another PEFT type', (d) => writeConfig(d, { ...config, peft_type: 'IA3' }), /peft_type is "IA3"/],
    ['DoRA', (d) => writeConfig(d, { ...config, use_dora: true }), /DoRA/],
    ['bias', (d) => writeConfig(d, { ...config, bias: 'all' }), /bias "all"/],
    ['rank_pattern', (d) => writeConfig(d, { ...config, rank_pattern: { q_proj: 8 } }), /rank_pattern/],
    ['modules_to_save', (d) => writeConfig(d, { ...config, modules_to_save: ['lm_head'] }), /modules_to_save/],
    ['unknown target', (d) => writeConfig(d, { ...config, target_modules: ['q_proj', 'fc1'] }), /target module "fc1"/],
    ['wrong rank', (d) => writeConfig(d, { ...config, r: 8 }), /lora_A\.weight" has shape \[4, 64\], the model needs \[8, 64\]/],
    ['no weights', (d) => fs.rmSync(path.join(d, 'adapter_model.safetensors')), /no adapter_model\.safetensors/],
    [
      'pickle weights only',
      (d) => {
        fs.rmSync(path.join(d, 'adapter_model.safetensors'))
        fs.writeFileSync(path.join(d, 'adapter_model.bin'), 'x')
      },
      /adapter_model\.bin \(pickle\) is not supported/,
    ],
    [
      'a missing tensor',
      async (d) => {
        const file = path.join(d, 'adapter_model.safetensors')
        const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {}
        {
          using st = openSafetensors(file)
          for (const [k, info] of Object.entries(st.tensors))
            if (!k.includes('layers.1.mlp.up_proj.lora_B')) tensors[k] = { dtype: 'F32', shape: info.shape, data: Float32Array.from(st.view(k) as Float32Array) }
        }
        await saveSafetensors(file, tensors)
      },
      /missing tensor "base_model\.model\.model\.layers\.1\.mlp\.up_proj\.lora_B\.weight"/,
    ],
    [
      'a tensor the config does not target',
      (d) => writeConfig(d, { ...config, target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj'] }),
      /down_proj\.lora_A\.weight" is not a LoRA matrix this model applies/,
    ],
  ]
  for (const [what, mutate, message] of cases) {
    const dir = await variant(mutate)
    await t.rejects(LoraAdapter.load(dir, model), { code: 'ERR_ADAPTER', message }, what)
  }
  await t.rejects(LoraAdapter.load('', model), TypeError)
  await model.dispose()
})

t.test('target_modules as a regular expression, "all-linear", and BF16 tensors', async (t) => {
  const model = await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny'), { tokenizer: false })
  const src = path.join(FIXTURES, 'ernie-tiny', 'adapter')
  const config = JSON.parse(fs.readFileSync(path.join(src, 'adapter_config.json'), 'utf8'))
  const reference = await LoraAdapter.load(src, model)
  for (const target of ['all-linear', '.*\\.(q|k|v|o|gate|up|down)_proj']) {
    const dir = path.join(tmp, `target-${target.length}`)
    fs.cpSync(src, dir, { recursive: true })
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({ ...config, target_modules: target }))
    const a = await LoraAdapter.load(dir, model)
    t.same(a.config.targetModules, reference.config.targetModules, `target_modules ${JSON.stringify(target)}`)
    a.dispose()
  }
  // BF16 weights: widened exactly
  const dir = path.join(tmp, 'bf16')
  fs.mkdirSync(dir)
  fs.copyFileSync(path.join(src, 'adapter_config.json'), path.join(dir, 'adapter_config.json'))
  const tensors: Record<string, { dtype: 'BF16'; shape: number[]; data: Uint16Array }> = {}
  const expected = new Map<string, Float32Array>()
  for (const [n, d] of reference.tensors) {
    const bits = new Uint16Array(d.length)
    const u = new Uint32Array(d.buffer, d.byteOffset, d.length)
    for (let i = 0; i < d.length; i++) bits[i] = u[i] >>> 16 // truncation: any bf16 pattern will do
    tensors[n] = { dtype: 'BF16', shape: [...reference.shapeOf(n)], data: bits }
    expected.set(n, new Float32Array(new Uint32Array(Array.from(bits, (b) => b << 16)).buffer))
  }
  await saveSafetensors(path.join(dir, 'adapter_model.safetensors'), tensors)
  const a = await LoraAdapter.load(dir, model)
  for (const [n, d] of a.tensors) t.same(Array.from(d), Array.from(expected.get(n)!), `${n} widened from bf16`)
  a.dispose()
  reference.dispose()
  await model.dispose()
})
