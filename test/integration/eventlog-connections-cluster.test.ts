/**
 * Redis connections do not grow with the partition count on a Redis Cluster
 * either: a gateway at 1,024 partitions on the harness cluster (3 masters,
 * 3 replicas), with an adapter whose delivery workers wait on every
 * partition and a device long-polling, holds at most 32 connections over
 * all nodes: the live reads of the partitions of one key group (one hash
 * slot, keys.ts) share one blocking XREAD, one connection per group, to the
 * group's master. A send still reaches the long-poll and the adapter at once.
 */
import { describe, expect, it } from 'vitest';
import { waitFor } from '../harness/free-port.js';
import { startGateway } from '../harness/gateway.js';
import { testPrefix } from '../harness/redis.js';
import { connectionKinds, connectionsOf } from '../harness/redis-connections.js';
import { useRedisCluster } from '../harness/redis-cluster-suite.js';
import { TestAdapter, memoryRecorder } from '../harness/test-adapter.js';

const PARTITIONS = 1024;
const { started } = useRedisCluster();

/** The connections this gateway holds on every node of the cluster: each is named after its key prefix. */
const connectionsOfGateway = (prefix: string) => connectionsOf(started().nodes, prefix);

describe('Redis Cluster connections at 1,024 partitions', () => {
  it('stay at most 32 over all nodes with delivery workers on every partition and a long-poll open, and live delivery is immediate', async () => {
    const prefix = testPrefix('cconns');
    const recorder = memoryRecorder();
    const gw = await startGateway({
      config: { partitions: PARTITIONS, redis: { cluster: { nodes: started().nodes }, prefix } },
      extraAdapters: ({ sink }) => [new TestAdapter('remote', sink, recorder)],
    });
    try {
      await waitFor(async () => (await gw.gateway.status()).adapters['remote']?.delivery.partitionsHeld === PARTITIONS, { timeoutMs: 120_000, what: 'every delivery lease held' });
      expect((await gw.admin('PUT', '/v1/admin/rooms/ops', { links: [{ endpoint: 'remote', target: 'ops@remote' }] })).status).toBe(200);
      const token = await gw.deviceToken('alice', ['ops']);
      const head = await gw.device<{ next: string }>(token, 'GET', '/v1/sync?limit=10');
      const poll = gw.device<{ events: Array<{ eventId: string }> }>(token, 'GET', `/v1/sync?since=${encodeURIComponent(head.body.next)}&timeout=30000`);
      // every key group has a live reader: the workers wait on every partition
      await waitFor(async () => (await connectionsOfGateway(prefix)).filter((c) => c.name.includes('tail:')).length >= 18, { timeoutMs: 60_000, what: 'the live readers of every key group to connect' });
      const during = await connectionsOfGateway(prefix);
      const sent = await gw.device<{ eventId: string }>(token, 'PUT', '/v1/rooms/ops/send/t1', { kind: 'message', content: { body: 'hello' } });
      expect(sent.status).toBe(200);
      const answered = await poll;
      expect(answered.body.events.map((e) => e.eventId)).toEqual([sent.body.eventId]);
      await waitFor(async () => (await recorder.all()).some((d) => d.eventId === sent.body.eventId), { timeoutMs: 15_000, what: 'the send delivered to the adapter' });
      const after = await connectionsOfGateway(prefix);
      const kinds = connectionKinds(after, prefix);
      process.stdout.write(`cluster connections at ${PARTITIONS} partitions: ${during.length} with a long-poll open, ${after.length} after, over ${new Set(after.map((c) => c.port)).size} nodes (${kinds})\n`);
      // one blocking connection per key group, each on the master owning its slot
      expect(during.filter((c) => c.name.includes('tail:')).length).toBe(18);
      expect(during.length).toBeLessThanOrEqual(32);
      expect(after.length).toBeLessThanOrEqual(32);
    } finally {
      await gw.stop();
    }
  }, 300_000);
});
