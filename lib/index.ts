// ernie-sentiment: the public API.
export * as kernels from './kernels'
export * as io from './io'
export * as hub from './hub'
