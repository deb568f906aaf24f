// Chat templates rendered by @huggingface/jinja against goldens that test/fixtures/chat/make-goldens.py
// made independently (Python's jinja2 the way transformers renders, the reference SentencePiece
// library for the ids), through both tokenizer readers; templates from the checkpoint and their errors.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { Tokenizer, sentencePieceToTokenizerJson, type ChatMessage, type ChatTemplateName } from '../../lib/index'

const FIXTURES = join(__dirname, '..', 'fixtures')
const ROOT = join(__dirname, '..', '..')

interface GoldenCase {
  template: ChatTemplateName
  conversation: string
  added_special_tokens: string[]
  messages: ChatMessage[]
  add_generation_prompt: boolean
  text: string
  ids: number[]
}
const GOLDENS = JSON.parse(readFileSync(join(FIXTURES, 'chat', 'goldens.json'), 'utf8')) as { tokenizer_model: string; tokenizer_config: string; cases: GoldenCase[] }
const MODEL = readFileSync(join(ROOT, GOLDENS.tokenizer_model))
const CONFIG = JSON.parse(readFileSync(join(ROOT, GOLDENS.tokenizer_config), 'utf8')) as Record<string, unknown>
const KINDS = ['sentencepiece', 'tokenizer.json'] as const

/** A model directory with the golden tokenizer as tokenizer.model or tokenizer.json, and the files given. */
function tokenizerDir(t: { teardown(fn: () => void): void }, kind: (typeof KINDS)[number], config: Record<string, unknown>, extra: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'chat-template-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  if (kind === 'sentencepiece') writeFileSync(join(dir, 'tokenizer.model'), MODEL)
  else writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(sentencePieceToTokenizerJson(new Uint8Array(MODEL))))
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config))
  for (const [name, text] of Object.entries(extra)) writeFileSync(join(dir, name), text)
  return dir
}

const withMarkers = (added: string[]) => (added.length > 0 ? { ...CONFIG, additional_special_tokens: added } : CONFIG)

t.test('every golden: the text jinja2 renders and the ids SentencePiece gives', async (t) => {
  t.equal(GOLDENS.cases.length, 30)
  for (const kind of KINDS) {
    const tokenizers = new Map<string, Tokenizer>()
    for (const c of GOLDENS.cases) {
      const key = c.added_special_tokens.join()
      if (!tokenizers.has(key)) tokenizers.set(key, await Tokenizer.fromDirectory(tokenizerDir(t, kind, withMarkers(c.added_special_tokens))))
      const tok = tokenizers.get(key)!
      const what = `${kind}, ${c.template}, ${c.conversation}, generation prompt ${c.add_generation_prompt}`
      const options = { template: c.template, addGenerationPrompt: c.add_generation_prompt }
      t.equal(tok.applyChatTemplate(c.messages, options), c.text, `${what}: text`)
      const ids = tok.encodeChat(c.messages, options)
      t.same(ids, c.ids, `${what}: ids`)
      t.equal(tok.decode(ids), c.text, `${what}: decodes back`)
    }
  }
})

t.test('the generation prompt is the only difference it makes', async (t) => {
  for (const name of ['ernie', 'chatml', 'qwen3'] as const) {
    const off = GOLDENS.cases.find((c) => c.template === name && c.conversation === 'user only' && !c.add_generation_prompt)!
    const on = GOLDENS.cases.find((c) => c.template === name && c.conversation === 'user only' && c.add_generation_prompt)!
    t.ok(on.text.startsWith(off.text), name)
    t.equal(on.text.slice(off.text.length), name === 'ernie' ? 'Assistant: ' : '<|im_start|>assistant\n', name)
  }
})

t.test('a template the checkpoint ships is the default, from tokenizer_config.json or chat_template.jinja', async (t) => {
  const qwen3Text = readFileSync(join(ROOT, 'chat-templates', 'qwen3.jinja'), 'utf8')
  const ernieText = readFileSync(join(ROOT, 'chat-templates', 'ernie-4.5.jinja'), 'utf8')
  const qwen3 = GOLDENS.cases.filter((c) => c.template === 'qwen3')
  const ernie = GOLDENS.cases.filter((c) => c.template === 'ernie')
  for (const kind of KINDS) {
    const asString = await Tokenizer.fromDirectory(tokenizerDir(t, kind, { ...withMarkers(qwen3[0].added_special_tokens), chat_template: qwen3Text }))
    t.equal(asString.chatTemplate?.builtin, undefined, 'the shipped template, not a built-in')
    t.match(asString.chatTemplate?.source, /tokenizer_config\.json \(chat_template\)$/)
    for (const c of qwen3) t.same(asString.encodeChat(c.messages, { addGenerationPrompt: c.add_generation_prompt }), c.ids, `${kind}: shipped string, ${c.conversation}`)

    // A list of named templates: 'default' unless a name is asked for.
    const named = await Tokenizer.fromDirectory(
      tokenizerDir(t, kind, { ...withMarkers(qwen3[0].added_special_tokens), chat_template: [{ name: 'default', template: ernieText }, { name: 'qwen', template: qwen3Text }] }),
    )
    t.same([...named.chatTemplates.keys()], ['default', 'qwen'])
    t.equal(named.applyChatTemplate(ernie[0].messages), ernie[0].text, `${kind}: the list's default`)
    t.equal(named.applyChatTemplate(qwen3[0].messages, { template: 'qwen' }), qwen3[0].text, `${kind}: a named one`)

    // chat_template.jinja wins over the config's template, as in transformers.
    const file = await Tokenizer.fromDirectory(tokenizerDir(t, kind, { ...CONFIG, chat_template: '{{ "config" }}' }, { 'chat_template.jinja': ernieText }))
    t.match(file.chatTemplate?.source, /chat_template\.jinja$/)
    for (const c of ernie) t.same(file.encodeChat(c.messages, { addGenerationPrompt: c.add_generation_prompt }), c.ids, `${kind}: chat_template.jinja, ${c.conversation}`)
    // A Jinja text as the template option.
    t.equal(file.applyChatTemplate(ernie[2].messages, { template: ernieText }), ernie[2].text)
  }
})

t.test('template errors are typed and name the template', async (t) => {
  const messages: ChatMessage[] = [{ role: 'user', content: 'hi' }]
  const raising = "{% if messages[0].role != 'system' %}{{ raise_exception('a system message is required') }}{% endif %}"
  const dir = tokenizerDir(t, 'sentencepiece', { ...CONFIG, chat_template: raising })
  const tok = await Tokenizer.fromDirectory(dir)
  t.throws(() => tok.applyChatTemplate(messages), {
    name: 'TokenizerError',
    code: 'ERR_CHAT_TEMPLATE',
    file: `${join(dir, 'tokenizer_config.json')} (chat_template)`,
    message: /tokenizer_config\.json \(chat_template\): rendering the chat template failed: a system message is required/,
  })
  t.throws(() => tok.encodeChat(messages), { code: 'ERR_CHAT_TEMPLATE' })
  t.throws(() => tok.applyChatTemplate(messages, { template: '{{ raise_exception("nope") }}' }), { code: 'ERR_CHAT_TEMPLATE', message: /^options\.template: .*nope/ })

  const broken = tokenizerDir(t, 'sentencepiece', { ...CONFIG, chat_template: '{% for m in messages %}' })
  await t.rejects(Tokenizer.fromDirectory(broken), { code: 'ERR_CHAT_TEMPLATE', message: /tokenizer_config\.json \(chat_template\): the chat template does not parse/ })
  const brokenFile = tokenizerDir(t, 'sentencepiece', CONFIG, { 'chat_template.jinja': '{{ messages' })
  await t.rejects(Tokenizer.fromDirectory(brokenFile), { code: 'ERR_CHAT_TEMPLATE', file: join(brokenFile, 'chat_template.jinja') })
  const badList = tokenizerDir(t, 'sentencepiece', { ...CONFIG, chat_template: [{ name: 'default' }] })
  await t.rejects(Tokenizer.fromDirectory(badList), { code: 'ERR_TOKENIZER_JSON', message: /chat_template\[0\] must be/ })
  await t.rejects(Tokenizer.fromDirectory(tokenizerDir(t, 'sentencepiece', { ...CONFIG, chat_template: 7 })), { code: 'ERR_TOKENIZER_JSON', message: /"chat_template" must be/ })
})
