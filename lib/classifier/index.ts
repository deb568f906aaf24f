// The sentiment classifier: ErnieClassifier, its metrics and report, and the pipeline() factory.
export * from './classifier'
export { classificationMetrics, type ClassMetrics, type EvaluateResult } from './metrics'
export { DEFAULT_PROMPT, type Pooling, type Truncation } from './encode'
export type { HeadSpec } from './head'
export { renderReport } from './report'
export { pipeline, PIPELINE_TASKS, type PipelineTask, type PipelineOptions, type TextClassificationPipeline, type LabelScore, type ClassifyCallOptions } from './pipeline'
