// Checkpoint I/O: memory-mapped files and safetensors (read through the mapping, written atomically).
export * from './mmap'
export * from './safetensors'
