// Child process for safetensors.test.ts: saves two tensors over argv[2] with saveSafetensors, an
// F32 `a` of argv[3] bytes of sevens (written first: wider elements go first) and a U8 `b` of
// [5, 6, 7, 8], metadata version "new"; the test kills it at a stage of the write. Not a test file.
import { saveSafetensors } from '../../lib/io/safetensors'

const [target, bytes] = process.argv.slice(2)
const a = new Float32Array(Number(bytes) / 4).fill(7)
const b = Uint8Array.from([5, 6, 7, 8])
saveSafetensors(target, { a: { dtype: 'F32', shape: [a.length], data: a }, b: { dtype: 'U8', shape: [4], data: b } }, { version: 'new' }).catch((err) => {
  console.error(err)
  process.exit(1)
})
