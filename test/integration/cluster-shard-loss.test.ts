/**
 * A Redis Cluster (`cluster-require-full-coverage no`) loses one shard for
 * good: its replica dies, then its master (kill -9), so nothing can be
 * promoted. The gateway keeps running: sends and reads of rooms whose
 * partition lived on that shard answer 503 SG_ERR_LOG_PARTITION_UNAVAILABLE
 * within seconds, every other room is sent, synced and delivered as before,
 * and /readyz and GET /v1/admin/status name the unavailable partitions.
 */
import { describe, expect, it } from 'vitest';
import { waitFor } from '../harness/free-port.js';
import { startGateway } from '../harness/gateway.js';
import { testPrefix } from '../harness/redis.js';
import { moveSlot, nodeCommand, slotShard } from '../harness/redis-cluster.js';
import { useRedisCluster } from '../harness/redis-cluster-suite.js';
import { firstPerPartition, placeRooms } from '../harness/room-partition.js';
import { TestAdapter, memoryRecorder } from '../harness/test-adapter.js';
import { GROUP_TAGS, LATEST_KEY_LAYOUT, keySpace } from '../../src/eventlog/keys.js';

const PARTITIONS = 16;

const { owned } = useRedisCluster({ requireFullCoverage: false });

const tag = (prefix: string, p: number) => keySpace(prefix, LATEST_KEY_LAYOUT).feed(p);

/** Every key of the prefix outside the key groups' slots (room index, users, devices, grants, rate-limit counters …), by slot. */
async function globalKeySlots(masters: readonly number[], prefix: string): Promise<Set<number>> {
  const slots = new Set<number>();
  for (const port of masters) {
    const [, keys] = (await nodeCommand(port, 'SCAN', '0', 'MATCH', `${prefix}*`, 'COUNT', '100000')) as [string, string[]];
    for (const key of keys.filter((k) => !GROUP_TAGS.some((t) => k.includes(`{${t}}`)))) slots.add(Number(await nodeCommand(port, 'CLUSTER', 'KEYSLOT', key)));
  }
  return slots;
}

describe('a Redis Cluster that loses a shard with no replica', () => {
  it('answers coded errors for the lost partitions, keeps the others working, and readiness names the lost ones', async () => {
    const c = owned();
    const seed = c.servers[0]?.port ?? 0;
    const prefix = testPrefix('shardloss');
    const recorder = memoryRecorder();
    const gw = await startGateway({
      config: { partitions: PARTITIONS, redis: { cluster: { nodes: c.nodes }, prefix } },
      delivery: { leaseMs: 1500 },
      extraAdapters: ({ sink }) => [new TestAdapter('remote', sink, recorder)],
    });
    try {
      // one room per partition, all linked to the adapter (created until every partition has one;
      // where each went is read from the room directory)
      const placed = await placeRooms(
        gw.gateway.log,
        'r',
        (sofar) => new Set(sofar.values()).size === PARTITIONS,
        async (room) => expect((await gw.admin('PUT', `/v1/admin/rooms/${room}`, { links: [{ endpoint: 'remote', target: `t-${room}` }] })).status).toBe(200),
      );
      const firsts = firstPerPartition(placed);
      const rooms = [...firsts.values()];
      const partitionOf = (room: string) => placed.get(room) ?? -1;
      const token = await gw.deviceToken('alice', rooms);
      for (const room of rooms) expect((await gw.device(token, 'PUT', `/v1/rooms/${room}/send/before`, { kind: 'message', content: { body: `before ${room}` } })).status).toBe(200);
      const head = await gw.device<{ next: string; events: unknown[] }>(token, 'GET', '/v1/sync?limit=100');
      expect(head.body.events).toHaveLength(PARTITIONS);
      await waitFor(async () => (await recorder.all()).length === PARTITIONS, { timeoutMs: 30_000, what: 'the first events delivered' });

      // The victim: a master not holding partition 0 (the adapters' connection leases live there).
      // The keys outside partitions are single keys that every request needs (users, devices,
      // grants, the room index): their slots move to the other masters first, so that the lost
      // shard holds partitions only — what this test is about.
      const owners = await Promise.all(Array.from({ length: PARTITIONS }, async (_, p) => (await slotShard(seed, Number(await nodeCommand(seed, 'CLUSTER', 'KEYSLOT', tag(prefix, p))))).master));
      const masters = [...new Set(owners)];
      expect(masters).toHaveLength(3);
      const victim = masters.find((m) => m !== owners[0]) ?? 0;
      const keeper = owners[0] ?? 0;
      const lost = owners.flatMap((m, p) => (m === victim ? [p] : []));
      expect(lost.length).toBeGreaterThan(0);
      const lostRooms = rooms.filter((r) => lost.includes(partitionOf(r)));
      const liveRooms = rooms.filter((r) => !lost.includes(partitionOf(r)));
      // a device whose rooms all live on the shard to be lost (made, and used once, now: its keys exist before the scan)
      const lostOnly = await gw.deviceToken('bob', [lostRooms[0] ?? '']);
      expect((await gw.device(lostOnly, 'GET', '/v1/whoami')).status).toBe(200);
      for (const slot of await globalKeySlots(masters, prefix)) {
        if ((await slotShard(seed, slot)).master === victim) await moveSlot(masters, slot, keeper);
      }

      // its replica first, then the master: nothing can take over
      const shard = await slotShard(seed, Number(await nodeCommand(seed, 'CLUSTER', 'KEYSLOT', tag(prefix, lost[0] ?? 0))));
      for (const port of shard.replicas) await c.servers.find((s) => s.port === port)?.kill();
      await c.servers.find((s) => s.port === victim)?.kill();
      const survivors = c.servers.filter((s) => s.alive).map((s) => s.port);
      await waitFor(async () => String(await nodeCommand(survivors[0] ?? 0, 'CLUSTER', 'NODES')).split('\n').some((l) => l.includes(`:${victim}@`) && / master,fail /.test(l)), {
        timeoutMs: 30_000,
        intervalMs: 200,
        what: 'the cluster to mark the lost master as failed',
      });

      // readiness: still serving, degraded, naming the lost partitions
      const ready = await fetch(`${gw.url}/readyz`);
      const readiness = (await ready.json()) as { status: string; unavailablePartitions?: number[]; checks: Record<string, { ok: boolean; detail?: string }> };
      expect(ready.status).toBe(200);
      expect(readiness.status).toBe('degraded');
      expect(readiness.unavailablePartitions).toEqual(lost);
      expect(readiness.checks['partitions']?.ok).toBe(false);
      const status = await gw.admin<{ log: { available: boolean; unavailablePartitions: number[] } }>('GET', '/v1/admin/status');
      expect(status.body.log.unavailablePartitions).toEqual(lost);

      // a lost room: a coded 503, in bounded time, for a send and for a history read
      const started = Date.now();
      const refused = await gw.device<{ code: string }>(token, 'PUT', `/v1/rooms/${lostRooms[0] ?? ''}/send/during`, { kind: 'message', content: { body: 'lost' } });
      expect(refused.status).toBe(503);
      expect(refused.body.code).toBe('SG_ERR_LOG_PARTITION_UNAVAILABLE');
      expect(Date.now() - started).toBeLessThan(20_000);
      const history = await gw.device<{ code: string }>(token, 'GET', `/v1/rooms/${lostRooms[0] ?? ''}/messages?dir=b&limit=10`);
      expect(history.status).toBe(503);
      expect(history.body.code).toBe('SG_ERR_LOG_PARTITION_UNAVAILABLE');

      // the other rooms: sent, synced from the earlier cursor (the lost partitions keep their position), delivered
      const sent: string[] = [];
      for (const room of liveRooms) {
        const res = await gw.device<{ eventId: string }>(token, 'PUT', `/v1/rooms/${room}/send/during`, { kind: 'message', content: { body: `during ${room}` } });
        expect(res.status).toBe(200);
        sent.push(res.body.eventId);
      }
      const sync = await gw.device<{ events: Array<{ eventId: string }> }>(token, 'GET', `/v1/sync?since=${encodeURIComponent(head.body.next)}&limit=100&timeout=0`);
      expect(sync.status).toBe(200);
      expect(sync.body.events.map((e) => e.eventId).sort()).toEqual([...sent].sort());
      await waitFor(async () => {
        const all = await recorder.all();
        return sent.every((id) => all.some((d) => d.eventId === id));
      }, { timeoutMs: 30_000, what: 'the other rooms delivered' });

      // a device whose rooms all lived on the lost shard gets the code, not an empty answer
      const lostSync = await gw.device<{ code: string }>(lostOnly, 'GET', `/v1/sync?since=${encodeURIComponent(head.body.next)}&limit=10&timeout=0`);
      expect(lostSync.status).toBe(503);
      expect(lostSync.body.code).toBe('SG_ERR_LOG_PARTITION_UNAVAILABLE');
      expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
    } finally {
      await gw.stop();
    }
  }, 240_000);
});
