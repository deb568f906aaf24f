// Labelled texts from arrays or files: JSON Lines ({text, label} or ERNIEKit's {src: [...],
// tgt: [...]}), TSV (`text\tlabel`, or any columns under a header such as `label\ttext_a`)
// and CSV with a header (RFC 4180 quoting, records may span lines). Files are streamed line by
// line. Every problem names the file and line; with onInvalid: 'skip' the record is dropped and
// counted instead, never silently.
import * as path from 'node:path'

import { typeError, rangeError } from '../errors'
import { DataError, where } from './errors'
import { byteLines, decodeUtf8, firstInvalidUtf8 } from './lines'

export type LabelValue = string | number

/** One labelled text, as given in memory. */
export interface LabeledText {
  text: string
  label: LabelValue
}

/** A labelled text read from a source, with where it came from. */
export interface Example {
  text: string
  label: LabelValue
  /** The file, or the array's name. */
  file: string
  /** 1-based line of the record (files) or the array index. */
  line: number
  isArray: boolean
}

export type DataFormat = 'jsonl' | 'tsv' | 'csv'
export type OnInvalid = 'error' | 'skip'

export interface ReadDataOptions {
  /** Default: from the extension (.jsonl/.json: jsonl, .csv: csv, anything else: tsv). */
  format?: DataFormat
  /** 'error' (default) throws a DataError on the first bad record; 'skip' drops and counts it. */
  onInvalid?: OnInvalid
  /** The text column / key (default: the first of text, text_a, sentence, review, content present). */
  textField?: string
  /** The label column / key (default: the first of label, labels, sentiment present). */
  labelField?: string
  /** What an in-memory array is called in messages (default 'data'). */
  name?: string
}

/** Records dropped with onInvalid: 'skip'. */
export interface SkipReport {
  count: number
  /** Count per kind of problem ('missing label', 'invalid UTF-8', ...). */
  reasons: Record<string, number>
  /** The first few, with where they were. */
  first: Array<{ where: string; problem: string }>
}

export interface Dataset {
  /** The file path, or the array's name. */
  source: string
  format: DataFormat | 'array'
  examples: Example[]
  skipped: SkipReport
}

export const TEXT_FIELDS = ['text', 'text_a', 'sentence', 'review', 'content']
export const LABEL_FIELDS = ['label', 'labels', 'sentiment']
const KEEP_FIRST = 10

/** Collects (or throws) the problems of one source. */
export class Problems {
  readonly report: SkipReport = { count: 0, reasons: {}, first: [] }
  constructor(
    readonly file: string,
    readonly onInvalid: OnInvalid,
    readonly isArray = false,
  ) {}

  /** Throws a DataError, or records the problem when skipping. `kind` is the counted category. */
  add(line: number | undefined, kind: string, problem: string): void {
    if (this.onInvalid !== 'skip') throw new DataError(this.file, line, problem, this.isArray)
    this.report.count++
    this.report.reasons[kind] = (this.report.reasons[kind] ?? 0) + 1
    if (this.report.first.length < KEEP_FIRST) this.report.first.push({ where: where(this.file, line, this.isArray), problem })
  }
}

export function emptySkips(): SkipReport {
  return { count: 0, reasons: {}, first: [] }
}

/** Merges a later stage's skips (label checks) into a dataset's report. */
export function mergeSkips(into: SkipReport, from: SkipReport): void {
  into.count += from.count
  for (const [k, v] of Object.entries(from.reasons)) into.reasons[k] = (into.reasons[k] ?? 0) + v
  for (const f of from.first) if (into.first.length < KEEP_FIRST) into.first.push(f)
}

export function formatFromPath(file: string): DataFormat {
  const ext = path.extname(file).toLowerCase()
  if (ext === '.jsonl' || ext === '.json' || ext === '.ndjson') return 'jsonl'
  if (ext === '.csv') return 'csv'
  return 'tsv'
}

/** Reads labelled texts from an array or a file (see the module comment for the formats). */
export async function readDataset(data: string | readonly LabeledText[], options: ReadDataOptions = {}): Promise<Dataset> {
  const onInvalid = options.onInvalid ?? 'error'
  if (onInvalid !== 'error' && onInvalid !== 'skip') throw rangeError(`onInvalid must be 'error' or 'skip', got ${JSON.stringify(onInvalid)}`)
  if (typeof data === 'string') {
    if (data.length === 0) throw typeError('data: expected a file path or an array of { text, label }')
    const format = options.format ?? formatFromPath(data)
    const problems = new Problems(data, onInvalid)
    let examples: Example[]
    if (format === 'jsonl') examples = await readJsonl(data, problems, options)
    else if (format === 'tsv') examples = await readTsv(data, problems, options)
    else if (format === 'csv') examples = await readCsv(data, problems, options)
    else throw rangeError(`format must be 'jsonl', 'tsv' or 'csv', got ${JSON.stringify(format)}`)
    return { source: data, format, examples, skipped: problems.report }
  }
  if (!Array.isArray(data)) throw typeError('data: expected a file path or an array of { text, label }')
  const name = options.name ?? 'data'
  const problems = new Problems(name, onInvalid, true)
  const examples: Example[] = []
  data.forEach((item, i) => {
    if (item === null || typeof item !== 'object' || Array.isArray(item)) return problems.add(i, 'not an object', 'expected an object { text, label }')
    const rec = item as unknown as Record<string, unknown>
    const ex = fromRecord(rec, options, problems, i, name, true)
    if (ex) examples.push(ex)
  })
  return { source: name, format: 'array', examples, skipped: problems.report }
}

// ERNIEKit's SFT record: {src, tgt} rather than {text, label} (unless a text field is named).
function isSrcTgtRecord(rec: Record<string, unknown>, o: ReadDataOptions): boolean {
  return o.textField === undefined && !('text' in rec) && 'src' in rec
}

/**
 * Whether a data file holds ERNIEKit SFT records ({"src": [...], "tgt": [...]}), judged by its
 * first record: a .jsonl (.json, .ndjson) file whose first non-blank line is such an object.
 * Anything else, unreadable or malformed lines included, is not (reading the data reports those).
 */
export async function isSrcTgtFile(file: string, options: Pick<ReadDataOptions, 'format' | 'textField'> = {}): Promise<boolean> {
  if ((options.format ?? formatFromPath(file)) !== 'jsonl') return false
  try {
    for await (const { bytes } of byteLines(file)) {
      const s = decodeUtf8(bytes)
      if (s.trim() === '') continue
      const rec: unknown = JSON.parse(s)
      return rec !== null && typeof rec === 'object' && !Array.isArray(rec) && isSrcTgtRecord(rec as Record<string, unknown>, options)
    }
  } catch {
    return false
  }
  return false
}

// A {text, label} (or ERNIEKit {src, tgt}) object -> an example, or a problem.
function fromRecord(rec: Record<string, unknown>, o: ReadDataOptions, problems: Problems, line: number, file: string, isArray: boolean): Example | undefined {
  let text: unknown
  let label: unknown
  if (isSrcTgtRecord(rec, o)) {
    // ERNIEKit SFT: src holds the prompt turn(s), tgt the answer(s): here, the label word
    const src = rec.src
    const parts = typeof src === 'string' ? [src] : src
    if (!Array.isArray(parts) || parts.length === 0 || parts.some((p) => typeof p !== 'string'))
      return void problems.add(line, 'bad field', 'field "src" must be a string or a non-empty array of strings')
    text = parts.join('\n')
    if (!('tgt' in rec)) return void problems.add(line, 'missing field', 'missing field "tgt"')
    const tgt = rec.tgt
    const answers = Array.isArray(tgt) ? tgt : [tgt]
    if (answers.length !== 1)
      return void problems.add(
        line,
        'bad field',
        `field "tgt" must hold one label, found ${answers.length} (a multi-turn src/tgt record is a conversation: train a chat model on it with \`ernie-sentiment sft\`)`,
      )
    label = answers[0]
  } else {
    const textKey = o.textField ?? TEXT_FIELDS.find((k) => k in rec)
    if (textKey === undefined || !(textKey in rec))
      return void problems.add(line, 'missing field', `missing field "${o.textField ?? 'text'}"`)
    text = rec[textKey]
    const labelKey = o.labelField ?? LABEL_FIELDS.find((k) => k in rec)
    if (labelKey === undefined || !(labelKey in rec))
      return void problems.add(line, 'missing field', `missing field "${o.labelField ?? 'label'}"`)
    label = rec[labelKey]
  }
  if (typeof text !== 'string') return void problems.add(line, 'bad field', `text must be a string, got ${describe(text)}`)
  return check(text, label, problems, line, file, isArray)
}

/** @internal A JSON value as messages name it: 'null', 'an array', 'an object', 'number 3'. */
export function describe(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`
}

// The checks every format shares: a non-empty text and a present label of a usable type.
function check(text: string, label: unknown, problems: Problems, line: number, file: string, isArray: boolean): Example | undefined {
  if (text.trim().length === 0) return void problems.add(line, 'empty text', text.length === 0 ? 'empty text' : 'empty text (whitespace only)')
  if (label === undefined || label === null || (typeof label === 'string' && label.trim() === ''))
    return void problems.add(line, 'missing label', 'missing label')
  if (typeof label === 'number') {
    if (!Number.isInteger(label) || label < 0) return void problems.add(line, 'unknown label', `label ${label} is not a class index (an integer >= 0) or a name`)
    return { text, label, file, line, isArray }
  }
  if (typeof label !== 'string') return void problems.add(line, 'bad field', `label must be a string or a number, got ${describe(label)}`)
  return { text, label: label.trim(), file, line, isArray }
}

// One line's text, or a problem when its bytes are not UTF-8.
function decodeLine(bytes: Uint8Array, line: number, problems: Problems): string | undefined {
  const bad = firstInvalidUtf8(bytes)
  if (bad >= 0) {
    problems.add(line, 'invalid UTF-8', `invalid UTF-8 (byte 0x${bytes[bad].toString(16).padStart(2, '0')} at byte ${bad + 1} of the line)`)
    return undefined
  }
  return decodeUtf8(bytes)
}

/**
 * The JSON objects of a JSON Lines file, with their lines; blank lines are skipped, and a line
 * that is not UTF-8, not JSON or not an object is a problem (thrown, or counted when skipping).
 */
export async function* jsonObjects(file: string, problems: Problems): AsyncGenerator<{ line: number; record: Record<string, unknown> }> {
  for await (const { line, bytes } of byteLines(file)) {
    const s = decodeLine(bytes, line, problems)
    if (s === undefined || s.trim() === '') continue
    let rec: unknown
    try {
      rec = JSON.parse(s)
    } catch (e) {
      const hint = line === 1 && s.trimStart().startsWith('[') ? ' (the file looks like one JSON array; write one object per line)' : ''
      problems.add(line, 'invalid JSON', `invalid JSON (${(e as Error).message})${hint}`)
      continue
    }
    if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) {
      problems.add(line, 'not an object', `expected a JSON object, got ${describe(rec)}`)
      continue
    }
    yield { line, record: rec as Record<string, unknown> }
  }
}

async function readJsonl(file: string, problems: Problems, o: ReadDataOptions): Promise<Example[]> {
  const out: Example[] = []
  for await (const { line, record } of jsonObjects(file, problems)) {
    const ex = fromRecord(record, o, problems, line, file, false)
    if (ex) out.push(ex)
  }
  return out
}

interface Columns {
  text: number
  label: number
  count: number
  names: string[]
}

// A header row names the text and label columns; the names are matched case-insensitively.
function headerColumns(fields: string[], o: ReadDataOptions, file: string): Columns | undefined {
  const names = fields.map((f) => f.trim())
  const lower = names.map((f) => f.toLowerCase())
  const find = (wanted: string | undefined, known: string[]) =>
    wanted !== undefined ? lower.indexOf(wanted.toLowerCase()) : known.map((k) => lower.indexOf(k)).find((i) => i >= 0) ?? -1
  const text = find(o.textField, TEXT_FIELDS)
  const label = find(o.labelField, LABEL_FIELDS)
  const looksLikeHeader = text >= 0 || label >= 0
  if (!looksLikeHeader) return undefined
  if (text < 0) throw new DataError(file, 1, `the header (${names.join(', ')}) has no text column (${o.textField ?? TEXT_FIELDS.join(', ')})`)
  if (label < 0) throw new DataError(file, 1, `the header (${names.join(', ')}) has no label column (${o.labelField ?? LABEL_FIELDS.join(', ')})`)
  return { text, label, count: names.length, names }
}

// The text and label of a data row under a header. A text column that comes last may hold tabs
// or commas of its own: the extra fields are joined back into it.
function pick(fields: string[], cols: Columns, sep: string, line: number, problems: Problems): { text: string; label: string } | undefined {
  if (fields.length < cols.count) {
    const missing = fields.length <= cols.label ? cols.names[cols.label] : cols.names[cols.text]
    problems.add(line, 'missing field', `missing field "${missing}" (${fields.length} of ${cols.count} columns)`)
    return undefined
  }
  if (fields.length > cols.count) {
    if (cols.text !== cols.count - 1) {
      problems.add(line, 'bad field count', `expected ${cols.count} columns (${cols.names.join(', ')}), found ${fields.length}`)
      return undefined
    }
    return { text: fields.slice(cols.text).join(sep), label: fields[cols.label] }
  }
  return { text: fields[cols.text], label: fields[cols.label] }
}

async function readTsv(file: string, problems: Problems, o: ReadDataOptions): Promise<Example[]> {
  const out: Example[] = []
  let cols: Columns | undefined
  let first = true
  for await (const { line, bytes } of byteLines(file)) {
    const s = decodeLine(bytes, line, problems)
    // A blank line is no record; a line holding a tab is one (with empty fields), and is checked.
    if (s === undefined || (s.trim() === '' && !s.includes('\t'))) continue
    const fields = s.split('\t')
    if (first) {
      first = false
      cols = headerColumns(fields, o, file)
      if (cols) continue
      if (o.textField !== undefined || o.labelField !== undefined) throw new DataError(file, 1, 'textField / labelField need a header row naming the columns')
    }
    let text: string
    let label: string
    if (cols) {
      const r = pick(fields, cols, '\t', line, problems)
      if (!r) continue
      ;({ text, label } = r)
    } else {
      // No header: text<TAB>label. More columns are ambiguous (which is the label?): a header
      // row must name them.
      if (fields.length < 2) {
        problems.add(line, 'missing field', 'missing field: expected "text<TAB>label", found no tab')
        continue
      }
      if (fields.length > 2) {
        problems.add(line, 'bad field count', `expected "text<TAB>label" (2 columns), found ${fields.length}; add a header row naming the columns (e.g. text<TAB>label)`)
        continue
      }
      ;[text, label] = fields
    }
    const ex = check(text, label, problems, line, file, false)
    if (ex) out.push(ex)
  }
  return out
}

/**
 * RFC 4180 records from lines: fields separated by commas, optionally quoted; a quoted field may
 * hold commas, doubled quotes and line breaks. Feed lines in order; `push` returns the fields when
 * a record is complete, or undefined while a quoted field is still open.
 */
export class CsvRecords {
  private fields: string[] = []
  private field = ''
  private quoted = false
  private inQuotes = false
  /** The line the current record started on. */
  startLine = 0

  get open(): boolean {
    return this.inQuotes
  }

  push(s: string, line: number): string[] | undefined {
    if (!this.inQuotes) {
      this.startLine = line
      this.fields = []
      this.field = ''
      this.quoted = false
    } else {
      this.field += '\n'
    }
    let i = 0
    while (i < s.length) {
      const c = s[i]
      if (this.inQuotes) {
        if (c === '"') {
          if (s[i + 1] === '"') {
            this.field += '"'
            i += 2
            continue
          }
          this.inQuotes = false
          i++
          if (i < s.length && s[i] !== ',') throw new SyntaxError(`unexpected ${JSON.stringify(s[i])} after a closing quote`)
          continue
        }
        this.field += c
        i++
      } else if (c === ',') {
        this.fields.push(this.field)
        this.field = ''
        this.quoted = false
        i++
      } else if (c === '"' && this.field === '' && !this.quoted) {
        this.inQuotes = true
        this.quoted = true
        i++
      } else {
        this.field += c
        i++
      }
    }
    if (this.inQuotes) return undefined
    this.fields.push(this.field)
    return this.fields
  }
}

async function readCsv(file: string, problems: Problems, o: ReadDataOptions): Promise<Example[]> {
  const out: Example[] = []
  const csv = new CsvRecords()
  let cols: Columns | undefined
  let broken = false // the current record already failed: skip its remaining lines
  for await (const { line, bytes } of byteLines(file)) {
    const s = decodeLine(bytes, line, problems)
    if (s === undefined) {
      broken = csv.open
      continue
    }
    if (!csv.open && s.trim() === '') continue
    let fields: string[] | undefined
    try {
      fields = csv.push(s, line)
    } catch (e) {
      problems.add(csv.startLine, 'invalid CSV', `invalid CSV (${(e as Error).message})`)
      continue
    }
    if (!fields) continue
    if (broken) {
      broken = false
      continue
    }
    const start = csv.startLine
    if (!cols) {
      cols = headerColumns(fields, o, file)
      if (!cols) throw new DataError(file, start, `a CSV file needs a header naming its columns (${TEXT_FIELDS[0]} and ${LABEL_FIELDS[0]}, say); found ${fields.join(', ')}`)
      continue
    }
    const r = pick(fields, cols, ',', start, problems)
    if (!r) continue
    const ex = check(r.text, r.label, problems, start, file, false)
    if (ex) out.push(ex)
  }
  if (csv.open) problems.add(csv.startLine, 'invalid CSV', 'invalid CSV (a quoted field is never closed)')
  return out
}
