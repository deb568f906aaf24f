// Labelled text data: readers for arrays, JSON Lines, TSV and CSV, and label sets.
export * from './errors'
export * from './read'
export * from './labels'
export { byteLines, firstInvalidUtf8 } from './lines'
export * from './preferences'
