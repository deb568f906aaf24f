// Child process for safetensors.test.ts: writes one large tensor over argv[2] with saveSafetensors,
// so the test can SIGKILL it mid-write. Not a test file itself.
import { saveSafetensors } from '../lib/io/safetensors'

const [target, bytes] = process.argv.slice(2)
const data = new Uint8Array(Number(bytes))
saveSafetensors(target, { big: { dtype: 'U8', shape: [data.length], data } }, { version: 'new' }).catch((err) => {
  console.error(err)
  process.exit(1)
})
