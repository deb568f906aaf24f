// A test hook for the crash-safety tests, and nothing else: with ERNIE_TEST_PAUSE_AT=<stage> in
// its environment, a process whose atomic writer reaches that stage says so on stderr and stops
// there, so that the test can SIGKILL it at exactly that point instead of racing a poll against
// the writer. With the variable unset (always, outside those tests' child processes) it does
// nothing. Not exported from the package.
import * as fs from 'node:fs'

/** Where the writers can pause, in the order each reaches them. */
export type PauseStage =
  // saveSafetensors: the temporary file created (empty); the header and first tensor written;
  // flushed and closed, not yet renamed; renamed over the target, the directory not yet flushed
  | 'safetensors:opened'
  | 'safetensors:partial'
  | 'safetensors:synced'
  | 'safetensors:renamed'
  // writeDirectoryAtomically: the temporary directory created; filled, not yet renamed; an
  // existing target renamed aside; the new directory renamed into place
  | 'directory:created'
  | 'directory:filled'
  | 'directory:aside'
  | 'directory:renamed'
  // Trainer: the oldest checkpoint beyond saveTotalLimit renamed away, not yet deleted
  | 'checkpoint:rotating'
  // pretrain: training done, the final model not yet saved
  | 'pretrain:final-save'

/** At `stage` of ERNIE_TEST_PAUSE_AT: writes `ERNIE_TEST_PAUSED <stage>` to stderr and blocks this thread (a minute at most). */
export function pauseForTest(stage: PauseStage): void {
  if (process.env.ERNIE_TEST_PAUSE_AT !== stage) return
  fs.writeSync(2, `ERNIE_TEST_PAUSED ${stage}\n`)
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000)
}
