// A worker thread for lanes.test.ts: answers one forward, then leaves 40 more queued or running
// (on the native lanes with workerData.singleThread, else on libuv's pool) for the test to
// terminate it under.
import { parentPort, workerData } from 'node:worker_threads'

import { ErnieModel } from '../../lib/index'
import { bundledModelDir } from '../../lib/classifier/bundled'

const singleThread = (workerData as { singleThread: boolean }).singleThread
void ErnieModel.fromPretrained(bundledModelDir()!).then(async (model) => {
  const first = await model.forward({ inputIds: [[5, 6, 7, 8]] }, { output: ['pooled'], singleThread })
  for (let i = 0; i < 40; i++) void model.forward({ inputIds: [Array.from({ length: 100 }, (_, k) => 5 + k)] }, { output: ['pooled'], singleThread })
  parentPort!.postMessage(Array.from(first.pooled!))
})
