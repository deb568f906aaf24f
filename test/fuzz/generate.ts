// The case with a given id for a seed: its family drawn by weight, then the family's generator.
import { caseRandom, type Family, type FuzzCase, type Generated, type Rng } from './case'
import { classifierCase } from './gen-classifier'
import { configCase } from './gen-config'
import { dataCase } from './gen-data'
import { idsCase } from './gen-ids'
import { safetensorsCase } from './gen-safetensors'

export interface GenerateContext {
  /** The run's saved classifier, which classifier cases start from. */
  classifierDir: string
}

const FAMILIES: Array<[Family, number, (rng: Rng, ctx: GenerateContext) => Generated]> = [
  ['safetensors', 30, (rng) => safetensorsCase(rng)],
  ['config', 25, (rng) => configCase(rng)],
  ['ids', 8, (rng) => idsCase(rng)],
  ['data', 25, (rng) => dataCase(rng)],
  ['classifier', 12, (rng, ctx) => classifierCase(rng, ctx.classifierDir)],
]
const TOTAL = FAMILIES.reduce((s, [, w]) => s + w, 0)

export function generateCase(seed: number, id: number, ctx: GenerateContext): FuzzCase {
  const rng = caseRandom(seed, id)
  let r = rng.next() * TOTAL
  const [family, , make] = FAMILIES.find(([, w]) => (r -= w) < 0)!
  return { id, family, ...make(rng, ctx) }
}
