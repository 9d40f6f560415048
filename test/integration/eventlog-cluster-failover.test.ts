/**
 * A master of a real Redis Cluster is killed (-9) while appends stream into
 * the partition it owns. With redis.waitReplicas 1 every acknowledged event is
 * on the replica that gets promoted: after the failover each one is in the log
 * exactly once, in its room's order. One 6-node cluster for this file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventLog } from '../../src/core/ports.js';
import { partitionOf } from '../../src/core/position.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { waitFor } from '../harness/free-port.js';
import { testPrefix } from '../harness/redis.js';
import { clusterHealthy, nodeCommand, startRedisCluster, type TestRedisCluster } from '../harness/redis-cluster.js';

let cluster: TestRedisCluster | undefined;
beforeAll(async () => {
  cluster = await startRedisCluster();
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});

const PARTITIONS = 16;
const PER_ROOM = 60;

/** The sender's loop: the same draft again until it is acknowledged (the idempotency key makes that safe). */
async function appendUntilAcked(log: EventLog, room: string, body: string): Promise<string> {
  const draft = message(room, body);
  let eventId = '';
  await waitFor(
    async () => {
      try {
        eventId = (await log.append(draft)).eventId;
        return true;
      } catch {
        return false;
      }
    },
    { timeoutMs: 90_000, intervalMs: 100, what: `the append of ${body} to be acknowledged` },
  );
  return eventId;
}

/**
 * Kills (-9) the master that owns `room`'s partition, waits until its replica
 * is promoted, starts the killed node again and waits until it has rejoined
 * as a replica.
 */
async function failOverOwnerOf(c: TestRedisCluster, prefix: string, room: string): Promise<void> {
  // the master owning the room's partition answers EXISTS for its feed; the others say MOVED
  const feed = `${prefix}{p:${String(partitionOf(room, PARTITIONS)).padStart(2, '0')}}:feed`;
  let victim: number | undefined;
  for (const server of c.servers) {
    try {
      if (Number(await nodeCommand(server.port, 'EXISTS', feed)) === 1) victim = server.port;
    } catch {
      // MOVED: not the owner
    }
  }
  const victimServer = c.servers.find((s) => s.port === victim);
  expect(victimServer).toBeDefined();
  await victimServer?.kill();
  const survivors = c.servers.filter((s) => s.port !== victim).map((s) => s.port);
  // the replica is promoted: 3 masters, 2 replicas. Until the lost node is back (as the new
  // master's replica) WAIT cannot be satisfied on that shard: its appends fail and are retried.
  await waitFor(() => clusterHealthy(survivors, 3, 2), { timeoutMs: 60_000, intervalMs: 200, what: 'the replica to be promoted' });
  await victimServer?.restart();
  await waitFor(() => clusterHealthy(c.servers.map((s) => s.port), 3, 3), { timeoutMs: 60_000, intervalMs: 200, what: 'the restarted node to rejoin as a replica' });
}

/** Every event id in the log, and each room's message bodies in log order. */
async function readBack(log: EventLog, rooms: readonly string[]): Promise<{ seen: string[]; bodies: Map<string, string[]> }> {
  const seen: string[] = [];
  const bodies = new Map<string, string[]>(rooms.map((r) => [r, []]));
  let cursor: string | undefined;
  for (let page = 0; page < 100; page++) {
    const read = await log.read(cursor, { rooms: 'all', limit: 200 });
    for (const e of read.events) {
      seen.push(e.eventId);
      if (e.kind === 'message') bodies.get(e.room)?.push(e.content.body);
    }
    cursor = read.next;
    if (read.events.length === 0) break;
  }
  return { seen, bodies };
}

describe('event log on Redis Cluster across a master failover', () => {
  it('kill -9 of the master owning a busy partition, waitReplicas 1: every acknowledged event once, per-room order holds', async () => {
    const c = cluster;
    if (!c?.owned) throw new Error('this test kills a master: it needs the harness-started cluster (not REDIS_CLUSTER_NODES)');
    const prefix = testPrefix('failover');
    const log = createEventLog({ partitions: PARTITIONS, log: silentLogger(), redis: { cluster: { nodes: c.nodes }, prefix, waitReplicas: 1, waitTimeoutMs: 5_000 } });
    try {
      const rooms = Array.from({ length: 8 }, (_, i) => `fo-${i}`);
      for (const id of rooms) await log.rooms.put({ id, links: [] });
      const busy = rooms[0] ?? 'fo-0';
      const acked = new Map<string, Array<{ body: string; eventId: string }>>(rooms.map((r) => [r, []]));
      const writers = rooms.map(async (room) => {
        for (let i = 0; i < PER_ROOM; i++) {
          const body = `${room}:${i}`;
          const eventId = await appendUntilAcked(log, room, body);
          acked.get(room)?.push({ body, eventId });
        }
      });
      const writing = Promise.all(writers);

      await waitFor(() => (acked.get(busy)?.length ?? 0) >= 10, { timeoutMs: 60_000, what: 'the busy room to have 10 acknowledged events' });
      await failOverOwnerOf(c, prefix, busy);
      await writing;

      const { seen, bodies } = await readBack(log, rooms);
      // nothing doubled
      expect(new Set(seen).size).toBe(seen.length);
      for (const room of rooms) {
        const got = bodies.get(room) ?? [];
        expect(new Set(got).size).toBe(got.length);
        // every acknowledged event is there, with the id it was acknowledged with
        const mine = acked.get(room) ?? [];
        expect(mine).toHaveLength(PER_ROOM);
        for (const { eventId } of mine) expect(seen).toContain(eventId);
        // in the room's order
        expect(got).toEqual(mine.map((a) => a.body));
      }
    } finally {
      await log.close();
    }
  }, 240_000);

  it('the same with waitReplicas 0: reports how many acknowledged events were lost, recovers, and doubles nothing', async () => {
    const c = cluster;
    if (!c?.owned) throw new Error('this test kills a master: it needs the harness-started cluster (not REDIS_CLUSTER_NODES)');
    await waitFor(() => clusterHealthy(c.servers.map((s) => s.port), 3, 3), { timeoutMs: 60_000, intervalMs: 200, what: 'a healthy cluster to start from' });
    const prefix = testPrefix('failover0');
    const log = createEventLog({ partitions: PARTITIONS, log: silentLogger(), redis: { cluster: { nodes: c.nodes }, prefix } });
    try {
      const rooms = Array.from({ length: 8 }, (_, i) => `z-${i}`);
      for (const id of rooms) await log.rooms.put({ id, links: [] });
      const busy = rooms[0] ?? 'z-0';
      const acked = new Map<string, Array<{ body: string; eventId: string }>>(rooms.map((r) => [r, []]));
      const writing = Promise.all(
        rooms.map(async (room) => {
          for (let i = 0; i < PER_ROOM; i++) {
            const body = `${room}:${i}`;
            acked.get(room)?.push({ body, eventId: await appendUntilAcked(log, room, body) });
          }
        }),
      );
      await waitFor(() => (acked.get(busy)?.length ?? 0) >= 10, { timeoutMs: 60_000, what: 'the busy room to have 10 acknowledged events' });
      await failOverOwnerOf(c, prefix, busy);
      // recovers: every writer got all its appends acknowledged after the failover
      await writing;

      const { seen, bodies } = await readBack(log, rooms);
      expect(new Set(seen).size).toBe(seen.length);
      let lost = 0;
      for (const room of rooms) {
        const got = bodies.get(room) ?? [];
        expect(new Set(got).size).toBe(got.length);
        const mine = acked.get(room) ?? [];
        expect(mine).toHaveLength(PER_ROOM);
        const present = new Set(got);
        lost += mine.filter((a) => !present.has(a.body)).length;
        // what is there is in the room's order, and nothing is there that was not acknowledged
        expect(got).toEqual(mine.map((a) => a.body).filter((b) => present.has(b)));
      }
      // the documented trade-off: not asserted to be zero
      console.info(`waitReplicas 0 failover: ${lost} of ${rooms.length * PER_ROOM} acknowledged events lost`);
    } finally {
      await log.close();
    }
  }, 240_000);
});
