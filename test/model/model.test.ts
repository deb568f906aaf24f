// The decoder's forward pass against the fixtures' float64 goldens (../shared/fixtures, copied
// to test/fixtures): ERNIE-4.5 (HF and Paddle layouts) and Qwen3, hidden states and logits, on
// every (ISA, precision). An error against a golden is bounded by FACTOR x the error of the
// float64 oracle (test/helpers/oracle.ts) simulating the same precision
// (test/helpers/precision-helpers.ts).
import t from 'tap'
import * as path from 'node:path'
import * as fs from 'node:fs'
import { kernels } from '../../lib/index'
import { ErnieModel, MemoryTensors, resolveConfig, mapWeights } from '../../lib/model/index'
import { forEachIsaAndPrecision, lastTokenRows, maskedRelErr, readSafetensorsForTest, relErr } from '../helpers/helpers'
import { fp32 } from '../helpers/oracle'
import { FIXTURES, fixture, goldenErr, goldenInput, oracleBase, oraclePrecision, withinBound, type FixtureName } from '../helpers/precision-helpers'
import { firstIdMismatch, goldens } from '../helpers/tokenizer-helpers'

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

/** The oracle's error on the golden hidden states at a preset: what a forward at that precision may be off by. */
const oracleHiddenErr = (name: FixtureName, p = fp32) => goldenErr(name, oracleBase(name, p).hidden, 'base.hidden', fixture(name).config.hidden_size)

/**
 * f32 level for two forwards of the same text: the same products on the same operands (bf16
 * rounding is per element, so a row alone, in any batch, on any thread count, rounds its
 * operands alike) summed in the same order per element, so at most f32 summation differences,
 * at every precision: the fp32 oracle's error on the golden hidden states.
 */
const f32Level = (name: FixtureName) => oracleHiddenErr(name, fp32)

for (const name of ['ernie-tiny', 'ernie-tiny-paddle', 'qwen3-tiny'] as const) {
  t.test(`${name}: forward matches the float64 golden hidden states and logits, at every precision`, async (t) => {
    const { cfg, model } = loadFixture(name)
    const { input, shape } = goldenInput(name)
    await forEachIsaAndPrecision(async (isa, precision) => {
      const p = oraclePrecision(isa, precision)
      const out = await model.forward(input, { output: ['hidden', 'logits'], precision })
      t.same(out.shape, shape)
      const ref = oracleBase(name, p)
      const what = `${isa} ${precision} (oracle ${p.name})`
      withinBound(t, `${what} hidden`, goldenErr(name, out.hidden!, 'base.hidden', cfg.hidden_size), goldenErr(name, ref.hidden, 'base.hidden', cfg.hidden_size))
      withinBound(t, `${what} logits`, goldenErr(name, out.logits!, 'base.logits', cfg.vocab_size), goldenErr(name, ref.logits, 'base.logits', cfg.vocab_size))
    })
    await model.dispose()
  })
}

for (const name of ['ernie-tiny', 'qwen3-tiny'] as const) {
  t.test(`${name}: lastHidden is each row's last real token, the last layer run on those rows only`, async (t) => {
    const { cfg, model, golden } = loadFixture(name)
    const { input, mask, shape: [B, T] } = goldenInput(name)
    const ids = input.inputIds.data
    const H = cfg.hidden_size
    const want = lastTokenRows(golden.get('base.hidden')!.raw, mask, B, T, H)
    t.ok(mask.includes(0), 'the golden batch has padding: its rows end at different positions')
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
    const leftInput = { inputIds: { data: leftIds, shape: [B + 1, T] as [number, number] }, attentionMask: { data: leftMask, shape: [B + 1, T] as [number, number] } }

    await forEachIsaAndPrecision(async (isa, precision) => {
      const p = oraclePrecision(isa, precision)
      const what = `${isa} ${precision} (oracle ${p.name})`
      // The oracle's error on these rows; left padding gives its real tokens the same positions,
      // keys and sums (oracle.test.ts), so the same error.
      const scale = relErr(lastTokenRows(oracleBase(name, p).hidden, mask, B, T, H), want)
      const right = await model.forward(input, { output: ['lastHidden'], precision })
      t.equal(right.lastHidden!.length, B * H)
      withinBound(t, `${what} right padding vs golden`, relErr(right.lastHidden!, want), scale)
      const left = await model.forward(leftInput, { output: ['lastHidden'], precision })
      withinBound(t, `${what} left padding vs golden`, relErr(left.lastHidden!.subarray(0, B * H), want), scale)
      t.ok(left.lastHidden!.subarray(B * H).every((v) => v === 0), `${what}: a row without tokens gives zeros`)
      // Asked beside 'hidden' (no pruning), it is the same rows of the full states.
      const both = await model.forward(input, { output: ['hidden', 'lastHidden'], precision })
      t.equal(relErr(both.lastHidden!, lastTokenRows(both.hidden!, mask, B, T, H)), 0, `${what}: with hidden, copied from it`)
    })
    await model.dispose()
  })
}

t.test('singleThread calls in flight together give what the thread pool gives, at every precision', async (t) => {
  const name = 'ernie-tiny'
  const { cfg, model } = loadFixture(name)
  const { input, mask } = goldenInput(name)
  await forEachIsaAndPrecision(async (isa, precision) => {
    const pool = await model.forward(input, { precision })
    const lanes = await Promise.all(Array.from({ length: 4 }, () => model.forward(input, { singleThread: true, precision })))
    for (const [i, r] of lanes.entries()) withinBound(t, `${isa} ${precision} call ${i} vs the pool`, maskedRelErr(r.hidden!, pool.hidden!, mask, cfg.hidden_size), f32Level(name))
    const p = oraclePrecision(isa, precision)
    withinBound(t, `${isa} ${precision} (oracle ${p.name}): and the golden`, goldenErr(name, lanes[0].hidden!, 'base.hidden', cfg.hidden_size), oracleHiddenErr(name, p))
  })
  await model.dispose()
})

t.test("a text's result does not depend on the rest of its batch, at every precision", async (t) => {
  const name = 'ernie-tiny'
  const { cfg, model, golden } = loadFixture(name)
  const ids = golden.get('input_ids')!
  const mask = golden.get('attention_mask')!
  const [B, T] = ids.shape
  const rows = Array.from({ length: B }, (_, b) => Array.from(ids.raw.subarray(b * T, (b + 1) * T)))
  const masks = Array.from({ length: B }, (_, b) => Array.from(mask.raw.subarray(b * T, (b + 1) * T)))
  const H = cfg.hidden_size
  await forEachIsaAndPrecision(async (isa, precision) => {
    const both = await model.forward({ inputIds: rows, attentionMask: masks }, { precision })
    for (let b = 0; b < B; b++) {
      const len = masks[b].reduce((a, v) => a + v, 0)
      // alone, without its padding
      const alone = await model.forward({ inputIds: [rows[b].slice(0, len)] }, { precision })
      withinBound(t, `${isa} ${precision} row ${b} alone vs in the batch`, relErr(alone.hidden!, both.hidden!.subarray(b * T * H, (b * T + len) * H)), f32Level(name))
      // beside a different, longer neighbour
      const other = rows[1 - b] ?? rows[0]
      const mixed = await model.forward({ inputIds: [rows[b], other.slice().reverse()], attentionMask: [masks[b], other.map(() => 1)] }, { precision })
      const err = maskedRelErr(mixed.hidden!.subarray(0, T * H), both.hidden!.subarray(b * T * H, (b + 1) * T * H), masks[b], H)
      withinBound(t, `${isa} ${precision} row ${b} beside another text`, err, f32Level(name))
    }
  })
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

/** The bound of a golden check at the default precision (ERNIE_PRECISION, else 'auto') on the best ISA. */
function defaultPrecisionBound(name: FixtureName, model: ErnieModel) {
  const p = oraclePrecision(kernels.activeIsa(), model.precision)
  return { p, scale: oracleHiddenErr(name, p) }
}

t.test('fromPretrained loads the checkpoints in place (HF and Paddle layouts) with their tokenizer', async (t) => {
  for (const name of ['ernie-tiny', 'ernie-tiny-paddle', 'qwen3-tiny'] as const) {
    const model = await ErnieModel.fromPretrained(path.join(FIXTURES, name))
    const { input } = goldenInput(name)
    const out = await model.forward(input)
    const { p, scale } = defaultPrecisionBound(name, model)
    withinBound(t, `${name} (${model.precision} on ${kernels.activeIsa()}, oracle ${p.name}): hidden vs golden`, goldenErr(name, out.hidden!, 'base.hidden', model.config.hidden_size), scale)
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
  const { startFakeHub } = await import('../helpers/hub-server')
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
  const out = await model.forward(goldenInput('ernie-tiny').input)
  const { p, scale } = defaultPrecisionBound('ernie-tiny', model)
  withinBound(t, `golden hidden states (${model.precision} on ${kernels.activeIsa()}, oracle ${p.name})`, goldenErr('ernie-tiny', out.hidden!, 'base.hidden', model.config.hidden_size), scale)
  await model.dispose()
  // the hub is gone: offline resolution from the cache still works
  const again = await ErnieModel.fromPretrained('baidu/ernie-tiny', { cacheDir, offline: true })
  t.equal(again.directory, model.directory)
  await again.dispose()
})

t.test('pooled: the engine pools each row as asked (last, mean, first), against a float64 pool of the same hidden states', async (t) => {
  const { cfg, model } = loadFixture('ernie-tiny')
  const H = cfg.hidden_size
  // right and left padding, and a row with no real token
  const ids = [[5, 6, 7, 8, 9], [0, 0, 11, 12, 13], [3, 4, 0, 0, 0], [1, 1, 1, 1, 1]]
  const mask = [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]
  const B = ids.length, T = ids[0].length
  const input = { inputIds: ids, attentionMask: mask }
  const { hidden, lastHidden } = await model.forward(input, { output: ['hidden', 'lastHidden'], precision: 'fp32' })
  for (const pooling of ['last', 'mean', 'first'] as const) {
    const want = new Float64Array(B * H)
    for (let b = 0; b < B; b++) {
      const real = mask[b].flatMap((m, tt) => (m ? [tt] : []))
      const rows = pooling === 'mean' ? real : real.length === 0 ? [] : [pooling === 'last' ? real[real.length - 1] : real[0]]
      for (const tt of rows) for (let j = 0; j < H; j++) want[b * H + j] += hidden![(b * T + tt) * H + j] / rows.length
    }
    const { pooled } = await model.forward(input, { output: ['pooled'], pooling, precision: 'fp32' })
    t.equal(pooled!.length, B * H)
    // last: the pruned last layer (its own f32 sums, as lastHidden's); mean and first: rows of this very forward
    t.ok(relErr(pooled!, want) <= (pooling === 'last' ? 1e-5 : 1e-6), `${pooling}: ${relErr(pooled!, want).toExponential(2)} from the float64 pool`)
    t.ok(pooled!.subarray(3 * H).every((v) => v === 0), `${pooling}: a row without tokens pools to zeros`)
    if (pooling === 'last') t.same(pooled, lastHidden, "'last' is lastHidden's rows")
  }
  await t.rejects(model.forward(input, { output: ['pooled'], pooling: 'max' as never }), { name: 'RangeError', message: /pooling must be one of last, mean, first/ })
  t.equal(model.native().backend, process.env.ERNIE_CHECKED_BACKEND === '1' ? 'checked' : 'cpu', 'the backend the model runs on')
  await model.dispose()
})
