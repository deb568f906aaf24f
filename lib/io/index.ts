// Checkpoint I/O: memory-mapped files, safetensors (read through the mapping, written atomically),
// bounded reads of small files (configs, tokenizers) and atomic directory writes.
export * from './mmap'
export * from './file-copy'
export * from './read'
export * from './safetensors'
export * from './atomic'
