// Train, evaluate, use and save a sentiment classifier (README: "The classifier").
// Run from the repository root: npm run build:ts && node dist/examples/sentiment.js [out-dir]
import { ErnieClassifier } from '../lib/index'

async function main() {
  const clf = new ErnieClassifier({
    model: 'test/fixtures/ernie-tiny', // a directory or a hub id such as 'baidu/ERNIE-4.5-0.3B-PT'
    method: 'full', // 'head' | 'lora' | 'full' | 'generative'
    maxLength: 64,
    truncation: 'head_tail',
  })
  const result = await clf.fit('test/fixtures/chnsenticorp/train.tsv', {
    epochs: 1,
    batchSize: 32,
    learningRate: 2e-3,
    evalData: 'test/fixtures/chnsenticorp/dev.tsv',
    onProgress: (p) => p.eval && console.log(`step ${p.step}/${p.totalSteps}: dev accuracy ${p.eval.accuracy.toFixed(3)}`),
  })
  console.log(`${result.steps} steps in ${result.seconds.toFixed(1)} s`)

  console.log(await clf.predict('这家酒店的服务很好')) // { label, score, scores: { negative, positive } }
  console.log(await clf.predict(['房间很脏，不推荐', '早餐丰富，位置方便']))
  const m = await clf.evaluate('test/fixtures/chnsenticorp/test.tsv')
  console.log(`test accuracy ${m.accuracy.toFixed(3)}, macro-F1 ${m.macroF1.toFixed(3)}`, m.confusion)

  const dir = process.argv[2] ?? 'out/sentiment-clf'
  await clf.save(dir) // classifier.json, weights, tokenizer, report.html
  const same = await ErnieClassifier.load(dir)
  console.log(await same.predict('这家酒店的服务很好'))
  await same.dispose()
  await clf.dispose()
}

main().catch((e) => {
  console.error(e)
  process.exitCode = 1
})
