// Conversations as training examples (lib/train/chat-encode.ts, chat-pack.ts), token by token
// against expectations built here: ERNIE-4.5's template written out by hand (the fixture
// tokenizer's), each piece tokenised on its own, special tokens by id. Labels on the assistant's
// content and end-of-turn marker only (or the last turn, or everything); a template that is not
// prefix-stable refused; long conversations shortened by their oldest exchanges or dropped,
// counted; packing boundaries and labels.
import t from 'tap'
import * as path from 'node:path'

import { Tokenizer, type ChatMessage } from '../../lib/tokenizer/index'
import { encodeConversation, fitConversation, packConversations, prepareChatExamples, type LmExample } from '../../lib/train/index'

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'ernie-tiny')
const sys = (content: string): ChatMessage => ({ role: 'system', content })
const user = (content: string): ChatMessage => ({ role: 'user', content })
const bot = (content: string): ChatMessage => ({ role: 'assistant', content })

t.test('ERNIE-4.5 template: ids piece by piece, labels on the answers only', async (t) => {
  const tok = await Tokenizer.fromDirectory(FIXTURE)
  t.equal(tok.chatTemplate?.builtin, 'ernie', "the built-in ERNIE-4.5 template (the fixture ships none)")
  const BOS = tok.pieceToId('<|begin_of_sentence|>')!
  const EOS = tok.pieceToId('<|end_of_sentence|>')!
  // The template by hand: BOS, system + "\n", "User: " + q + "\n", "Assistant: " + a + EOS.
  const pieces = {
    system: [BOS, ...tok.encode('你是酒店客服。\n')],
    user1: tok.encode('User: 房间怎么样？\nAssistant: '),
    bot1: [...tok.encode('房间很干净。'), EOS],
    user2: tok.encode('User: 早餐呢？\nAssistant: '),
    bot2: [...tok.encode('种类很多，很好吃。'), EOS],
  }
  const messages = [sys('你是酒店客服。'), user('房间怎么样？'), bot('房间很干净。'), user('早餐呢？'), bot('种类很多，很好吃。')]
  const ids = [...pieces.system, ...pieces.user1, ...pieces.bot1, ...pieces.user2, ...pieces.bot2]
  const masked = (p: number[]) => p.map(() => -100)
  const ex = encodeConversation(tok, messages)
  t.same(Array.from(ex.inputIds), ids, 'the pieces, each tokenised on its own')
  t.same(Array.from(ex.labels), [...masked(pieces.system), ...masked(pieces.user1), ...pieces.bot1, ...masked(pieces.user2), ...pieces.bot2], 'labels: the answers and their end marker')
  const ends = [pieces.system, pieces.user1, pieces.bot1, pieces.user2, pieces.bot2].reduce<number[]>((a, p) => [...a, (a.at(-1) ?? 0) + p.length], [])
  t.same(
    ex.spans,
    messages.map((m, i) => ({ role: m.role, start: i === 0 ? 0 : ends[i - 1], end: ends[i], labelled: m.role === 'assistant' })),
  )
  // What generation is fed before the first answer is exactly this prompt...
  t.same(tok.encodeChat(messages.slice(0, 2), { addGenerationPrompt: true }), [...pieces.system, ...pieces.user1])
  // ...while the whole text tokenised at once merges the prompt's last space into the answer.
  t.notSame(tok.encodeChat(messages.slice(0, 3)), [...pieces.system, ...pieces.user1, ...pieces.bot1], 'tokenising whole would move a token across the boundary')

  const last = encodeConversation(tok, messages, { lossOn: 'last' })
  t.same(Array.from(last.inputIds), ids)
  t.same(Array.from(last.labels), [...masked(pieces.system), ...masked(pieces.user1), ...masked(pieces.bot1), ...masked(pieces.user2), ...pieces.bot2], "lossOn 'last': the last answer only")
  const all = encodeConversation(tok, messages, { lossOn: 'all' })
  t.same(Array.from(all.labels), ids, "lossOn 'all': every token")
  // No system message: BOS opens the first user turn.
  const bare = encodeConversation(tok, messages.slice(1, 3))
  t.same(Array.from(bare.inputIds), [BOS, ...pieces.user1, ...pieces.bot1])
  t.same(Array.from(bare.labels), [-100, ...masked(pieces.user1), ...pieces.bot1])

  t.throws(() => encodeConversation(tok, messages, { lossOn: 'prompt' as never }), { name: 'RangeError', message: /lossOn must be one of assistant, last, all/ })
  t.throws(() => encodeConversation(tok, [user('a')]), { name: 'RangeError', message: /ends with a user turn/ })
  t.throws(() => encodeConversation(tok, [bot('a')]), { name: 'RangeError', message: /messages\[0\] is an assistant message where a user turn was expected/ })
})

t.test('a template that is not prefix-stable, or whose pieces disagree with encodeChat, is refused', async (t) => {
  const tok = await Tokenizer.fromDirectory(FIXTURE)
  const messages = [user('甲'), bot('乙'), user('丙'), bot('丁')]
  // A template that renders an earlier answer otherwise once a later turn follows (as templates
  // that strip reasoning from past turns do).
  const unstable = Object.create(tok) as Tokenizer
  unstable.applyChatTemplate = (m, o) => tok.applyChatTemplate(m.length > 2 ? m.map((x, i) => (i === 1 ? bot('(earlier)') : x)) : m, o)
  t.throws(() => encodeConversation(unstable, messages), {
    name: 'ErnieError',
    code: 'ERR_CHAT_TEMPLATE',
    message: /^the chat template is not prefix-stable: rendering messages 0\.\.2 does not start with the rendering of messages 0\.\.1 \(they differ from character \d+: "乙/,
  })
  const disagreeing = Object.create(tok) as Tokenizer
  disagreeing.encodeChat = (m, o) => [...tok.encodeChat(m, o), 5]
  t.throws(() => encodeConversation(disagreeing, messages), { name: 'ErnieError', code: 'ERR_CHAT_TEMPLATE', message: /do not give the ids encodeChat gives for the prompt/ })
})

t.test('too long: the oldest exchanges dropped (system kept) or the conversation dropped, and counted', async (t) => {
  const tok = await Tokenizer.fromDirectory(FIXTURE)
  const messages = [sys('系统'), user('第一问'), bot('第一答'), user('第二问'), bot('第二答'), user('第三问'), bot('第三答')]
  const len = (m: ChatMessage[]) => encodeConversation(tok, m).inputIds.length
  const full = len(messages)
  const lastTwo = [messages[0], ...messages.slice(3)]
  const lastOne = [messages[0], ...messages.slice(5)]
  t.ok(len(lastOne) < len(lastTwo) && len(lastTwo) < full)

  const fits = fitConversation(tok, messages, full)!
  t.equal(fits.droppedMessages, 0)
  const two = fitConversation(tok, messages, full - 1)!
  t.equal(two.droppedMessages, 2, 'one exchange dropped')
  t.same(Array.from(two.example.inputIds), Array.from(encodeConversation(tok, lastTwo).inputIds), 'the system message and the later exchanges')
  const one = fitConversation(tok, messages, len(lastTwo) - 1)!
  t.equal(one.droppedMessages, 4)
  t.same(Array.from(one.example.inputIds), Array.from(encodeConversation(tok, lastOne).inputIds))
  t.equal(fitConversation(tok, messages, len(lastOne) - 1), undefined, 'the last exchange alone does not fit: dropped')
  t.equal(fitConversation(tok, messages, full - 1, 'drop'), undefined, "overlong: 'drop'")
  t.equal(fitConversation(tok, messages.slice(0, 3), len(messages.slice(0, 3)) - 1), undefined, 'a single exchange cannot be shortened')

  const r = (await prepareChatExamples(tok, [{ messages }, { messages: lastOne }, { messages: messages.slice(0, 3) }], { maxLength: len(lastTwo), packing: false }))!
  t.same(r.stats, {
    conversations: 3,
    truncated: 1,
    droppedMessages: 2,
    dropped: 0,
    tokens: len(lastTwo) + len(lastOne) + len(messages.slice(0, 3)),
    labelledTokens: r.examples.reduce((n, e) => n + Array.from(e.labels!).filter((x) => x !== -100).length, 0),
    rows: 3,
  })
  const d = (await prepareChatExamples(tok, [{ messages }, { messages: lastOne }], { maxLength: len(lastTwo), overlong: 'drop', packing: false }))!
  t.equal(d.stats.dropped, 1)
  t.equal(d.stats.truncated, 0)
  t.same(Array.from(d.examples[0].inputIds), Array.from(encodeConversation(tok, lastOne).inputIds))
  await t.rejects(prepareChatExamples(tok, [], { maxLength: 1 }), { name: 'RangeError' })
  await t.rejects(prepareChatExamples(tok, [], { maxLength: 8, overlong: 'cut' as never }), { name: 'RangeError', message: /overlong must be one of truncate, drop/ })
})

t.test('packing: first fit by decreasing length; segments, ids and labels token by token', async (t) => {
  // Lengths 10, 7, 6, 3 into rows of 16: 10 + 6 and 7 + 3.
  const make = (n: number, base: number, labelFrom: number): LmExample => ({
    inputIds: Int32Array.from({ length: n }, (_, i) => base + i),
    labels: Int32Array.from({ length: n }, (_, i) => (i >= labelFrom ? base + i : -100)),
  })
  const a = make(10, 100, 4), b = make(7, 200, 2), c = make(6, 300, 0), d = make(3, 400, 1)
  const rows = packConversations([d, a, b, c], 16)
  t.equal(rows.length, 2)
  const row = (r: LmExample) => [Array.from(r.inputIds), Array.from(r.labels!), Array.from(r.segmentIds!)]
  const ids = (e: LmExample) => Array.from(e.inputIds)
  const labels = (e: LmExample) => [-100, ...Array.from(e.labels!).slice(1)]
  t.same(row(rows[0]), [[...ids(a), ...ids(c)], [...labels(a), ...labels(c)], [...Array(10).fill(0), ...Array(6).fill(1)]])
  t.same(row(rows[1]), [[...ids(b), ...ids(d)], [...labels(b), ...labels(d)], [...Array(7).fill(0), ...Array(3).fill(1)]])
  t.equal(rows[0].labels![10], -100, "the second conversation's first token is not predicted from the first's")
  t.throws(() => packConversations([make(17, 0, 0)], 16), { name: 'RangeError', message: /examples\[0\] has 17 tokens, more than maxLength 16/ })

  // Real conversations: each keeps its masks inside the row.
  const tok = await Tokenizer.fromDirectory(FIXTURE)
  const convs = [[user('好吗？'), bot('好。')], [sys('简短'), user('差吗？'), bot('不差。')], [user('一般'), bot('嗯')]]
  const encoded = convs.map((m) => encodeConversation(tok, m))
  const total = encoded.reduce((n, e) => n + e.inputIds.length, 0)
  const r = (await prepareChatExamples(tok, convs.map((messages) => ({ messages })), { maxLength: total }))!
  t.equal(r.examples.length, 1, 'all three in one row')
  const order = [...encoded].sort((x, y) => y.inputIds.length - x.inputIds.length)
  t.same(Array.from(r.examples[0].inputIds), order.flatMap((e) => Array.from(e.inputIds)))
  t.same(Array.from(r.examples[0].labels!), order.flatMap((e) => [-100, ...Array.from(e.labels).slice(1)]))
  t.same(Array.from(r.examples[0].segmentIds!), order.flatMap((e, s) => Array(e.inputIds.length).fill(s)))
  t.same(r.stats, { conversations: 3, truncated: 0, droppedMessages: 0, dropped: 0, tokens: total, labelledTokens: encoded.reduce((n, e) => n + Array.from(e.labels).filter((x) => x !== -100).length, 0), rows: 1 })
})
