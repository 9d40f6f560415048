/**
 * Starts the services every test file may use, once per run, and hands their
 * addresses to the tests through `inject()`.
 */
import type { TestProject } from 'vitest/node';
import type {} from 'vitest';
import { startRedis } from './redis.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const redis = await startRedis();
  project.provide('redisUrl', redis.url);
  return () => redis.stop();
}
