// Each command's settings, stated once in an option table: the flag (the package's own name, also
// its run-file key), ERNIEKit's names for the same setting, the value's type and its meaning. From
// the table come the flag parser, the run-file reader (run-file.ts), --help and --print-config, so
// that a command that declares its options gets all of them. Flags override the run file.
import { closest, parse, UsageError } from './args'
import { ERNIEKIT_UNUSED, isRunFileName, readRunFile, RunFileError } from './run-file'
import { maxOf } from '../util/extent'

/** How a setting's value is read from a flag's text and from a run file's YAML value. */
export interface ValueType<T> {
  /** What a value must be, for messages: 'an integer >= 1'. */
  readonly expected: string
  /** The value's placeholder in --help ('N', 'FILE'); '' for a switch. */
  readonly placeholder: string
  /** A switch: a flag with no value (--json), true or false in a run file. */
  readonly isSwitch?: boolean
  /** Said after a bad value: what the values left out would have meant. */
  readonly note?: string
  /** A flag's text as a value; undefined when it is not one. */
  fromText(s: string): T | undefined
  /** A run file's value (string, number, boolean, null, list or mapping); undefined when it is not one. */
  fromYaml(v: unknown): T | undefined
}

export interface Option<T> {
  readonly type: ValueType<T>
  /** The meaning, for --help (a line; '\n' starts a continuation line). */
  readonly help: string
  /** ERNIEKit's names for this setting in a run file. */
  readonly erniekit?: readonly string[]
  /** Its run-file keys among the package's names when not its own name (eval's model is train's out). */
  readonly keys?: readonly string[]
  /** Run-file values that mean "not set" (ERNIEKit's max_steps: -1). */
  readonly unset?: readonly unknown[]
  /** 'flag': a flag only (--print-config); 'file': a run-file key only (ERNIEKit's stage). Default both. */
  readonly only?: 'flag' | 'file'
  /** The flag may be repeated (--text a --text b); its values make one list. */
  readonly multiple?: boolean
}

// Options of any value type, held together in one table.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type OptionTable = Record<string, Option<any>>
export type Values<O extends OptionTable> = { -readonly [K in keyof O]?: O[K] extends Option<infer T> ? T : never }

export function option<T>(type: ValueType<T>, help: string, more: Omit<Option<T>, 'type' | 'help'> = {}): Option<T> {
  return { type, help, ...more }
}

// ---- value types ------------------------------------------------------------------------------

function numberType(expected: string, placeholder: string, ok: (n: number) => boolean): ValueType<number> {
  return {
    expected,
    placeholder,
    fromText: (s) => (s.trim() !== '' && ok(Number(s)) ? Number(s) : undefined),
    fromYaml: (v) => (typeof v === 'number' && ok(v) ? v : undefined),
  }
}

export const integer = (min = 1, placeholder = 'N') => numberType(`an integer >= ${min}`, placeholder, (n) => Number.isInteger(n) && n >= min)
export const positive = (placeholder = 'X') => numberType('a positive number', placeholder, (n) => Number.isFinite(n) && n > 0)
/** A number in [0, 1): a decay rate (AdamW's betas). */
export const rate = (placeholder = 'X') => numberType('a number in [0, 1)', placeholder, (n) => Number.isFinite(n) && n >= 0 && n < 1)
export const nonNegative = (placeholder = 'X') => numberType('a number >= 0', placeholder, (n) => Number.isFinite(n) && n >= 0)

/** A non-empty string: a path, a hub id, a prompt. */
export function text(placeholder: string): ValueType<string> {
  return { expected: 'a non-empty string', placeholder, fromText: (s) => (s !== '' ? s : undefined), fromYaml: (v) => (typeof v === 'string' && v !== '' ? v : undefined) }
}

/** A switch: --json; `json: true` in a run file. */
export const flag: ValueType<boolean> = { expected: 'true or false', placeholder: '', isSwitch: true, fromText: () => true, fromYaml: (v) => (typeof v === 'boolean' ? v : undefined) }

/**
 * One of a few names, in any case (ERNIEKit writes LoRA, Full, SFT). `aliases` maps other names
 * to one of them; `note` says, after a bad value, what the names left out would have meant.
 */
export function choice<T extends string>(values: readonly T[], more: { placeholder?: string; aliases?: Record<string, T>; note?: string } = {}): ValueType<T> {
  const find = (s: string): T | undefined => values.find((v) => v.toLowerCase() === s.toLowerCase()) ?? more.aliases?.[s.toLowerCase()]
  return {
    expected: `one of ${values.join(', ')}`,
    note: more.note,
    placeholder: more.placeholder ?? values.join('|'),
    fromText: find,
    fromYaml: (v) => (typeof v === 'string' ? find(v) : undefined),
  }
}

const nonEmptyStrings = (v: unknown): v is string[] => Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string' && x !== '')

/** Names separated by commas on the command line (a,b), a YAML list in a run file. */
export function list(placeholder = 'A,B,...'): ValueType<string[]> {
  return {
    expected: 'a list of names (A,B,... as a flag)',
    placeholder,
    fromText: (s) => {
      const parts = s.split(',').map((x) => x.trim())
      return parts.every((x) => x !== '') ? parts : undefined
    },
    fromYaml: (v) => (nonEmptyStrings(v) ? v : undefined),
  }
}

/** A repeatable flag's values (--text a --text b); a string or a list of strings in a run file. */
export function files(placeholder = 'FILE'): ValueType<string[]> {
  return {
    expected: 'a path or a list of paths',
    placeholder,
    fromText: (s) => (s !== '' ? [s] : undefined),
    fromYaml: (v) => (typeof v === 'string' && v !== '' ? [v] : nonEmptyStrings(v) ? v : undefined),
  }
}

// ---- commands ---------------------------------------------------------------------------------

export interface CommandSpec<O extends OptionTable> {
  name: string
  /** The arguments after the command in the Usage: line. */
  usage: string
  /** What the command does, for --help. */
  about: string
  options: O
  /** Takes texts as arguments (predict, compare). */
  texts?: boolean
  /**
   * Takes a run file (RUN.yaml) before or among the flags (--help shows the usage with one). `sharedWith`: the tables of the
   * commands whose keys such a file also holds, left to them quietly (eval reads train's file).
   */
  runFile?: { sharedWith?: () => OptionTable[] }
  /** Flags and run-file keys people try that this command does not take, with what to say instead. */
  hints?: Record<string, string>
  /** A paragraph after the options (or after the run-file keys), for --help. */
  footer?: string
}

/** A run-file key that the command leaves: another command's, or an ERNIEKit setting with no meaning here. */
export interface UnusedKey {
  key: string
  line: number
  why: 'another command' | 'ERNIEKit'
}

export interface CommandLine<O extends OptionTable> {
  values: Values<O>
  /** Where each value was set: '--epochs', or 'run.yaml:7: num_train_epochs'. Read it with origin(). */
  origins: { [K in keyof O]?: string }
  /** The texts given as arguments (commands with `texts`). */
  texts: string[]
  help: boolean
  printConfig: boolean
  runFile?: string
  unused: UnusedKey[]
}

const RUN_FILE_FLAGS = {
  'print-config': option(flag, 'print the settings (run file and flags resolved) as a run file; exit', { only: 'flag' }),
  strict: option(flag, "the run file's ERNIEKit settings with no meaning here are errors, not warnings", { only: 'flag' }),
}

/** The command's options, with --print-config and --strict when it takes a run file. */
function allOptions<O extends OptionTable>(cmd: CommandSpec<O>): OptionTable {
  return cmd.runFile ? { ...cmd.options, ...RUN_FILE_FLAGS } : cmd.options
}

/** An option's run-file keys among the package's names: its own name unless it says otherwise. */
function ownKeys(name: string, o: Option<unknown>): readonly string[] {
  return o.keys ?? [name]
}

/** Every name a run file may use for an option of `table` (its own name and ERNIEKit's), to the option's name. */
function runFileKeys(table: OptionTable): Map<string, string> {
  const keys = new Map<string, string>()
  for (const [name, o] of Object.entries(table)) {
    if (o.only === 'flag') continue
    for (const k of [...ownKeys(name, o), ...(o.erniekit ?? [])]) keys.set(k, name)
  }
  return keys
}

function describeYaml(v: unknown): string {
  if (v === null) return 'nothing (an empty value)'
  if (Array.isArray(v)) return 'a list'
  if (typeof v === 'object') return 'a mapping'
  if (typeof v === 'string') return `${JSON.stringify(v)} (a string)`
  return String(v)
}

function noteOf(type: ValueType<unknown>): string {
  return type.note ? ` (${type.note})` : ''
}

/** Where a setting was given, for messages: '--name' when it was not (the flag to give). */
export function origin<O extends OptionTable>(cl: CommandLine<O>, name: keyof O & string): string {
  return cl.origins[name] ?? `--${name}`
}

/**
 * Reads a command's flags and, when one is named, its run file: every value checked against the
 * option table (a bad one names the flag, or the file, line and key, and what it expects), flags
 * over the file. Unused ERNIEKit keys are a warning on `stderr` (an error under --strict).
 */
export function readCommandLine<O extends OptionTable>(cmd: CommandSpec<O>, argv: string[], stderr: { write(s: string): unknown }): CommandLine<O> {
  const table = allOptions(cmd)
  const flagConfig: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {}
  for (const [name, o] of Object.entries(table)) if (o.only !== 'file') flagConfig[name] = { type: o.type.isSwitch ? 'boolean' : 'string', ...(o.multiple ? { multiple: true } : {}) }
  const { values: flags, positionals } = parse(argv, flagConfig, { hints: cmd.hints })
  const cl: CommandLine<O> = { values: {}, origins: {}, texts: [], help: flags.help === true, printConfig: flags['print-config'] === true, unused: [] }
  if (cl.help) return cl
  const values = cl.values as Record<string, unknown>
  const origins = cl.origins as Record<string, string>

  let rest = positionals
  if (cmd.runFile && rest.length > 0 && isRunFileName(rest[0])) {
    cl.runFile = rest[0]
    rest = rest.slice(1)
    readRunFileInto(cmd, cl, flags.strict === true, stderr)
  }
  if (cmd.texts) cl.texts = rest
  else if (rest.length > 0) {
    const why = !cmd.runFile ? '' : cl.runFile && isRunFileName(rest[0]) ? ' (one run file at a time)' : ' (a run file is named NAME.yaml or NAME.yml)'
    throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])}${why}`)
  }

  for (const [name, given] of Object.entries(flags)) {
    const o = table[name]
    if (given === undefined || name === 'help' || o === undefined || o.only === 'flag') continue
    const texts = Array.isArray(given) ? given : [given]
    const parsed = texts.map((s) => {
      const v = o.type.isSwitch ? true : o.type.fromText(s as string)
      if (v === undefined) throw new UsageError(`--${name} must be ${o.type.expected}, got ${JSON.stringify(s)}${noteOf(o.type)}`)
      return v
    })
    values[name] = o.multiple ? parsed.flat() : parsed[0]
    origins[name] = `--${name}`
  }
  return cl
}

function readRunFileInto<O extends OptionTable>(cmd: CommandSpec<O>, cl: CommandLine<O>, strict: boolean, stderr: { write(s: string): unknown }): void {
  const { file, entries } = readRunFile(cl.runFile!)
  const keys = runFileKeys(cmd.options)
  const shared = new Set<string>()
  for (const table of cmd.runFile?.sharedWith?.() ?? []) for (const k of runFileKeys(table).keys()) if (!keys.has(k)) shared.add(k)
  const setBy = new Map<string, { key: string; line: number }>()
  for (const { key, value, line } of entries) {
    const name = keys.get(key)
    if (name === undefined) {
      const hint = cmd.hints?.[key]
      if (hint) throw new RunFileError(file, line, `${key}: ${hint}`)
      if (shared.has(key)) cl.unused.push({ key, line, why: 'another command' })
      else if (ERNIEKIT_UNUSED.has(key)) cl.unused.push({ key, line, why: 'ERNIEKit' })
      else if (allOptions(cmd)[key]?.only === 'flag') throw new RunFileError(file, line, `${key} is a flag only (--${key}), not a run-file setting`)
      else {
        const near = closest(key, [...keys.keys(), ...shared])
        throw new RunFileError(file, line, `unknown key ${JSON.stringify(key)} for ${cmd.name}${near ? `; did you mean ${near}?` : ''}`)
      }
      continue
    }
    const o = cmd.options[name]
    const before = setBy.get(name)
    if (before) throw new RunFileError(file, line, `${key} sets ${name}, as ${before.key} does on line ${before.line}: keep one`)
    setBy.set(name, { key, line })
    if (o.unset?.includes(value)) continue
    const v = o.type.fromYaml(value)
    if (v === undefined) throw new RunFileError(file, line, `${key} must be ${o.type.expected}, got ${describeYaml(value)}${noteOf(o.type)}`)
    ;(cl.values as Record<string, unknown>)[name] = v
    ;(cl.origins as Record<string, string>)[name] = `${file}:${line}: ${key}`
  }
  const erniekit = cl.unused.filter((u) => u.why === 'ERNIEKit')
  if (erniekit.length === 0) return
  const listed = erniekit.map((u) => `${u.key} (line ${u.line})`).join(', ')
  if (strict) throw new RunFileError(file, erniekit[0].line, `ERNIEKit settings with no meaning here (an error under --strict): ${listed}`)
  stderr.write(`ernie-sentiment: warning: ${file}: ERNIEKit settings with no meaning here, not used: ${listed} (--strict makes this an error)\n`)
}

/** The value, or a usage error naming the flag (and the run-file keys) that set it. */
export function need<O extends OptionTable, K extends keyof O & string>(cmd: CommandSpec<O>, cl: CommandLine<O>, name: K): NonNullable<Values<O>[K]> {
  const v = cl.values[name]
  if (v !== undefined) return v as NonNullable<Values<O>[K]>
  const o = cmd.options[name]
  const keys = [...ownKeys(name, o), ...(o.erniekit ?? [])].join(' or ')
  throw new UsageError(`--${name} is required${cmd.runFile ? ` (in a run file: ${keys})` : ''}`)
}

// ---- --help and --print-config ----------------------------------------------------------------

// Where --help's descriptions start: after the flags, and after the (longer) run-file keys.
const FLAG_COLUMN = 25
const KEY_COLUMN = 32

function helpLine(head: string, help: string, column = FLAG_COLUMN): string {
  const [first, ...more] = help.split('\n')
  const lead = head.length + 2 <= column ? head.padEnd(column) : `${head}\n${' '.repeat(column)}`
  return [lead + first, ...more.map((m) => ' '.repeat(column) + m)].join('\n')
}

/** The command's --help: usage, what it does, its flags, and (for run-file commands) the run-file keys. */
export function helpText<O extends OptionTable>(cmd: CommandSpec<O>): string {
  const out = [`Usage: ernie-sentiment ${cmd.name} ${cmd.usage}`]
  if (cmd.runFile) out.push(`       ernie-sentiment ${cmd.name} RUN.yaml [options]`)
  out.push('', cmd.about, '', 'Options:')
  for (const [name, o] of Object.entries(allOptions(cmd))) {
    if (o.only === 'file') continue
    out.push(helpLine(`  --${name}${o.type.placeholder ? ' ' + o.type.placeholder : ''}`, o.help))
  }
  out.push(helpLine('  -h, --help', 'this help'))
  if (cmd.runFile) {
    const isKey = ([name, o]: [string, Option<unknown>]) => o.only === undefined && ownKeys(name, o).includes(name)
    const flags = Object.entries(cmd.options).filter(([, o]) => o.only !== 'file')
    const byName = flags.filter(isKey).map(([name]) => name)
    const notKeys = flags.filter((e) => !isKey(e)).map(([name]) => `--${name}`)
    const otherKeys: string[] = []
    for (const [name, o] of Object.entries(cmd.options)) {
      if (o.only === 'file') otherKeys.push(helpLine(`  ${name}`, o.help, KEY_COLUMN))
      else for (const k of [...ownKeys(name, o), ...(o.erniekit ?? [])]) if (k !== name) otherKeys.push(helpLine(`  ${k}`, `--${name}`, KEY_COLUMN))
    }
    const example = byName.find((n) => n.includes('-')) ?? byName[0]
    out.push(
      '',
      `Run file: \`ernie-sentiment ${cmd.name} RUN.yaml [options]\` reads settings from a YAML file, the`,
      otherKeys.length > 0
        ? `options above over it. Its keys are the options' names (${example}: ...) and these,\nERNIEKit's among them:`
        : `options above over it. Its keys are the options' names (${example}: ...).`,
      ...otherKeys,
    )
    if (notKeys.length > 0) out.push(`Not keys under their own names: ${notKeys.join(', ')}.`)
    out.push(
      '',
      "ERNIEKit's settings with no meaning here (parallelism, devices, ...) are warnings (errors with",
      '--strict); any other unknown key is an error. Paths are relative to the working directory.',
    )
  }
  if (cmd.footer) out.push('', cmd.footer)
  return out.join('\n') + '\n'
}

/**
 * The run's settings as a run file of the package's own names, each with where it was set (and
 * what the run file holds that the command leaves), for --print-config. Read back, it gives the
 * same run.
 */
export function formatConfig<O extends OptionTable>(cmd: CommandSpec<O>, cl: CommandLine<O>): string {
  const out = [`# ernie-sentiment ${cmd.name}: the settings of this run${cl.runFile ? ` (${cl.runFile}, flags over it)` : ''}; the rest are defaults (--help)`]
  const rows: Array<[string, string]> = []
  for (const [name, o] of Object.entries(cmd.options)) {
    const v = (cl.values as Record<string, unknown>)[name]
    if (v !== undefined) rows.push([`${ownKeys(name, o)[0] ?? o.erniekit![0]}: ${JSON.stringify(v)}`, (cl.origins as Record<string, string>)[name] ?? ''])
  }
  const width = Math.max(0, maxOf(rows.map(([a]) => a.length))) + 2
  for (const [setting, from] of rows) out.push(from ? `${setting.padEnd(width)}# ${from}` : setting)
  const left = (why: UnusedKey['why']) => cl.unused.filter((u) => u.why === why).map((u) => `${u.key} (line ${u.line})`)
  if (left('another command').length) out.push(`# left to other commands: ${left('another command').join(', ')}`)
  if (left('ERNIEKit').length) out.push(`# ERNIEKit settings with no meaning here: ${left('ERNIEKit').join(', ')}`)
  return out.join('\n') + '\n'
}
