/**
 * The partition-count contract (partitions.contract.ts) on a real 6-node
 * Redis Cluster: the stored count and the room directory share one slot,
 * every partition's keys stay on the master owning its slot, and raising the
 * count on a running cluster keeps every cursor, room and event.
 */
import { afterAll, beforeAll } from 'vitest';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { testPrefix } from '../harness/redis.js';
import { startRedisCluster, type TestRedisCluster } from '../harness/redis-cluster.js';
import { partitionsContract } from './partitions.contract.js';

let cluster: TestRedisCluster | undefined;
beforeAll(async () => {
  cluster = await startRedisCluster();
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});

const stores = new Map<string, string>();
function storePrefix(store: string | undefined): string {
  if (store === undefined) return testPrefix('partitions-cluster');
  let prefix = stores.get(store);
  if (prefix === undefined) stores.set(store, (prefix = testPrefix('partitions-cluster')));
  return prefix;
}

partitionsContract({
  name: 'redis cluster',
  create: async (options = {}) => {
    if (!cluster) throw new Error('the test cluster did not start');
    return createEventLog({
      partitions: options.partitions ?? 16,
      log: silentLogger(),
      redis: { cluster: { nodes: cluster.nodes }, prefix: storePrefix(options.store) },
      ...(options.retention ? { retention: options.retention } : {}),
      ...(options.tailBuffer ? { tailBuffer: options.tailBuffer } : {}),
    });
  },
});
