/**
 * One gateway replica for the restart benchmark (restart.ts), in its own
 * process so it can be killed with SIGKILL: Redis log, default lease time,
 * one test adapter ("remote") recording its deliveries in Redis, and, with
 * BENCH_MATRIX, a Matrix adapter (application-service mode) linked to a room.
 * Env: BENCH_REDIS_URL, BENCH_PREFIX, BENCH_REPLICA_ID, BENCH_MATRIX (JSON:
 * `{ "adapter": <matrix adapter section>, "roomId": "!room:server" }`).
 */
import { Redis } from 'ioredis';
import { resolveConfig } from '../../src/config/index.js';
import { silentLogger } from '../../src/log/index.js';
import { createGateway } from '../../src/runtime/gateway.js';
import { TestAdapter, redisRecorder } from '../harness/test-adapter.js';

const url = process.env['BENCH_REDIS_URL'] ?? '';
const prefix = process.env['BENCH_PREFIX'] ?? '';
const matrix = process.env['BENCH_MATRIX'] ? (JSON.parse(process.env['BENCH_MATRIX']) as { adapter: Record<string, unknown>; roomId: string }) : undefined;
const redis = new Redis(url);
const config = resolveConfig({
  partitions: 4,
  redis: { url, prefix },
  http: { port: 0 },
  replicaId: process.env['BENCH_REPLICA_ID'],
  ...(matrix ? { adapters: { matrix: { type: 'matrix', ...matrix.adapter } }, rooms: [{ id: 'ops', links: [{ endpoint: 'matrix', target: matrix.roomId }] }] } : {}),
});
const gateway = await createGateway({ config, logger: silentLogger(), extraAdapters: ({ sink }) => [new TestAdapter('remote', sink, redisRecorder(redis, prefix))] });
await gateway.start();
process.stdout.write('listening\n');
