// Training: the shared loop (Trainer), its optimisers and schedules, the causal-LM task,
// conversations as its examples (chat SFT), and DPO.
export * from './schedule'
export * from './optimizer'
export * from './trainer'
export * from './lm'
export * from './pretrain'
export * from './chat-encode'
export * from './chat-pack'
export * from './sft'
export * from './preference-encode'
export * from './dpo'
