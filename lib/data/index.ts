// Training data: labelled texts (arrays, JSON Lines, TSV and CSV) and label sets; chat data
// (conversations in the common JSON Lines shapes) and a seeded held-out split.
export * from './errors'
export * from './read'
export * from './labels'
export { byteLines, firstInvalidUtf8 } from './lines'
export * from './chat-records'
export * from './chat'
export * from './preferences'
