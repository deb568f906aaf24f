// npm run bench:tokenizer [-- --json] [-- --data path/to/test.tsv]
// Encode throughput on review texts (ChnSentiCorp test.tsv: `label<TAB>text`, a header line) for
// both fixture models, through our SentencePiece reader and through tokenizer.json
// (@huggingface/tokenizers), plus a padded encodeBatch of the whole set.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { Tokenizer, sentencePieceToTokenizerJson } from '../lib/index'
import { flagValue, report, timeIt, type Row } from './common'

function findData(): string {
  const given = flagValue('--data') ?? process.env.ERNIE_TOKENIZER_BENCH_DATA
  if (given) return given
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'shared', 'data', 'chnsenticorp', 'test.tsv')
    if (fs.existsSync(candidate)) return candidate
    if (path.dirname(dir) === dir) throw new Error('no shared/data/chnsenticorp/test.tsv above the package; pass --data FILE')
  }
}

function readTexts(file: string): string[] {
  const lines = fs.readFileSync(file, 'utf8').split('\n').slice(1)
  return lines.filter((l) => l.length > 0).map((l) => l.slice(l.indexOf('\t') + 1))
}

async function main(): Promise<void> {
  const file = findData()
  const texts = readTexts(file)
  const chars = texts.reduce((n, s) => n + s.length, 0)
  const fixtures = path.join(__dirname, '..', '..', 'test', 'fixtures', 'tokenizer')
  const rows: Row[] = []
  let tokens = 0
  for (const name of ['ernie_style_bpe', 'unigram']) {
    const bytes = new Uint8Array(fs.readFileSync(path.join(fixtures, `${name}.model`)))
    // As ernie-tiny's tokenizer_config.json sets it, so that batches can be padded.
    const config = { pad_token: '<unk>' }
    const viaModel = Tokenizer.fromSentencePiece(bytes, { config })
    const viaJson = Tokenizer.fromTokenizerJson(JSON.parse(JSON.stringify(sentencePieceToTokenizerJson(bytes))), { config })
    for (const [label, tok] of [
      ['model', viaModel],
      ['json', viaJson],
    ] as const) {
      const s = await timeIt(() => {
        for (const text of texts) tok.encode(text)
      }, 5, 1)
      rows.push({ key: `${name}_${label}_texts_per_s`, value: texts.length / s, unit: 'texts/s' })
      rows.push({ key: `${name}_${label}_mchars_per_s`, value: chars / s / 1e6, unit: 'Mchar/s' })
    }
    tokens = texts.reduce((n, text) => n + viaModel.encode(text).length, 0)
    const b = await timeIt(() => viaModel.encodeBatch(texts, { maxLength: 512, padding: 'longest' }), 3, 1)
    rows.push({ key: `${name}_model_batch_texts_per_s`, value: texts.length / b, unit: 'texts/s' })
  }
  report(`tokenizer encode (${texts.length} texts, ${chars} characters, ${tokens} tokens (unigram), from ${file})`, rows, {
    texts: texts.length,
    chars,
  })
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
