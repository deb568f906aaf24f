// The decoder's forward pass against the fixtures' float64 goldens (../shared/fixtures, copied
// to test/fixtures): ERNIE-4.5 (HF and Paddle layouts) and Qwen3, hidden states and logits.
import t from 'tap'
import * as path from 'node:path'
import * as fs from 'node:fs'
import { ErnieModel, MemoryTensors, resolveConfig, mapWeights } from '../lib/model/index'
import { lastTokenRows, maskedRelErr, readSafetensorsForTest, relErr } from './helpers'
import { firstIdMismatch, goldens } from './tokenizer-helpers'

const FIXTURES = path.join(__dirname, 'fixtures')

function loadFixture(name: string) {
  const dir = path.join(FIXTURES, name)
  const cfg = resolveConfig(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')))
  const tensors = readSafetensorsForTest(path.join(dir, 'model.safetensors'))
  const map = new Map<string, { shape: number[]; data: Float32Array | Uint16Array }>()
  for (const [k, v] of tensors) map.set(k, { shape: v.shape, data: v.raw as Float32Array | Uint16Array })
  const source = new MemoryTensors(name, map)
  const model = new ErnieModel({ config: cfg, weights: mapWeights(cfg, source), source })
  const golden = readSafetensorsForTest(path.join(dir, 'golden.safetensors'))
  return { cfg, model, golden }
}

for (const name of ['ernie-tiny', 'ernie-tiny-paddle', 'qwen3-tiny']) {
  t.test(`${name}: forward matches the float64 golden hidden states and logits`, async (t) => {
    const { cfg, model, golden } = loadFixture(name)
    const ids = golden.get('input_ids')!
    const mask = golden.get('attention_mask')!
    const [B, T] = ids.shape
    const out = await model.forward(
      { inputIds: { data: ids.raw as Int32Array, shape: [B, T] }, attentionMask: { data: mask.raw as Int32Array, shape: [B, T] } },
      { output: ['hidden', 'logits'] },
    )
    t.same(out.shape, [B, T])
    const hErr = maskedRelErr(out.hidden!, golden.get('base.hidden')!.raw, mask.raw, cfg.hidden_size)
    const lErr = maskedRelErr(out.logits!, golden.get('base.logits')!.raw, mask.raw, cfg.vocab_size)
    t.ok(hErr < 1e-2, `hidden relative error ${hErr.toExponential(2)} < 1e-2`)
    t.ok(lErr < 1e-2, `logits relative error ${lErr.toExponential(2)} < 1e-2`)
    t.ok(hErr < 1e-4, `hidden relative error ${hErr.toExponential(2)} < 1e-4 (f32 activations)`)
    await model.dispose()
  })
}

for (const name of ['ernie-tiny', 'qwen3-tiny']) {
  t.test(`${name}: lastHidden is each row's last real token, the last layer run on those rows only`, async (t) => {
    const { cfg, model, golden } = loadFixture(name)
    const ids = golden.get('input_ids')!.raw as Int32Array
    const mask = golden.get('attention_mask')!.raw as Int32Array
    const [B, T] = golden.get('input_ids')!.shape
    const H = cfg.hidden_size
    const want = lastTokenRows(golden.get('base.hidden')!.raw, mask, B, T, H)
    t.ok(mask.includes(0), 'the golden batch has padding: its rows end at different positions')

    const right = await model.forward({ inputIds: { data: ids, shape: [B, T] }, attentionMask: { data: mask, shape: [B, T] } }, { output: ['lastHidden'] })
    t.equal(right.lastHidden!.length, B * H)
    const err = relErr(right.lastHidden!, want)
    t.ok(err < 1e-4, `right padding vs golden: ${err.toExponential(2)}`)

    // The same texts left-padded, and one more row with no token at all (its output is zeros).
    const leftIds = new Int32Array((B + 1) * T)
    const leftMask = new Int32Array((B + 1) * T)
    for (let b = 0; b < B; b++) {
      const len = mask.subarray(b * T, (b + 1) * T).reduce((a, v) => a + v, 0)
      for (let t = 0; t < len; t++) {
        leftIds[b * T + T - len + t] = ids[b * T + t]
        leftMask[b * T + T - len + t] = 1
      }
    }
    const left = await model.forward({ inputIds: { data: leftIds, shape: [B + 1, T] }, attentionMask: { data: leftMask, shape: [B + 1, T] } }, { output: ['lastHidden'] })
    const errLeft = relErr(left.lastHidden!.subarray(0, B * H), want)
    t.ok(errLeft < 1e-4, `left padding vs golden: ${errLeft.toExponential(2)}`)
    t.ok(left.lastHidden!.subarray(B * H).every((v) => v === 0), 'a row without tokens gives zeros')

    // Asked beside 'hidden' (no pruning), it is the same rows of the full states.
    const both = await model.forward({ inputIds: { data: ids, shape: [B, T] }, attentionMask: { data: mask, shape: [B, T] } }, { output: ['hidden', 'lastHidden'] })
    t.equal(relErr(both.lastHidden!, lastTokenRows(both.hidden!, mask, B, T, H)), 0, 'with hidden: copied from it')
    await model.dispose()
  })
}

t.test('singleThread calls in flight together give what the thread pool gives', async (t) => {
  const { cfg, model, golden } = loadFixture('ernie-tiny')
  const ids = golden.get('input_ids')!.raw as Int32Array
  const mask = golden.get('attention_mask')!.raw as Int32Array
  const [B, T] = golden.get('input_ids')!.shape
  const input = { inputIds: { data: ids, shape: [B, T] as [number, number] }, attentionMask: { data: mask, shape: [B, T] as [number, number] } }
  const pool = await model.forward(input)
  const lanes = await Promise.all(Array.from({ length: 4 }, () => model.forward(input, { singleThread: true })))
  for (const [i, r] of lanes.entries()) {
    const err = maskedRelErr(r.hidden!, pool.hidden!, mask, cfg.hidden_size)
    t.ok(err < 1e-6, `call ${i}: ${err.toExponential(2)}`)
  }
  const golden1 = maskedRelErr(lanes[0].hidden!, golden.get('base.hidden')!.raw, mask, cfg.hidden_size)
  t.ok(golden1 < 1e-4, `and the golden: ${golden1.toExponential(2)}`)
  await model.dispose()
})

t.test("a text's result does not depend on the rest of its batch", async (t) => {
  const { cfg, model, golden } = loadFixture('ernie-tiny')
  const ids = golden.get('input_ids')!
  const mask = golden.get('attention_mask')!
  const [B, T] = ids.shape
  const rows = Array.from({ length: B }, (_, b) => Array.from(ids.raw.subarray(b * T, (b + 1) * T)))
  const masks = Array.from({ length: B }, (_, b) => Array.from(mask.raw.subarray(b * T, (b + 1) * T)))
  const both = await model.forward({ inputIds: rows, attentionMask: masks })
  const H = cfg.hidden_size
  for (let b = 0; b < B; b++) {
    const len = masks[b].reduce((a, v) => a + v, 0)
    // alone, without its padding
    const alone = await model.forward({ inputIds: [rows[b].slice(0, len)] })
    const err = relErr(alone.hidden!, both.hidden!.subarray(b * T * H, (b * T + len) * H))
    t.ok(err < 1e-4, `row ${b} alone vs in the batch: ${err.toExponential(2)}`)
    // beside a different, longer neighbour
    const other = rows[1 - b] ?? rows[0]
    const mixed = await model.forward({ inputIds: [rows[b], other.slice().reverse()], attentionMask: [masks[b], other.map(() => 1)] })
    const err2 = maskedRelErr(mixed.hidden!.subarray(0, T * H), both.hidden!.subarray(b * T * H, (b + 1) * T * H), masks[b], H)
    t.ok(err2 < 1e-4, `row ${b} beside another text: ${err2.toExponential(2)}`)
  }
  await model.dispose()
})

t.test('bad input gets typed errors naming what is wrong', async (t) => {
  const { model } = loadFixture('ernie-tiny')
  await t.rejects(model.forward({ inputIds: [[1, 2], [3]] }), { name: 'RangeError', message: /row 1 has 1 tokens, row 0 has 2/ })
  await t.rejects(model.forward({ inputIds: [[1, 2.5]] }), { name: 'TypeError', message: /position 1 is not an integer/ })
  await t.rejects(model.forward({ inputIds: [[1, 99999]] }), { name: 'RangeError', message: /'inputIds' holds 99999 at position 1, outside the vocabulary \[0, 6016\)/ })
  await t.rejects(model.forward({ inputIds: [[1, 2]], attentionMask: [[1, 1, 1]] }), { name: 'RangeError', message: /attentionMask/ })
  await model.dispose()
  await t.rejects(model.forward({ inputIds: [[1, 2]] }), { code: 'ERR_DISPOSED' })
  t.throws(() => resolveConfig({ model_type: 'llama' }), { code: 'ERR_UNSUPPORTED_MODEL', message: /model_type "llama" is not supported/ })
})

t.test('fromPretrained loads the checkpoints in place (HF and Paddle layouts) with their tokenizer', async (t) => {
  for (const name of ['ernie-tiny', 'ernie-tiny-paddle', 'qwen3-tiny']) {
    const model = await ErnieModel.fromPretrained(path.join(FIXTURES, name))
    const golden = readSafetensorsForTest(path.join(FIXTURES, name, 'golden.safetensors'))
    const ids = golden.get('input_ids')!, mask = golden.get('attention_mask')!
    const [B, T] = ids.shape
    const out = await model.forward({ inputIds: { data: ids.raw as Int32Array, shape: [B, T] }, attentionMask: { data: mask.raw as Int32Array, shape: [B, T] } })
    const err = maskedRelErr(out.hidden!, golden.get('base.hidden')!.raw, mask.raw, model.config.hidden_size)
    t.ok(err < 1e-4, `${name}: hidden ${err.toExponential(2)}`)
    t.ok(model.tokenizer, `${name}: tokenizer loaded`)
    // The fixtures share one SentencePiece model, whose encodings the reference library produced.
    const mismatch = firstIdMismatch(goldens('ernie_style_bpe').slice(0, 100), (text) => model.tokenizer!.encode(text))
    t.equal(mismatch, undefined, `${name}: the tokenizer encodes as the reference SentencePiece does`)
    await model.dispose()
  }
})

t.test('save writes a standalone HF checkpoint that reloads to the same outputs (Paddle in, HF out)', async (t) => {
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'ernie-save-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const paddle = await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny-paddle'))
  await paddle.save(dir)
  const again = await ErnieModel.fromPretrained(dir)
  const input = { inputIds: [[5, 17, 300, 42, 9, 1000, 7]] }
  const a = await paddle.forward(input), b = await again.forward(input)
  t.equal(relErr(b.hidden!, a.hidden!), 0, 'identical hidden states')
  t.ok(fs.existsSync(path.join(dir, 'tokenizer.model')), 'tokenizer copied')
  const header = readSafetensorsForTest(path.join(dir, 'model.safetensors'))
  t.same(header.get('model.layers.0.self_attn.q_proj.weight')!.shape, [128, 64], 'HF names and [out, in] shapes')
  await paddle.dispose()
  await again.dispose()
})

t.test('missing files and mismatched tensors are clear errors', async (t) => {
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'ernie-bad-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  await t.rejects(ErnieModel.fromPretrained(path.join(dir, 'nope')), /nope/)
  fs.copyFileSync(path.join(FIXTURES, 'ernie-tiny', 'model.safetensors'), path.join(dir, 'model.safetensors'))
  const cfg = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'ernie-tiny', 'config.json'), 'utf8'))
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, intermediate_size: 161 }))
  await t.rejects(ErnieModel.fromPretrained(dir), { code: 'ERR_CHECKPOINT', message: /tensor "model\.layers\.0\.mlp\.gate_proj\.weight" has shape \[160, 64\], but config\.json implies \[161, 64\]/ })
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...cfg, model_type: 'gpt2' }))
  await t.rejects(ErnieModel.fromPretrained(dir), { code: 'ERR_UNSUPPORTED_MODEL' })
})

t.test('fromPretrained resolves a hub id through a (local, fake) hub into the HF cache, then offline', async (t) => {
  const { startFakeHub } = await import('./hub-server')
  const dir = path.join(FIXTURES, 'ernie-tiny')
  const files: Record<string, Buffer> = {}
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.model', 'tokenizer_config.json']) files[f] = fs.readFileSync(path.join(dir, f))
  const hub = await startFakeHub([{ id: 'baidu/ernie-tiny', sha: 'a'.repeat(40), files }])
  const cacheDir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'ernie-cache-'))
  t.teardown(() => fs.rmSync(cacheDir, { recursive: true, force: true }))
  let progress = 0
  const model = await ErnieModel.fromPretrained('baidu/ernie-tiny', { endpoint: hub.endpoint, cacheDir, token: false, onProgress: () => progress++ })
  await hub.close()
  t.ok(progress > 0, 'progress reported')
  t.ok(model.directory!.startsWith(path.join(cacheDir, 'models--baidu--ernie-tiny', 'snapshots')), `loaded from the HF cache layout: ${model.directory}`)
  const golden = readSafetensorsForTest(path.join(dir, 'golden.safetensors'))
  const ids = golden.get('input_ids')!, mask = golden.get('attention_mask')!
  const [B, T] = ids.shape
  const out = await model.forward({ inputIds: { data: ids.raw as Int32Array, shape: [B, T] }, attentionMask: { data: mask.raw as Int32Array, shape: [B, T] } })
  t.ok(maskedRelErr(out.hidden!, golden.get('base.hidden')!.raw, mask.raw, model.config.hidden_size) < 1e-4, 'golden hidden states')
  await model.dispose()
  // the hub is gone: offline resolution from the cache still works
  const again = await ErnieModel.fromPretrained('baidu/ernie-tiny', { cacheDir, offline: true })
  t.equal(again.directory, model.directory)
  await again.dispose()
})
