/**
 * A gateway-like process for failover tests: the Redis log, room links, the
 * delivery engine and a test adapter whose remote side is recorded in Redis.
 * Prints "ready <owner>" once its consumer groups exist.
 */
import { Redis } from 'ioredis';
import { createDeliveryManager } from '../../src/bridge/delivery.js';
import { createIngestSink } from '../../src/bridge/ingest.js';
import { createRoomLinks } from '../../src/bridge/links.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { TestAdapter, redisRecorder } from './test-adapter.js';

const env = (name: string): string => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`${name} is required`);
  return value;
};

const url = env('REDIS_URL');
const prefix = env('SG_PREFIX');
const log = createEventLog({ partitions: Number(env('SG_PARTITIONS')), log: silentLogger(), redis: { url, prefix } });
const links = await createRoomLinks({ rooms: log.rooms, logger: silentLogger() });
const sink = createIngestSink({ log, logger: silentLogger() });
const recorderRedis = new Redis(url);
const adapter = new TestAdapter('remote', sink, redisRecorder(recorderRedis, prefix));
await adapter.start();
adapter.controls.slowMs = Number(process.env['SG_SLOW_MS'] ?? 0);
const owner = `child-${process.pid}`;
const manager = createDeliveryManager({ log, adapters: [adapter], links, logger: silentLogger(), owner, options: { leaseMs: Number(env('SG_LEASE_MS')) } });
await manager.start();
process.stdout.write(`ready ${owner}\n`);

process.on('SIGTERM', () => {
  void (async () => {
    await manager.stop(2000);
    links.close();
    await log.close();
    await recorderRedis.quit();
    process.exit(0);
  })();
});
