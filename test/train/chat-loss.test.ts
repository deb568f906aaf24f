// Chat SFT on a model: packed conversations compute what they compute one by one (the fixture's
// own forward, with its LoRA adapter, at every ISA and precision), and a tiny model memorises a
// handful of dialogues with LoRA on the answers while the prompts' loss is left where it was
// (and falls only when the prompts are labelled too).
import t from 'tap'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieModel, LoraAdapter } from '../../lib/model/index'
import { Tokenizer, type ChatMessage } from '../../lib/tokenizer/index'
import { collateLm, encodeConversation, LmTask, prepareChatExamples, Trainer, type ChatLossOn, type LmExample } from '../../lib/train/index'
import { forEachIsaAndPrecision } from '../helpers/helpers'
import { FIXTURES, LOSS_FLOOR, lossErr } from '../helpers/precision-helpers'

const FIXTURE = path.join(FIXTURES, 'ernie-tiny')
const sys = (content: string): ChatMessage => ({ role: 'system', content })
const user = (content: string): ChatMessage => ({ role: 'user', content })
const bot = (content: string): ChatMessage => ({ role: 'assistant', content })

const DIALOGUES: ChatMessage[][] = [
  [user('这家酒店怎么样？'), bot('房间很干净，服务也周到。')],
  [sys('你是酒店客服。'), user('早餐好吃吗？'), bot('种类不多，味道一般。'), user('还有别的吗？'), bot('附近有很多餐馆。')],
  [user('位置方便吗？'), bot('离地铁站很近，出行方便。')],
  [user('推荐入住吗？'), bot('推荐，性价比很高。')],
  [sys('简短回答。'), user('房间大吗？'), bot('不大。')],
]

function batchOf(examples: readonly LmExample[], withSegments = true) {
  const b = collateLm(examples, 0)
  const flat = (data: Int32Array) => ({ data, shape: b.shape })
  return { inputIds: flat(b.inputIds), attentionMask: flat(b.attentionMask), labels: flat(b.labels), ...(withSegments && b.segmentIds ? { segmentIds: flat(b.segmentIds) } : {}) }
}

t.test('a packed batch gives the loss of its conversations run one by one, at every precision', async (t) => {
  const model = await ErnieModel.fromPretrained(FIXTURE)
  const adapter = await LoraAdapter.load(path.join(FIXTURE, 'adapter'), model)
  const tok = model.tokenizer!
  const encoded = DIALOGUES.map((m) => encodeConversation(tok, m))
  const longest = Math.max(...encoded.map((e) => e.inputIds.length))
  // Rows of the longest conversation's length: several rows, some holding two or three conversations, padded.
  const packed = (await prepareChatExamples(tok, DIALOGUES.map((messages) => ({ messages })), { maxLength: longest }))!.examples
  t.ok(packed.length >= 2 && packed.length < DIALOGUES.length && packed.some((r) => r.inputIds.length < longest), `${packed.length} rows of up to ${longest} tokens`)
  const labelled = encoded.reduce((n, e) => n + Array.from(e.labels).filter((x, i) => i > 0 && x !== -100).length, 0)

  const unsegmented = await model.loss(batchOf(packed, false), { adapter })
  const segmented = await model.loss(batchOf(packed), { adapter })
  t.ok(lossErr(unsegmented.loss, segmented.loss) > 1e-3, `without segment ids the conversations see each other (${unsegmented.loss} vs ${segmented.loss}): the test can fail`)

  await forEachIsaAndPrecision(async (isa, precision) => {
    const what = `${isa} ${precision}`
    const together = await model.loss(batchOf(packed), { adapter, precision })
    let sum = 0
    let count = 0
    for (const e of encoded) {
      const alone = await model.loss(batchOf([e]), { adapter, precision })
      sum += alone.loss * alone.count
      count += alone.count
    }
    t.equal(together.count, labelled, `${what}: ${labelled} answer tokens predicted, packed`)
    t.equal(count, labelled, `${what}: and one by one`)
    // The same per-token losses (each conversation meets the same products on the same operands,
    // its positions restarted), summed in another order: at most f32 level apart.
    t.ok(lossErr(together.loss, sum / count) <= LOSS_FLOOR, `${what}: packed ${together.loss} vs one by one ${sum / count}`)
  })
  adapter.dispose()
  await model.dispose()
})

/** The mean loss on the tokens `pick` selects of each conversation (labels elsewhere -100). */
async function lossOn(model: ErnieModel, adapter: LoraAdapter, tok: Tokenizer, pick: 'answers' | 'prompts'): Promise<number> {
  const examples = DIALOGUES.map((m) => {
    const e = encodeConversation(tok, m)
    const labels = Int32Array.from(e.labels, (x, i) => ((x !== -100) === (pick === 'answers') ? e.inputIds[i] : -100))
    return { inputIds: e.inputIds, labels }
  })
  return (await model.loss(batchOf(examples), { adapter })).loss
}

async function memorise(lossOnTurns: ChatLossOn) {
  const tok = await Tokenizer.fromDirectory(FIXTURE)
  const config = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'config.json'), 'utf8'))
  // A random model of the fixture's shape and vocabulary, weights spread wide enough (std 0.3,
  // trainer-helpers.ts) for a frozen base plus LoRA to reach near-certain answers.
  const model = ErnieModel.random(config, { seed: 3, std: 0.3 })
  const adapter = LoraAdapter.create(model, { r: 16, alpha: 64, seed: 1 })
  const before = { answers: await lossOn(model, adapter, tok, 'answers'), prompts: await lossOn(model, adapter, tok, 'prompts') }
  const { examples } = (await prepareChatExamples(tok, DIALOGUES.map((messages) => ({ messages })), { maxLength: 128, lossOn: lossOnTurns }))!
  const task = new LmTask(model, { train: examples, adapter })
  const result = await new Trainer(task, { maxSteps: 100, batchSize: 8, learningRate: 1e-2, schedule: 'constant', seed: 1 }).train()
  const after = { answers: await lossOn(model, adapter, tok, 'answers'), prompts: await lossOn(model, adapter, tok, 'prompts') }
  adapter.dispose()
  await model.dispose()
  return { before, after, result }
}

t.test('LoRA memorises a handful of dialogues: the answers learnt, the prompts not trained', async (t) => {
  const { before, after, result } = await memorise('assistant')
  t.comment(`answers ${before.answers.toFixed(3)} -> ${after.answers.toFixed(4)}, prompts ${before.prompts.toFixed(3)} -> ${after.prompts.toFixed(3)}; training loss ${result.lossHistory[0].toFixed(3)} -> ${result.finalLoss.toFixed(4)}`)
  t.ok(before.answers > 5, `the answers start unknown (loss ${before.answers})`)
  t.ok(after.answers < 0.05, `the answers are memorised (loss ${after.answers})`)
  t.ok(after.prompts > 0.75 * before.prompts, `the prompts' loss did not fall the same way (${before.prompts} -> ${after.prompts})`)

  // The same run with every token labelled: now the prompts' loss falls too, so the measure above could.
  const all = await memorise('all')
  t.comment(`lossOn 'all': prompts ${all.before.prompts.toFixed(3)} -> ${all.after.prompts.toFixed(3)}`)
  t.ok(all.after.prompts < 0.1 * all.before.prompts, `labelled prompts are learnt (${all.before.prompts} -> ${all.after.prompts})`)
})
