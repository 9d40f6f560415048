/**
 * Resharding a running Redis Cluster (issue 24): the hash slot of one key
 * group (keys.ts, layout 2: the partitions p ≡ g mod 18 share one slot) is
 * moved to another master, the way `redis-cli --cluster reshard` moves a
 * slot (IMPORTING / MIGRATING, MIGRATE of its keys, SETSLOT NODE), while
 * writers append to rooms in several partitions of that group and to rooms
 * elsewhere, and a device tails all of them. Afterwards: every acknowledged
 * event is in the log once, in its room's order, with the id it was
 * acknowledged with; the tail saw each once, in room order, with no gap;
 * appends keep going to the new master.
 */
import { describe, expect, it } from 'vitest';
import { createEventLog } from '../../src/eventlog/index.js';
import { KEY_GROUPS, LATEST_KEY_LAYOUT, hashSlot, keyGroupOf, keySpace } from '../../src/eventlog/keys.js';
import { silentLogger } from '../../src/log/index.js';
import { waitFor } from '../harness/free-port.js';
import { testPrefix } from '../harness/redis.js';
import { appendUntilAcked, readBack, type Acked } from '../harness/read-back.js';
import { moveSlot, nodeCommand, slotShard } from '../harness/redis-cluster.js';
import { useRedisCluster } from '../harness/redis-cluster-suite.js';
import { firstPerPartition, placeRooms } from '../harness/room-partition.js';

const { owned } = useRedisCluster();

const PARTITIONS = 64;
/** appends per room after the move has finished */
const AFTER_MOVE = 20;

/** append calls made, acknowledged or not */
let attempts = 0;
const countAttempt = (): void => void attempts++;


describe('resharding a key group to another master while it is written and tailed', () => {
  it('loses, doubles and reorders nothing, in the log and in a live tail', async () => {
    const c = owned();
    const seed = c.servers[0]?.port ?? 0;
    const prefix = testPrefix('reshard');
    const log = createEventLog({ partitions: PARTITIONS, log: silentLogger(), redis: { cluster: { nodes: c.nodes }, prefix } });
    try {
      await log.open();
      // four rooms in distinct partitions of one key group, two rooms in other groups
      const group = 5;
      // (rooms are created until placed so; where they go is read from the room directory)
      const choose = (placed: Map<string, number>) => {
        const firsts = [...firstPerPartition(placed)];
        return {
          inGroup: firsts.filter(([p]) => keyGroupOf(LATEST_KEY_LAYOUT, p) === group).slice(0, 4),
          elsewhere: [...placed].filter(([, p]) => keyGroupOf(LATEST_KEY_LAYOUT, p) !== group).slice(0, 2),
        };
      };
      const placed = await placeRooms(log, 'rs-', (sofar) => {
        const { inGroup, elsewhere } = choose(sofar);
        return inGroup.length === 4 && elsewhere.length === 2;
      });
      const chosen = choose(placed);
      const inGroup = chosen.inGroup.map(([, room]) => room);
      const elsewhere = chosen.elsewhere.map(([room]) => room);
      const rooms = [...inGroup, ...elsewhere];
      const keys = keySpace(prefix, LATEST_KEY_LAYOUT);
      const slot = hashSlot(keys.feed(group));
      expect(new Set(chosen.inGroup.map(([p]) => p)).size).toBe(4);
      expect(chosen.inGroup.every(([p]) => hashSlot(keys.feed(p)) === slot)).toBe(true);
      expect(KEY_GROUPS).toBe(18);

      // a device tails every room from the start (history, then live)
      const tailed = new Map<string, string[]>(rooms.map((r) => [r, []]));
      const tail = log.tail(undefined, { rooms: new Set(rooms) })[Symbol.asyncIterator]();
      const LAST = 'after the move';
      const tailer = (async () => {
        for (;;) {
          const r = await tail.next();
          if (r.done) break;
          if (r.value.type !== 'event' || r.value.event.kind !== 'message') continue;
          tailed.get(r.value.event.room)?.push(r.value.event.content.body);
          if (r.value.event.content.body === LAST) break;
        }
      })();

      // the writers keep going until the move is over and AFTER_MOVE more are acknowledged per room
      const acked = new Map<string, Acked[]>(rooms.map((r) => [r, []]));
      const move: { acked?: Map<string, number> } = {};
      const writing = Promise.all(
        rooms.map(async (room) => {
          for (let i = 0; move.acked === undefined || i < (move.acked.get(room) ?? 0) + AFTER_MOVE; i++) {
            const body = `${room}:${i}`;
            acked.get(room)?.push({ body, eventId: await appendUntilAcked(log, room, body, countAttempt) });
          }
        }),
      );
      await waitFor(() => inGroup.every((room) => (acked.get(room)?.length ?? 0) >= 10), { timeoutMs: 60_000, what: 'the group rooms to have 10 acknowledged events each' });

      // move the group's slot (every partition of the group at once) to another master, online
      const from = await slotShard(seed, slot);
      const masters = [...new Set(await Promise.all(Array.from({ length: 3 }, async (_, k) => (await slotShard(seed, Math.floor(((k + 0.5) * 16384) / 3))).master)))];
      const to = masters.find((m) => m !== from.master) ?? 0;
      const keysBefore = Number(await nodeCommand(from.master, 'CLUSTER', 'COUNTKEYSINSLOT', String(slot)));
      // a few keys per MIGRATE, and between two, wait until the writers tried again: they and the
      // tail run against a slot half on each master (the group's appends are multi-key scripts, answered
      // TRYAGAIN until the move ends; single-key reads are redirected with ASK)
      let steps = 0;
      await moveSlot(masters, slot, to, {
        keysPerMigrate: 5,
        between: async () => {
          steps++;
          const before = attempts;
          await waitFor(() => attempts >= before + 2, { timeoutMs: 30_000, intervalMs: 20, what: 'append attempts while the slot is half moved' });
        },
      });
      expect((await slotShard(seed, slot)).master).toBe(to);
      move.acked = new Map(rooms.map((r) => [r, acked.get(r)?.length ?? 0]));
      await writing;
      const total = [...acked.values()].reduce((n, list) => n + list.length, 0);
      const keysAfter = Number(await nodeCommand(to, 'CLUSTER', 'COUNTKEYSINSLOT', String(slot)));
      process.stdout.write(`resharded slot ${slot} (key group ${group}: ${keysBefore} keys when the move began, ${keysAfter} after, ${steps} MIGRATE steps) from :${from.master} to :${to}; ${total} appends acknowledged, ${attempts - total} attempts refused and retried\n`);
      expect(Number(await nodeCommand(from.master, 'CLUSTER', 'COUNTKEYSINSLOT', String(slot)))).toBe(0);

      // the log: every acknowledged event once, in room order, with its acknowledged id
      const { seen, bodies } = await readBack(log, rooms);
      expect(seen).toHaveLength(total);
      expect(new Set(seen).size).toBe(total);
      for (const room of rooms) {
        expect(bodies.get(room)).toEqual(acked.get(room)?.map((a) => a.body));
        for (const { eventId } of acked.get(room) ?? []) expect(seen).toContain(eventId);
      }
      // the live tail: each once, in room order, nothing missing
      await waitFor(() => rooms.every((r) => (tailed.get(r)?.length ?? 0) >= (acked.get(r)?.length ?? 0)), { timeoutMs: 60_000, what: 'the tail to see every event' });
      for (const room of rooms) expect(tailed.get(room)).toEqual(acked.get(room)?.map((a) => a.body));
      // the group keeps working on its new master, live
      await appendUntilAcked(log, inGroup[0] ?? '', LAST, countAttempt);
      await tailer;
      expect(tailed.get(inGroup[0] ?? '')?.at(-1)).toBe(LAST);
      await tail.return?.();
    } finally {
      await log.close();
    }
  }, 240_000);
});
