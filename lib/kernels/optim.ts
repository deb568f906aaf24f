// Optimiser steps (in place on flat fp32 arrays) and gradient norms.
import { nativeOp } from '../native'
import type { OnDevice } from '../device'

/** Hyperparameters shared by the AdamW steps; defaults are torch.optim.AdamW's. */
export interface AdamHyperparameters {
  lr: number
  beta1?: number
  beta2?: number
  eps?: number
  /** Decoupled weight decay, p -= lr * weightDecay * p (default 0.01). */
  weightDecay?: number
  /** 1-based step count, for the bias corrections. */
  step: number
}

export interface AdamwStepOptions extends AdamHyperparameters, OnDevice {
  params: Float32Array
  grads: Float32Array
  /** First and second moments, [params.length], updated in place (start at zero). */
  m: Float32Array
  v: Float32Array
  /** When given, receives the updated params rounded to bf16 (the compute copy). */
  paramsBf16?: Uint16Array
}

/**
 * 8-bit AdamW (bitsandbytes' blockwise 8-bit Adam): the moments are Uint8Array codes into
 * its signed (m) and unsigned (v) dynamic maps, scaled by one absmax per block. A fresh state
 * is all zeros (an absmax of 0 makes every code 0).
 */
export interface Adamw8bitStepOptions extends AdamHyperparameters, OnDevice {
  params: Float32Array
  grads: Float32Array
  m: Uint8Array
  v: Uint8Array
  /** [ceil(params.length / blockSize)] */
  mAbsmax: Float32Array
  vAbsmax: Float32Array
  /** Elements per absmax block (default 256). */
  blockSize?: number
  paramsBf16?: Uint16Array
}

export interface SgdStepOptions {
  params: Float32Array
  grads: Float32Array
  lr: number
  momentum?: number
  /** Momentum buffer [params.length], required when momentum > 0 (start at zero). */
  buffer?: Float32Array
  weightDecay?: number
  nesterov?: boolean
}

/** Blockwise 8-bit quantisation with the dynamic map (signed by default), as the 8-bit optimiser stores its state. */
export interface QuantizeBlockwiseOptions {
  input: Float32Array
  codes: Uint8Array
  /** [ceil(input.length / blockSize)], written. */
  absmax: Float32Array
  blockSize?: number
  signed?: boolean
}

export interface DequantizeBlockwiseOptions {
  codes: Uint8Array
  absmax: Float32Array
  output: Float32Array
  blockSize?: number
  signed?: boolean
}

export interface GradNormOptions {
  /** Arrays that do not share memory. */
  grads: Float32Array[]
}

export interface ClipGradNormOptions extends GradNormOptions {
  maxNorm: number
}

const adamwOp = nativeOp<AdamwStepOptions>('adamwStep')
const adamw8bitOp = nativeOp<Adamw8bitStepOptions>('adamw8bitStep')
const sgdOp = nativeOp<SgdStepOptions>('sgdStep')
const quantizeOp = nativeOp<QuantizeBlockwiseOptions>('quantizeBlockwise')
const dequantizeOp = nativeOp<DequantizeBlockwiseOptions>('dequantizeBlockwise')
const normOp = nativeOp<GradNormOptions, number>('gradNorm')
const clipOp = nativeOp<ClipGradNormOptions, number>('clipGradNorm')

export async function adamwStep(o: AdamwStepOptions): Promise<void> {
  return adamwOp.run(o)
}
export function adamwStepSync(o: AdamwStepOptions): void {
  adamwOp.sync(o)
}
export async function adamw8bitStep(o: Adamw8bitStepOptions): Promise<void> {
  return adamw8bitOp.run(o)
}
export function adamw8bitStepSync(o: Adamw8bitStepOptions): void {
  adamw8bitOp.sync(o)
}
export async function sgdStep(o: SgdStepOptions): Promise<void> {
  return sgdOp.run(o)
}
export function sgdStepSync(o: SgdStepOptions): void {
  sgdOp.sync(o)
}
export async function quantizeBlockwise(o: QuantizeBlockwiseOptions): Promise<void> {
  return quantizeOp.run(o)
}
export function quantizeBlockwiseSync(o: QuantizeBlockwiseOptions): void {
  quantizeOp.sync(o)
}
export async function dequantizeBlockwise(o: DequantizeBlockwiseOptions): Promise<void> {
  return dequantizeOp.run(o)
}
export function dequantizeBlockwiseSync(o: DequantizeBlockwiseOptions): void {
  dequantizeOp.sync(o)
}
/** Global L2 norm of all the arrays (accumulated in double, independent of the thread count). */
export async function gradNorm(o: GradNormOptions): Promise<number> {
  return normOp.run(o)
}
export function gradNormSync(o: GradNormOptions): number {
  return normOp.sync(o)
}
/**
 * torch's clip_grad_norm_: returns the norm before clipping and, when maxNorm / (norm + 1e-6) < 1,
 * scales every array by that factor. A non-finite norm is returned with the arrays untouched
 * (skip the step).
 */
export async function clipGradNorm(o: ClipGradNormOptions): Promise<number> {
  return clipOp.run(o)
}
export function clipGradNormSync(o: ClipGradNormOptions): number {
  return clipOp.sync(o)
}
