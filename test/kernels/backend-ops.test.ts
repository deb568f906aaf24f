// Every kernel op on every backend, as ggml's tests/test-backend-ops.cpp: ONE table of op cases
// (CASES: shapes with tails, GQA 1/2/4, padding and packed documents, f32 and bf16 weights,
// accumulate flags) and ONE table of backends (BACKENDS: the CPU at each ISA this machine runs,
// or those ERNIE_TEST_ISAS names; the checked backend, the CPU kernels behind a device-like
// memory wall; CUDA, skipped with the reason where there is no build or device), and one loop
// that runs each case on each backend. Adding an op or a backend is a row in one of the tables.
//
// The cases, their references and bounds are in op-cases.ts.
import t, { type Test } from 'tap'
import { cudaInfo, type KernelDevice } from '../../lib/device'
import { kernels } from '../../lib/index'
import { testedIsas } from '../helpers/helpers'
import type { OpPrecision } from '../helpers/precision-helpers'
import { CASES, caseName, checkOutputs, precisionsOf, type OpCase } from './op-cases'

// ================================================================ the table of backends

interface Backend {
  name: string
  device: KernelDevice
  /** The CPU instruction set the kernels run on (set for the backend's tests, restored after). */
  isa?: kernels.Isa
  /** The precisions the ops with a `precision` option are asked for. */
  precisions: OpPrecision[]
  skip?: string
}

function cudaSkip(): string | undefined {
  const info = cudaInfo()
  if (!info.built) return 'not built with CUDA'
  if (info.devices.length === 0) return `no CUDA device (${info.error ?? 'none found'})`
  return undefined
}

const BACKENDS: Backend[] = [
  ...testedIsas().map((isa): Backend => ({ name: `cpu ${isa}`, device: 'cpu', isa, precisions: ['fp32', 'bf16'] })),
  { name: 'checked', device: 'checked', precisions: ['fp32', 'bf16'] },
  { name: 'cuda', device: 'cuda', precisions: ['bf16'], skip: cudaSkip() },
]

// ================================================================ the loop

function runCase(t: Test, c: OpCase, b: Backend, precision: OpPrecision): void {
  let got: Record<string, ArrayLike<number>>
  try {
    got = c.run({ device: b.device, precision })
  } catch (err) {
    t.fail(`${caseName(c, precision)}: threw ${(err as Error).name}: ${(err as Error).message}`)
    return
  }
  checkOutputs(t, c, precision, got)
}

const OPS = [...new Set(CASES.map((c) => c.op))]

for (const op of OPS)
  for (const b of BACKENDS)
    t.test(`${op} on ${b.name}`, { skip: b.skip ?? false }, async (t) => {
      const before = kernels.activeIsa()
      try {
        if (b.isa) kernels.setIsa(b.isa)
        for (const c of CASES) if (c.op === op) for (const precision of precisionsOf(c, b)) runCase(t, c, b, precision)
      } finally {
        kernels.setIsa(before)
      }
    })
