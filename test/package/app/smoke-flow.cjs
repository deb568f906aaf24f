// What both smoke scripts do with the installed package (test/package/package.test.ts runs them in
// a fresh app): fit 200 of the bundled ChnSentiCorp train reviews with the 'head' method on the
// bundled model, predict two texts, save, load the saved classifier and predict again. Prints one
// JSON line for the test to check.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const TEXTS = ['房间很干净，服务也周到', '太吵了，再也不来了']

exports.run = async function run(ErnieClassifier, packageDir) {
  const rows = fs.readFileSync(path.join(packageDir, 'data', 'chnsenticorp', 'train.tsv'), 'utf8').split('\n').slice(1, 201)
  const reviews = rows.map((row) => {
    const tab = row.indexOf('\t')
    return { text: row.slice(tab + 1), label: row.slice(0, tab) === '1' ? 'positive' : 'negative' }
  })
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-smoke-'))
  const clf = new ErnieClassifier({ method: 'head' })
  try {
    const fit = await clf.fit(reviews)
    const before = await clf.predict(TEXTS)
    await clf.save(dir)
    const loaded = await ErnieClassifier.load(dir)
    try {
      const after = await loaded.predict(TEXTS)
      console.log(JSON.stringify({ reviews: reviews.length, steps: fit.steps, labels: clf.labels, loadedLabels: loaded.labels, before, after, saved: fs.readdirSync(dir).sort() }))
    } finally {
      await loaded.dispose()
    }
  } finally {
    await clf.dispose()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
