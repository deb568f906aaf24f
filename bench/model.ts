// npm run bench:model [-- --json] [-- --peer] [-- --layers N] [-- --precision auto|fp32|bf16]
// The peer's workload on the real ERNIE-4.5-0.3B config with random weights: embedding, 18
// layers, final norm, no LM head. Forward tokens/s at batch 1 x 64 and 16 x 128; load_s: the
// model written once to a temporary safetensors file, then a warm fromPretrained to its first
// forward; peak_rss_mb. --peer runs ../shared/bench/torch_peer.py in the dtype matching the
// precision in force (bf16 or fp32, see runTorchPeer).
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { ErnieModel, ERNIE_4_5_0_3B_CONFIG, kernels } from '../lib/index'
import { benchPrecision, flagValue, peakRssMb, peerDtype, refuseEmulatedBuild, report, runTorchPeer, timeIt, wantPeer, type Row } from './common'

async function main(): Promise<void> {
  refuseEmulatedBuild()
  const layers = Number(flagValue('--layers') ?? ERNIE_4_5_0_3B_CONFIG.num_hidden_layers)
  const config = { ...ERNIE_4_5_0_3B_CONFIG, num_hidden_layers: layers }
  const rows: Row[] = []
  const model = ErnieModel.random(config, { seed: 1, precision: benchPrecision })
  const V = config.vocab_size
  for (const [B, T] of [[1, 64], [16, 128]]) {
    const ids = { data: Int32Array.from({ length: B * T }, (_, i) => (i * 7919 + 13) % V), shape: [B, T] as [number, number] }
    const s = await timeIt(() => model.forward({ inputIds: ids }), B * T > 1000 ? 3 : 5, 1)
    rows.push({ key: `infer_${B}x${T}`, value: (B * T) / s, unit: 'tok/s' })
  }
  // load: write once, then time a warm load to the first forward
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-bench-'))
  let loadS = NaN
  try {
    await model.save(dir)
    const first = await ErnieModel.fromPretrained(dir, { precision: benchPrecision })
    await first.forward({ inputIds: [[1, 2, 3, 4]] })
    await first.dispose()
    const t0 = process.hrtime.bigint()
    const warm = await ErnieModel.fromPretrained(dir, { precision: benchPrecision })
    await warm.forward({ inputIds: [[1, 2, 3, 4]] })
    loadS = Number(process.hrtime.bigint() - t0) / 1e9
    await warm.dispose()
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
  await model.dispose()
  if (wantPeer) {
    const peer = runTorchPeer(layers)
    for (const r of rows) {
      const p = peer?.[`infer_${peerDtype()}_${r.key.slice('infer_'.length)}`]
      if (p !== undefined) r.peer = p
    }
  }
  report(`model: ERNIE-4.5-0.3B config, ${layers} layers, random bf16 weights (${kernels.activeIsa()}, ${kernels.numThreads()} threads, precision ${benchPrecision}${wantPeer ? `, peer ${peerDtype()}` : ''})`, rows, {
    load_s: Number(loadS.toFixed(3)),
    peak_rss_mb: peakRssMb(),
  })
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
