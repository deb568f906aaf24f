// Weights on disk that change under a loaded model: the safetensors file is memory-mapped, so a
// truncation used to crash the process (SIGBUS) at the next forward and an in-place rewrite to
// change the weights silently. Now each native call checks the file first (ERR_FILE_CHANGED,
// naming it); a file replaced by a rename is no change (the mapping keeps the old bytes).
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { kernels } from '../../lib/index'
import { openSafetensors } from '../../lib/io/safetensors'
import { ErnieModel } from '../../lib/model/index'

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'ernie-tiny')
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-changed-'))
t.teardown(() => fs.rmSync(root, { recursive: true, force: true }))
let n = 0
const copy = () => {
  const dir = path.join(root, `m${n++}`)
  fs.cpSync(FIXTURE, dir, { recursive: true })
  return dir
}
const INPUT = { inputIds: [[5, 6, 7, 8]] }

t.test('a truncated checkpoint: ERR_FILE_CHANGED naming it, and the process lives', async (t) => {
  const dir = copy()
  const model = await ErnieModel.fromPretrained(dir)
  t.teardown(() => model.dispose())
  await model.forward(INPUT)
  const file = path.join(dir, 'model.safetensors')
  const size = fs.statSync(file).size
  fs.truncateSync(file, 4096)
  const message = `'${file}' changed on disk while in use (truncated from ${size} to 4096 bytes); its memory-mapped bytes can no longer be read safely`
  await t.rejects(model.forward(INPUT), { code: 'ERR_FILE_CHANGED', path: file, message: new RegExp(message.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')) })
  await t.rejects(model.loss(INPUT), { code: 'ERR_FILE_CHANGED' }, 'every kind of call')
  await t.rejects(model.generate([5, 6], { maxNewTokens: 1 }), { code: 'ERR_FILE_CHANGED' })
})

t.test('rewritten in place with the same size: ERR_FILE_CHANGED, not weights changing under the model', async (t) => {
  const dir = copy()
  const model = await ErnieModel.fromPretrained(dir)
  t.teardown(() => model.dispose())
  await model.forward(INPUT)
  const file = path.join(dir, 'model.safetensors')
  const bytes = fs.readFileSync(file)
  bytes.fill(0, bytes.length - 4096) // the last weights zeroed, the header and length kept
  const later = new Date(Date.now() + 5000)
  fs.writeFileSync(file, bytes)
  fs.utimesSync(file, later, later) // a coarse-clock file system still sees a new time
  await t.rejects(model.forward(INPUT), { code: 'ERR_FILE_CHANGED', message: /rewritten in place/ })
})

t.test('replaced by a rename: the model keeps the bytes it loaded, and runs', async (t) => {
  const dir = copy()
  const model = await ErnieModel.fromPretrained(dir)
  t.teardown(() => model.dispose())
  const before = await model.forward(INPUT)
  const file = path.join(dir, 'model.safetensors')
  fs.copyFileSync(file, `${file}.new`)
  fs.truncateSync(`${file}.new`, 4096)
  fs.renameSync(`${file}.new`, file) // what saveSafetensors does: the old file lives on for the mapping
  const after = await model.forward(INPUT)
  t.same(Array.from(after.hidden!), Array.from(before.hidden!), 'the same output from the same bytes')
})

t.test('kernels given views of a changed file refuse them; JS checks before reading views', async (t) => {
  const dir = copy()
  const file = path.join(dir, 'model.safetensors')
  const st = openSafetensors(file)
  t.teardown(() => st.dispose())
  const norm = st.view('model.norm.weight') as Uint16Array
  st.checkUnchanged()
  fs.truncateSync(file, 1024)
  t.throws(() => st.checkUnchanged(), { code: 'ERR_FILE_CHANGED', path: file })
  const x = new Float32Array(64).fill(1)
  await t.rejects(kernels.rmsnormForward({ x, weight: norm, rows: 1, dim: 64, eps: 1e-5, out: new Float32Array(64) }), { code: 'ERR_FILE_CHANGED', path: file })
})

t.test('mmap: false reads a private copy: the same outputs, and a truncated file no longer matters', async (t) => {
  const dir = copy()
  const mapped = await ErnieModel.fromPretrained(dir)
  const want = await mapped.forward(INPUT)
  await mapped.dispose()
  const model = await ErnieModel.fromPretrained(dir, { mmap: false })
  t.teardown(() => model.dispose())
  const file = path.join(dir, 'model.safetensors')
  fs.truncateSync(file, 0)
  const got = await model.forward(INPUT)
  t.same(Array.from(got.hidden!), Array.from(want.hidden!), 'the copy holds the weights the file had')
  t.ok((await model.generate([5, 6], { maxNewTokens: 2 })).tokens.length > 0, 'every call runs')
})
