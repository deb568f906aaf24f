// Training data files (TSV with or without a header, JSON Lines, ERNIEKit src/tgt, CSV) made from
// ChnSentiCorp records, with harmless variations (line ends, a BOM, blank lines, quoting, extra
// columns or keys, label spellings) and at most one fault (a missing or extra field, invalid
// UTF-8, a stray or case-variant label, an empty text, broken JSON or CSV). The verdicts follow
// the README's data rules (lib/data: read.ts and labels.ts): a fault is a DataError naming the
// file; a harmless file trains on every record, none skipped.
import type { Generated, Rng } from './case'
import { trainingLines } from './fixtures'

type Format = 'tsv' | 'tsv-noheader' | 'jsonl' | 'erniekit' | 'csv'
const FILE_OF: Record<Format, string> = { tsv: 'train.tsv', 'tsv-noheader': 'train.txt', jsonl: 'train.jsonl', erniekit: 'train.json', csv: 'train.csv' }

interface Rec {
  text: string
  label: string | number
  /** The record's serialized bytes replaced by these (a fault the serializer cannot express). */
  raw?: Buffer
  /** Bytes spliced into the serialized text (invalid UTF-8). */
  textBytes?: Buffer
}

interface Data {
  format: Format
  records: Rec[]
  /** Label spelling: 0/1, the names negative/positive, or other names. */
  names: [string | number, string | number]
  eol: string
  bom: boolean
  blankLines: boolean
  finalEol: boolean
  /** TSV with a header / CSV: an extra column before the text. */
  extraColumn: boolean
  quoteAll: boolean
  /** Labels written with spaces around them ("1 ", " positive"): trimmed by the readers. */
  padLabels: boolean
}

const csvField = (s: string, quote: boolean) => (quote || /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s)

function withBytes(s: string, text: string, bytes: Buffer | undefined): Buffer {
  if (!bytes) return Buffer.from(s, 'utf8')
  // splice the bytes into the middle of the text's serialization
  const at = s.indexOf(text) + Math.floor(text.length / 2)
  return Buffer.concat([Buffer.from(s.slice(0, at), 'utf8'), bytes, Buffer.from(s.slice(at), 'utf8')])
}

function serialize(d: Data): Buffer {
  const lines: Buffer[] = []
  const f = d.format
  if (f === 'tsv') lines.push(Buffer.from(d.extraColumn ? 'label\tid\ttext_a' : 'label\ttext_a'))
  if (f === 'csv') lines.push(Buffer.from(d.extraColumn ? 'id,label,text' : 'text,label'))
  d.records.forEach((rec, i) => {
    if (rec.raw) return void lines.push(rec.raw)
    const r = d.padLabels ? { ...rec, label: ` ${rec.label} ` } : rec
    let s: string
    if (f === 'tsv') s = d.extraColumn ? `${r.label}\t${i}\t${r.text}` : `${r.label}\t${r.text}`
    else if (f === 'tsv-noheader') s = `${r.text}\t${r.label}`
    else if (f === 'jsonl') s = JSON.stringify(d.extraColumn ? { id: i, label: r.label, text: r.text } : { text: r.text, label: r.label })
    else if (f === 'erniekit') s = JSON.stringify({ src: [r.text], tgt: [String(r.label)] })
    else s = d.extraColumn ? `${i},${csvField(String(r.label), d.quoteAll)},${csvField(r.text, d.quoteAll)}` : `${csvField(r.text, d.quoteAll)},${csvField(String(r.label), d.quoteAll)}`
    lines.push(withBytes(s, r.text, r.textBytes))
    if (d.blankLines && i % 3 === 1) lines.push(Buffer.alloc(0))
  })
  const eol = Buffer.from(d.eol)
  const parts: Buffer[] = d.bom ? [Buffer.from([0xef, 0xbb, 0xbf])] : []
  lines.forEach((l, i) => {
    parts.push(l)
    if (i < lines.length - 1 || d.finalEol) parts.push(eol)
  })
  return Buffer.concat(parts)
}

type Fault = (d: Data, rng: Rng) => string | undefined

// Each fault returns its description, or undefined when it does not apply to this file.
const FAULTS: Array<[string, Fault]> = [
  ['missing field', (d, rng) => {
    if (d.format === 'erniekit') return undefined
    const r = rng.pick(d.records)
    if (d.format === 'jsonl') r.raw = Buffer.from(JSON.stringify({ text: r.text }))
    else if (d.format === 'csv') r.raw = Buffer.from(d.extraColumn ? `7,${csvField(String(r.label), false)}` : csvField(r.text, true))
    else r.raw = Buffer.from(d.format === 'tsv' ? (d.extraColumn ? `${r.label}\t7` : `${r.label}`) : r.text)
    return 'a record without its label (or text) field'
  }],
  ['extra column', (d, rng) => {
    // a third column without a header, or one more field than the header names, the text not
    // last (a tab or comma in a last text column is part of the text)
    const r = rng.pick(d.records)
    if (d.format === 'tsv-noheader') r.raw = Buffer.from(`${r.text}\t${r.label}\textra`)
    else if (d.format === 'csv' && !d.extraColumn) r.raw = Buffer.from(`${csvField(r.text, true)},${r.label},extra`)
    else return undefined
    return 'a record with an extra field'
  }],
  ['invalid UTF-8', (d, rng) => {
    const bytes = rng.pick([[0xff], [0xc3], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe6, 0x88]])
    rng.pick(d.records).textBytes = Buffer.from(bytes)
    return `bytes ${bytes.map((b) => b.toString(16)).join(' ')} in a text`
  }],
  ['stray label', (d, rng) => {
    if (typeof d.names[0] !== 'number') return undefined
    const stray = rng.pick([2, 3, 10])
    rng.pick(d.records).label = stray
    return `a label ${stray} among 0/1`
  }],
  ['case-variant label', (d, rng) => {
    if (typeof d.names[0] !== 'string') return undefined
    const r = rng.pick(d.records)
    const s = String(r.label)
    r.label = rng.pick([s.toUpperCase(), s[0].toUpperCase() + s.slice(1)])
    return `label ${JSON.stringify(r.label)} beside ${JSON.stringify(s)}`
  }],
  ['name among numbers', (d, rng) => {
    if (typeof d.names[0] !== 'number') return undefined
    const r = rng.pick(d.records)
    r.label = rng.pick(['positive', 'maybe', '-1', '1.0', '1e0', '０'])
    return `label ${JSON.stringify(r.label)} among 0/1`
  }],
  ['empty text', (d, rng) => {
    const r = rng.pick(d.records)
    r.text = rng.pick(['', ' ', '\u3000', '  '])
    if (d.format === 'tsv-noheader' && rng.chance(0.3)) r.raw = Buffer.from(' \t ')
    return `text ${JSON.stringify(r.text)}`
  }],
  ['empty label', (d, rng) => {
    const r = rng.pick(d.records)
    r.label = rng.pick(['', ' '])
    return `label ${JSON.stringify(r.label)}`
  }],
  ['one class', (d) => {
    for (const r of d.records) r.label = d.names[1]
    return 'every record has the same label'
  }],
  ['a single example of a class', (d) => {
    const second = d.records.filter((r) => r.label === d.names[1])
    for (const r of second.slice(1)) r.label = d.names[0]
    return 'one example of a class (2 needed)'
  }],
  ['bad JSON', (d, rng) => {
    if (d.format !== 'jsonl' && d.format !== 'erniekit') return undefined
    const r = rng.pick(d.records)
    const bad = rng.pick([
      `{"text": ${JSON.stringify(r.text)}, "label": `,
      `{"text": ${JSON.stringify(r.text)}, "label": {"a": 1}}`,
      `{"text": ${JSON.stringify(r.text)}, "label": [1]}`,
      `{"text": ${JSON.stringify(r.text)}, "label": true}`,
      `{"text": ${JSON.stringify(r.text)}, "label": 0.5}`,
      `{"text": ${JSON.stringify(r.text)}, "label": -1}`,
      `{"text": 12, "label": 1}`,
      `{"text": null, "label": 1}`,
      `[${JSON.stringify(r.text)}, 1]`,
      `"${r.text}"`,
      `{"src": [], "tgt": ["1"]}`,
      `{"src": [${JSON.stringify(r.text)}], "tgt": ["0", "1"]}`,
      `{"src": [${JSON.stringify(r.text)}]}`,
      `{'text': 'x', 'label': 1}`,
    ])
    r.raw = Buffer.from(bad)
    return `record ${bad.slice(0, 40)}`
  }],
  ['bad CSV', (d, rng) => {
    if (d.format !== 'csv') return undefined
    const r = rng.pick(d.records)
    const bad = rng.pick([`"${r.text},${r.label}`, `"${r.text}"x,${r.label}`])
    r.raw = Buffer.from(bad)
    return `record ${bad.slice(0, 40)}`
  }],
  ['no records', (d) => {
    d.records = []
    return 'no records'
  }],
]

export function dataCase(rng: Rng): Generated {
  const format = rng.pick<Format>(['tsv', 'tsv', 'tsv-noheader', 'jsonl', 'erniekit', 'csv'])
  const names = rng.pick<[string | number, string | number]>([[0, 1], [0, 1], ['negative', 'positive'], ['bad', 'good']])
  const pool = trainingLines()
  const n = rng.int(6, 10)
  const records: Rec[] = Array.from({ length: n }, (_, i) => {
    const line = rng.pick(pool)
    // two of each class at least: the first four alternate
    const y = i < 4 ? i % 2 : line.label
    return { text: line.text, label: names[y] }
  })
  const d: Data = {
    format,
    records,
    names,
    eol: rng.pick(['\n', '\n', '\r\n', '\r']),
    bom: rng.chance(0.15),
    blankLines: rng.chance(0.2),
    finalEol: rng.chance(0.7),
    extraColumn: (format === 'tsv' || format === 'jsonl' || format === 'csv') && rng.chance(0.2),
    quoteAll: rng.chance(0.3),
    padLabels: format !== 'erniekit' && format !== 'jsonl' && rng.chance(0.2),
  }
  const harmless: string[] = []
  if (format === 'csv' && rng.chance(0.3)) {
    const r = rng.pick(d.records)
    r.text = `${r.text}, "quoted", and\na second line`
    harmless.push('a text with commas, quotes and a line break')
  }
  if (format === 'tsv' && !d.extraColumn && rng.chance(0.2)) {
    const r = rng.pick(d.records)
    r.text = `${r.text}\tafter a tab`
    harmless.push('a tab inside the last column')
  }
  const extras = [d.padLabels && 'labels padded with spaces', d.eol !== '\n' && `line ends ${JSON.stringify(d.eol)}`, d.bom && 'BOM', d.blankLines && 'blank lines', !d.finalEol && 'no final newline', d.extraColumn && 'an extra column', d.quoteAll && format === 'csv' && 'all fields quoted']
  harmless.push(...(extras.filter(Boolean) as string[]))

  let fault: string | undefined
  if (rng.chance(0.75)) {
    for (const [, f] of rng.shuffle(FAULTS)) {
      fault = f(d, rng)
      if (fault) break
    }
  }
  const file = FILE_OF[format]
  const what = `${format} ${names.join('/')} x${d.records.length}${harmless.length ? ` (${harmless.join(', ')})` : ''}${fault ? `: ${fault}` : ''}`
  return {
    verdict: fault ? 'reject' : 'accept',
    what,
    target: { kind: 'data', file, content: serialize(d), examples: d.records.length },
    names: [file],
  }
}
