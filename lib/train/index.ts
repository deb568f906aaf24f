// Training: the shared loop (Trainer), its optimisers and schedules, and the causal-LM task.
export * from './schedule'
export * from './optimizer'
export * from './trainer'
export * from './lm'
export * from './pretrain'
