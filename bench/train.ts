// npm run bench:train [-- --json] [-- --peer [--rounds R]] [-- --layers N] [-- --batch B --seq T]
//                     [-- --recompute-only --one-step] [-- --steps N]
//                     [-- --precision auto|fp32|bf16]
// Training throughput on the real ERNIE-4.5-0.3B config with random weights and the peer's
// workload: embedding, 18 layers, final norm, loss = mean of the squared final hidden states,
// batch 8 x 128, optimiser step included.
//   lora_train_8x128: LoRA r=16 alpha=64 on all seven projections, base frozen, AdamW.
//   full_train_8x128: every weight trains (fp32 masters and AdamW moments, bf16 compute copies).
//   peak_rss_mb / peak_rss_recompute_mb: LoRA training's peak memory without / with activation
//   recompute. Each configuration runs in its own process, so peaks do not mix.
import { execFileSync } from 'node:child_process'
import { ErnieModel, ERNIE_4_5_0_3B_CONFIG, LoraAdapter, kernels } from '../lib/index'
import { argv, benchPrecision, flagValue, median, peakRssMb, peerDtype, refuseEmulatedBuild, report, runTorchPeer, wantPeer, type Row } from './common'

// --batch / --seq change the shape (e.g. --seq 512 for the recompute memory figure)
const B = Number(flagValue('--batch') ?? 8), T = Number(flagValue('--seq') ?? 128)
// Timed steps after one warm-up, the median reported; the peer is run with the same count
// (its own 2 and the slower of them otherwise), so both sides report the same statistic.
const STEPS = Number(flagValue('--steps') ?? 5)
// With --peer, LoRA training (the figure compared) runs in rounds, ours then the peer's, and each
// side reports its median round: this machine's speed drifts by 10-20% over minutes, as much as
// the gap measured, and one pass of each minutes apart mostly measures the drift. The JSON
// keeps every round's pair.
const ROUNDS = wantPeer ? Number(flagValue('--rounds') ?? 3) : 1

async function child(mode: string, layers: number): Promise<Record<string, number>> {
  const model = ErnieModel.random({ ...ERNIE_4_5_0_3B_CONFIG, num_hidden_layers: layers }, { seed: 1, precision: benchPrecision })
  const V = model.config.vocab_size
  const inputIds = { data: Int32Array.from({ length: B * T }, (_, i) => (i * 7919 + 13) % V), shape: [B, T] as [number, number] }
  const recompute = mode.endsWith('-recompute')
  const full = mode.startsWith('full')
  const adapter = full ? undefined : LoraAdapter.create(model, { r: 16, alpha: 64, seed: 1 })
  // what the optimiser updates: the adapter, or fp32 masters of every base weight whose bf16
  // compute copy (the model's own arrays) is rewritten after each step
  const params = new Map<string, { master: Float32Array; bf16?: Uint16Array; m: Float32Array; v: Float32Array }>()
  if (adapter) for (const [name, t] of adapter.tensors) params.set(name, { master: t, m: new Float32Array(t.length), v: new Float32Array(t.length) })
  else
    for (const name of model.source.names()) {
      const bf16 = model.source.view(name) as Uint16Array
      const bits = new Uint32Array(bf16.length)
      for (let i = 0; i < bf16.length; i++) bits[i] = bf16[i] << 16
      const master = new Float32Array(bits.buffer)
      params.set(name, { master, bf16, m: new Float32Array(bf16.length), v: new Float32Array(bf16.length) })
    }
  const grads = new Map<string, Float32Array>()
  let step = 0
  const trainStep = async () => {
    for (const g of grads.values()) g.fill(0)
    await model.lossAndGrad({ inputIds }, { adapter, trainBase: full, recompute, grads, objective: { kind: 'meanSquare' } })
    step++
    await Promise.all(
      [...params].map(([name, p]) =>
        kernels.adamwStep({ params: p.master, grads: grads.get(name)!, m: p.m, v: p.v, paramsBf16: p.bf16, lr: 1e-4, weightDecay: 0, step }),
      ),
    )
  }
  await trainStep() // warm-up
  const times: number[] = []
  for (let i = 0; i < (argv.includes('--one-step') ? 1 : STEPS); i++) {
    const t0 = process.hrtime.bigint()
    await trainStep()
    times.push(Number(process.hrtime.bigint() - t0) / 1e9)
  }
  const s = [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)]
  return { tokens_per_s: (B * T) / s, step_s: s, peak_rss_mb: peakRssMb() }
}

async function main(): Promise<void> {
  refuseEmulatedBuild()
  const layers = Number(flagValue('--layers') ?? ERNIE_4_5_0_3B_CONFIG.num_hidden_layers)
  const mode = flagValue('--child')
  if (mode) {
    console.log(JSON.stringify(await child(mode, layers)))
    return
  }
  const run = (m: string): Record<string, number> => {
    const out = execFileSync(process.execPath, [__filename, '--child', m, '--layers', String(layers), '--batch', String(B), '--seq', String(T), '--precision', benchPrecision, '--steps', String(STEPS)], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    return JSON.parse(out.trim().split('\n').pop()!)
  }
  // The peer's LoRA training alone (its inference figures skipped), timed over as many steps as ours.
  const peerLora = (): number | undefined =>
    runTorchPeer(layers, peerDtype(), [
      ['    for (B, T) in ((1, 64), (16, 128)):', '    for (B, T) in ():'],
      ['    t = bench(step, 2)', `    t = bench(step, ${STEPS})`],
    ])?.[`lora_train_${peerDtype()}_${B}x${T}`]
  const onlyRecompute = argv.includes('--recompute-only')
  const loraRounds: Record<string, number>[] = [], peerRounds: number[] = []
  for (let round = 0; round < (onlyRecompute ? 0 : ROUNDS); round++) {
    loraRounds.push(run('lora'))
    const p = wantPeer ? peerLora() : undefined
    if (p !== undefined) peerRounds.push(p)
  }
  const loraRecompute = run('lora-recompute')
  const full = argv.includes('--no-full') || onlyRecompute ? undefined : run('full')
  const rows: Row[] = []
  const loraTokens = loraRounds.map((r) => r.tokens_per_s)
  if (loraRounds.length) rows.push({ key: `lora_train_${B}x${T}`, value: median(loraTokens), unit: 'tok/s', peer: peerRounds.length ? median(peerRounds) : undefined })
  rows.push({ key: `lora_train_recompute_${B}x${T}`, value: loraRecompute.tokens_per_s, unit: 'tok/s' })
  if (full) rows.push({ key: `full_train_${B}x${T}`, value: full.tokens_per_s, unit: 'tok/s' })
  const rounds = peerRounds.length === loraTokens.length && peerRounds.length > 1
    ? { lora_train_rounds: loraTokens.map((v) => Number(v.toFixed(1))), peer_lora_train_rounds: peerRounds.map((v) => Number(v.toFixed(1))) }
    : {}
  if (rounds.lora_train_rounds)
    console.error(`rounds (ours / peer): ${loraTokens.map((v, i) => `${v.toFixed(1)} / ${peerRounds[i].toFixed(1)}`).join(', ')}`)
  report(`training: ERNIE-4.5-0.3B config, ${layers} layers, batch ${B} x ${T} (${kernels.activeIsa()}, ${kernels.numThreads()} threads, precision ${benchPrecision}${wantPeer ? `, peer ${peerDtype()}, ${ROUNDS} rounds` : ''})`, rows, {
    ...rounds,
    ...(loraRounds.length ? { peak_rss_mb: Math.max(...loraRounds.map((r) => r.peak_rss_mb)) } : {}),
    peak_rss_recompute_mb: loraRecompute.peak_rss_mb,
    ...(full ? { peak_rss_full_mb: full.peak_rss_mb } : {}),
  })
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
