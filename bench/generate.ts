// npm run bench:generate [-- --json] [-- --peer] [-- --layers N] [-- --prompt N] [-- --tokens N]
//                        [-- --repeats N] [-- --precision auto|fp32|bf16]
// Greedy decoding at batch 1 on the real ERNIE-4.5-0.3B config with random bf16 weights: a prompt
// of --prompt tokens (default 64), then --tokens new ones (default 64) with the KV cache. decode:
// the tokens after the first over the time they took (the median of --repeats runs, default 3,
// after a warm-up); prefill: the prompt's tokens over the time to the first token. --peer writes
// the weights to a temporary checkpoint and runs bench/generate_peer.py (PyTorch, a greedy decoder
// with a KV cache of the same architecture) on them in the dtype matching the precision in force,
// with as many threads, and reports how many of the first greedy tokens agree and how far apart
// the logits after the prompt are (random weights tend to repeat one token: the logits say more).
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { ErnieModel, ERNIE_4_5_0_3B_CONFIG, kernels } from '../lib/index'
import { benchPrecision, flagValue, median, peakRssMb, peerDtype, refuseEmulatedBuild, report, runPeer, wantPeer, type Row } from './common'

/** The repository's bench/ directory (this file runs from dist/bench as compiled JavaScript). */
function benchDir(): string {
  for (let dir = __dirname; path.dirname(dir) !== dir; dir = path.dirname(dir))
    if (fs.existsSync(path.join(dir, 'package.json'))) return path.join(dir, 'bench')
  throw new Error(`no package.json above ${__dirname}`)
}

/** One greedy run through the stream: seconds to the first token, and for the rest. */
async function timedGreedy(model: ErnieModel, prompt: number[], tokens: number): Promise<{ prefillS: number; decodeS: number; tokens: number[] }> {
  const out: number[] = []
  const t0 = process.hrtime.bigint()
  let t1 = t0
  for await (const chunk of model.generateStream(prompt, { maxNewTokens: tokens, eosTokenIds: [] })) {
    out.push(...chunk.tokens)
    if (out.length === 1 && chunk.tokens.length === 1) t1 = process.hrtime.bigint()
  }
  const t2 = process.hrtime.bigint()
  return { prefillS: Number(t1 - t0) / 1e9, decodeS: Number(t2 - t1) / 1e9, tokens: out }
}


async function main(): Promise<void> {
  refuseEmulatedBuild()
  const layers = Number(flagValue('--layers') ?? ERNIE_4_5_0_3B_CONFIG.num_hidden_layers)
  const promptTokens = Number(flagValue('--prompt') ?? 64)
  const newTokens = Number(flagValue('--tokens') ?? 64)
  const repeats = Number(flagValue('--repeats') ?? 3)
  for (const [name, v, min] of [['--layers', layers, 1], ['--prompt', promptTokens, 1], ['--tokens', newTokens, 2], ['--repeats', repeats, 1]] as const)
    if (!Number.isInteger(v) || v < min) throw new Error(`${name} must be an integer >= ${min}`)
  const config = { ...ERNIE_4_5_0_3B_CONFIG, num_hidden_layers: layers }
  const model = ErnieModel.random(config, { seed: 1, precision: benchPrecision })
  const prompt = Array.from({ length: promptTokens }, (_, i) => (i * 7919 + 13) % config.vocab_size)
  await timedGreedy(model, prompt.slice(0, 8), 4) // warm-up
  const runs = []
  for (let i = 0; i < repeats; i++) runs.push(await timedGreedy(model, prompt, newTokens))
  const ours = runs[0].tokens
  const rows: Row[] = [
    { key: `decode_1x${promptTokens}+${newTokens}`, value: (newTokens - 1) / median(runs.map((r) => r.decodeS)), unit: 'tok/s' },
    { key: `prefill_1x${promptTokens}`, value: promptTokens / median(runs.map((r) => r.prefillS)), unit: 'tok/s' },
  ]
  const extra: Record<string, unknown> = { prompt_tokens: promptTokens, new_tokens: newTokens, threads: kernels.numThreads() }
  if (wantPeer) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-bench-generate-'))
    try {
      await model.save(dir)
      const peer = runPeer('generate_peer.py', [dir, prompt.join(','), String(newTokens), peerDtype(), String(kernels.numThreads())], [], benchDir()) as
        | { decode_tokens_per_s: number; prefill_tokens_per_s: number; tokens: number[]; top_logits: [number, number][] }
        | undefined
      if (peer) {
        rows[0].peer = peer.decode_tokens_per_s
        rows[1].peer = peer.prefill_tokens_per_s
        const differ = ours.findIndex((id, i) => id !== peer.tokens[i])
        extra.greedy_tokens_agree = differ < 0 ? ours.length : differ
        // the logits after the prompt, ours from forward, at the peer's ten largest
        const V = config.vocab_size
        const { logits } = await model.forward({ inputIds: [prompt] }, { output: ['logits'] })
        const last = logits!.subarray((promptTokens - 1) * V)
        const gap = Math.max(...peer.top_logits.map(([id, v]) => Math.abs(last[id] - v)))
        const spread = peer.top_logits[0][1] - peer.top_logits[9][1]
        extra.top10_logit_max_abs_diff = Number(gap.toPrecision(3))
        console.error(
          `greedy tokens: ours ${ours.slice(0, 8).join(',')}...; peer ${peer.tokens.slice(0, 8).join(',')}...; the first ${extra.greedy_tokens_agree} of ${ours.length} agree\n` +
            `logits after the prompt at the peer's ten largest (${peer.top_logits[0][1].toFixed(3)} to ${peer.top_logits[9][1].toFixed(3)}, spread ${spread.toFixed(3)}): largest difference ${gap.toPrecision(3)}`,
        )
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
  await model.dispose()
  extra.peak_rss_mb = peakRssMb()
  report(
    `generate: ERNIE-4.5-0.3B config, ${layers} layers, random bf16 weights, batch 1, greedy (${kernels.activeIsa()}, ${kernels.numThreads()} threads, precision ${benchPrecision}${wantPeer ? `, peer ${peerDtype()}` : ''})`,
    rows,
    extra,
  )
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
