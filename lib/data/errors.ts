// Bad training or evaluation data: the message names where (file and line, or the array index)
// and what is wrong, and the same facts are fields for code that wants to branch on them.
import { ErnieError } from '../errors'

export class DataError extends ErnieError {
  /** The file, or 'data' for an array given in memory. */
  readonly file: string
  /** 1-based line of the record (files), or the array index (arrays); undefined for whole-set problems. */
  readonly line: number | undefined
  /** What is wrong, without the location. */
  readonly problem: string

  constructor(file: string, line: number | undefined, problem: string, isArray = false) {
    super('ERR_DATA', `${where(file, line, isArray)}: ${problem}`)
    this.name = 'DataError'
    this.file = file
    this.line = line
    this.problem = problem
  }
}

/** "train.tsv:12", "data[3]" or just the file. */
export function where(file: string, line: number | undefined, isArray = false): string {
  if (line === undefined) return file
  return isArray ? `${file}[${line}]` : `${file}:${line}`
}
