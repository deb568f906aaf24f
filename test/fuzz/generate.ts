// The case with a given id for a seed: its family drawn by weight, then the family's generator.
import { caseRandom, type Family, type FuzzCase, type Generated, type HfClassifierKind, type Rng } from './case'
import { adapterCase } from './gen-adapter'
import { classifierCase } from './gen-classifier'
import { configCase } from './gen-config'
import { dataCase } from './gen-data'
import { hfClassifierCase } from './gen-hf-classifier'
import { idsCase } from './gen-ids'
import { safetensorsCase } from './gen-safetensors'
import { tokenizerCase } from './gen-tokenizer'

export interface GenerateContext {
  /** The run's saved classifier, which classifier cases start from. */
  classifierDir: string
  /** The run's saved classifiers in their Hugging Face form, which HF-classifier cases start from. */
  hfClassifierDirs: Record<HfClassifierKind, string>
}

// Weights in percent of the cases: the suite's 1,000 give each family at least about 50.
const FAMILIES: Array<[Family, number, (rng: Rng, ctx: GenerateContext) => Generated]> = [
  ['safetensors', 24, (rng) => safetensorsCase(rng)],
  ['config', 22, (rng) => configCase(rng)],
  ['ids', 6, (rng) => idsCase(rng)],
  ['data', 20, (rng) => dataCase(rng)],
  ['classifier', 9, (rng, ctx) => classifierCase(rng, ctx.classifierDir)],
  ['adapter', 7, (rng) => adapterCase(rng)],
  ['hf-classifier', 6, (rng, ctx) => hfClassifierCase(rng, ctx.hfClassifierDirs)],
  ['tokenizer', 6, (rng) => tokenizerCase(rng)],
]
const TOTAL = FAMILIES.reduce((s, [, w]) => s + w, 0)

export function generateCase(seed: number, id: number, ctx: GenerateContext): FuzzCase {
  const rng = caseRandom(seed, id)
  let r = rng.next() * TOTAL
  const [family, , make] = FAMILIES.find(([, w]) => (r -= w) < 0)!
  return { id, family, ...make(rng, ctx) }
}
