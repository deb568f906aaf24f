// Durable, all-or-nothing writes of files and whole directories (adapters, checkpoints): the
// content goes to a temporary name beside the target, is flushed (fsync), and is renamed into
// place, so a crash leaves the previous version or the new one, never a mix.
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { ErnieError } from '../errors'
import { pauseForTest } from './test-pause'

/**
 * A write that failed for want of space (ENOSPC, or EDQUOT: the quota), said plainly: what was
 * being written, and that the previous version is intact (every writer here writes beside the
 * target and renames, so a failed write replaces nothing). Other errors pass through.
 */
export function explainWriteFailure(err: unknown, target: string, previous: 'file' | 'directory' | undefined): unknown {
  // A file inside a directory being written failed first: the directory is what to name.
  const errno = err instanceof ErnieError && err.code === 'ERR_NO_SPACE' ? err.cause : err
  const code = (errno as NodeJS.ErrnoException)?.code
  if (code !== 'ENOSPC' && code !== 'EDQUOT') return err
  const kept = previous ? `the previous ${previous} at ${target} is intact` : `nothing was written at ${target}`
  return new ErnieError('ERR_NO_SPACE', `${target}: ${code === 'ENOSPC' ? 'no space left on the device' : 'disk quota exceeded'} (${code}) while writing it; ${kept}. Free space and save again.`, { cause: errno })
}

/** fsync a directory, making renames and creations inside it durable (a no-op on Windows). */
export async function fsyncDirectory(dir: string): Promise<void> {
  if (process.platform === 'win32') return
  const d = await fs.promises.open(dir, 'r')
  try {
    await d.sync()
  } finally {
    await d.close()
  }
}

/** Writes a new file and flushes it to disk before returning (the file must not exist). */
export async function writeFileDurable(file: string, data: string | Uint8Array): Promise<void> {
  const fh = await fs.promises.open(file, 'wx').catch((err) => {
    throw explainWriteFailure(err, file, undefined)
  })
  try {
    await fh.writeFile(data)
    await fh.sync()
  } catch (err) {
    await fh.close().catch(() => undefined)
    await fs.promises.unlink(file).catch(() => undefined) // a partial file is no file
    throw explainWriteFailure(err, file, undefined)
  }
  await fh.close()
}

/** A name for a temporary sibling of `target` that no other writer picks. */
export function temporarySibling(target: string, tag = 'tmp'): string {
  const t = path.resolve(target)
  return path.join(path.dirname(t), `.${path.basename(t)}.${process.pid}.${randomBytes(6).toString('hex')}.${tag}`)
}

/**
 * Writes `file` whole or not at all: the data goes to a temporary sibling, flushed, renamed over
 * the file (an earlier one replaced), and the directory flushed. A kill at any moment leaves the
 * old file or the new one (and maybe a temporary that cleanUpAfterKilledWriters removes).
 */
export async function replaceFileAtomically(file: string, data: string | Uint8Array): Promise<void> {
  const tmp = temporarySibling(file)
  await writeFileDurable(tmp, data)
  await fs.promises.rename(tmp, file)
  await fsyncDirectory(path.dirname(path.resolve(file)))
}

// Entries of `from` that `fill` did not write are carried into the new directory: hard links
// for files (nothing is copied, the originals stay put until the swap), copies otherwise.
async function carryOver(from: string, to: string): Promise<void> {
  for (const entry of await fs.promises.readdir(from, { withFileTypes: true })) {
    const src = path.join(from, entry.name), dst = path.join(to, entry.name)
    if (fs.existsSync(dst)) continue
    if (entry.isFile()) await fs.promises.link(src, dst).catch(() => fs.promises.copyFile(src, dst))
    else await fs.promises.cp(src, dst, { recursive: true, verbatimSymlinks: true })
  }
}

export interface AtomicDirectoryOptions {
  /** Keep the files of an existing target that `fill` does not write (default true). */
  keepOtherFiles?: boolean
}

/**
 * Creates or replaces the directory `target` with what `fill` writes into a fresh temporary
 * directory beside it. Files written by `fill` must be flushed by it (writeFileDurable,
 * saveSafetensors); the temporary directory and the parent are flushed here. A new target
 * appears in one rename. An existing one is renamed aside, the new one renamed in, and the old
 * one removed: a crash in between leaves no directory at `target` (the complete old and new
 * versions remain under hidden sibling names), never a half-written one.
 */
export async function writeDirectoryAtomically(
  target: string,
  fill: (dir: string) => Promise<void>,
  options: AtomicDirectoryOptions = {},
): Promise<void> {
  const dest = path.resolve(target)
  const parent = path.dirname(dest)
  await fs.promises.mkdir(parent, { recursive: true })
  const tmp = temporarySibling(dest)
  await fs.promises.mkdir(tmp).catch((err) => {
    throw explainWriteFailure(err, dest, fs.existsSync(dest) ? 'directory' : undefined)
  })
  try {
    pauseForTest('directory:created')
    await fill(tmp)
    const existing = await fs.promises.stat(dest).catch(() => undefined)
    if (existing && !existing.isDirectory()) throw Object.assign(new Error(`${dest} exists and is not a directory`), { code: 'ENOTDIR' })
    if (existing && options.keepOtherFiles !== false) await carryOver(dest, tmp)
    await fsyncDirectory(tmp)
    pauseForTest('directory:filled')
    if (!existing) {
      await fs.promises.rename(tmp, dest)
      pauseForTest('directory:renamed')
    } else {
      const aside = temporarySibling(dest, 'old')
      await fs.promises.rename(dest, aside)
      pauseForTest('directory:aside')
      await fs.promises.rename(tmp, dest)
      pauseForTest('directory:renamed')
      await fsyncDirectory(parent)
      await fs.promises.rm(aside, { recursive: true, force: true })
    }
    await fsyncDirectory(parent)
  } catch (err) {
    await fs.promises.rm(tmp, { recursive: true, force: true }).catch(() => undefined)
    throw explainWriteFailure(err, dest, fs.existsSync(dest) ? 'directory' : undefined)
  }
}

const TEMPORARY = /^\.(.+)\.(\d+)\.[0-9a-f]{12}\.(tmp|old|deleted)$/

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Cleans up after writers in `dir` that were killed mid-save (their process is gone): partial
 * `.tmp` files and directories and `.deleted` trash are removed; an `.old` copy (a directory
 * replaced by writeDirectoryAtomically, killed between its two renames) is renamed back when
 * its target is missing, since it is then the last good version, and removed otherwise.
 * Returns what it removed or restored, by name.
 */
export async function cleanUpAfterKilledWriters(dir: string): Promise<{ removed: string[]; restored: string[] }> {
  const removed: string[] = []
  const restored: string[] = []
  const entries = await fs.promises.readdir(dir).catch(() => [] as string[])
  for (const name of entries) {
    const m = TEMPORARY.exec(name)
    if (!m || Number(m[2]) === process.pid || alive(Number(m[2]))) continue
    const [, targetName, , tag] = m
    const entry = path.join(dir, name)
    const target = path.join(dir, targetName)
    if (tag === 'old' && !fs.existsSync(target)) {
      await fs.promises.rename(entry, target)
      restored.push(targetName)
    } else {
      await fs.promises.rm(entry, { recursive: true, force: true })
      removed.push(name)
    }
  }
  if (removed.length + restored.length > 0) await fsyncDirectory(dir)
  return { removed, restored }
}
