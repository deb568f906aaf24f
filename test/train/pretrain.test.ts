// Pre-training: packing documents into rows (segment ids, labels at boundaries), the model's
// packed forward and gradients against each document run on its own (on every (ISA,
// precision), within what the precision predicts: test/helpers/precision-helpers.ts), and the
// pretrain loop and command end to end on a tiny model.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { ErnieModel } from '../../lib/model/index'
import { Tokenizer } from '../../lib/tokenizer/index'
import { packDocuments, pretrain, PRETRAIN_LOG_FILE, readDocuments } from '../../lib/train/index'
import { runMain } from '../helpers/classifier-helpers'
import { forEachIsaAndPrecision, relErr, rng } from '../helpers/helpers'
import { fp32, lossAndGrad, type OracleBatch, type Precision } from '../helpers/oracle'
import { FACTOR, FIXTURES, LOSS_FLOOR, cached, fixture, goldenErr, lossErr, oracleBase, oraclePrecision, withinBound } from '../helpers/precision-helpers'
const DEFAULT_TOKENIZER = path.join(__dirname, '..', '..', 'models', 'ernie-4.5-tiny-zh')
const EOS = 2

t.test('packDocuments: every token once, in order; segments and boundary labels', async (t) => {
  const docs = [[10, 11, 12], [20], [30, 31, 32, 33, 34, 35, 36], [40, 41]]
  const rows = packDocuments(docs, 5, EOS)
  const stream = docs.flatMap((d) => [...d, EOS])
  t.same(rows.flatMap((r) => Array.from(r.inputIds)), stream, 'the rows concatenate to the documents, each followed by EOS')
  t.same(rows.map((r) => r.inputIds.length), [5, 5, 5, 2], 'full rows, the last one shorter')
  // Row 0: [10 11 12 EOS | 20]: document 2 starts at position 4.
  t.same(Array.from(rows[0].segmentIds!), [0, 0, 0, 0, 1])
  t.same(Array.from(rows[0].labels!), [10, 11, 12, EOS, -100], "a document's first token inside a row is not predicted")
  // Row 1: [EOS | 30 31 32 33]: the end of document 2, then document 3 from its start.
  t.same(Array.from(rows[1].segmentIds!), [0, 1, 1, 1, 1])
  t.same(Array.from(rows[1].labels!), [EOS, -100, 31, 32, 33])
  // Row 2 continues document 3 (its first position's label is never used), then row 3.
  t.same(Array.from(rows[2].segmentIds!), [0, 0, 0, 0, 1])
  t.same(Array.from(rows[3].labels!), [41, EOS])
  t.throws(() => packDocuments(docs, 1, EOS), { name: 'RangeError', message: /seqLength must be an integer >= 2/ })
})

/** Each document's mean-loss gradients weighted by its token count, summed: what a packed row's mean-loss gradient times its count should be. */
function weightedSum(parts: Array<{ count: number; grads: ReadonlyMap<string, ArrayLike<number>> }>): Map<string, Float64Array> {
  const sums = new Map<string, Float64Array>()
  for (const r of parts)
    for (const [k, g] of r.grads) {
      const s = sums.get(k) ?? sums.set(k, new Float64Array(g.length)).get(k)!
      for (let i = 0; i < g.length; i++) s[i] += g[i] * r.count
    }
  return sums
}

/** Per gradient tensor: ||packed * count - sum of the documents' count-weighted gradients|| / ||that sum||. */
function packedVsDocs(packed: { count: number; grads: ReadonlyMap<string, ArrayLike<number>> }, sums: Map<string, Float64Array>): Map<string, number> {
  const out = new Map<string, number>()
  for (const [k, s] of sums) out.set(k, relErr(Float64Array.from(packed.grads.get(k)!, (x) => x * packed.count), s))
  return out
}

for (const name of ['ernie-tiny', 'qwen3-tiny'] as const) {
  t.test(`${name}: a packed row computes what its documents compute one by one, at every precision`, async (t) => {
    const model = await ErnieModel.fromPretrained(path.join(FIXTURES, name))
    const { config, weights } = fixture(name)
    const V = model.config.vocab_size
    const H = model.config.hidden_size
    const docs = [[5, 9, 13], [7, 3, 11, 4, 8, 1, 17, 6, 12], [6], [14, 15, 16, 3]].map((d) => d.map((x) => x % V))
    const [row] = packDocuments(docs, 64, EOS)
    const T = row.inputIds.length
    const packed = { data: Int32Array.from(row.inputIds), shape: [1, T] as [number, number] }
    const segmentIds = { data: Int32Array.from(row.segmentIds!), shape: [1, T] as [number, number] }
    const labels = { data: Int32Array.from(row.labels!), shape: [1, T] as [number, number] }
    // f32 level of the hidden states (model.test.ts): a document's tokens meet the same products
    // on the same operands, packed or alone, so the two agree to it at every precision.
    const f32Level = goldenErr(name, oracleBase(name, fp32).hidden, 'base.hidden', H)
    // The gradients differ by more: the mean loss scales them by 1 / count, which differs
    // between the row and each document, so the products see other operands (rounded otherwise
    // at bf16) and sum over other tokens. What the precision predicts is the oracle's own
    // difference between the two computations at the same preset, tensor by tensor.
    const oracleApart = (p: Precision) =>
      cached(`packed|${name}|${p.name}`, () => {
        const batch: OracleBatch = { batch: 1, seq: T, inputIds: packed.data, segmentIds: segmentIds.data, labels: labels.data }
        const one = lossAndGrad(config, weights, batch, { precision: p })
        const parts = docs.map((d) => lossAndGrad(config, weights, { batch: 1, seq: d.length + 1, inputIds: [...d, EOS] }, { precision: p }))
        return packedVsDocs(one, weightedSum(parts))
      })

    const unpacked = await model.forward({ inputIds: packed })
    const aloneDefault: number[] = []
    for (const d of docs) aloneDefault.push(...(await model.forward({ inputIds: [[...d, EOS]] })).hidden!)
    t.ok(relErr(unpacked.hidden!, aloneDefault) > 1e-2, 'without segment ids the documents see each other (the test can fail)')

    await forEachIsaAndPrecision(async (isa, precision) => {
      const p = oraclePrecision(isa, precision)
      const what = `${isa} ${precision} (oracle ${p.name})`
      const got = await model.forward({ inputIds: packed, segmentIds }, { precision })
      const alone: number[] = []
      for (const d of docs) alone.push(...(await model.forward({ inputIds: [[...d, EOS]] }, { precision })).hidden!)
      withinBound(t, `${what} hidden states`, relErr(got.hidden!, alone), f32Level)

      // Loss and every base-weight gradient: the packed row's token-weighted mean equals the
      // documents' own losses and gradients, weighted by their token counts.
      const pr = await model.lossAndGrad({ inputIds: packed, segmentIds, labels }, { trainBase: true, precision })
      const parts: Array<{ loss: number; count: number; grads: Map<string, Float32Array> }> = []
      for (const d of docs) parts.push(await model.lossAndGrad({ inputIds: [[...d, EOS]] }, { trainBase: true, precision }))
      const count = parts.reduce((a, r) => a + r.count, 0)
      const lossSum = parts.reduce((a, r) => a + r.loss * r.count, 0)
      t.equal(pr.count, count, `${what}: ${count} predicted tokens, no prediction across a document boundary`)
      // The same per-token losses (f32), summed in double: at most f32 level apart.
      t.ok(lossErr(pr.loss, lossSum / count) <= LOSS_FLOOR, `${what}: loss ${pr.loss} vs ${lossSum / count}`)
      const apart = oracleApart(p)
      let worst = 0, worstName = ''
      for (const [k, err] of packedVsDocs(pr, weightedSum(parts))) {
        const scale = apart.get(k)!
        if (err / scale > worst) [worst, worstName] = [err / scale, k]
        if (!(err <= FACTOR * scale)) t.fail(`${what} ${k}: packed vs documents ${err.toExponential(2)} > ${FACTOR} x ${scale.toExponential(2)} (the oracle's)`)
      }
      t.ok(apart.size >= 20 && worst <= FACTOR, `${what}: ${apart.size} gradient tensors, worst ${worst.toFixed(2)} x the oracle's difference, at ${worstName}`)
    })
    await model.dispose()
  })
}

t.test('segmentIds of the wrong shape are rejected', async (t) => {
  const model = await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny'))
  await t.rejects(model.forward({ inputIds: [[1, 2, 3]], segmentIds: [[0, 0]] }), { name: 'RangeError', message: /segmentIds: shape \[1, 2\] differs from inputIds' \[1, 3\]/ })
  await model.dispose()
})

const TINY_CONFIG = {
  architectures: ['Ernie4_5ForCausalLM'],
  model_type: 'ernie4_5',
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  head_dim: 16,
  vocab_size: 8000,
  rms_norm_eps: 1e-5,
  rope_theta: 500000,
  tie_word_embeddings: true,
  pad_token_id: 0,
  bos_token_id: 1,
  eos_token_id: 2,
}

function corpus(dir: string): string {
  // Short, repetitive reviews: a tiny model learns them within a few dozen steps.
  const lines: string[] = []
  const parts = ['房间很干净', '服务态度很好', '早餐不错', '位置方便', '价格有点贵', '隔音太差了', '下次还会再来']
  for (let i = 0; i < 600; i++) lines.push(`${parts[i % 7]}，${parts[(i * 3 + 1) % 7]}。`)
  const file = path.join(dir, 'corpus.txt')
  fs.writeFileSync(file, lines.join('\n') + '\n\n')
  return file
}

t.test('pretrain: the loss falls, and the output is a model directory that loads', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-pt-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const tokenizer = await Tokenizer.fromDirectory(DEFAULT_TOKENIZER)
  const out = path.join(dir, 'model')
  const r = await pretrain({
    textFiles: [corpus(dir)],
    tokenizer,
    tokenizerDir: DEFAULT_TOKENIZER,
    config: TINY_CONFIG,
    outputDir: out,
    seqLength: 64,
    batchSize: 8,
    maxSteps: 40,
    learningRate: 3e-3,
    warmupSteps: 5,
    evalDocuments: 40,
    evalSteps: 20,
    seed: 3,
  })
  t.equal(r.corpus.documents, 600, 'blank lines are not documents')
  t.equal(r.corpus.evalDocuments, 40)
  t.equal(r.train.steps, 40)
  const first = r.train.lossHistory[0]
  t.ok(Math.abs(first - Math.log(8000)) < 0.5, `the first loss ${first.toFixed(3)} is near ln(8000) = ${Math.log(8000).toFixed(3)}`)
  t.ok(r.evalLoss < first - 2, `held-out loss ${r.evalLoss.toFixed(3)} after 40 steps`)
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.model', 'tokenizer_config.json', PRETRAIN_LOG_FILE]) t.ok(fs.existsSync(path.join(out, f)), `${f} written`)
  t.notOk(fs.existsSync(path.join(out, 'checkpoints')), 'a finished run leaves no checkpoints')
  const log = JSON.parse(fs.readFileSync(path.join(out, PRETRAIN_LOG_FILE), 'utf8'))
  t.equal(log.lossHistory.length, 40, 'the log holds the loss curve')
  t.equal(log.evalHistory.length, 2, 'and the evaluations')

  // The saved model reproduces the held-out loss the run reported (bf16 weights both times), on
  // the held-out documents pretrain picks: the first evalDocuments after a shuffle seeded by `seed`.
  const model = await ErnieModel.fromPretrained(out)
  t.ok(model.tokenizer, 'the tokenizer comes with it')
  const texts = await readDocuments([path.join(dir, 'corpus.txt')])
  const random = rng(3)
  for (let i = texts.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[texts[i], texts[j]] = [texts[j], texts[i]]
  }
  let sum = 0
  let count = 0
  for (const row of packDocuments(texts.slice(0, 40).map((d) => tokenizer.encode(d)), 64, EOS)) {
    const flat = (a: ArrayLike<number>) => ({ data: Int32Array.from(a), shape: [1, a.length] as [number, number] })
    const l = await model.loss({ inputIds: flat(row.inputIds), segmentIds: flat(row.segmentIds!), labels: flat(row.labels!) })
    sum += l.loss * l.count
    count += l.count
  }
  t.ok(Math.abs(sum / count - r.evalLoss) < 1e-4 * r.evalLoss, `the saved model's held-out loss ${(sum / count).toFixed(5)} vs the run's ${r.evalLoss.toFixed(5)}`)
  await model.dispose()
})

t.test('pretrain: invalid UTF-8 names the file and line', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-pt-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'bad.txt')
  fs.writeFileSync(file, Buffer.concat([Buffer.from('好评\n不错\n'), Buffer.from([0x61, 0xff, 0x62, 0x0a])]))
  await t.rejects(readDocuments([file]), { name: 'DataError', message: new RegExp(`bad.txt:3: invalid UTF-8 at byte 1`) })
  await t.rejects(readDocuments([path.join(dir, 'missing.txt')]), { name: 'DataError', message: /missing.txt: no such file/ })
})

t.test('the pretrain command: help, usage errors, a short run', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-pt-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const run = runMain
  const help = await run(['pretrain', '--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /Usage: ernie-sentiment pretrain --text FILE/)
  const missing = await run(['pretrain', '--config', 'x.json'])
  t.equal(missing.code, 2)
  t.match(missing.stderr, /--text is required/)
  const config = path.join(dir, 'config.json')
  fs.writeFileSync(config, JSON.stringify(TINY_CONFIG))
  const out = path.join(dir, 'out')
  const r = await run(['pretrain', '--text', corpus(dir), '--config', config, '--tokenizer', DEFAULT_TOKENIZER, '--out', out, '--max-steps', '4', '--batch-size', '4', '--seq-length', '32', '--eval-documents', '10', '--json'])
  t.equal(r.code, 0, r.stderr)
  const summary = JSON.parse(r.stdout)
  t.equal(summary.steps, 4)
  t.ok(Number.isFinite(summary.evalLoss), 'held-out loss reported')
  t.match(r.stderr, /pretrain\s+step 4\/4/, 'progress lines on stderr')
  t.ok(fs.existsSync(path.join(out, 'model.safetensors')))
})

t.test('pretrain: a kill during the final save leaves the checkpoint; a finished run is not resumed from 0; temporaries of a killed writer go', async (t) => {
  const { killAtPause } = await import('../helpers/helpers')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-pt-kill-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const config = path.join(dir, 'config.json')
  fs.writeFileSync(config, JSON.stringify(TINY_CONFIG))
  const out = path.join(dir, 'out')
  const args = ['--text', corpus(dir), '--config', config, '--tokenizer', DEFAULT_TOKENIZER, '--out', out, '--max-steps', '4', '--save-steps', '2', '--batch-size', '4', '--seq-length', '32', '--eval-documents', '10', '--json', '--quiet']
  const killed = await killAtPause(path.join(__dirname, 'pretrain-child.ts'), args, 'pretrain:final-save')
  t.ok(killed.paused, `killed before the final save (${killed.stderr.slice(-300)})`)
  t.ok(fs.existsSync(path.join(out, 'checkpoints', 'checkpoint-4', 'trainer_state.json')), 'the last checkpoint survives the kill')
  t.notOk(fs.existsSync(path.join(out, 'model.safetensors')), 'no final model yet')

  // What a writer killed mid-save leaves beside the model: a partial temporary of a dead process.
  const dead = (await import('node:child_process')).spawnSync(process.execPath, ['-e', 'process.exit(0)']).pid!
  const stray = path.join(out, `.model.safetensors.${dead}.0123456789ab.tmp`)
  fs.writeFileSync(stray, 'partial')

  const checkpointLosses = JSON.parse(fs.readFileSync(path.join(out, 'checkpoints', 'checkpoint-4', 'trainer_state.json'), 'utf8')).lossHistory
  const resumed = await runMain(['pretrain', ...args.filter((a) => a !== '--quiet'), '--resume'])
  t.equal(resumed.code, 0, resumed.stderr)
  const summary = JSON.parse(resumed.stdout)
  t.equal(summary.steps, 4, 'resumed at step 4: nothing trained again')
  t.notOk(fs.existsSync(stray), 'the dead writer\'s temporary is gone')
  t.ok(fs.existsSync(path.join(out, 'model.safetensors')), 'the final model written')
  t.notOk(fs.existsSync(path.join(out, 'checkpoints')), 'and only then the checkpoints removed')
  const log = JSON.parse(fs.readFileSync(path.join(out, PRETRAIN_LOG_FILE), 'utf8'))
  t.notMatch(resumed.stderr, /step \d+\/4/, 'the resumed run trained no step (a run from step 0 reports its steps)')
  t.same(log.lossHistory, checkpointLosses.map((l: number) => Number(l.toFixed(4))), 'the log carries the killed run\'s losses')

  const again = await runMain(['pretrain', ...args, '--resume'])
  t.equal(again.code, 1)
  t.match(again.stderr, /\[ERR_RUN_FINISHED\] pretrain: .*out holds a finished run \(.*pretrain_log\.json: 4 steps, completed\); there is nothing to resume/)
})

t.test('cleanUpAfterKilledWriters: a dead writer\'s temporaries removed, its last good directory restored, a live one\'s left', async (t) => {
  const { cleanUpAfterKilledWriters } = await import('../../lib/io/atomic')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-stale-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const dead = (await import('node:child_process')).spawnSync(process.execPath, ['-e', 'process.exit(0)']).pid!
  const live = process.ppid
  // Killed between writeDirectoryAtomically's two renames: the target missing, its old version aside.
  fs.mkdirSync(path.join(dir, `.checkpoint-2.${dead}.aaaaaaaaaaaa.old`))
  fs.writeFileSync(path.join(dir, `.checkpoint-2.${dead}.aaaaaaaaaaaa.old`, 'trainer_state.json'), '{}')
  // The same with the target present: the old copy is just trash.
  fs.mkdirSync(path.join(dir, 'checkpoint-4'))
  fs.mkdirSync(path.join(dir, `.checkpoint-4.${dead}.bbbbbbbbbbbb.old`))
  fs.mkdirSync(path.join(dir, `.checkpoint-6.${dead}.cccccccccccc.tmp`))
  fs.writeFileSync(path.join(dir, `.x.safetensors.${dead}.dddddddddddd.deleted`), '')
  fs.writeFileSync(path.join(dir, `.y.safetensors.${live}.eeeeeeeeeeee.tmp`), '')
  fs.writeFileSync(path.join(dir, `.notes.txt`), '')
  const r = await cleanUpAfterKilledWriters(dir)
  t.same(r.restored, ['checkpoint-2'])
  t.same(r.removed.sort(), [`.checkpoint-4.${dead}.bbbbbbbbbbbb.old`, `.checkpoint-6.${dead}.cccccccccccc.tmp`, `.x.safetensors.${dead}.dddddddddddd.deleted`].sort())
  t.same(fs.readdirSync(dir).sort(), [`.notes.txt`, `.y.safetensors.${live}.eeeeeeeeeeee.tmp`, 'checkpoint-2', 'checkpoint-4'].sort())
  t.ok(fs.existsSync(path.join(dir, 'checkpoint-2', 'trainer_state.json')), 'restored whole')
})

t.test('continued pre-training from a base: its weights and tokenizer, a matching-tokenizer check, the CLI --base', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-pt-base-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const text = corpus(dir)
  const common = { textFiles: [text], maxSteps: 3, batchSize: 4, seqLength: 32, evalDocuments: 10, warmupSteps: 0, saveSteps: 0, seed: 1 }
  // The bundled model knows review Chinese: its first loss on these reviews is far below that of
  // the same architecture from random weights (ln 8000 = 9.0 nats).
  const cont = await pretrain({ ...common, base: DEFAULT_TOKENIZER, outputDir: path.join(dir, 'continued') })
  const config = JSON.parse(fs.readFileSync(path.join(DEFAULT_TOKENIZER, 'config.json'), 'utf8'))
  const tokenizer = await Tokenizer.fromDirectory(DEFAULT_TOKENIZER)
  const fresh = await pretrain({ ...common, config, tokenizer, tokenizerDir: DEFAULT_TOKENIZER, outputDir: path.join(dir, 'fresh') })
  t.ok(cont.train.lossHistory[0] < fresh.train.lossHistory[0] - 2, `first loss from the base ${cont.train.lossHistory[0].toFixed(3)}, from random ${fresh.train.lossHistory[0].toFixed(3)}`)
  const log = JSON.parse(fs.readFileSync(path.join(dir, 'continued', PRETRAIN_LOG_FILE), 'utf8'))
  t.equal(log.settings.base, DEFAULT_TOKENIZER, 'the log names the base')
  t.equal(log.settings.learningRate, 1e-4, 'a gentler default rate from a base')

  // The output starts from the base's weights and moved a little (3 steps at 1e-4).
  const base = await ErnieModel.fromPretrained(DEFAULT_TOKENIZER)
  const after = await ErnieModel.fromPretrained(path.join(dir, 'continued'))
  t.teardown(async () => {
    await base.dispose()
    await after.dispose()
  })
  // A matrix every step updates, of small values (a norm's 1.0 would hide 3 steps of 1e-4 in bf16 rounding).
  const w0 = base.source.view('model.layers.0.mlp.down_proj.weight') as Uint16Array
  const w1 = after.source.view('model.layers.0.mlp.down_proj.weight') as Uint16Array
  const rel = relErr(Array.from(w1, (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0]), Array.from(w0, (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0]))
  t.ok(rel > 0 && rel < 0.05, `layer 0's down projection moved by ${rel.toExponential(2)} (relative): trained, from the base`)
  t.ok(fs.existsSync(path.join(dir, 'continued', 'tokenizer.model')), "the base's tokenizer copied")

  // Another vocabulary would feed the base's embeddings the wrong rows.
  const other = path.join(__dirname, '..', 'fixtures', 'ernie-tiny')
  await t.rejects(pretrain({ ...common, base: DEFAULT_TOKENIZER, tokenizer: await Tokenizer.fromDirectory(other), tokenizerDir: other, outputDir: path.join(dir, 'x') }), {
    code: 'ERR_TOKENIZER_MISMATCH',
    message: /pretrain: the tokenizer in .*ernie-tiny is not the base's .*: id \d+ is /,
  })

  const cli = await runMain(['pretrain', '--text', text, '--base', DEFAULT_TOKENIZER, '--out', path.join(dir, 'cli'), '--max-steps', '2', '--batch-size', '4', '--seq-length', '32', '--eval-documents', '10', '--json', '--quiet'])
  t.equal(cli.code, 0, cli.stderr)
  t.equal(JSON.parse(cli.stdout).steps, 2)
  const both = await runMain(['pretrain', '--text', text, '--base', DEFAULT_TOKENIZER, '--config', path.join(DEFAULT_TOKENIZER, 'config.json'), '--out', path.join(dir, 'y')])
  t.equal(both.code, 1)
  t.match(both.stderr, /\[ERR_CONFIG\] --config .*: a --base brings its own architecture/)
})
