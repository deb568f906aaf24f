// `ernie-sentiment export`: a saved classifier (its LoRA adapter merged) or a bare PEFT adapter
// merged into its base, written as a checkpoint in the HF layout or ERNIEKit's Paddle one.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier } from '../classifier/classifier'
import { exportModel } from '../model/export'
import { adapterBaseModel } from '../model/lora'
import { LAYOUTS } from '../model/save'
import { outDirProblem, UsageError } from './args'
import type { CliIo } from './io'
import { choice, flag, formatConfig, helpText, need, option, origin, readCommandLine, text, type CommandSpec } from './settings'
import { TRAIN_OPTIONS } from './train'

export const EXPORT_OPTIONS = {
  model: option(text('DIR'), 'a saved classifier'),
  adapter: option(text('DIR'), 'a PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors)'),
  base: option(
    text('DIR|ID'),
    "the base model: the adapter's (default: its base_model_name_or_path), or\none to run a classifier on instead of the one it names",
    { erniekit: ['model_name_or_path'] },
  ),
  out: option(text('DIR'), 'where to write (required; new or empty)'),
  layout: option(choice(LAYOUTS, { placeholder: 'L' }), 'hf (default: Hugging Face names, [out, in]) | paddle (ERNIEKit: ernie.\nnames, [in, out], fused qkv_proj and up_gate_proj; ERNIE-4.5 only)'),
  dtype: option(choice(['bf16', 'f32'] as const, { placeholder: 'D' }), "bf16 (default) | f32: the merged weights' dtype"),
  overwrite: option(flag, 'replace what --out holds'),
  device: option(TRAIN_OPTIONS.device.type, 'with --model: cpu | cuda | auto (default auto, or ERNIE_DEVICE)'),
  json: option(flag, 'print the result as one JSON object'),
}

export const EXPORT: CommandSpec<typeof EXPORT_OPTIONS> = {
  name: 'export',
  usage: '--model DIR --out DIR [options]\n       ernie-sentiment export --adapter DIR [--base DIR|ID] --out DIR [options]',
  about: `Writes a merged checkpoint that needs no adapter: from a saved classifier (--model), the
classifier with its LoRA adapter merged into its model (ernie-sentiment eval / predict load it);
from a PEFT LoRA adapter (--adapter), its base model with the adapter merged.`,
  options: EXPORT_OPTIONS,
  runFile: {},
}

export async function runExport(argv: string[], io: CliIo): Promise<number> {
  const cl = readCommandLine(EXPORT, argv, io.stderr)
  if (cl.help) return void io.stdout.write(helpText(EXPORT)), 0
  const v = cl.values
  if ((v.model === undefined) === (v.adapter === undefined)) throw new UsageError('give --model (a saved classifier) or --adapter (a PEFT adapter), one of them')
  const out = need(EXPORT, cl, 'out')
  if (cl.printConfig) return void io.stdout.write(formatConfig(EXPORT, cl)), 0
  const layout = v.layout ?? 'hf'
  const dtype = v.dtype
  const overwrite = v.overwrite === true
  if (v.model !== undefined) {
    const problem = outDirProblem(out, overwrite)
    if (problem) throw new UsageError(`${origin(cl, 'out')}: ${problem}`)
    const clf = await ErnieClassifier.load(v.model, { model: v.base, device: v.device })
    try {
      await clf.export(out, { layout, dtype })
    } finally {
      await clf.dispose()
    }
  } else {
    const info = fs.statSync(out, { throwIfNoEntry: false })
    if (info && (!info.isDirectory() || (fs.readdirSync(out).length > 0 && !overwrite)))
      throw new UsageError(`${origin(cl, 'out')}: ${path.resolve(out)} ${info.isDirectory() ? 'holds files; pass --overwrite to write over them, or choose another directory' : 'is a file'}`)
    if (!fs.existsSync(path.join(v.adapter!, 'adapter_config.json'))) throw new UsageError(`${origin(cl, 'adapter')}: ${path.join(v.adapter!, 'adapter_config.json')} does not exist`)
    const base = v.base ?? (await adapterBaseModel(v.adapter!))
    if (!base) throw new UsageError(`--base is required: ${path.join(v.adapter!, 'adapter_config.json')} names no base_model_name_or_path`)
    await exportModel(base, out, { adapter: v.adapter, layout, dtype })
  }
  const what = v.model !== undefined ? `classifier ${v.model}` : `adapter ${v.adapter}`
  if (v.json) io.stdout.write(JSON.stringify({ out, layout, from: v.model ?? v.adapter }) + '\n')
  else io.stdout.write(`exported ${what} to ${out} (${layout} layout${dtype === 'f32' ? ', f32 merge' : ''})\n`)
  return 0
}
