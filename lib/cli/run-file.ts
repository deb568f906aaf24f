// Run files: a command's settings in a YAML file (`ernie-sentiment train run.yaml`), as ERNIEKit
// keeps its runs (`erniekit train run_sft_8k.yaml`). This module reads the file into keys, values
// and the line of each key (the `yaml` package: YAML 1.2, so `True` and `1.0e-5` read as a boolean
// and a number); what the keys mean is each command's option table (settings.ts).
import { isMap, isScalar, LineCounter, parseDocument } from 'yaml'

import { ErnieError } from '../errors'
import { readSmallFileSync } from '../io/read'
import { UsageError } from './args'

/** A problem with a run file: exit code 2, like any bad usage; names the file and the line. */
export class RunFileError extends UsageError {
  readonly code = 'ERR_RUN_FILE'
  constructor(
    readonly file: string,
    readonly line: number | undefined,
    message: string,
  ) {
    super(`${file}${line === undefined ? '' : `:${line}`}: ${message}`)
    this.name = 'RunFileError'
  }
}

/** One `key: value` of a run file. */
export interface RunFileEntry {
  key: string
  /** As YAML reads it: a string, number, boolean, null, array or plain object. */
  value: unknown
  /** 1-based line of the key. */
  line: number
}

export interface RunFile {
  file: string
  entries: RunFileEntry[]
}

/** A run file is named on the command line by its extension, so that a data file given by mistake is not read as one. */
export function isRunFileName(arg: string): boolean {
  return /\.ya?ml$/i.test(arg)
}

/** Reads a run file: a YAML mapping of keys to values, each key once (bounded read: 1 MiB). */
export function readRunFile(file: string): RunFile {
  let source: string
  try {
    source = readSmallFileSync(file, 'config').toString('utf8')
  } catch (e) {
    const code = (e as { code?: string }).code
    if (code === 'ENOENT') throw new RunFileError(file, undefined, 'no such run file')
    if (e instanceof ErnieError) throw new RunFileError(file, undefined, e.message.startsWith(file) ? e.message.slice(file.length + 2) : e.message)
    throw new RunFileError(file, undefined, `cannot be read (${(e as Error).message})`)
  }
  const lines = new LineCounter()
  const doc = parseDocument(source, { lineCounter: lines, prettyErrors: false, uniqueKeys: true })
  const lineOf = (offset: number) => lines.linePos(offset).line
  if (doc.errors.length > 0) {
    const e = doc.errors[0]
    const message = e.code === 'DUPLICATE_KEY' ? 'a key is set twice (each key once)' : `not valid YAML: ${e.message.split('\n')[0]}`
    throw new RunFileError(file, lineOf(e.pos[0]), message)
  }
  if (doc.contents === null) return { file, entries: [] }
  if (!isMap(doc.contents)) {
    const range = doc.contents.range
    throw new RunFileError(file, range ? lineOf(range[0]) : undefined, 'a run file is a mapping of settings (`key: value` lines)')
  }
  const entries: RunFileEntry[] = []
  for (const pair of doc.contents.items) {
    const keyNode = pair.key
    const line = isScalar(keyNode) && keyNode.range ? lineOf(keyNode.range[0]) : undefined
    if (!isScalar(keyNode) || typeof keyNode.value !== 'string') throw new RunFileError(file, line, 'each key is a plain name (max_seq_len:, epochs:, ...)')
    let value: unknown
    try {
      // An alias to an anchor that is not there, or too many alias expansions, throws here.
      value = pair.value === null ? null : isScalar(pair.value) ? pair.value.value : (pair.value as { toJS(doc: unknown): unknown }).toJS(doc)
    } catch (e) {
      throw new RunFileError(file, line, `${keyNode.value}: ${(e as Error).message}`)
    }
    entries.push({ key: keyNode.value, value, line: line! })
  }
  return { file, entries }
}

/**
 * ERNIEKit settings that a command whose option table does not name them leaves unused: its
 * parallelism, launcher, mixed-precision internals, logging and checkpoint formats, the optimizer
 * details this package does not expose, and the few that one command takes and another cannot
 * (train takes recompute and gradient_accumulation_steps, pretrain does not). Each is a warning, an error under --strict.
 */
export const ERNIEKIT_UNUSED: ReadonlySet<string> = new Set([
  // data mixing and loading
  'train_dataset_type', 'eval_dataset_type', 'train_dataset_prob', 'eval_dataset_prob', 'num_samples_each_epoch',
  'mix_strategy', 'packing', 'dataloader_num_workers', 'distributed_dataloader', 'max_evaluate_steps',
  // model internals
  'fuse_rope', 'use_sparse_head_and_loss_fn', 'use_flash_attention', 'use_sparse_flash_attn', 'moe_group',
  // schedule, logging and checkpoints
  'evaluation_strategy', 'save_strategy', 'save_steps', 'save_total_limit', 'logging_steps', 'logging_dir',
  'disable_tqdm', 'release_grads', 'min_lr', 'layerwise_lr_decay_bound', 'unified_checkpoint',
  'unified_checkpoint_config', 'disable_ckpt_quant', 'lr_scheduler_type', 'gradient_accumulation_steps', 'recompute',
  // optimizer details
  'offload_optim', 'tensorwise_offload_optimizer',
  // parallelism and devices
  'tensor_parallel_degree', 'pipeline_parallel_degree', 'sharding_parallel_degree', 'sharding', 'sequence_parallel',
  'pipeline_parallel_config', 'devices', 'recompute_use_reentrant',
  // mixed precision internals (compute_type is the precision)
  'fp16_opt_level', 'amp_master_grad', 'amp_custom_white_list', 'amp_custom_black_list',
])
