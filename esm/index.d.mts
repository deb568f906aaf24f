// The types of esm/index.mjs: the CommonJS build's, as named exports.
export * from '../types/lib/index.js'
