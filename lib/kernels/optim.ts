// Optimiser steps (in place on flat fp32 arrays) and gradient norms.
import * as addon from '../native'
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

export async function adamwStep(o: AdamwStepOptions): Promise<void> {
  return addon.adamwStep(o)
}
export function adamwStepSync(o: AdamwStepOptions): void {
  addon.adamwStepSync(o)
}
export async function adamw8bitStep(o: Adamw8bitStepOptions): Promise<void> {
  return addon.adamw8bitStep(o)
}
export function adamw8bitStepSync(o: Adamw8bitStepOptions): void {
  addon.adamw8bitStepSync(o)
}
export async function sgdStep(o: SgdStepOptions): Promise<void> {
  return addon.sgdStep(o)
}
export function sgdStepSync(o: SgdStepOptions): void {
  addon.sgdStepSync(o)
}
export async function quantizeBlockwise(o: QuantizeBlockwiseOptions): Promise<void> {
  return addon.quantizeBlockwise(o)
}
export function quantizeBlockwiseSync(o: QuantizeBlockwiseOptions): void {
  addon.quantizeBlockwiseSync(o)
}
export async function dequantizeBlockwise(o: DequantizeBlockwiseOptions): Promise<void> {
  return addon.dequantizeBlockwise(o)
}
export function dequantizeBlockwiseSync(o: DequantizeBlockwiseOptions): void {
  addon.dequantizeBlockwiseSync(o)
}
/** Global L2 norm of all the arrays (accumulated in double, independent of the thread count). */
export async function gradNorm(o: GradNormOptions): Promise<number> {
  return addon.gradNorm(o)
}
export function gradNormSync(o: GradNormOptions): number {
  return addon.gradNormSync(o)
}
/**
 * torch's clip_grad_norm_: returns the norm before clipping and, when maxNorm / (norm + 1e-6) < 1,
 * scales every array by that factor. A non-finite norm is returned with the arrays untouched
 * (skip the step).
 */
export async function clipGradNorm(o: ClipGradNormOptions): Promise<number> {
  return addon.clipGradNorm(o)
}
export function clipGradNormSync(o: ClipGradNormOptions): number {
  return addon.clipGradNormSync(o)
}
