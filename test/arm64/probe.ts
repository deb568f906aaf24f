// Runs inside the emulated linux-arm64 Node: test/arm64/arm64.test.ts compiles it with lib/
// (transpiled only) and starts it under qemu-aarch64, with ERNIE_ADDON naming the arm64 prebuild.
// It does the engine's part of the checks alone and writes what the engine computed to the file
// named on its command line; the test computes the references and checks on the host, since
// JavaScript under emulation runs some twenty times slower. What it runs:
// - every case of the backend-ops table (test/kernels/op-cases.ts) on the CPU, at each precision;
// - on each tiny fixture, at each precision: the forward on the golden batch (hidden states and
//   logits), and the LoRA loss and every gradient (LoRA and base weights) with the golden adapter.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { kernels } from '../../lib/index'
import { ErnieModel, LoraAdapter } from '../../lib/model/index'
import { readSafetensorsForTest } from '../helpers/helpers'
import type { OpPrecision } from '../helpers/precision-helpers'
import { CASES, precisionsOf } from '../kernels/op-cases'
import { replacer } from './wire'

/** The CPU backend as the backend-ops table states it. */
export const CPU = { precisions: ['fp32', 'bf16'] as OpPrecision[] }
export const MODEL_FIXTURES = ['ernie-tiny', 'qwen3-tiny'] as const
export const MODEL_PRECISIONS = ['fp32', 'bf16'] as const

export interface CaseRun {
  /** The case's index in CASES. */
  index: number
  precision: OpPrecision
  outputs?: Record<string, ArrayLike<number>>
  error?: string
}

export interface ModelRun {
  fixture: (typeof MODEL_FIXTURES)[number]
  precision: (typeof MODEL_PRECISIONS)[number]
  hidden: Float32Array
  logits: Float32Array
  loraLoss: number
  grads: Record<string, Float32Array>
}

export interface ProbeResult {
  platform: string
  arch: string
  node: string
  isas: kernels.Isa[]
  activeIsa: kernels.Isa
  cases: CaseRun[]
  models: ModelRun[]
}

async function modelRuns(fixturesDir: string): Promise<ModelRun[]> {
  const runs: ModelRun[] = []
  for (const fixture of MODEL_FIXTURES) {
    const dir = path.join(fixturesDir, fixture)
    const model = await ErnieModel.fromPretrained(dir, { tokenizer: false })
    const golden = readSafetensorsForTest(path.join(dir, 'golden.safetensors'))
    const adapter = LoraAdapter.fromTensors(model, { r: 4, alpha: 8 }, (n) => {
      const g = golden.get(`lora.${n}`)
      return g && { shape: g.shape, data: g.raw as Float32Array }
    })
    const ids = golden.get('input_ids')!, mask = golden.get('attention_mask')!
    const shape = ids.shape as [number, number]
    const input = { inputIds: { data: ids.raw as Int32Array, shape }, attentionMask: { data: mask.raw as Int32Array, shape } }
    for (const precision of MODEL_PRECISIONS) {
      const out = await model.forward(input, { output: ['hidden', 'logits'], precision })
      const { loss, grads } = await model.lossAndGrad(input, { adapter, trainBase: true, precision })
      runs.push({ fixture, precision, hidden: out.hidden!, logits: out.logits!, loraLoss: loss, grads: Object.fromEntries(grads) })
    }
    adapter.dispose()
    await model.dispose()
  }
  return runs
}

async function main(outFile: string, fixturesDir: string): Promise<void> {
  const cases: CaseRun[] = []
  CASES.forEach((c, index) => {
    for (const precision of precisionsOf(c, CPU)) {
      try {
        cases.push({ index, precision, outputs: c.run({ device: 'cpu', precision }) })
      } catch (err) {
        cases.push({ index, precision, error: `${(err as Error).name}: ${(err as Error).message}` })
      }
    }
  })
  const result: ProbeResult = {
    platform: process.platform,
    arch: process.arch,
    node: process.version,
    isas: kernels.supportedIsas(),
    activeIsa: kernels.activeIsa(),
    cases,
    models: await modelRuns(fixturesDir),
  }
  fs.writeFileSync(outFile, JSON.stringify(result, replacer))
}

if (require.main === module) {
  const [outFile, fixturesDir] = process.argv.slice(2)
  main(outFile, fixturesDir).catch((err) => {
    console.error(err)
    process.exitCode = 1
  })
}
