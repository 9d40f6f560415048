/**
 * One gateway replica for the restart benchmark (restart.ts), in its own
 * process so it can be killed with SIGKILL: Redis log, default lease time,
 * one test adapter ("remote") recording its deliveries in Redis.
 * Env: BENCH_REDIS_URL, BENCH_PREFIX, BENCH_REPLICA_ID.
 */
import { Redis } from 'ioredis';
import { resolveConfig } from '../../src/config/index.js';
import { silentLogger } from '../../src/log/index.js';
import { createGateway } from '../../src/runtime/gateway.js';
import { TestAdapter, redisRecorder } from '../harness/test-adapter.js';

const url = process.env['BENCH_REDIS_URL'] ?? '';
const prefix = process.env['BENCH_PREFIX'] ?? '';
const redis = new Redis(url);
const config = resolveConfig({ partitions: 4, redis: { url, prefix }, http: { port: 0 }, replicaId: process.env['BENCH_REPLICA_ID'] });
const gateway = await createGateway({ config, logger: silentLogger(), extraAdapters: ({ sink }) => [new TestAdapter('remote', sink, redisRecorder(redis, prefix))] });
await gateway.start();
process.stdout.write('listening\n');
