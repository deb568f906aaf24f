// The ES module entry (package.json "exports" → "import"): the CommonJS build's exports, named.
// Node reads the names from dist/lib/index.js's static exports (cjs-module-lexer), so this module
// re-exports the very objects `require('ernie-sentiment')` returns: one copy of the library and of
// its native addon, whichever way it is loaded.
export * from '../dist/lib/index.js'
