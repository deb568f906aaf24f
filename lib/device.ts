// Where computation runs: 'cpu', 'cuda' or 'auto', from an option or the ERNIE_DEVICE
// environment variable. The CUDA backend exists when the addon was built with it
// (`npm run build:cuda`) and a device is present; `auto` takes it then, else the CPU.
//
// In this version the CUDA backend provides the kernels (kernels.cuda); the model graph (an
// ErnieModel's forward and backward, and so trainers and classifiers) runs on the CPU. A model
// asked for 'cuda' says so with an ERR_DEVICE error rather than run on the CPU quietly; 'auto'
// resolves to 'cpu' for models.
import { ErnieError, rangeError, typeError } from './errors'
import { native } from './native'

export type Device = 'cpu' | 'cuda' | 'auto'
export const DEVICES: readonly Device[] = ['cpu', 'cuda', 'auto']

export interface CudaDevice {
  index: number
  name: string
  /** e.g. '9.0' */
  computeCapability: string
  /** Bytes. */
  totalMemory: number
  multiprocessors: number
}

export interface CudaInfo {
  /** Whether the loaded addon was built with the CUDA backend. */
  built: boolean
  devices: CudaDevice[]
  /** Why there is no device (not built, no driver, ...), when there is none. */
  error?: string
  /** The CUDA runtime the addon was built with (e.g. 13000), 0 when not built. */
  runtimeVersion: number
  /** The installed driver's CUDA version, 0 when there is none. */
  driverVersion: number
}

let cached: CudaInfo | undefined

/** The CUDA build and devices, as the addon sees them (looked up once). */
export function cudaInfo(): CudaInfo {
  if (!cached) {
    const f = native.cudaInfo as (() => CudaInfo) | undefined
    cached = typeof f === 'function' ? f() : { built: false, devices: [], error: 'the native addon has no CUDA entry points', runtimeVersion: 0, driverVersion: 0 }
  }
  return cached
}

/** Whether the loaded addon was built with CUDA. */
export function cudaBuilt(): boolean {
  return cudaInfo().built
}

/** CUDA devices the addon can use ([] without a CUDA build or a device). */
export function cudaDevices(): CudaDevice[] {
  return cudaInfo().devices
}

/** Why 'cuda' cannot be used here, or undefined when it can. */
export function cudaUnavailableReason(): string | undefined {
  const info = cudaInfo()
  if (!info.built) return 'this build of ernie-sentiment was compiled without CUDA (build the addon with `npm run build:cuda`, which needs the CUDA toolkit)'
  if (info.devices.length === 0) return `no CUDA device was found (${info.error ?? 'no device'})`
  return undefined
}

function parseDevice(value: unknown, what: string): Device {
  if (typeof value !== 'string') throw typeError(`${what} must be 'cpu', 'cuda' or 'auto', got ${value === null ? 'null' : typeof value}`)
  if (!(DEVICES as readonly string[]).includes(value)) throw rangeError(`${what} must be 'cpu', 'cuda' or 'auto', got ${JSON.stringify(value)}`)
  return value as Device
}

/**
 * The device a request resolves to: the option when given, else ERNIE_DEVICE, else 'auto'.
 * 'auto' is 'cuda' when the CUDA build and a device exist, else 'cpu'; 'cuda' without them
 * throws ErnieError ERR_DEVICE saying why. TypeError / RangeError for anything else.
 */
export function resolveDevice(requested?: unknown, what = 'device'): 'cpu' | 'cuda' {
  const fromEnv = requested === undefined && process.env.ERNIE_DEVICE !== undefined && process.env.ERNIE_DEVICE !== ''
  const device = requested === undefined ? (fromEnv ? parseDevice(process.env.ERNIE_DEVICE, 'ERNIE_DEVICE') : 'auto') : parseDevice(requested, what)
  if (device === 'cpu') return 'cpu'
  const reason = cudaUnavailableReason()
  if (device === 'auto') return reason === undefined ? 'cuda' : 'cpu'
  if (reason !== undefined) throw new ErnieError('ERR_DEVICE', `device "cuda"${fromEnv ? ' (from ERNIE_DEVICE)' : ''} is not available: ${reason}`)
  return 'cuda'
}

/**
 * The device a model graph (ErnieModel, Trainer, ErnieClassifier) runs on: always 'cpu' in this
 * version. 'auto' resolves to 'cpu'; 'cuda' throws ERR_DEVICE, with the reason CUDA is missing
 * when it is, or else that the model graph runs on the CPU in this version.
 */
export function resolveModelDevice(requested?: unknown, what = 'device'): 'cpu' {
  const device = requested === undefined ? undefined : parseDevice(requested, what)
  const explicit = device === 'cuda' || (device === undefined && process.env.ERNIE_DEVICE === 'cuda')
  if (!explicit) {
    resolveDevice(requested, what)  // validates ERNIE_DEVICE too
    return 'cpu'
  }
  resolveDevice(requested, what)  // throws when CUDA is missing
  throw new ErnieError(
    'ERR_DEVICE',
    `device "cuda" is not available for the model graph: in this version the model's forward and backward run on the CPU, ` +
      `and the CUDA backend provides the kernels only (kernels.cuda). Use device 'cpu' or 'auto'.`,
  )
}
