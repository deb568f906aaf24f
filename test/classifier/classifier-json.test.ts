// A saved classifier whose classifier.json or head.safetensors was edited or corrupted: each
// field of the wrong type or value, and each head tensor missing, of another dtype or shape, is
// ErnieError ERR_CLASSIFIER naming the file and what is wrong. Found by the structural fuzz test
// (test/fuzz): such files loaded and predicted ("false" read as true, an I32 head converted, a
// transposed head read row by row, half a standardisation dropped) or failed with an option
// error that named no file.
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier } from '../../lib/index'
import { openSafetensors, saveSafetensors, type Dtype, type TensorToSave } from '../../lib/io/safetensors'
import { savedTinyClassifier } from '../helpers/classifier-helpers'

const DATA = [
  { text: '房间很干净，服务也周到', label: 1 },
  { text: '太差了，不推荐', label: 0 },
  { text: '早餐丰富，位置方便', label: 1 },
  { text: '隔音很差，很吵', label: 0 },
]

t.test('classifier.json and head.safetensors are checked on load', async (t) => {
  const { dir, saved, clf } = await savedTinyClassifier(t, DATA)
  const expected = await clf.predict('房间很干净')
  await clf.dispose()
  const meta = JSON.parse(fs.readFileSync(path.join(saved, 'classifier.json'), 'utf8'))
  let n = 0
  const copy = () => {
    const d = path.join(dir, `c${n++}`)
    fs.cpSync(saved, d, { recursive: true })
    return d
  }
  const withMeta = (edit: (m: Record<string, unknown>) => void) => {
    const d = copy()
    const m = structuredClone(meta)
    edit(m)
    fs.writeFileSync(path.join(d, 'classifier.json'), JSON.stringify(m))
    return d
  }
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

  const fields: Array<[string, (m: Record<string, unknown>) => void, string]> = [
    ['appendEos "false"', (m) => (m.appendEos = 'false'), '"appendEos" must be true or false, got "false"'],
    ['head kind "tree"', (m) => (m.head = { kind: 'tree' }), `"head" must be { kind: 'linear' } or { kind: 'mlp', hiddenSize: a positive integer } (method head), got {"kind":"tree"}`],
    ['no head record', (m) => delete m.head, `"head" must be { kind: 'linear' } or { kind: 'mlp', hiddenSize: a positive integer } (method head), got nothing`],
    ['numericIsIndex "true"', (m) => ((m.labels as Record<string, unknown>).numericIsIndex = 'true'), '"labels.numericIsIndex" must be true or false, got "true"'],
    ['one class name', (m) => ((m.labels as Record<string, unknown>).names = ['negative']), '"labels.names" must be two or more distinct non-empty class names, got ["negative"]'],
    ['seed 1.5', (m) => (m.seed = 1.5), '"seed" must be an integer, got 1.5'],
    ['maxLength removed', (m) => delete m.maxLength, '"maxLength" must be an integer >= 2, got nothing'],
    ['pooling "LAST"', (m) => (m.pooling = 'LAST'), '"pooling" must be one of last, mean, first, got "LAST"'],
    ['truncation 3', (m) => (m.truncation = 3), '"truncation" must be one of head, head_tail, got 3'],
  ]
  for (const [name, edit, message] of fields) {
    const d = withMeta(edit)
    await t.rejects(ErnieClassifier.load(d), { code: 'ERR_CLASSIFIER', message: `${path.join(d, 'classifier.json')}: ${message}` }, name)
  }
  const latin1 = copy()
  fs.writeFileSync(path.join(latin1, 'classifier.json'), Buffer.from(JSON.stringify({ ...meta, savedAt: 'x\u00ff' }), 'latin1'))
  await t.rejects(ErnieClassifier.load(latin1), { code: 'ERR_CLASSIFIER', message: /classifier\.json: invalid JSON \(not valid UTF-8\)/ }, 'a byte that is not UTF-8')

  // head.safetensors rewritten with one tensor changed
  const withHead = async (edit: (tensors: Record<string, TensorToSave>) => void) => {
    const d = copy()
    const file = path.join(d, 'head.safetensors')
    const tensors: Record<string, TensorToSave> = {}
    {
      using st = openSafetensors(file)
      for (const [name, info] of Object.entries(st.tensors)) {
        const v = st.view(name)
        tensors[name] = { dtype: info.dtype, shape: info.shape, data: new Uint8Array(v.buffer, v.byteOffset, v.byteLength).slice() }
      }
    }
    edit(tensors)
    await saveSafetensors(file, tensors)
    return file
  }
  const heads: Array<[string, (ts: Record<string, TensorToSave>) => void, string]> = [
    ['weight as I32', (ts) => (ts['classifier.weight'].dtype = 'I32' as Dtype), 'tensor "classifier.weight" is I32; a head is stored as F32'],
    ['weight transposed', (ts) => (ts['classifier.weight'].shape = [64, 2]), 'tensor "classifier.weight" has shape [64, 2], the head needs [2, 64]'],
    ['bias as [1, 2]', (ts) => (ts['classifier.bias'].shape = [1, 2]), 'tensor "classifier.bias" has shape [1, 2], the head needs [2]'],
    ['feature_std removed', (ts) => delete ts['classifier.feature_std'], '"classifier.feature_mean" without "classifier.feature_std": the head\'s standardisation needs both'],
    ['bias removed', (ts) => delete ts['classifier.bias'], 'no tensor "classifier.bias"'],
  ]
  for (const [name, edit, message] of heads) {
    const file = await withHead(edit)
    await t.rejects(ErnieClassifier.load(path.dirname(file)), { code: 'ERR_CLASSIFIER', message: new RegExp(`^${escape(file)}: ${escape(message)}`) }, name)
  }
  const noHead = copy()
  fs.rmSync(path.join(noHead, 'head.safetensors'))
  await t.rejects(ErnieClassifier.load(noHead), { code: 'ERR_CLASSIFIER', message: `${path.join(noHead, 'head.safetensors')}: missing; classifier.json records a linear head` })

  // harmless edits still load and predict as before
  const harmless = withMeta((m) => {
    delete m.precision
    delete m.training
    m.x_note = 'an unknown key'
  })
  const loaded = await ErnieClassifier.load(harmless)
  t.same(await loaded.predict('房间很干净'), expected, 'optional records removed, an unknown key: the same predictions')
  await loaded.dispose()
})
