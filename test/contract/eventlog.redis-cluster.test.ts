import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { testPrefix } from '../harness/redis.js';
import { nodeCommand, startRedisCluster, type TestRedisCluster } from '../harness/redis-cluster.js';
import { eventLogContract } from './eventlog.contract.js';

// one 6-node cluster (3 masters, 3 replicas) for the whole file
let cluster: TestRedisCluster | undefined;
beforeAll(async () => {
  cluster = await startRedisCluster();
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});

function started(): TestRedisCluster {
  if (!cluster) throw new Error('the test cluster did not start');
  return cluster;
}

eventLogContract({
  name: 'redis cluster',
  create: async (options = {}) =>
    createEventLog({
      // 16 partitions: their hash slots spread over all three masters
      partitions: options.partitions ?? 16,
      log: silentLogger(),
      redis: { cluster: { nodes: started().nodes }, prefix: testPrefix('contract-cluster') },
      ...(options.retention ? { retention: options.retention } : {}),
      ...(options.tailBuffer ? { tailBuffer: options.tailBuffer } : {}),
    }),
});

describe('EventLog on a Redis Cluster', () => {
  it('stores each partition on the master owning its slot: the partitions spread over all three masters', async () => {
    const prefix = testPrefix('cluster-spread');
    const log = createEventLog({ partitions: 16, log: silentLogger(), redis: { cluster: { nodes: started().nodes }, prefix } });
    try {
      const rooms = Array.from({ length: 32 }, (_, i) => `spread-${i}`);
      for (const id of rooms) await log.rooms.put({ id, links: [] });
      for (const room of rooms) await log.append(message(room, `hello ${room}`));
      const read = await log.read(undefined, { rooms: 'all', limit: 100 });
      expect(read.events).toHaveLength(32);
      // every master of the cluster holds keys of this prefix; no replica answers for them
      const perMaster: number[] = [];
      for (const node of started().nodes) {
        const port = Number(node.slice(node.lastIndexOf(':') + 1));
        const role = String(await nodeCommand(port, 'INFO', 'replication'));
        if (!/^role:master/m.test(role)) continue;
        const [, keys] = (await nodeCommand(port, 'SCAN', '0', 'MATCH', `${prefix}*`, 'COUNT', '100000')) as [string, string[]];
        perMaster.push(keys.length);
      }
      expect(perMaster).toHaveLength(3);
      for (const n of perMaster) expect(n).toBeGreaterThan(0);
    } finally {
      await log.close();
    }
  });
});
