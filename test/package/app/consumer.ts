// A TypeScript program written against the installed package's public types. test/package/
// package.test.ts checks it with `tsc --strict --noEmit`, with and without @types/node: copied to
// consumer.cts and consumer.mts under module nodenext (the exports map's require and import
// conditions), and as consumer.ts under TypeScript's default settings. It is never run.
import { ErnieClassifier, ErnieError, ErnieModel, Tokenizer, data, io, kernels } from 'ernie-sentiment'
import type { FitResult, LabeledText, Prediction } from 'ernie-sentiment'

export async function consume(dir: string, signal: AbortSignal): Promise<number> {
  const reviews: LabeledText[] = [
    { text: '房间很干净，服务也周到', label: 'positive' },
    { text: '太吵了，再也不来了', label: 'negative' },
  ]
  const clf = new ErnieClassifier({ method: 'head', maxLength: 64 })
  let score = 0
  try {
    const fit: FitResult = await clf.fit(reviews, { epochs: 1, signal, onProgress: (p) => void p.step })
    const one: Prediction = await clf.predict('早餐丰富')
    const many: Prediction[] = await clf.predict(['早餐丰富', '位置方便'])
    score = fit.steps + one.score + many.length
    await clf.save(dir)
    const loaded = await ErnieClassifier.load(dir)
    await loaded[Symbol.asyncDispose]()
  } catch (err) {
    if (err instanceof ErnieError) return err.code.length
    throw err
  } finally {
    await clf.dispose()
  }

  for await (const { line, bytes } of data.byteLines(`${dir}/reviews.tsv`)) {
    const raw: Uint8Array = bytes
    score += line + raw.length
  }
  const weights = io.openSafetensors(`${dir}/model.safetensors`)
  try {
    for (const name of Object.keys(weights.tensors)) score += weights.view(name).length
  } finally {
    weights.dispose()
  }
  const mapped = new io.MappedFile(`${dir}/model.safetensors`)
  mapped[Symbol.dispose]()

  const model = await ErnieModel.fromPretrained(dir, { precision: 'fp32' })
  try {
    const vectors: Float32Array[] = await model.embed(['好'], { pooling: 'last' })
    score += vectors.length
  } finally {
    await model.dispose()
  }
  const tokenizer: Tokenizer = await Tokenizer.fromDirectory(dir)
  const ids: number[] = tokenizer.encode('房间很干净')
  const c = new Float32Array(4)
  await kernels.gemm({ c, m: 2, n: 2, segments: [{ a: new Float32Array(4), b: new Float32Array(4), k: 2 }] })
  return score + ids.length + c[0]
}
