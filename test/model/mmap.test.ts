// MappedFile: zero-copy views of a file, dispose() that detaches before unmapping, pins that keep
// the memory for a native job in flight, and OS errors that name the path.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import * as v8 from 'node:v8'
import * as vm from 'node:vm'
import { MappedFile } from '../../lib/io/mmap'
import { kernels } from '../../lib/index'
import { randomF32, refGemm, relErr } from '../helpers/helpers'

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-mmap-'))
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))

function writeRandom(name: string, bytes: number, seed: number): { file: string; data: Buffer } {
  const data = Buffer.alloc(bytes)
  let x = seed
  for (let i = 0; i < bytes; i++) data[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24
  const file = path.join(dir, name)
  fs.writeFileSync(file, data)
  return { file, data }
}

// Whether this process has `file` mapped, as Linux lists mappings (the suite runs on Linux: see
// README, Testing).
function isMapped(file: string): boolean {
  return fs.readFileSync('/proc/self/maps', 'utf8').includes(file)
}
const nextTurn = () => new Promise((resolve) => setImmediate(resolve))

t.test('maps a file and exposes any range without copying', async (t) => {
  const { file, data } = writeRandom('a.bin', 10_007, 1)
  const m = new MappedFile(file)
  t.equal(m.byteLength, data.length)
  t.equal(m.path, file)
  t.equal(m.disposed, false)
  t.same(Buffer.from(m.buffer()), data, 'whole file')
  t.same(Buffer.from(m.buffer(4093, 100)), data.subarray(4093, 4193), 'a range across a page boundary')
  t.same(Buffer.from(m.buffer(9000)), data.subarray(9000), 'offset to the end')
  t.equal(m.buffer(data.length).byteLength, 0, 'empty range at the end')

  // Two ArrayBuffers over the same bytes are the same memory: a write through one shows in the other.
  const a = m.bytes(100, 10)
  const b = m.bytes(96, 20)
  a[0] = data[100] ^ 0xff
  t.equal(b[4], data[100] ^ 0xff, 'views share memory (no copy)')
  t.same(fs.readFileSync(file), data, 'writes through a view never reach the file (private mapping)')
  m.dispose()
})

t.test('dispose() detaches every view, then unmaps; idempotent; Symbol.dispose', async (t) => {
  const { file } = writeRandom('b.bin', 3 * 4096 + 5, 2)
  const m = new MappedFile(file)
  const whole = new Uint8Array(m.buffer())
  const part = new Float32Array(m.buffer(8, 64))
  t.ok(isMapped(file), 'mapped while open')
  m.dispose()
  t.equal(m.disposed, true)
  t.equal(whole.length, 0, 'a view kept past dispose() is empty, not dangling')
  t.equal(part.length, 0)
  t.equal(whole[0], undefined, 'reading it yields undefined instead of a segfault')
  t.notOk(isMapped(file), 'unmapped at once')
  t.doesNotThrow(() => m.dispose(), 'second dispose() is a no-op')
  t.throws(() => m.buffer(), { code: 'ERR_DISPOSED', message: /was disposed/ })

  const m2 = new MappedFile(file)
  const v = m2.bytes()
  m2[Symbol.dispose]()
  t.equal(v.length, 0, 'Symbol.dispose disposes')
  const m3 = new MappedFile(file)
  const w = m3.bytes()
  await m3[Symbol.asyncDispose]()
  t.equal(w.length, 0, 'Symbol.asyncDispose disposes')
})

t.test('without dispose(), the GC unmaps once the object and all its buffers are gone', async (t) => {
  const { file } = writeRandom('c.bin', 8192, 3)
  let view: Uint8Array | undefined
  ;(() => {
    const m = new MappedFile(file)
    view = m.bytes(10, 10)
  })()
  for (let i = 0; i < 5; i++) {
    gc()
    await nextTurn()
  }
  t.ok(isMapped(file), 'a live view keeps the mapping after its MappedFile is collected')
  t.equal(view!.length, 10)
  view = undefined
  for (let i = 0; i < 20 && isMapped(file); i++) {
    gc()
    await nextTurn()
  }
  t.notOk(isMapped(file), 'unmapped after the last view is collected')
})

t.test('a native job reading mapped memory keeps it mapped past dispose()', async (t) => {
  const m = 173
  const n = 301
  const k = 259
  const weights = randomF32(n * k, 11)
  const file = path.join(dir, 'weights.bin')
  fs.writeFileSync(file, new Uint8Array(weights.buffer))
  const a = randomF32(m * k, 12)
  const ref = refGemm(m, n, k, (i, p) => a[i * k + p], (j, p) => weights[j * k + p])
  for (let round = 0; round < 3; round++) {
    const mf = new MappedFile(file)
    const b = new Float32Array(mf.buffer())
    const c = new Float32Array(m * n)
    const job = kernels.gemm({ c, m, n, segments: [{ a, b, k }] })
    mf.dispose() // while the job is queued or running
    t.equal(b.length, 0, 'JS sees the view detached')
    await job
    t.ok(relErr(c, ref) < 1e-5, `the job read the intended weights (round ${round})`)
    await nextTurn()
    t.notOk(isMapped(file), 'unmapped once the job released it')
  }
})

t.test('OS errors name the path and the reason', async (t) => {
  const missing = path.join(dir, 'missing.bin')
  t.throws(() => new MappedFile(missing), { code: 'ENOENT', path: missing, syscall: 'open', message: /missing\.bin.*no such file or directory/ })
  t.throws(() => new MappedFile(dir), { code: 'EISDIR', path: dir, message: /illegal operation on a directory/ })
  const empty = path.join(dir, 'empty.bin')
  fs.writeFileSync(empty, '')
  t.throws(() => new MappedFile(empty), { code: 'ERR_EMPTY_FILE', path: empty, message: /empty\.bin.*empty/ })
  t.throws(() => new MappedFile(path.join(empty, 'x')), { code: 'ENOTDIR' })
  t.throws(() => new MappedFile('/dev/null'), { code: 'ERR_NOT_A_FILE' })
  t.throws(() => new MappedFile(42 as unknown as string), TypeError)
  t.throws(() => new MappedFile(''), TypeError)
})

t.test('permission denied is EACCES with the path', async (t) => {
  const { file } = writeRandom('secret.bin', 100, 4)
  fs.chmodSync(dir, 0o755) // the file's own mode refuses, not the directory's
  fs.chmodSync(file, 0o000)
  // root reads anything: as root, open it with the effective uid of nobody (65534), restored
  // at once (the real and saved uids stay 0). Nothing else runs meanwhile: the call is synchronous.
  const unprivileged = <T>(fn: () => T): T => {
    if (process.geteuid!() !== 0) return fn()
    process.seteuid!(65534)
    try {
      return fn()
    } finally {
      process.seteuid!(0)
    }
  }
  t.throws(() => unprivileged(() => new MappedFile(file)), { code: 'EACCES', path: file, message: /secret\.bin.*permission denied/ })
  t.equal(process.geteuid!(), process.getuid!(), 'the effective uid is back')
})

t.test('buffer() checks its range', async (t) => {
  const { file } = writeRandom('d.bin', 100, 5)
  const m = new MappedFile(file)
  t.throws(() => m.buffer(101), RangeError)
  t.throws(() => m.buffer(50, 51), RangeError)
  t.throws(() => m.buffer(-1), RangeError)
  t.throws(() => m.buffer(1.5), RangeError)
  t.throws(() => m.buffer('1' as unknown as number), TypeError)
  t.equal(m.buffer(50, 50).byteLength, 50)
  m.dispose()
})
