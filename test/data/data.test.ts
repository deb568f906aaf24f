// lib/data: the readers (arrays, JSONL incl. ERNIEKit src/tgt, TSV with and without a header,
// CSV with quoting), every bad-input message (file, line, problem), onInvalid: 'skip' counts,
// streaming over chunk boundaries, label sets, and the classification metrics.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import { assignLabels, byteLines, checkClassCounts, CsvRecords, DataError, firstInvalidUtf8, LabelSet, readDataset } from '../../lib/data/index'
import { classificationMetrics } from '../../lib/classifier/metrics'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-data-'))
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
let n = 0
function file(name: string, content: string | Buffer): string {
  const p = path.join(dir, `${n++}-${name}`)
  fs.writeFileSync(p, content)
  return p
}
const simple = (ds: { examples: Array<{ text: string; label: unknown; line: number }> }) => ds.examples.map((e) => [e.text, e.label, e.line])

async function rejectsData(t: typeof import("tap").default, p: Promise<unknown>, file: string, line: number | undefined, problem: RegExp, what: string) {
  const e = await p.then(
    () => undefined,
    (err) => err,
  )
  t.ok(e instanceof DataError, `${what}: a DataError`)
  if (!(e instanceof DataError)) return t.comment(String(e))
  t.equal(e.code, 'ERR_DATA', `${what}: code`)
  t.equal(e.file, file, `${what}: file`)
  t.equal(e.line, line, `${what}: line`)
  t.match(e.problem, problem, `${what}: problem`)
  t.ok(e.message.startsWith(line === undefined ? file : `${file}:${line}: `), `${what}: the message starts with the location: ${e.message}`)
}

t.test('TSV without a header: text<TAB>label, CRLF, lone CR, BOM, blank lines; more columns need a header', async (t) => {
  const p = file('plain.tsv', '\ufeff很好\t1\r\n\r\n太差了\t0\n一般\tpositive\r还行\t1\n')
  const ds = await readDataset(p)
  t.equal(ds.format, 'tsv')
  t.same(simple(ds), [
    ['很好', '1', 1],
    ['太差了', '0', 3],
    ['一般', 'positive', 4],
    ['还行', '1', 5],
  ])
  t.equal(ds.skipped.count, 0)
  // Old Mac line ends (CR only): one record per line, not one line holding the whole file.
  const mac = file('mac.tsv', '好\t1\r差\t0\r')
  t.same(simple(await readDataset(mac)), [['好', '1', 1], ['差', '0', 2]])
  // Three columns and no header: which is the label? A header must say.
  const three = file('three.tsv', '好\t1\t0\n')
  await t.rejects(readDataset(three), { message: `${three}:1: expected "text<TAB>label" (2 columns), found 3; add a header row naming the columns (e.g. text<TAB>label)` })
  const withHeader = file('three-hdr.tsv', 'label\ttext\n1\t含\t制表符\n')
  t.same(simple(await readDataset(withHeader)), [['含\t制表符', '1', 2]], 'under a header, a last text column keeps its tabs')
  // A line of whitespace around a tab is a record with empty fields: reported, not dropped uncounted.
  const blank = file('blank.tsv', '好\t1\n \t \n差\t0\n')
  await t.rejects(readDataset(blank), { message: `${blank}:2: empty text (whitespace only)` })
  const skipped = await readDataset(blank, { onInvalid: 'skip' })
  t.same(skipped.skipped.reasons, { 'empty text': 1 }, 'counted when skipped')
})

t.test('only regular files are read, and a line has a size limit: a directory, a FIFO, /dev/zero', async (t) => {
  const dir = path.dirname(file('x.tsv', ''))
  await t.rejects(readDataset(dir + '/'), { code: 'EISDIR', path: dir + '/', message: `${dir}/: is a directory, not a file` })
  await t.rejects(readDataset(path.join(dir, 'absent.tsv')), { code: 'ERR_DATA', message: /absent\.tsv: no such file/ })
  if (fs.existsSync('/dev/zero')) await t.rejects(readDataset('/dev/zero', { format: 'tsv' }), { code: 'ERR_NOT_A_FILE', message: '/dev/zero: is a character device, not a regular file' })
  const fifo = path.join(dir, 'fifo.tsv')
  const made = (await import('node:child_process')).spawnSync('mkfifo', [fifo])
  t.equal(made.status, 0, 'mkfifo made the FIFO')
  await t.rejects(readDataset(fifo), { code: 'ERR_NOT_A_FILE', message: /fifo\.tsv: is a FIFO, not a regular file/ }, 'a FIFO is refused at once, never waited on')
  // A file with no line break in its first MAX_LINE_BYTES bytes is not line-structured text.
  const { MAX_LINE_BYTES } = await import('../../lib/data/lines')
  const long = path.join(dir, 'long.tsv')
  fs.writeFileSync(long, Buffer.alloc(MAX_LINE_BYTES + 2, 0x61))
  await t.rejects(readDataset(long), { message: new RegExp(`long\\.tsv:1: the line is longer than ${MAX_LINE_BYTES} bytes`) })
  fs.rmSync(long)
})

t.test('TSV with a header in any column order (ChnSentiCorp label\\ttext_a)', async (t) => {
  const ds = await readDataset(path.join(__dirname, '..', 'fixtures/chnsenticorp/dev.tsv'))
  t.equal(ds.examples.length, 200)
  t.equal(ds.examples[0].line, 2, 'line numbers count the header')
  t.ok(ds.examples.every((e) => e.label === '0' || e.label === '1'))
  t.ok(ds.examples[0].text.length > 10)
  const p = file('hdr.tsv', 'Text\tLabel\n好\tpositive\n')
  t.same(simple(await readDataset(p)), [['好', 'positive', 2]])
  const named = file('named.tsv', 'id\treview\tstars\n1\t好\t5\n')
  t.same(simple(await readDataset(named, { textField: 'review', labelField: 'stars' })), [['好', '5', 2]])
})

t.test('JSONL: {text, label} with numbers or names, and ERNIEKit {src, tgt}', async (t) => {
  const p = file(
    'a.jsonl',
    [
      '{"text": "好", "label": 1}',
      '',
      '{"text_a": "差", "label": "negative"}',
      '{"src": ["这家店很棒"], "tgt": ["正面"]}',
      '{"src": "一般", "tgt": "负面"}',
    ].join('\n'),
  )
  const ds = await readDataset(p)
  t.equal(ds.format, 'jsonl')
  t.same(simple(ds), [
    ['好', 1, 1],
    ['差', 'negative', 3],
    ['这家店很棒', '正面', 4],
    ['一般', '负面', 5],
  ])
})

t.test('CSV with a header: quoted fields with commas, doubled quotes and line breaks', async (t) => {
  const p = file('a.csv', 'label,text\n1,"好,很好"\n0,"他说""差""\n第二行"\npositive,plain text\n')
  const ds = await readDataset(p)
  t.same(simple(ds), [
    ['好,很好', '1', 2],
    ['他说"差"\n第二行', '0', 3],
    ['plain text', 'positive', 5],
  ])
  const r = new CsvRecords()
  t.same(r.push('a,"b', 1), undefined, 'an open quote waits for the next line')
  t.same(r.push('c",d', 2), ['a', 'b\nc', 'd'])
  t.equal(r.startLine, 1)
  t.throws(() => new CsvRecords().push('"a"b,c', 1), /after a closing quote/)
})

t.test('arrays of { text, label }', async (t) => {
  const ds = await readDataset([
    { text: '好', label: 1 },
    { text: '差', label: 'negative' },
  ])
  t.equal(ds.format, 'array')
  t.same(simple(ds), [
    ['好', 1, 0],
    ['差', 'negative', 1],
  ])
  await t.rejects(readDataset(42 as never), TypeError)
})

t.test('every bad record names the file, the line and the problem', async (t) => {
  const cases: Array<[string, string | Buffer, number, RegExp]> = [
    ['missing-label.jsonl', '{"text": "好", "label": 1}\n{"text": "差"}\n', 2, /^missing field "label"$/],
    ['missing-text.jsonl', '{"label": 1}\n', 1, /^missing field "text"$/],
    ['null-label.jsonl', '{"text": "好", "label": null}\n', 1, /^missing label$/],
    ['empty-label.tsv', '好\t1\n差\t\n', 2, /^missing label$/],
    ['no-tab.tsv', '好\t1\n没有标签\n', 2, /^missing field: expected "text<TAB>label", found no tab$/],
    ['empty-text.tsv', '好\t1\n\t0\n', 2, /^empty text$/],
    ['blank-text.jsonl', '{"text": "  \\t ", "label": 0}\n', 1, /^empty text \(whitespace only\)$/],
    ['bad-json.jsonl', '{"text": "好", "label": 1}\n{"text": "好", \n', 2, /^invalid JSON/],
    ['array.jsonl', '[{"text": "好", "label": 1}]\n', 1, /^expected a JSON object, got an array$/],
    ['bool-label.jsonl', '{"text": "好", "label": true}\n', 1, /^label must be a string or a number, got boolean true$/],
    ['float-label.jsonl', '{"text": "好", "label": 0.5}\n', 1, /^label 0.5 is not a class index/],
    ['tgt-two.jsonl', '{"src": ["好"], "tgt": ["正面", "负面"]}\n', 1, /^field "tgt" must hold one label, found 2 \(a multi-turn src\/tgt record is a conversation: train a chat model on it with `ernie-sentiment sft`\)$/],
    ['short-row.tsv', 'label\ttext_a\n1\t好\n0\n', 3, /^missing field "text_a" \(1 of 2 columns\)$/],
    ['long-row.tsv', 'text\tlabel\n好\t1\t额外\n', 2, /^expected 2 columns \(text, label\), found 3$/],
    ['open-quote.csv', 'text,label\n好,1\n"never closed,0\n', 3, /^invalid CSV \(a quoted field is never closed\)$/],
  ]
  for (const [name, content, line, problem] of cases) {
    const p = file(name, content)
    await rejectsData(t, readDataset(p), p, line, problem, name)
  }
  // array records: the index is the location
  const e = await readDataset([{ text: '好', label: 1 }, { text: '', label: 0 }]).catch((x) => x)
  t.ok(e instanceof DataError)
  t.equal(e.message, 'data[1]: empty text')
  t.match((await readDataset([null as never]).catch((x) => x)).message, /^data\[0\]: expected an object/)
  // a header without the needed columns
  const h = file('nolabel.csv', 'text,score\n好,1\n')
  await rejectsData(t, readDataset(h), h, 1, /has no label column/, 'header without a label column')
})

t.test('invalid UTF-8 is found on the raw bytes, with its position', async (t) => {
  const good = Buffer.from('好\t1\n', 'utf8')
  const bad = Buffer.concat([Buffer.from('很'), Buffer.from([0xe5, 0xa5]), Buffer.from('\t0\n')]) // a truncated 3-byte sequence
  const p = file('bad-utf8.tsv', Buffer.concat([good, bad, Buffer.from('\ufffd是合法字符\t1\n')]))
  await rejectsData(t, readDataset(p), p, 2, /^invalid UTF-8 \(byte 0xe5 at byte 4 of the line\)$/, 'truncated sequence')
  // U+FFFD written as such is a legal character: only the bad bytes are flagged
  const ds = await readDataset(p, { onInvalid: 'skip' })
  t.same(
    ds.examples.map((e) => e.text),
    ['好', '\ufffd是合法字符'],
  )
  t.same(ds.skipped.reasons, { 'invalid UTF-8': 1 })

  t.equal(firstInvalidUtf8(Buffer.from('好abc')), -1)
  t.equal(firstInvalidUtf8(Buffer.from([0x61, 0xc0, 0x80])), 1, 'overlong encoding')
  t.equal(firstInvalidUtf8(Buffer.from([0xed, 0xa0, 0x80])), 0, 'a UTF-16 surrogate')
  t.equal(firstInvalidUtf8(Buffer.from([0x61, 0x62, 0xff])), 2, 'a byte never in UTF-8')
  t.equal(firstInvalidUtf8(Buffer.from([0xf4, 0x90, 0x80, 0x80])), 0, 'past U+10FFFF')
  t.equal(firstInvalidUtf8(Buffer.from([0xf0, 0x9f, 0x98, 0x80])), -1, 'an emoji')
})

t.test("onInvalid: 'skip' drops bad records and counts them by problem", async (t) => {
  const p = file('mixed.jsonl', ['{"text": "好", "label": 1}', '{"text": ""}', '{"text": "", "label": 1}', 'nope', '{"text": "差", "label": 0}', '{"label": 1}'].join('\n'))
  const ds = await readDataset(p, { onInvalid: 'skip' })
  t.same(
    ds.examples.map((e) => e.text),
    ['好', '差'],
  )
  t.equal(ds.skipped.count, 4)
  t.same(ds.skipped.reasons, { 'missing field': 2, 'empty text': 1, 'invalid JSON': 1 })
  t.same(
    ds.skipped.first.map((f) => f.where),
    [`${p}:2`, `${p}:3`, `${p}:4`, `${p}:6`],
  )
  await t.rejects(readDataset(p, { onInvalid: 'ignore' as never }), RangeError)
})

t.test('files are streamed: lines split across read chunks come out whole', async (t) => {
  const lines = Array.from({ length: 300 }, (_, i) => `评论${i}${'好'.repeat(i % 17)}\t${i % 2}`)
  const p = file('many.tsv', lines.join('\n') + '\n')
  const got: string[] = []
  for await (const l of byteLines(p, 7)) got.push(l.bytes.toString('utf8')) // 7-byte chunks cut characters in half
  t.same(got, lines)
  const ds = await readDataset(p)
  t.equal(ds.examples.length, 300)
  t.equal(ds.examples[299].line, 300)
})

t.test('label sets: inferred from training data, or given', async (t) => {
  const ex = (labels: Array<string | number>) => labels.map((label, i) => ({ text: 'x', label, file: 'f', line: i + 1, isArray: false }))
  t.same(LabelSet.infer(ex(['1', 0, '0', 1]), 'f').names, ['negative', 'positive'], 'numeric 0/1: negative/positive')
  t.throws(() => LabelSet.infer(ex(['0', '1', '1', '2', '0']), 'f'), { message: /^f:4: label 2 beside 0 and 1 \(negative, positive\): the labels are 0, 1, 2; if 3 classes are meant, name them in index order/ }, 'a stray number beside 0/1 is not a new class')
  t.throws(() => LabelSet.infer(ex(['positive', 'negative', 'Positive']), 'f'), { message: 'f:3: label "Positive" differs from label "positive" (line 1) only in case; make them agree, or give the class names (labels)' })
  t.same(LabelSet.infer(ex(['neutral', 'positive', 'negative']), 'f').names, ['negative', 'neutral', 'positive'], 'names, sorted')
  const stars = LabelSet.infer(ex(['5', '3', '1']), 'f')
  t.same(stars.names, ['1', '3', '5'])
  t.equal(stars.indexOf(3), 1, 'non-contiguous numbers match by name, not as indices')
  t.throws(() => LabelSet.infer(ex(['1', 'positive']), 'f'), /f:2: label "positive" is a name, but other labels are numbers/)
  t.throws(() => LabelSet.infer(ex(['1', '1']), 'f'), /at least 2 classes/)

  const given = new LabelSet(['neg', 'neu', 'pos'])
  t.equal(given.indexOf(2), 2, 'numbers index given names')
  t.equal(given.indexOf('2'), 2)
  t.equal(given.indexOf('NEU'), 1, 'names match case-insensitively')
  t.equal(given.indexOf('other'), undefined)
  t.equal(given.indexOf(3), undefined)
  t.throws(() => new LabelSet(['a']), RangeError)
  t.throws(() => new LabelSet(['a', 'a']), /appears twice/)
})

t.test('unknown labels in training data, labels never seen in training in eval data, too few examples', async (t) => {
  const train = file('train.tsv', 'label\ttext\npositive\t好\nnegative\t差\nmeh\t一般\n')
  const set = new LabelSet(['negative', 'positive'])
  const ds = await readDataset(train)
  t.throws(() => assignLabels(ds, set, 'train', 'error'), { message: `${train}:4: unknown label "meh" (expected one of negative, positive (or 0..1))` })

  const evalFile = file('eval.tsv', 'label\ttext\npositive\t好\nneutral\t一般\n')
  const ev = await readDataset(evalFile)
  t.throws(() => assignLabels(ev, set, 'eval', 'error'), { message: `${evalFile}:3: label "neutral" never appears in the training data (classes: negative, positive)` })
  const kept = assignLabels(ev, set, 'eval', 'skip')
  t.same(Array.from(kept.labels), [1])
  t.same(ev.skipped.reasons, { 'unseen label': 1 }, 'the skip is added to the dataset report')

  t.throws(() => checkClassCounts(Int32Array.from([0, 0, 0, 1]), set, train, 2), { message: `${train}: too few examples of class "positive": 1 (at least 2 needed)` })
  t.throws(() => checkClassCounts(Int32Array.from([0, 0]), set, train, 2), /class "positive": 0 \(at least 2 needed; remove it from labels or add examples\)/)
  t.same(checkClassCounts(Int32Array.from([0, 1, 1, 0]), set, train, 2), [2, 2])
})

t.test('metrics: accuracy, per-class precision / recall / F1, macro-F1, confusion, loss', async (t) => {
  // 3 classes, 6 examples; expected values worked out by hand
  const truth = [0, 0, 1, 1, 2, 2]
  const pred = [0, 1, 1, 1, 0, 2]
  const probs = new Float32Array(18)
  pred.forEach((p, i) => {
    for (let c = 0; c < 3; c++) probs[i * 3 + c] = c === p ? 0.8 : 0.1
  })
  const m = classificationMetrics(truth, probs, ['a', 'b', 'c'])
  t.equal(m.accuracy, 4 / 6)
  t.same(m.confusion, [
    [1, 1, 0],
    [0, 2, 0],
    [1, 0, 1],
  ])
  t.same(m.perClass.a, { precision: 0.5, recall: 0.5, f1: 0.5, support: 2 })
  t.same(m.perClass.b, { precision: 2 / 3, recall: 1, f1: 0.8, support: 2 })
  t.same(m.perClass.c, { precision: 1, recall: 0.5, f1: 2 / 3, support: 2 })
  t.ok(Math.abs(m.macroF1 - (0.5 + 0.8 + 2 / 3) / 3) < 1e-12)
  // right: -ln 0.8 (4 times); wrong: -ln 0.1 (twice), in f32
  const expected = (4 * -Math.log(Math.fround(0.8)) + 2 * -Math.log(Math.fround(0.1))) / 6
  t.ok(Math.abs(m.loss - expected) < 1e-9, `loss ${m.loss} vs ${expected}`)
  t.equal(m.count, 6)
})
