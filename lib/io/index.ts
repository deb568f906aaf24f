// Checkpoint I/O: memory-mapped files, safetensors (read through the mapping, written atomically)
// and atomic directory writes.
export * from './mmap'
export * from './safetensors'
export * from './atomic'
