/**
 * The HTTP API: `buildApp(deps)` returns a fastify instance that never listens
 * by itself; src/runtime listens.
 */
export { buildApp, type AppDeps } from './app.js';
export type { StatusReport, HttpConfig } from './context.js';
