// classifier.json read and checked: valid UTF-8 JSON, and each field this version uses of the
// type and values ClassifierJson states, so that an edited or corrupted file is an ErnieError
// ERR_CLASSIFIER naming the file and the field, never an option error without the file or a
// value quietly read as another ("false" as true, a head kind as 'linear').
import * as path from 'node:path'

import { ErnieError } from '../errors'
import { parseJsonBytes } from '../io/json'
import { readSmallFile } from '../io/read'
import { PRECISIONS } from '../precision'
import { CLASSIFIER_FILE, FORMAT, type BaseModelRef, type ClassifierJson } from './format'
import { METHODS } from './options'

const BASE_KINDS: readonly BaseModelRef['kind'][] = ['hub', 'path', 'bundled', 'saved']
const TRUNCATIONS = ['head', 'head_tail']
const POOLINGS = ['last', 'mean', 'first']

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const isInteger = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v)

/**
 * Reads `dir`/classifier.json and checks it. Required: format, version (1 or 2), method, labels
 * (two or more distinct names, numericIsIndex a boolean), maxLength (an integer >= 2), base, and
 * head for every method but 'generative'. A base 'saved' lies inside `dir`, a 'bundled' one is a
 * plain name. Optional, checked when present: truncation, pooling,
 * precision, appendEos, seed, lora, generative.
 */
export async function readClassifierJson(dir: string): Promise<{ meta: ClassifierJson; file: string }> {
  const file = path.join(dir, CLASSIFIER_FILE)
  const fail = (msg: string): never => {
    throw new ErnieError('ERR_CLASSIFIER', `${file}: ${msg}`)
  }
  let raw: unknown
  try {
    raw = parseJsonBytes(await readSmallFile(file, 'classifier'))
  } catch (e) {
    const code = (e as { code?: string }).code
    if (code) throw new ErnieError('ERR_CLASSIFIER', `${file}: cannot read (${code}); is ${dir} a saved classifier?`, { cause: e })
    fail(`invalid JSON (${(e as Error).message})`)
  }
  if (!isObject(raw) || raw.format !== FORMAT || (raw.version !== 1 && raw.version !== 2))
    fail(`not a classifier this version reads (format ${JSON.stringify((raw as { format?: unknown })?.format)}, version ${JSON.stringify((raw as { version?: unknown })?.version)})`)
  const m = raw as Record<string, unknown>
  const field = (key: string, ok: boolean, expected: string): void => {
    if (!ok) fail(`"${key}" must be ${expected}, got ${m[key] === undefined ? 'nothing' : JSON.stringify(m[key])}`)
  }
  const optional = (key: string, ok: (v: unknown) => boolean, expected: string) => field(key, m[key] === undefined || ok(m[key]), expected)

  if (!METHODS.includes(m.method as never)) fail(`unknown method ${JSON.stringify(m.method)}`)
  const base = m.base
  if (!isObject(base) || !BASE_KINDS.includes(base.kind as never) || typeof base.ref !== 'string' || base.ref === '')
    fail(`"base" must be { kind: ${BASE_KINDS.join(' | ')}, ref: string }, got ${JSON.stringify(base)}`)
  // a saved model must be inside the classifier's directory and a bundled one a plain name, so
  // that an edited file cannot load weights from elsewhere
  const { kind, ref } = base as { kind: string; ref: string }
  if (kind === 'saved') {
    const rel = path.relative(path.resolve(dir), path.resolve(dir, ref))
    if (rel.startsWith('..') || path.isAbsolute(rel)) fail(`base.ref ${JSON.stringify(ref)} leaves the classifier's directory; a saved model is inside it ('.' or 'model')`)
  }
  if (kind === 'bundled' && !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(ref)) fail(`base.ref ${JSON.stringify(ref)} is not a bundled model's name`)
  const labels = m.labels
  const names = isObject(labels) ? labels.names : undefined
  if (!Array.isArray(names) || names.length < 2 || !names.every((n) => typeof n === 'string' && n.trim() !== '') || new Set(names).size !== names.length)
    fail(`"labels.names" must be two or more distinct non-empty class names, got ${JSON.stringify(names)}`)
  if (typeof (labels as Record<string, unknown>).numericIsIndex !== 'boolean')
    fail(`"labels.numericIsIndex" must be true or false, got ${JSON.stringify((labels as Record<string, unknown>).numericIsIndex)}`)
  field('maxLength', isInteger(m.maxLength) && m.maxLength >= 2, 'an integer >= 2')
  optional('truncation', (v) => TRUNCATIONS.includes(v as string), `one of ${TRUNCATIONS.join(', ')}`)
  optional('pooling', (v) => POOLINGS.includes(v as string), `one of ${POOLINGS.join(', ')}`)
  if (m.precision !== undefined && !PRECISIONS.includes(m.precision as never))
    fail(`unknown precision ${JSON.stringify(m.precision)} (expected ${PRECISIONS.join(', ')})`)
  optional('appendEos', (v) => typeof v === 'boolean', 'true or false')
  optional('seed', isInteger, 'an integer')
  optional('lora', isObject, 'an object')
  optional('generative', isObject, 'an object')
  const head = m.head
  if (m.method !== 'generative' || head !== undefined) {
    const ok = isObject(head) && (head.kind === 'linear' || (head.kind === 'mlp' && isInteger(head.hiddenSize) && head.hiddenSize > 0))
    if (!ok) fail(`"head" must be { kind: 'linear' } or { kind: 'mlp', hiddenSize: a positive integer } (method ${m.method}), got ${JSON.stringify(head) ?? 'nothing'}`)
  }
  return { meta: m as unknown as ClassifierJson, file }
}
