/**
 * A layout-2 log's key group count is chosen when the log is created
 * (`redis.keyGroups`, default 18; issue 24): the log spreads over at most
 * that many masters, one hash slot per group, and a replica holds one live
 * read connection per group. On the harness cluster (3 masters) a log of 24
 * groups puts 8 group slots on each master, its live reads use 24
 * connections, each to its group's master, and appends, reads and a live
 * tail over every partition work as with 18. With balanced room placement
 * (`redis.roomPlacement`) the rooms of a 16-partition log spread evenly over
 * the 3 masters although its partitions fall 6 / 5 / 5.
 */
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import type { LogEvent } from '../../src/core/event.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { hashSlot, keySpace } from '../../src/eventlog/keys.js';
import { parseSeed } from '../../src/eventlog/redis-backend.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { waitFor } from '../harness/free-port.js';
import { testPrefix } from '../harness/redis.js';
import { nodeCommand } from '../harness/redis-cluster.js';
import { useRedisCluster } from '../harness/redis-cluster-suite.js';
import { firstPerPartition, placeRooms } from '../harness/room-partition.js';
import { connectionsOf, portOf } from '../harness/redis-connections.js';

const { started } = useRedisCluster();
const PARTITIONS = 48;
const GROUPS = 24;

/** master port → its slot ranges, as the cluster reports them */
async function slotOwners(): Promise<Array<{ port: number; ranges: Array<[number, number]> }>> {
  const slots = (await nodeCommand(portOf(started().nodes[0] ?? ''), 'CLUSTER', 'SLOTS')) as Array<[number, number, [string, number, ...unknown[]]]>;
  const byPort = new Map<number, Array<[number, number]>>();
  for (const [from, to, [, port]] of slots) byPort.set(port, [...(byPort.get(port) ?? []), [from, to]]);
  return [...byPort].map(([port, ranges]) => ({ port, ranges }));
}

describe('key groups chosen at creation, on a Redis Cluster', () => {
  it('a log of 24 groups spreads 8 / 8 / 8 over 3 masters, reads live with one connection per group, and loses nothing', async () => {
    const prefix = testPrefix('cgroups24');
    const log = createEventLog({ partitions: PARTITIONS, log: silentLogger(), redis: { cluster: { nodes: started().nodes }, prefix, keyGroups: GROUPS } });
    // one room per partition (created until every partition has one)
    const rooms = [...firstPerPartition(await placeRooms(log, 'kg', (placed) => new Set(placed.values()).size === PARTITIONS)).values()];

    const keys = keySpace(prefix, 2);
    keys.setLayout(2, GROUPS);
    const owners = await slotOwners();
    const perMaster = owners.map(({ ranges }) => new Set(Array.from({ length: GROUPS }, (_, g) => hashSlot(keys.feed(g))).filter((s) => ranges.some(([a, b]) => s >= a && s <= b))).size);
    expect(perMaster.sort()).toEqual([8, 8, 8]);

    // a live tail over every room: each key group's partitions are read by one blocking connection
    const head = await log.head(new Set(rooms));
    const abort = new AbortController();
    const seen: LogEvent[] = [];
    const tailing = (async () => {
      for await (const item of log.tail(head, { rooms: new Set(rooms), signal: abort.signal })) {
        if (item.type === 'event') seen.push(item.event);
        if (seen.length === 2 * rooms.length) break;
      }
    })();
    const connections = async () => (await connectionsOf(started().nodes, prefix)).filter((c) => c.name.startsWith(`${prefix}tail:`));
    await waitFor(async () => (await connections()).length === GROUPS, { timeoutMs: 60_000, what: 'a live reader per key group' });
    for (let round = 0; round < 2; round++) await Promise.all(rooms.map((room) => log.append(message(room, `${room}-${round}`))));
    await waitFor(() => seen.length === 2 * rooms.length, { timeoutMs: 60_000, what: 'every event through the live tail' });
    abort.abort();
    await tailing.catch(() => undefined);

    const live = await connections();
    expect(new Set(live.map((c) => c.name)).size).toBe(GROUPS);
    // each group's reader is on the master owning the group's slot
    for (const { port, name } of live) {
      const g = Number(/tail:g(\d+)$/.exec(name)?.[1]);
      const owner = owners.find(({ ranges }) => ranges.some(([a, b]) => hashSlot(keys.feed(g)) >= a && hashSlot(keys.feed(g)) <= b));
      expect(port, name).toBe(owner?.port);
    }
    for (const room of rooms) expect(seen.filter((e) => e.room === room).map((e) => (e.kind === 'message' ? e.content.body : ''))).toEqual([`${room}-0`, `${room}-1`]);
    const { events } = await log.read(undefined, { rooms: new Set(rooms), limit: 200 });
    expect(events).toHaveLength(2 * rooms.length);
    await log.close();
  });

  it('balanced room placement: 16 partitions fall 6 / 5 / 5 on 3 masters, their rooms 1 / 1 / 1', async () => {
    const prefix = testPrefix('cplacement');
    const log = createEventLog({ partitions: 16, log: silentLogger(), redis: { cluster: { nodes: started().nodes }, prefix, roomPlacement: 'balanced' } });
    const rooms = Array.from({ length: 300 }, (_, i) => `bal${i}`);
    for (let i = 0; i < rooms.length; i += 64) await Promise.all(rooms.slice(i, i + 64).map((id) => log.rooms.put({ id, links: [] })));
    const keys = keySpace(prefix, 2);
    const owners = await slotOwners();
    const masterOf = (p: number) => owners.findIndex(({ ranges }) => ranges.some(([a, b]) => hashSlot(keys.feed(p)) >= a && hashSlot(keys.feed(p)) <= b));
    const partitionsPerMaster = owners.map((_, m) => Array.from({ length: 16 }, (_, p) => masterOf(p)).filter((x) => x === m).length);
    expect([...partitionsPerMaster].sort()).toEqual([5, 5, 6]);
    const admin = new Redis.Cluster(started().nodes.map(parseSeed));
    const directory = await admin.hgetall(keys.roomPartitions());
    await admin.quit();
    expect(Object.keys(directory).sort()).toEqual([...rooms].sort());
    const roomsPerMaster = owners.map(() => 0);
    for (const p of Object.values(directory)) roomsPerMaster[masterOf(Number(p))]! += 1;
    expect(Math.max(...roomsPerMaster) - Math.min(...roomsPerMaster), roomsPerMaster.join(' / ')).toBeLessThanOrEqual(1);
    await log.close();
  });
});
