/**
 * A log created before key layout 2 (issue 24) keeps working on a Redis
 * Cluster with the names it has: no `layout` stored means layout 1, one hash
 * tag `{p:NN}` per partition. Its rooms, appends, reads, live tails (the
 * pooled live reads, one group per partition there) and delivery leases
 * (one per partition) use those keys, and a raise of its partition count
 * keeps the layout; nothing is renamed.
 */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createEventLog } from '../../src/eventlog/index.js';
import { keySpace } from '../../src/eventlog/keys.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { testPrefix } from '../harness/redis.js';
import { parseSeed } from '../../src/eventlog/redis-backend.js';
import { useRedisCluster } from '../harness/redis-cluster-suite.js';
import { partitionOfRoom } from '../harness/room-partition.js';

const { started } = useRedisCluster();

describe('a layout-1 log on a Redis Cluster', () => {
  it('keeps its key names for rooms, events, live tails and leases, also after a raise', async () => {
    const prefix = testPrefix('layout1');
    const admin = new Redis.Cluster(started().nodes.map(parseSeed));
    try {
      // the log as a build before layout 2 left it: a stored count and format, no layout
      await admin.hset(`${prefix}{log}:partitions`, 'partitions', 16, 'format', 2);
      const open = (partitions: number) => createEventLog({ partitions, log: silentLogger(), redis: { cluster: { nodes: started().nodes }, prefix } });
      const log = open(16);
      const rooms = Array.from({ length: 6 }, (_, i) => `old-${i}`);
      for (const id of rooms) await log.rooms.put({ id, links: [] });
      const keys = keySpace(prefix);
      expect(keys.layout).toBe(1);
      for (const room of rooms) expect(await admin.exists(keys.roomMeta(await partitionOfRoom(log, room), room))).toBe(1);

      // a live tail from the start, then appends: every event once, in order
      const it = log.tail(undefined, { rooms: new Set(rooms) })[Symbol.asyncIterator]();
      const sent: string[] = [];
      for (let i = 0; i < 24; i++) sent.push((await log.append(message(rooms[i % rooms.length] ?? '', `m${i}`))).eventId);
      const tailed: string[] = [];
      while (tailed.length < sent.length) {
        const r = await it.next();
        if (r.done) break;
        if (r.value.type === 'event') tailed.push(r.value.event.eventId);
      }
      await it.return?.();
      expect([...tailed].sort()).toEqual([...sent].sort());
      for (const room of rooms) expect(await admin.xlen(keys.room(await partitionOfRoom(log, room), room))).toBe(4);

      // delivery leases: one per partition, under the partition's own tag
      expect(await log.delivery.acquireLease(3, 'out:x', 'me', 60_000)).toBe(true);
      expect(await log.delivery.acquireLease(3 + 18, 'out:x', 'other', 60_000)).toBe(true);
      expect(await admin.get(`${prefix}{p:03}:lease:out:x`)).toBe('me');
      expect(await admin.get(`${prefix}{p:21}:lease:out:x`)).toBe('other');
      await log.close();

      // raised to 64: still layout 1, old rooms where they were, new partitions under {p:NN}
      const raised = open(64);
      await raised.open();
      expect(raised.info.partitions).toBe(64);
      expect(await admin.hget(`${prefix}{log}:partitions`, 'layout')).toBeNull();
      const { events } = await raised.read(undefined, { rooms: new Set(rooms), limit: 100 });
      expect(events.map((e) => e.eventId).sort()).toEqual([...sent].sort());
      await raised.rooms.put({ id: 'new-room', links: [] });
      const appended = await raised.append(message('new-room', 'after the raise'));
      expect(appended.duplicate).toBe(false);
      const p = Number(await admin.hget(`${prefix}{log}:room-partition`, 'new-room'));
      expect(await admin.xlen(keys.room(p, 'new-room'))).toBe(1);
      await raised.close();
    } finally {
      admin.disconnect();
    }
  }, 120_000);
});
