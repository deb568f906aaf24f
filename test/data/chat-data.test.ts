// lib/data/chat: every shape of chat record (messages, ShareGPT, Alpaca, ERNIEKit multi-turn)
// read into the messages written out by hand here; the default system prompt; every bad record
// named by file and line (or skipped and counted); the seeded held-out split.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import { DataError, parseChatMessages, parseChatRecord, readChatData, readDataset, splitByRatio } from '../../lib/data/index'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-chat-data-'))
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
let n = 0
function file(name: string, lines: Array<string | object>): string {
  const p = path.join(dir, `${n++}-${name}`)
  fs.writeFileSync(p, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n')
  return p
}

const sys = (content: string) => ({ role: 'system', content })
const user = (content: string) => ({ role: 'user', content })
const bot = (content: string) => ({ role: 'assistant', content })

t.test('each shape reads into the messages it means', async (t) => {
  const p = file('shapes.jsonl', [
    { messages: [sys('你是客服。'), user('房间怎么样？'), bot('很干净。'), user('早餐呢？'), bot('种类很多。')] },
    '',
    { conversations: [{ from: 'human', value: '评价：服务很好' }, { from: 'gpt', value: '正面' }] },
    { conversations: [{ from: 'system', value: 'S' }, { from: 'user', value: 'u' }, { from: 'assistant', value: 'a' }], },
    { instruction: '判断情感', input: '太差了', output: '负面' },
    { instruction: '写一句好评', output: '非常满意', system: '简洁' },
    { instruction: '写一句好评', input: '', output: '很好' },
    { src: ['第一问', '第二问'], tgt: ['第一答', '第二答'], system: 'E' },
    { src: '单问', tgt: '单答' },
  ])
  const ds = await readChatData(p)
  t.equal(ds.source, p)
  t.same(ds.shapes, { messages: 1, sharegpt: 2, alpaca: 3, erniekit: 2 })
  t.same(ds.skipped, { count: 0, reasons: {}, first: [] })
  t.same(
    ds.conversations.map((c) => [c.line, c.messages]),
    [
      [1, [sys('你是客服。'), user('房间怎么样？'), bot('很干净。'), user('早餐呢？'), bot('种类很多。')]],
      [3, [user('评价：服务很好'), bot('正面')]],
      [4, [sys('S'), user('u'), bot('a')]],
      [5, [user('判断情感\n太差了'), bot('负面')]],
      [6, [sys('简洁'), user('写一句好评'), bot('非常满意')]],
      [7, [user('写一句好评'), bot('很好')]],
      [8, [sys('E'), user('第一问'), bot('第一答'), user('第二问'), bot('第二答')]],
      [9, [user('单问'), bot('单答')]],
    ],
  )
  t.ok(ds.conversations.every((c) => c.file === p && !c.isArray))
})

t.test('the default system prompt goes where a record has none', async (t) => {
  const ds = await readChatData(
    [{ messages: [user('a'), bot('b')] }, { messages: [sys('own'), user('c'), bot('d')] }, { src: ['e'], tgt: ['f'], system: 'field' }, { instruction: 'g', output: 'h' }],
    { systemPrompt: 'default' },
  )
  t.same(
    ds.conversations.map((c) => c.messages),
    [[sys('default'), user('a'), bot('b')], [sys('own'), user('c'), bot('d')], [sys('field'), user('e'), bot('f')], [sys('default'), user('g'), bot('h')]],
  )
  t.same(ds.conversations.map((c) => [c.file, c.line, c.isArray]), [['data', 0, true], ['data', 1, true], ['data', 2, true], ['data', 3, true]])
  await t.rejects(readChatData([], { systemPrompt: ' ' }), { name: 'TypeError', message: /systemPrompt must be a non-empty string/ })
})

t.test('every bad record names the file, the line and the problem', async (t) => {
  const ok = { messages: [user('好'), bot('正面')] }
  const cases: Array<[string, object | string, RegExp]> = [
    ['not a chat record', { text: '好', label: 1 }, /^not a chat record: expected "messages", "conversations" \(ShareGPT\), "instruction" and "output" \(Alpaca\), or "src" and "tgt" \(ERNIEKit\)$/],
    ['messages not an array', { messages: 'hi' }, /^field "messages" must be a non-empty array of messages, got string "hi"$/],
    ['empty messages', { messages: [] }, /^field "messages" must be a non-empty array of messages, got an array$/],
    ['unknown role', { messages: [user('a'), { role: 'tool', content: 'x' }] }, /^messages\[1\]\.role must be system, user or assistant, got string "tool"$/],
    ['no content', { messages: [{ role: 'user' }] }, /^missing field "messages\[0\]\.content"$/],
    ['content not a string', { messages: [user('a'), { role: 'assistant', content: 3 }] }, /^messages\[1\]\.content must be a string, got number 3$/],
    ['empty content', { messages: [user('a'), bot('  ')] }, /^messages\[1\]\.content is empty \(whitespace only\)$/],
    ['entry neither form', { messages: [{ speaker: 'me', text: 'a' }] }, /^messages\[0\] has neither "role" \(with "content"\) nor "from" \(with "value"\)$/],
    ['unknown ShareGPT speaker', { conversations: [{ from: 'bing', value: 'x' }] }, /^conversations\[0\]\.from must be human, gpt or system \(or user, assistant\), got string "bing"$/],
    ['ends with the user', { messages: [user('a'), bot('b'), user('c')] }, /^"messages" ends with a user turn: the last turn must be the assistant's answer$/],
    ['starts with the assistant', { conversations: [{ from: 'gpt', value: 'hi' }, { from: 'human', value: 'x' }] }, /^conversations\[0\] is an assistant message where a user turn was expected/],
    ['two users in a row', { messages: [user('a'), user('b'), bot('c')] }, /^messages\[1\] is a user message where an assistant turn was expected \(turns alternate/],
    ['system in the middle', { messages: [user('a'), sys('s'), bot('c')] }, /^messages\[1\] is a system message where an assistant turn was expected \(a system message comes first, once\)$/],
    ['only a system message', { messages: [sys('s')] }, /^"messages" holds a system message and no turns$/],
    ['system twice', { messages: [sys('a'), user('b'), bot('c')], system: 'd' }, /^the record has a "system" field and a system message: keep one$/],
    ['system not a string', { src: ['a'], tgt: ['b'], system: 1 }, /^field "system" must be a string, got number 1$/],
    ['src and tgt lengths', { src: ['a', 'b'], tgt: ['c'] }, /^"src" holds 2 turns and "tgt" 1: each user turn needs its answer$/],
    ['no tgt', { src: ['a'] }, /^missing field "tgt"$/],
    ['tgt empty turn', { src: ['a', 'b'], tgt: ['c', ''] }, /^tgt\[1\] is empty$/],
    ['tgt not strings', { src: ['a'], tgt: [1] }, /^tgt\[0\] must be a string, got number 1$/],
    ['alpaca without output', { instruction: 'a' }, /^missing field "output"$/],
    ['alpaca input not a string', { instruction: 'a', input: 2, output: 'b' }, /^field "input" must be a string, got number 2$/],
    ['alpaca empty instruction', { instruction: '', output: 'b' }, /^field "instruction" is empty$/],
    ['not an object', '[1, 2]', /^expected a JSON object, got an array$/],
    ['invalid JSON', '{"messages": [', /^invalid JSON/],
  ]
  for (const [what, record, problem] of cases) {
    const p = file('bad.jsonl', [ok, record])
    const e = await readChatData(p).catch((x) => x)
    t.ok(e instanceof DataError, `${what}: a DataError`)
    if (!(e instanceof DataError)) continue
    t.equal(e.code, 'ERR_DATA')
    t.equal(e.file, p, `${what}: file`)
    t.equal(e.line, 2, `${what}: line`)
    t.match(e.problem, problem, `${what}: ${e.problem}`)
    t.equal(e.message, `${p}:2: ${e.problem}`, `${what}: the message starts with file:line`)
  }
  // a system prompt put first does not shift the index into the record's own list
  const shifted = await readChatData([{ messages: [user('a'), user('b'), bot('c')] }], { systemPrompt: 'S' }).catch((x) => x)
  t.equal(shifted.message, 'data[0]: messages[1] is a user message where an assistant turn was expected (turns alternate user, assistant, ... from the user\'s)')
  await t.rejects(readChatData(path.join(dir, 'absent.jsonl')), { name: 'DataError', message: /absent\.jsonl: no such file/ })
})

t.test("onInvalid: 'skip' drops bad records and counts them by problem", async (t) => {
  const p = file('mixed.jsonl', [
    { messages: [user('a'), bot('b')] },
    { messages: [user('a')] },
    '{broken',
    { src: ['x', 'y'], tgt: ['z'] },
    { instruction: 'i', output: 'o' },
    { text: 'not chat', label: 0 },
  ])
  const ds = await readChatData(p, { onInvalid: 'skip' })
  t.same(ds.conversations.map((c) => c.line), [1, 5])
  t.equal(ds.skipped.count, 4)
  t.same(ds.skipped.reasons, { 'bad field': 2, 'invalid JSON': 1, 'missing field': 1 })
  t.same(ds.skipped.first.map((f) => f.where), [`${p}:2`, `${p}:3`, `${p}:4`, `${p}:6`])
  await t.rejects(readChatData(p, { onInvalid: 'drop' as never }), { name: 'RangeError' })
})

t.test('parseChatMessages and parseChatRecord are usable on their own (DPO reads its fields with them)', async (t) => {
  t.same(parseChatMessages([{ from: 'human', value: 'q' }], 'prompt'), [user('q')], 'a prompt may end with the user')
  t.same(parseChatMessages([bot('x')], 'chosen'), [bot('x')])
  t.same(parseChatMessages('x', 'chosen'), { kind: 'bad field', problem: 'field "chosen" must be a non-empty array of messages, got string "x"' })
  t.same(parseChatRecord({ instruction: 'q', input: 'ctx', output: 'a' }), { shape: 'alpaca', messages: [user('q\nctx'), bot('a')] })
})

t.test('classification data still refuses multi-turn src/tgt, and points at sft', async (t) => {
  const p = file('multi.jsonl', [{ src: ['a', 'b'], tgt: ['正面', '负面'] }])
  const e = await readDataset(p).catch((x) => x)
  t.ok(e instanceof DataError)
  t.match(e.message, /must hold one label, found 2 \(a multi-turn src\/tgt record is a conversation: train a chat model on it with `ernie-sentiment sft`\)/)
  t.same((await readChatData(p)).conversations[0].messages, [user('a'), bot('正面'), user('b'), bot('负面')], 'the same file is chat data')
})

t.test('splitByRatio: a seeded share held out, order kept, both parts non-empty', async (t) => {
  const items = Array.from({ length: 20 }, (_, i) => i)
  const a = splitByRatio(items, 0.1, 7)
  t.equal(a.eval.length, 2)
  t.equal(a.train.length, 18)
  t.same([...a.train, ...a.eval].sort((x, y) => x - y), items, 'every item once')
  t.same(a.train, [...a.train].sort((x, y) => x - y), 'train keeps the order')
  t.same(splitByRatio(items, 0.1, 7), a, 'the same seed, the same split')
  const others = [1, 2, 3, 4, 5].map((s) => splitByRatio(items, 0.1, s).eval.join())
  t.ok(new Set([a.eval.join(), ...others]).size > 1, 'other seeds hold out other items')
  t.equal(splitByRatio([1, 2], 0.01, 0).eval.length, 1, 'at least one held out')
  t.equal(splitByRatio([1, 2], 0.99, 0).train.length, 1, 'at least one left to train on')
  t.throws(() => splitByRatio(items, 0, 1), { name: 'RangeError', message: /between 0 and 1/ })
  t.throws(() => splitByRatio(items, 1, 1), { name: 'RangeError' })
  t.throws(() => splitByRatio([1], 0.5, 1), { name: 'RangeError', message: /at least 2/ })
})
