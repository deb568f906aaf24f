// ernie-sentiment: the public API.
export * as kernels from './kernels'
