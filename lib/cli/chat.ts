// `ernie-sentiment chat`: talks with a model through its chat template. On a terminal (or with
// --interactive) a conversation: each line a user turn, the answer streamed as it is generated,
// the turns kept as history until /reset. Texts given as arguments, or stdin's lines when piped,
// are each answered on their own: one JSON line per text, {"text", "reply", "finishReason"}.
import * as readline from 'node:readline'

import { ErnieError } from '../errors'
import { endOfTurnIds, type GenerateOptions } from '../model/generate'
import { ErnieModel } from '../model/model'
import { LoraAdapter } from '../model/lora'
import { hasTokenizerFiles, Tokenizer, type ChatMessage } from '../tokenizer'
import { UsageError } from './args'
import type { CliIo } from './io'
import { answerTexts } from './predict'
import { flag, formatConfig, helpText, integer, need, nonNegative, option, positive, readCommandLine, text, type CommandSpec, type ValueType } from './settings'
import { isInteractive } from './stdin-lines'
import { TRAIN_OPTIONS } from './train'

const DEFAULT_MAX_NEW_TOKENS = 256

const fraction: ValueType<number> = {
  expected: 'a number in (0, 1]',
  placeholder: 'P',
  fromText: (s) => (s.trim() !== '' && Number(s) > 0 && Number(s) <= 1 ? Number(s) : undefined),
  fromYaml: (v) => (typeof v === 'number' && v > 0 && v <= 1 ? v : undefined),
}

export const CHAT_OPTIONS = {
  model: option(text('DIR|ID'), 'the model: a checkpoint directory or a hub id (required)'),
  adapter: option(text('DIR'), 'a PEFT LoRA adapter directory, applied to the model'),
  system: option(text('TEXT'), 'a system message that opens every conversation'),
  'max-new-tokens': option(integer(1), `the longest answer, in tokens (default ${DEFAULT_MAX_NEW_TOKENS})`),
  temperature: option(nonNegative(), '0: greedy, the default; higher: more varied answers'),
  'top-p': option(fraction, 'sample from the most likely tokens holding this probability (default 1)'),
  'top-k': option(integer(0), 'sample from the K most likely tokens (default 0: all)'),
  'repetition-penalty': option(positive(), 'above 1 discourages repeating tokens already seen (default 1: none)'),
  seed: option(integer(0), 'the sampling seed (default 0)'),
  precision: option(TRAIN_OPTIONS.precision.type, 'auto | fp32 | bf16 (default auto, or ERNIE_PRECISION)'),
  device: option(TRAIN_OPTIONS.device.type, 'cpu | cuda | auto (default auto, or ERNIE_DEVICE)'),
  interactive: option(flag, 'a conversation with history even when stdin is not a terminal'),
}

export const CHAT: CommandSpec<typeof CHAT_OPTIONS> = {
  name: 'chat',
  usage: '--model DIR [TEXT ...]',
  about: `Talks with a model through its chat template. On a terminal: a conversation, each answer
streamed as it is generated and kept with the question as history; /reset starts over, /exit
or Ctrl-D leaves, Ctrl-C stops an answer (at the prompt: leaves). Each TEXT, or each line of
stdin when it is not a terminal, is answered on its own (no history), one JSON object a line:
{"text", "reply", "finishReason"} (eos: the answer ended; length: cut at --max-new-tokens).`,
  options: CHAT_OPTIONS,
  texts: true,
  runFile: {},
}

const COMMANDS_HELP = '/reset: a new conversation; /exit: leave (or Ctrl-D); Ctrl-C stops an answer'

export async function chatCommand(argv: string[], io: CliIo): Promise<number> {
  const cl = readCommandLine(CHAT, argv, io.stderr)
  if (cl.help) return void io.stdout.write(helpText(CHAT)), 0
  const v = cl.values
  const source = need(CHAT, cl, 'model')
  if (v.interactive && cl.texts.length > 0) throw new UsageError('--interactive converses on stdin; it takes no TEXT arguments')
  if (cl.printConfig) return void io.stdout.write(formatConfig(CHAT, cl)), 0
  // An adapter saved with its tokenizer (sft's output: the template's markers it added, the
  // template it trained with) is chatted with through that tokenizer.
  const tokenizer = v.adapter !== undefined && hasTokenizerFiles(v.adapter) ? await Tokenizer.fromDirectory(v.adapter) : undefined
  const model = await ErnieModel.fromPretrained(source, { precision: v.precision, device: v.device, ...(tokenizer ? { tokenizer } : {}) })
  let adapter: LoraAdapter | undefined
  try {
    endOfTurnIds(model.requireTokenizer(`chat (${source})`)) // a model without a chat template fails here, before any question
    if (v.adapter !== undefined) adapter = await LoraAdapter.load(v.adapter, model)
    const settings: GenerateOptions = {
      maxNewTokens: v['max-new-tokens'] ?? DEFAULT_MAX_NEW_TOKENS,
      temperature: v.temperature,
      topP: v['top-p'],
      topK: v['top-k'],
      repetitionPenalty: v['repetition-penalty'],
      seed: v.seed,
      adapter,
    }
    const opening: ChatMessage[] = v.system === undefined ? [] : [{ role: 'system', content: v.system }]
    if (cl.texts.length === 0 && (v.interactive || isInteractive(io.stdin))) return await converse(model, opening, settings, io)
    await answerTexts(cl.texts, { 'batch-size': 1, interactive: true }, io, async (texts) => {
      const out: string[] = []
      for (const text of texts) {
        const r = await model.chat([...opening, { role: 'user', content: text }], { ...settings, signal: io.signal })
        out.push(JSON.stringify({ text, reply: r.message.content, finishReason: r.finishReason }) + '\n')
      }
      return out
    })
    return io.signal?.aborted ? 130 : 0
  } finally {
    adapter?.dispose()
    await model.dispose()
  }
}

/**
 * The conversation: each line of input a user turn, answered with the turns before it; the answer
 * is written as it is generated. Resolves to the exit code when the input ends, at /exit, or on an
 * interrupt at the prompt (130).
 */
async function converse(model: ErnieModel, opening: ChatMessage[], settings: GenerateOptions, io: CliIo): Promise<number> {
  const terminal = isInteractive(io.stdin) && io.stdout.isTTY === true
  // on a terminal, readline edits the line and keeps the lines typed (arrow keys)
  const rl = readline.createInterface({ input: io.stdin, output: terminal ? (io.stdout as NodeJS.WritableStream) : undefined, terminal, prompt: '> ' })
  let history = [...opening]
  let answering: AbortController | undefined
  let interrupted = false
  const leave = () => {
    interrupted = true
    answering?.abort()
    rl.close()
  }
  rl.on('SIGINT', () => (answering ? answering.abort() : leave()))
  io.signal?.addEventListener('abort', leave, { once: true })
  const note = (s: string) => io.stderr.write(`(${s})\n`)
  if (terminal) note(COMMANDS_HELP)
  const prompt = () => terminal && rl.prompt()
  prompt()
  try {
    for await (const line of rl) {
      const command = line.trim()
      if (command === '/exit' || command === '/quit') break
      if (command === '/reset') {
        history = [...opening]
        note('a new conversation')
      } else if (command === '/help') note(COMMANDS_HELP)
      else if (command !== '') {
        history.push({ role: 'user', content: line })
        answering = new AbortController()
        let reply = ''
        let finish: string | undefined
        try {
          for await (const chunk of model.chatStream(history, { ...settings, signal: answering.signal })) {
            io.stdout.write(chunk.text)
            reply += chunk.text
            finish = chunk.finishReason ?? finish
          }
          io.stdout.write('\n')
        } catch (e) {
          if (!(e instanceof ErnieError && e.code === 'ERR_SEQUENCE_TOO_LONG')) throw e
          finish = 'too long'
          note(`${e.message}; /reset starts a new conversation`)
        } finally {
          answering = undefined
        }
        if (finish === 'aborted' || finish === 'too long') {
          history.pop()
          if (finish === 'aborted' && !interrupted) note('stopped; this turn is left out of the conversation')
        } else {
          history.push({ role: 'assistant', content: reply })
          if (finish === 'length') note(`the answer reached --max-new-tokens ${settings.maxNewTokens}`)
        }
      }
      prompt()
    }
  } finally {
    io.signal?.removeEventListener('abort', leave)
    rl.close()
  }
  return interrupted ? 130 : 0
}
