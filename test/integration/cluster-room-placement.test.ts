/**
 * Room placement on a Redis Cluster: `balanced` is the default there
 * (room-placement.ts). Switching the default on an existing log moves no
 * room: a log written with hash placement and opened again with the default
 * keeps every old room in its partition and every cursor valid, and places
 * only new rooms balanced. Replicas placing differently (hash and balanced)
 * never place one new room twice: the assign script stores the first
 * placement and returns it to every later caller.
 */
import { describe, expect, it } from 'vitest';
import { partitionOf } from '../../src/core/position.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { LATEST_KEY_LAYOUT, keySpace } from '../../src/eventlog/keys.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { testPrefix } from '../harness/redis.js';
import { nodeCommand, shardOf } from '../harness/redis-cluster.js';
import { useRedisCluster } from '../harness/redis-cluster-suite.js';
import { partitionOfRoom } from '../harness/room-partition.js';

const { started } = useRedisCluster();
const PARTITIONS = 16;

const seedPort = () => {
  const seed = started().nodes[0] ?? '';
  return Number(seed.slice(seed.lastIndexOf(':') + 1));
};

/** partition → the port of the master holding its feed */
async function mastersOfPartitions(prefix: string): Promise<number[]> {
  const keys = keySpace(prefix, LATEST_KEY_LAYOUT);
  return Promise.all(Array.from({ length: PARTITIONS }, async (_, p) => (await shardOf(seedPort(), keys.feed(p))).master));
}

const open = (prefix: string, roomPlacement?: 'hash' | 'balanced') =>
  createEventLog({ partitions: PARTITIONS, log: silentLogger(), redis: { cluster: { nodes: started().nodes }, prefix, ...(roomPlacement ? { roomPlacement } : {}) } });

describe('room placement on a Redis Cluster', () => {
  it('a log written with hash placement, opened with the default: old rooms keep their partitions and cursors, new rooms are placed balanced', async () => {
    const prefix = testPrefix('place-switch');
    const hashLog = open(prefix, 'hash');
    await hashLog.open();
    const masters = await mastersOfPartitions(prefix);
    expect(new Set(masters).size).toBe(3);
    // old rooms whose hash partitions all lie on one master, which then carries all the traffic
    const busyMaster = masters[0] ?? 0;
    const onBusy = (room: string) => masters[partitionOf(room, PARTITIONS)] === busyMaster;
    const old: string[] = [];
    for (let i = 0; old.length < 4; i++) if (onBusy(`old${i}`)) old.push(`old${i}`);
    for (const id of old) await hashLog.rooms.put({ id, links: [] });
    const oldPartitions = await Promise.all(old.map((room) => partitionOfRoom(hashLog, room)));
    // placed by hash, as configured
    expect(oldPartitions).toEqual(old.map((room) => partitionOf(room, PARTITIONS)));
    const before: string[] = [];
    for (let i = 0; i < 20; i++) before.push((await hashLog.append(message(old[i % old.length] ?? '', `before ${i}`))).eventId);
    const cursor = await hashLog.head();
    await hashLog.close();

    // the same log opened with the default placement (a cluster: balanced)
    const log = open(prefix);
    try {
      await log.open();
      expect(await Promise.all(old.map((room) => partitionOfRoom(log, room)))).toEqual(oldPartitions);
      for (const [i, id] of before.entries()) expect((await log.getEvent(old[i % old.length] ?? '', id))?.eventId).toBe(id);
      // new rooms whose hash partitions are on the busy master too: by hash they would go there, balanced they go elsewhere
      const fresh: string[] = [];
      for (let i = 0; fresh.length < 6; i++) if (onBusy(`new${i}`)) fresh.push(`new${i}`);
      for (const id of fresh) await log.rooms.put({ id, links: [] });
      const freshMasters = await Promise.all(fresh.map(async (room) => masters[await partitionOfRoom(log, room)]));
      expect(freshMasters).not.toContain(busyMaster);
      // spread over the two lighter masters, 3 / 3 (ties broken by the fewest rooms)
      expect(new Set(freshMasters).size).toBe(2);
      // the old cursor still reads exactly what came after it, in old and new rooms
      const after: string[] = [];
      for (const room of [...old, ...fresh]) after.push((await log.append(message(room, `after in ${room}`))).eventId);
      const read = await log.read(cursor, { rooms: 'all', limit: 100 });
      expect(read.events.map((e) => e.eventId).sort()).toEqual([...after].sort());
      // and a replica still placing by hash finds the new rooms where they were placed
      const hashReplica = open(prefix, 'hash');
      try {
        for (const room of fresh) expect(await partitionOfRoom(hashReplica, room)).toBe(await partitionOfRoom(log, room));
        const fromReplica = await hashReplica.read(cursor, { rooms: new Set(fresh), limit: 100 });
        expect(fromReplica.events.map((e) => e.room).sort()).toEqual([...fresh].sort());
      } finally {
        await hashReplica.close();
      }
    } finally {
      await log.close();
    }
  }, 120_000);

  it('replicas placing by hash and balanced create the same new rooms at once: each room gets one partition, counted once', async () => {
    const prefix = testPrefix('place-mixed');
    const hashLog = open(prefix, 'hash');
    const balancedLog = open(prefix);
    try {
      await Promise.all([hashLog.open(), balancedLog.open()]);
      const masters = await mastersOfPartitions(prefix);
      // traffic on one master, so balanced placement avoids it while hash placement does not
      const busyMaster = masters[0] ?? 0;
      const busyRoom = Array.from({ length: 100 }, (_, i) => `busy${i}`).find((room) => masters[partitionOf(room, PARTITIONS)] === busyMaster) ?? '';
      await hashLog.rooms.put({ id: busyRoom, links: [] });
      for (let i = 0; i < 30; i++) await hashLog.append(message(busyRoom, `load ${i}`));

      // rooms whose hash partitions lie on the busy master: the two placements disagree on every one
      const onBusy = (tag: string, count: number) => {
        const found: string[] = [];
        for (let i = 0; found.length < count; i++) if (masters[partitionOf(`${tag}${i}`, PARTITIONS)] === busyMaster) found.push(`${tag}${i}`);
        return found;
      };
      // created by the balanced replica first: the hash replica finds it off the busy master
      for (const id of onBusy('bal-first', 6)) {
        await balancedLog.rooms.put({ id, links: [] });
        await hashLog.rooms.put({ id, links: [] });
        const p = await partitionOfRoom(hashLog, id);
        expect(p).toBe(await partitionOfRoom(balancedLog, id));
        expect(masters[p]).not.toBe(busyMaster);
      }
      // created by the hash replica first: the balanced replica finds it on the busy master
      for (const id of onBusy('hash-first', 6)) {
        await hashLog.rooms.put({ id, links: [] });
        await balancedLog.rooms.put({ id, links: [] });
        const p = await partitionOfRoom(balancedLog, id);
        expect(p).toBe(partitionOf(id, PARTITIONS));
        expect(masters[p]).toBe(busyMaster);
      }
      // created by both at once: whichever assign runs first decides, for both
      const rooms = onBusy('both', 40);
      await Promise.all(rooms.flatMap((id) => [hashLog.rooms.put({ id, links: [] }), balancedLog.rooms.put({ id, links: [] })]));

      const byHash = await Promise.all(rooms.map((room) => partitionOfRoom(hashLog, room)));
      const byBalanced = await Promise.all(rooms.map((room) => partitionOfRoom(balancedLog, room)));
      expect(byBalanced).toEqual(byHash);
      // a third replica reads the same from the directory
      const reader = open(prefix, 'hash');
      try {
        expect(await Promise.all(rooms.map((room) => partitionOfRoom(reader, room)))).toEqual(byHash);
        // each room counted once in the rooms per partition (the placement's tie-breaker)
        const counts = (await nodeCommand((await shardOf(seedPort(), keySpace(prefix, LATEST_KEY_LAYOUT).roomCounts())).master, 'HGETALL', keySpace(prefix, LATEST_KEY_LAYOUT).roomCounts())) as string[];
        let total = 0;
        for (let i = 1; i < counts.length; i += 2) total += Number(counts[i]);
        expect(total).toBe(1 + 6 + 6 + rooms.length);
        // events appended through either replica land in the room's one partition, in order
        for (const room of rooms.slice(0, 8)) {
          const a = await hashLog.append(message(room, 'via hash'));
          const b = await balancedLog.append(message(room, 'via balanced'));
          const history = await reader.roomHistory(room, { dir: 'f', limit: 10 });
          expect(history.events.map((e) => e.eventId)).toEqual([a.eventId, b.eventId]);
        }
      } finally {
        await reader.close();
      }
    } finally {
      await Promise.all([hashLog.close(), balancedLog.close()]);
    }
  }, 120_000);
});
