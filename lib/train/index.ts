// Training: the shared loop (Trainer), its optimisers and schedules, the causal-LM task and DPO.
export * from './schedule'
export * from './optimizer'
export * from './trainer'
export * from './lm'
export * from './pretrain'
export * from './dpo'
