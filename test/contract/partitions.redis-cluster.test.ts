/**
 * The partition-count contract (partitions.contract.ts) on a real 6-node
 * Redis Cluster: the stored count and the room directory share one slot,
 * every partition's keys stay on the master owning its slot, and raising the
 * count on a running cluster keeps every cursor, room and event.
 */
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { testPrefix } from '../harness/redis.js';
import { useRedisCluster } from '../harness/redis-cluster-suite.js';
import { partitionsContract } from './partitions.contract.js';

const { started } = useRedisCluster();

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
    return createEventLog({
      partitions: options.partitions ?? 16,
      log: silentLogger(),
      redis: { cluster: { nodes: started().nodes }, prefix: storePrefix(options.store) },
      ...(options.retention ? { retention: options.retention } : {}),
      ...(options.tailBuffer ? { tailBuffer: options.tailBuffer } : {}),
    });
  },
});
