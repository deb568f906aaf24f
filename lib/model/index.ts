export * from './config'
export * from './weights'
export * from './model'
export * from './lora'
