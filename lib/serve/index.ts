// The HTTP server for saved classifiers (ernie-sentiment serve, createServer).
export { createServer, type ClassifierServer, type ServeOptions } from './server'
