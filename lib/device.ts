// Where computation runs: 'cpu', 'cuda' or 'auto', from an option or the ERNIE_DEVICE
// environment variable. The CUDA backend exists when the addon was built with it
// (`npm run build:cuda`) and a device is present; `auto` takes it then, else the CPU.
//
// A model's device is where its weights are placed (once, at load) and where its whole graph
// runs (native/backend/backend.h): forward, generation, training steps. Kernels take the same
// choice per call (`device` in their options). The CUDA backend is compiled and checked by
// `npm run check:cuda`; the model graph's host logic (uploads, downloads, what stays on the
// device) is tested on the CPU through the checked backend (ERNIE_CHECKED_BACKEND=1, below).
import { ErnieError, rangeError, typeError } from './errors'
import * as addon from './native'

export type Device = 'cpu' | 'cuda' | 'auto'

/**
 * Where one kernel call runs (the kernels' `device` option): 'cpu' (default), 'cuda', or
 * 'checked', the CPU kernels behind a device-like memory wall (tests). Host arrays in and out:
 * on a backend with memory of its own they are copied there and back for the call.
 */
export type KernelDevice = 'cpu' | 'cuda' | 'checked'
export interface OnDevice {
  device?: KernelDevice
}
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
  cached ??= addon.cudaInfo()
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

/** The device a model graph (ErnieModel, Trainer, ErnieClassifier) runs on: as resolveDevice. */
export function resolveModelDevice(requested?: unknown, what = 'device'): 'cpu' | 'cuda' {
  return resolveDevice(requested, what)
}

/**
 * The native backend for a device. ERNIE_CHECKED_BACKEND=1 (tests) runs 'cpu' on the checked
 * backend: the CPU kernels behind memory that host code cannot touch, as a GPU's, so that the
 * model graph's uploads and downloads are checked without a GPU (native/backend/checked_backend.cc).
 */
export function nativeBackend(device: 'cpu' | 'cuda'): 'cpu' | 'cuda' | 'checked' {
  return device === 'cpu' && process.env.ERNIE_CHECKED_BACKEND === '1' ? 'checked' : device
}
