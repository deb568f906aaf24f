// `ernie-sentiment chat` in a child process on the fixture: piped lines and TEXT arguments each
// answered on their own (JSON lines), --interactive keeping the history until /reset, the sampling
// flags and --adapter reaching the model; each reply against model.chat() called here with the
// same conversation. And its errors.
import t from 'tap'
import * as path from 'node:path'
import { ErnieModel, LoraAdapter, type ChatMessage, type GenerateOptions } from '../../lib/index'
import { runCli, runMain } from '../helpers/classifier-helpers'

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'ernie-tiny')

interface Reply {
  text: string
  reply: string
  finishReason: string
}

const jsonLines = (s: string): Reply[] => s.trim().split('\n').map((l) => JSON.parse(l))

t.test('piped lines and TEXT arguments: one JSON line each, answered on its own', async (t) => {
  const model = await ErnieModel.fromPretrained(FIXTURE)
  t.teardown(() => model.dispose())
  const expect = async (text: string, options: GenerateOptions, system?: string): Promise<Reply> => {
    const messages: ChatMessage[] = [...(system ? [{ role: 'system' as const, content: system }] : []), { role: 'user', content: text }]
    const r = await model.chat(messages, options)
    return { text, reply: r.message.content, finishReason: r.finishReason }
  }

  const piped = await runCli(['chat', '--model', FIXTURE, '--max-new-tokens', '8', '--system', '你是酒店助手'], { input: '这家酒店怎么样？\n\n房间干净吗\r\n' })
  t.equal(piped.code, 0, piped.stderr)
  t.same(jsonLines(piped.stdout), [await expect('这家酒店怎么样？', { maxNewTokens: 8 }, '你是酒店助手'), await expect('房间干净吗', { maxNewTokens: 8 }, '你是酒店助手')], 'the blank line is skipped')

  const sampled = ['--max-new-tokens', '10', '--temperature', '1.5', '--top-k', '20', '--top-p', '0.9', '--repetition-penalty', '1.3', '--seed', '3']
  const args = await runCli(['chat', '--model', FIXTURE, ...sampled, '房间很干净', '太吵了'])
  t.equal(args.code, 0, args.stderr)
  const options = { maxNewTokens: 10, temperature: 1.5, topK: 20, topP: 0.9, repetitionPenalty: 1.3, seed: 3 }
  t.same(jsonLines(args.stdout), [await expect('房间很干净', options), await expect('太吵了', options)], 'the sampling flags reach chat()')
  t.not(jsonLines(args.stdout)[0].reply, (await expect('房间很干净', { maxNewTokens: 10 })).reply, 'and change the answer')

  const adapter = await LoraAdapter.load(path.join(FIXTURE, 'adapter'), model)
  const adapted = await runCli(['chat', '--model', FIXTURE, '--adapter', path.join(FIXTURE, 'adapter'), '--max-new-tokens', '8', '房间很干净'])
  t.equal(adapted.code, 0, adapted.stderr)
  t.same(jsonLines(adapted.stdout), [await expect('房间很干净', { maxNewTokens: 8, adapter })], '--adapter applies the adapter')
  adapter.dispose()
})

t.test('--interactive: a conversation whose history each answer sees, until /reset', async (t) => {
  const model = await ErnieModel.fromPretrained(FIXTURE)
  t.teardown(() => model.dispose())
  const run = await runCli(['chat', '--model', FIXTURE, '--max-new-tokens', '6', '--interactive'], { input: '你好\n房间干净吗\n/reset\n房间干净吗\n/exit\n不会读到这里\n' })
  t.equal(run.code, 0, run.stderr)
  const answers = run.stdout.split('\n').slice(0, -1)
  const history: ChatMessage[] = []
  const expected: string[] = []
  for (const line of ['你好', '房间干净吗', null, '房间干净吗']) {
    if (line === null) {
      history.length = 0
      continue
    }
    history.push({ role: 'user', content: line })
    const r = await model.chat(history, { maxNewTokens: 6 })
    history.push(r.message)
    expected.push(r.message.content)
  }
  t.same(answers, expected, 'each answer the one chat() gives with the turns before it; none after /exit')
  t.not(expected[1], expected[2], 'the history changed the second answer')
  t.match(run.stderr, /a new conversation/)
})

t.test('usage errors and a missing model (main() in this process)', async (t) => {
  const cases: [string[], number, RegExp][] = [
    [['chat'], 2, /--model is required/],
    [['chat', '--model', FIXTURE, '--top-p', '2'], 2, /--top-p must be a number in \(0, 1\], got "2"/],
    [['chat', '--model', FIXTURE, '--top-k=-1'], 2, /--top-k must be an integer >= 0/],
    [['chat', '--model', FIXTURE, '--temprature', '1'], 2, /unknown option --temprature; did you mean --temperature\?/],
    [['chat', '--model', FIXTURE, '--interactive', 'hello'], 2, /--interactive converses on stdin; it takes no TEXT arguments/],
    [['chat', '--model', path.join(FIXTURE, 'no-such-model'), 'hello'], 1, /no-such-model/],
    [['chat', '--model', FIXTURE, '--adapter', path.join(FIXTURE, 'no-such-adapter'), 'hello'], 1, /\[ERR_ADAPTER\].*no-such-adapter/],
  ]
  for (const [args, code, message] of cases) {
    const run = await runMain(args)
    t.equal(run.code, code, args.join(' '))
    t.match(run.stderr, message)
    t.equal(run.stdout, '')
  }
})
