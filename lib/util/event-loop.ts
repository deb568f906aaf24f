// Long synchronous work (tokenizing many texts, packing many conversations) in chunks, with the
// event loop running between them.

/** Waits for the event loop to run (between chunks of synchronous work). */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}
