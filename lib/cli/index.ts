// The command line, as a function (main) for programs and tests; bin.ts is the executable.
export { main, formatMetrics, type CliIo } from './main'
