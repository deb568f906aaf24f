// One error class for the library's own failures, with a stable `code` to branch on.
// Argument type and range errors use the built-in TypeError / RangeError with a code too.
export class ErnieError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'ErnieError'
    this.code = code
  }
}

export function typeError(message: string): TypeError & { code: string } {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_ARG_TYPE' })
}

export function rangeError(message: string): RangeError & { code: string } {
  return Object.assign(new RangeError(message), { code: 'ERR_OUT_OF_RANGE' })
}

/**
 * A call stopped by its AbortSignal: name 'AbortError' and code 'ABORT_ERR', as Node's own abort
 * errors; the signal's reason is the cause.
 */
export class AbortError extends ErnieError {
  constructor(what: string, signal: AbortSignal) {
    super('ABORT_ERR', `${what}: aborted`, { cause: signal.reason })
    this.name = 'AbortError'
  }
}
