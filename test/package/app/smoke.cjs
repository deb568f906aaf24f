// The CommonJS smoke script: require('ernie-sentiment') (the exports map's "require"), then smoke-flow.cjs.
const path = require('node:path')
const { ErnieClassifier } = require('ernie-sentiment')
const { run } = require('./smoke-flow.cjs')

run(ErnieClassifier, path.dirname(require.resolve('ernie-sentiment/package.json'))).catch((err) => {
  console.error(err)
  process.exitCode = 1
})
