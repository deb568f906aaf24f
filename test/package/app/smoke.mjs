// The ES module smoke script: named imports from 'ernie-sentiment' (the exports map's "import"),
// every one the very object require() gives, then smoke-flow.cjs.
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import * as esm from 'ernie-sentiment'
import { ErnieClassifier } from 'ernie-sentiment'
import flow from './smoke-flow.cjs'

const cjs = createRequire(import.meta.url)('ernie-sentiment')
const differ = Object.keys(cjs).filter((name) => esm[name] !== cjs[name])
if (differ.length > 0) throw new Error(`import and require give different exports: ${differ.join(', ')}`)
await flow.run(ErnieClassifier, fileURLToPath(new URL('.', import.meta.resolve('ernie-sentiment/package.json'))))
