/**
 * Redis connections do not grow with the partition count: a gateway at
 * 1,024 partitions on one Redis, with an adapter whose delivery workers wait
 * on every partition and a device long-polling, holds at most 32 connections
 * (its live reads share a pool of blocking connections), and a send still
 * reaches the long-poll and the adapter at once.
 */
import { describe, expect, inject, it } from 'vitest';
import { waitFor } from '../harness/free-port.js';
import { startGateway } from '../harness/gateway.js';
import { testPrefix } from '../harness/redis.js';
import { connectionKinds, connectionsOf } from '../harness/redis-connections.js';
import { TestAdapter, memoryRecorder } from '../harness/test-adapter.js';

const PARTITIONS = 1024;
/** The connections this gateway holds: every one is named after its key prefix. */
const connectionsOfGateway = (prefix: string) => connectionsOf([inject('redisUrl')], prefix);

describe('Redis connections at 1,024 partitions', () => {
  it('stay at most 32 with delivery workers on every partition and a long-poll open, and live delivery is immediate', async () => {
    const prefix = testPrefix('conns');
    const recorder = memoryRecorder();
    const gw = await startGateway({
      redisUrl: inject('redisUrl'),
      prefix,
      config: { partitions: PARTITIONS },
      extraAdapters: ({ sink }) => [new TestAdapter('remote', sink, recorder)],
    });
    try {
      await waitFor(async () => (await gw.gateway.status()).adapters['remote']?.delivery.partitionsHeld === PARTITIONS, { timeoutMs: 60_000, what: 'every delivery lease held' });
      expect((await gw.admin('PUT', '/v1/admin/rooms/ops', { links: [{ endpoint: 'remote', target: 'ops@remote' }] })).status).toBe(200);
      const token = await gw.deviceToken('alice', ['ops']);
      const head = await gw.device<{ next: string }>(token, 'GET', '/v1/sync?limit=10');
      const poll = gw.device<{ events: Array<{ eventId: string }> }>(token, 'GET', `/v1/sync?since=${encodeURIComponent(head.body.next)}&timeout=30000`);
      // the long-poll's tail and every worker's wait are live readers of their partitions
      await waitFor(async () => (await connectionsOfGateway(prefix)).filter((c) => c.name.includes('tail:')).length > 0, { timeoutMs: 30_000, what: 'the live readers to connect' });
      const during = await connectionsOfGateway(prefix);
      const sent = await gw.device<{ eventId: string }>(token, 'PUT', '/v1/rooms/ops/send/t1', { kind: 'message', content: { body: 'hello' } });
      expect(sent.status).toBe(200);
      const answered = await poll;
      expect(answered.body.events.map((e) => e.eventId)).toEqual([sent.body.eventId]);
      await waitFor(async () => (await recorder.all()).some((d) => d.eventId === sent.body.eventId), { timeoutMs: 15_000, what: 'the send delivered to the adapter' });
      const after = await connectionsOfGateway(prefix);
      process.stdout.write(`connections at ${PARTITIONS} partitions: ${during.length} with a long-poll open, ${after.length} after (${connectionKinds(after, prefix)})\n`);
      expect(during.length).toBeLessThanOrEqual(32);
      expect(after.length).toBeLessThanOrEqual(32);
    } finally {
      await gw.stop();
    }
  }, 180_000);
});
