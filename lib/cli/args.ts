// Command-line arguments: parsing (node:util parseArgs) with messages written for people (the
// commands' values are checked through their option tables, settings.ts), and the checks the
// commands share. Bad usage is a UsageError: exit code 2 and a pointer to --help.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { parseArgs, type ParseArgsConfig } from 'node:util'

import { CLASSIFIER_FILE } from '../classifier/format'

export class UsageError extends Error {}

export type ParsedValues = Record<string, string | boolean | string[] | undefined>

export interface ParseOptions {
  /** Flags this command does not take but people may try, with what to say instead. */
  hints?: Record<string, string>
}

/**
 * The command's flags and positionals. An unknown flag is named with the closest known one
 * ("did you mean"); parseArgs's own messages are used for the rest (a missing value, a value
 * given to a switch).
 */
export function parse(
  argv: string[],
  options: NonNullable<ParseArgsConfig['options']>,
  parseOptions: ParseOptions = {},
): { values: ParsedValues; positionals: string[] } {
  const all = { ...options, help: { type: 'boolean' as const, short: 'h' } }
  for (const arg of argv) {
    if (arg === '--') break
    if (/^-[^-\d]/.test(arg) && arg !== '-h') throw new UsageError(`unknown option ${arg.slice(0, 2)} (the only short option is -h)`)
    if (!arg.startsWith('--')) continue
    const name = arg.slice(2).split('=')[0]
    if (name in all) continue
    const hint = parseOptions.hints?.[name]
    if (hint) throw new UsageError(`unknown option --${name}: ${hint}`)
    const near = closest(name, Object.keys(all))
    throw new UsageError(`unknown option --${name}${near ? `; did you mean --${near}?` : ''}`)
  }
  try {
    const r = parseArgs({ args: argv, options: all, allowPositionals: true, strict: true })
    return { values: r.values as ParsedValues, positionals: r.positionals }
  } catch (e) {
    throw new UsageError((e as Error).message)
  }
}

/** The candidate nearest to `name` by edit distance, if near enough to be a slip (or a prefix of it). */
export function closest(name: string, candidates: string[]): string | undefined {
  let best: string | undefined
  let bestDistance = Infinity
  for (const c of candidates) {
    const d = c.startsWith(name) && name.length >= 3 ? 1 : editDistance(name, c)
    if (d < bestDistance) [best, bestDistance] = [c, d]
  }
  return bestDistance <= Math.max(1, Math.min(3, Math.floor(name.length / 3))) ? best : undefined
}

/** Edit distance with adjacent transpositions (optimal string alignment): '--modle' is one slip from '--model'. */
function editDistance(a: string, b: string): number {
  let before: number[] = []
  let row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const next = [i]
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) next[j] = Math.min(next[j], before[j - 2] + 1)
    }
    ;[before, row] = [row, next]
  }
  return row[b.length]
}

/**
 * Why `dir` cannot receive a saved classifier, checked before training starts so that no finished
 * run is lost at the end: a file, a directory of other files, or (unless `replace`) a saved
 * classifier already there.
 */
export function outDirProblem(dir: string, replace: boolean): string | undefined {
  const info = fs.statSync(dir, { throwIfNoEntry: false })
  if (!info) return undefined
  if (!info.isDirectory()) return `${path.resolve(dir)} is a file`
  const entries = fs.readdirSync(dir)
  if (entries.length === 0) return undefined
  if (!entries.includes(CLASSIFIER_FILE)) return `${path.resolve(dir)} holds other files and no ${CLASSIFIER_FILE}; choose an empty or new directory`
  if (!replace) return `${path.resolve(dir)} holds a saved classifier; pass --overwrite to replace it, or choose another directory`
  return undefined
}

/**
 * Saved classifiers named on the command line: NAME=DIR, or DIR alone, named `nameOf(DIR)`. A
 * name holds no path separator, so a directory with "=" in it is still a directory. Two of one
 * name are a usage error.
 */
export function namedModels(specs: readonly string[], nameOf: (dir: string) => string): Array<{ name: string; dir: string }> {
  const models = specs.map((s) => {
    const m = /^([^=/\\]+)=(.+)$/.exec(s)
    return m ? { name: m[1], dir: m[2] } : { name: nameOf(s), dir: s }
  })
  const seen = new Set<string>()
  for (const { name } of models) {
    if (seen.has(name)) throw new UsageError(`--model: two classifiers are named ${JSON.stringify(name)}; name them apart with NAME=DIR`)
    seen.add(name)
  }
  return models
}
