// `ernie-sentiment export`: a saved classifier (its LoRA adapter merged) or a bare PEFT adapter
// merged into its base, written as a checkpoint in the HF layout or ERNIEKit's Paddle one.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier } from '../classifier/classifier'
import { DEVICES } from '../device'
import { readSmallFileSync } from '../io/read'
import { exportModel } from '../model/export'
import { LAYOUTS } from '../model/save'
import { noPositionals, oneOf, outDirProblem, parse, UsageError } from './args'
import type { CliIo } from './io'

export const EXPORT_HELP = `Usage: ernie-sentiment export --model DIR --out DIR [options]
       ernie-sentiment export --adapter DIR [--base DIR|ID] --out DIR [options]

Writes a merged checkpoint that needs no adapter: from a saved classifier (--model), the
classifier with its LoRA adapter merged into its model (ernie-sentiment eval / predict load it);
from a PEFT LoRA adapter (--adapter), its base model with the adapter merged.

Options:
  --model DIR          a saved classifier
  --adapter DIR        a PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors)
  --base DIR|ID        the base model: the adapter's (default: its base_model_name_or_path), or
                       one to run a classifier on instead of the one it names
  --out DIR            where to write (required; new or empty)
  --layout L           hf (default: Hugging Face names, [out, in]) | paddle (ERNIEKit: ernie.
                       names, [in, out], fused qkv_proj and up_gate_proj; ERNIE-4.5 only)
  --dtype D            bf16 (default) | f32: the merged weights' dtype
  --overwrite          replace what --out holds
  --device D           with --model: cpu | cuda | auto (default auto, or ERNIE_DEVICE)
  --json               print the result as one JSON object
  -h, --help           this help
`

/** The adapter's base_model_name_or_path, when adapter_config.json names one. */
function adapterBase(dir: string): string | undefined {
  const file = path.join(dir, 'adapter_config.json')
  if (!fs.existsSync(file)) throw new UsageError(`--adapter: ${file} does not exist`)
  const base = JSON.parse(readSmallFileSync(file, 'config').toString('utf8')).base_model_name_or_path
  return typeof base === 'string' && base.length > 0 ? base : undefined
}

export async function runExport(argv: string[], io: CliIo): Promise<number> {
  const { values: a, positionals } = parse(argv, {
    model: { type: 'string' },
    adapter: { type: 'string' },
    base: { type: 'string' },
    out: { type: 'string' },
    layout: { type: 'string' },
    dtype: { type: 'string' },
    overwrite: { type: 'boolean' },
    device: { type: 'string' },
    json: { type: 'boolean' },
  })
  if (a.help) return void io.stdout.write(EXPORT_HELP), 0
  noPositionals(positionals)
  const v = a as Record<string, string | undefined>
  if ((v.model === undefined) === (v.adapter === undefined)) throw new UsageError('give --model (a saved classifier) or --adapter (a PEFT adapter), one of them')
  const out = v.out
  if (!out) throw new UsageError('--out is required')
  const layout = oneOf(v.layout, 'layout', LAYOUTS) ?? 'hf'
  const dtype = oneOf(v.dtype, 'dtype', ['bf16', 'f32'] as const)
  const device = oneOf(v.device, 'device', DEVICES)
  const overwrite = a.overwrite === true
  if (v.model !== undefined) {
    const problem = outDirProblem(out, overwrite)
    if (problem) throw new UsageError(`--out: ${problem}`)
    const clf = await ErnieClassifier.load(v.model, { model: v.base, device })
    try {
      await clf.export(out, { layout, dtype })
    } finally {
      await clf.dispose()
    }
  } else {
    const info = fs.statSync(out, { throwIfNoEntry: false })
    if (info && (!info.isDirectory() || (fs.readdirSync(out).length > 0 && !overwrite)))
      throw new UsageError(`--out: ${path.resolve(out)} ${info.isDirectory() ? 'holds files; pass --overwrite to write over them, or choose another directory' : 'is a file'}`)
    const base = v.base ?? adapterBase(v.adapter!)
    if (!base) throw new UsageError(`--base is required: ${path.join(v.adapter!, 'adapter_config.json')} names no base_model_name_or_path`)
    await exportModel(base, out, { adapter: v.adapter, layout, dtype })
  }
  const what = v.model !== undefined ? `classifier ${v.model}` : `adapter ${v.adapter}`
  if (a.json) io.stdout.write(JSON.stringify({ out, layout, from: v.model ?? v.adapter }) + '\n')
  else io.stdout.write(`exported ${what} to ${out} (${layout} layout${dtype === 'f32' ? ', f32 merge' : ''})\n`)
  return 0
}
