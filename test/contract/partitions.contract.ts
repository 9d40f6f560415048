/**
 * The partition-count contract (issue 24): the count raised on an existing
 * log keeps every cursor, room and event; lowering it is refused; replicas
 * with different counts during a rolling change share one log safely; and a
 * sync cursor's size follows the rooms a device reads, not the partition count.
 * Run against every EventLog implementation, like eventlog.contract.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { isSyncgateError } from '../../src/core/errors.js';
import type { LogEvent } from '../../src/core/event.js';
import type { EventLog } from '../../src/core/ports.js';
import { decodeSyncCursor } from '../../src/core/cursor.js';
import { ZERO_POS, locateEventId } from '../../src/core/position.js';
import { message } from '../fixtures/events.js';
import { legacyVectorCursor } from '../fixtures/legacy-cursor.js';
import type { ContractTarget } from './eventlog.contract.js';

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  try {
    await promise;
  } catch (err) {
    expect(isSyncgateError(err) ? err.code : String(err)).toBe(code);
    return;
  }
  throw new Error(`expected ${code}, got success`);
}

const body = (e: LogEvent) => (e.kind === 'message' ? e.content.body : e.kind);

/** Pages `read` from `since` until an empty page; the events and the last `next`. */
async function readAll(log: EventLog, since: string | undefined, rooms: ReadonlySet<string>, limit = 7): Promise<{ events: LogEvent[]; next: string | undefined }> {
  const events: LogEvent[] = [];
  let cursor = since;
  for (let guard = 0; guard < 1000; guard++) {
    const page = await log.read(cursor, { rooms, limit });
    events.push(...page.events);
    if (page.events.length === 0) return { events, next: page.next };
    cursor = page.next;
  }
  throw new Error('readAll: no end');
}

/** Exactly `expected` (bodies), each once, and in order within each room. */
function expectExactly(events: readonly LogEvent[], expected: readonly string[]): void {
  expect([...events.map(body)].sort()).toEqual([...expected].sort());
  const byRoom = new Map<string, number[]>();
  for (const e of events) byRoom.set(e.room, [...(byRoom.get(e.room) ?? []), Number(body(e).slice(1))]);
  for (const seq of byRoom.values()) expect(seq).toEqual([...seq].sort((a, b) => a - b));
}

export function partitionsContract(target: ContractTarget): void {
  describe(`partition count: ${target.name}`, () => {
    const open: EventLog[] = [];
    const make = async (options: Parameters<ContractTarget['create']>[0]) => {
      const log = await target.create(options);
      open.push(log);
      return log;
    };
    afterEach(async () => {
      await Promise.all(open.splice(0).map((l) => l.close()));
    });

    it('a log written at 16 partitions and opened at 64: old cursors give exactly the later events, rooms stay, new rooms are delivered', async () => {
      const store = `raise-${Math.random().toString(36).slice(2)}`;
      const at16 = await make({ partitions: 16, store });
      const oldRooms = Array.from({ length: 12 }, (_, i) => `old${i}`);
      for (const id of oldRooms) await at16.rooms.put({ id, links: [] });
      const devices = [new Set(oldRooms), new Set(oldRooms.slice(0, 1)), new Set(oldRooms.slice(3, 8))];
      for (let i = 0; i < 24; i++) await at16.append(message(oldRooms[i % 12] ?? '', `m${i}`));
      const cursors = await Promise.all(devices.map(async (rooms) => (await readAll(at16, undefined, rooms)).next));
      for (let i = 24; i < 48; i++) await at16.append(message(oldRooms[i % 12] ?? '', `m${i}`));
      await at16.close();

      const at64 = await make({ partitions: 64, store });
      expect(at64.info.partitions).toBe(64);
      // rooms created before are still there, and take appends
      for (const id of oldRooms) expect((await at64.rooms.get(id))?.id).toBe(id);
      const later = Array.from({ length: 24 }, (_, i) => `m${24 + i}`);
      for (const [d, rooms] of devices.entries()) {
        const got = await readAll(at64, cursors[d], rooms);
        expectExactly(got.events, later.filter((_, i) => rooms.has(oldRooms[(24 + i) % 12] ?? '')));
      }
      // new rooms spread over the new partitions too; old and new rooms deliver from the old cursors
      const newRooms = Array.from({ length: 40 }, (_, i) => `new${i}`);
      for (const id of newRooms) await at64.rooms.put({ id, links: [] });
      for (let i = 48; i < 88; i++) await at64.append(message(i % 2 === 0 ? (oldRooms[i % 12] ?? '') : (newRooms[i % 40] ?? ''), `m${i}`));
      const all = new Set([...oldRooms, ...newRooms]);
      const got = await readAll(at64, cursors[0], all);
      expectExactly(
        got.events,
        Array.from({ length: 64 }, (_, i) => `m${24 + i}`),
      );
      const partitionsOfNew = new Set(await Promise.all(newRooms.map(async (r) => locate(at64, r))));
      expect([...partitionsOfNew].some((p) => p >= 16)).toBe(true);
      // every old room kept its partition
      for (const r of oldRooms) expect(await locate(at64, r)).toBeLessThan(16);
    });

    it('lowering the count is refused with SG_ERR_PARTITIONS_LOWERED, at open and as a command; nothing changes', async () => {
      const store = `lower-${Math.random().toString(36).slice(2)}`;
      const at8 = await make({ partitions: 8, store });
      await at8.rooms.put({ id: 'kept', links: [] });
      await at8.append(message('kept', 'm0'));
      await expectCode(at8.raisePartitions(4), 'SG_ERR_PARTITIONS_LOWERED');
      expect(await at8.raisePartitions(12)).toBe(12);
      const at4 = await make({ partitions: 4, store });
      await expectCode(at4.open(), 'SG_ERR_PARTITIONS_LOWERED');
      // every operation of the refused log reports it, none touches the log
      await expectCode(at4.read(undefined, { rooms: 'all', limit: 10 }), 'SG_ERR_PARTITIONS_LOWERED');
      expect(at8.info.partitions).toBe(12);
      const again = await make({ partitions: 12, store });
      expect((await readAll(again, undefined, new Set(['kept']))).events.map(body)).toEqual(['m0']);
    });

    it('replicas at 16 and 64 during a rolling change share the log: rooms, cursors, appends and delivery groups agree', async () => {
      const store = `mixed-${Math.random().toString(36).slice(2)}`;
      const a16 = await make({ partitions: 16, store });
      const oldRooms = Array.from({ length: 6 }, (_, i) => `o${i}`);
      for (const id of oldRooms) await a16.rooms.put({ id, links: [] });
      for (let p = 0; p < 16; p++) await a16.delivery.ensureGroup(p, 'out:bridge');
      for (let i = 0; i < 6; i++) await a16.append(message(oldRooms[i] ?? '', `m${i}`));
      // the second replica restarts at 64 while the first keeps running at 16
      const b64 = await make({ partitions: 64, store });
      await b64.open();
      const newRooms = Array.from({ length: 24 }, (_, i) => `n${i}`);
      for (const id of newRooms) await b64.rooms.put({ id, links: [] });
      const high: string[] = [];
      for (const r of newRooms) if ((await locate(b64, r)) >= 16) high.push(r);
      expect(high.length).toBeGreaterThan(0);
      // the replica at 16 appends to a room on a partition it did not know, and follows the count
      const viaA = await a16.append(message(high[0] ?? '', 'm6'));
      expect(locateEventId(viaA.eventId)?.partition).toBeGreaterThanOrEqual(16);
      expect(a16.info.partitions).toBe(64);
      // a room created on the old replica after the raise spreads over all 64 partitions too
      const lateRooms = Array.from({ length: 24 }, (_, i) => `late${i}`);
      for (const id of lateRooms) await a16.rooms.put({ id, links: [] });
      const latePartitions = await Promise.all(lateRooms.map((r) => locate(a16, r)));
      expect(latePartitions.some((p) => p >= 16)).toBe(true);
      // a cursor made on one replica reads the same on the other
      const all = new Set([...oldRooms, ...newRooms]);
      const fromB = await readAll(b64, undefined, all);
      const fromA = await readAll(a16, undefined, all);
      expect(fromA.events.map((e) => e.eventId)).toEqual(fromB.events.map((e) => e.eventId));
      await b64.append(message(oldRooms[0] ?? '', 'm7'));
      await a16.append(message(high[1] ?? high[0] ?? '', 'm8'));
      expectExactly((await readAll(a16, fromB.next, all)).events, ['m7', 'm8']);
      expectExactly((await readAll(b64, fromA.next, all)).events, ['m7', 'm8']);
      // the delivery group of partition 0 exists on every new partition from its start: nothing appended there is missed
      const p = locateEventId(viaA.eventId)?.partition ?? 0;
      const entries = await b64.delivery.readNew(p, 'out:bridge', 'c1', 100, 0);
      expect(entries.map((e) => e.event?.eventId)).toContain(viaA.eventId);
    });

    it('a room granted later: its events come from an existing cursor (its whole history when no other room of the device shares its partition)', async () => {
      const log = await make({ partitions: 64 });
      const rooms = Array.from({ length: 40 }, (_, i) => `g${i}`);
      for (const id of rooms) await log.rooms.put({ id, links: [] });
      const parts = new Map<string, number>();
      for (const r of rooms) parts.set(r, await locate(log, r));
      const mine = rooms[0] ?? '';
      const apart = rooms.find((r) => parts.get(r) !== parts.get(mine)) ?? '';
      const beside = rooms.find((r) => r !== mine && parts.get(r) === parts.get(mine));
      await log.append(message(apart, 'm0'));
      await log.append(message(mine, 'm1'));
      if (beside) await log.append(message(beside, 'm2'));
      const { next } = await readAll(log, undefined, new Set([mine]));
      await log.append(message(mine, 'm3'));
      await log.append(message(apart, 'm4'));
      if (beside) await log.append(message(beside, 'm5'));
      // granted `apart` (another partition): its whole history; granted `beside`: what came after the cursor
      const granted = new Set([mine, apart, ...(beside ? [beside] : [])]);
      const got = (await readAll(log, next, granted)).events.map(body).filter((b) => b.startsWith('m'));
      expect([...got].sort()).toEqual(['m0', 'm3', 'm4', ...(beside ? ['m5'] : [])].sort());
    });

    it('a cursor in the format of before (every partition) is still accepted and reads exactly what the new format reads', async () => {
      const log = await make({ partitions: 16 });
      const rooms = Array.from({ length: 8 }, (_, i) => `l${i}`);
      for (const id of rooms) await log.rooms.put({ id, links: [] });
      for (let i = 0; i < 16; i++) await log.append(message(rooms[i % 8] ?? '', `m${i}`));
      const { next } = await readAll(log, undefined, new Set(rooms));
      const positions = decodeSyncCursor(next ?? '');
      const legacy = legacyVectorCursor(Array.from({ length: 16 }, (_, p) => positions.get(p) ?? ZERO_POS));
      for (let i = 16; i < 32; i++) await log.append(message(rooms[i % 8] ?? '', `m${i}`));
      const fromLegacy = await readAll(log, legacy, new Set(rooms));
      const fromNew = await readAll(log, next, new Set(rooms));
      expectExactly(fromLegacy.events, Array.from({ length: 16 }, (_, i) => `m${16 + i}`));
      expect(fromLegacy.events.map((e) => e.eventId)).toEqual(fromNew.events.map((e) => e.eventId));
      // and a cursor made for more partitions than the log has is refused, never read with a gap
      await expectCode(log.read(legacyVectorCursor(Array.from({ length: 32 }, () => ZERO_POS)), { rooms: 'all', limit: 10 }), 'SG_ERR_CURSOR_INVALID');
    });

    for (const partitions of [16, 1024]) {
      it(`sync cursor size follows the rooms read, at ${partitions} partitions: 1 room ≤ 64, 10 rooms ≤ 160, 100 rooms ≤ 1,024 characters`, async () => {
        const log = await make({ partitions });
        const rooms = Array.from({ length: 100 }, (_, i) => `size${i}`);
        for (const id of rooms) await log.rooms.put({ id, links: [] });
        for (const r of rooms) await log.append(message(r, `m-${r}`));
        const sizes: Record<number, number> = {};
        for (const [n, limit] of [
          [1, 64],
          [10, 160],
          [100, 1024],
        ] as const) {
          const read = await readAll(log, undefined, new Set(rooms.slice(0, n)), 100);
          expect(read.events).toHaveLength(n);
          sizes[n] = (read.next ?? '').length;
          expect(sizes[n]).toBeLessThanOrEqual(limit);
          // the live tail's cursor and the head are as small
          expect((await log.head(new Set(rooms.slice(0, n)))).length).toBeLessThanOrEqual(limit);
        }
        // an event position is O(1)
        const appended = await log.append(message(rooms[0] ?? '', 'last'));
        expect(appended.cursor.length).toBeLessThanOrEqual(32);
        console.log(`cursor size at ${partitions} partitions: ${JSON.stringify(sizes)} characters for 1/10/100 rooms; event position ${appended.cursor.length}`);
      });
    }
  });
}

/** The partition of a room, from an event id of it (the id names its partition); appends a probe event. */
async function locate(log: EventLog, room: string): Promise<number> {
  const r = await log.append(message(room, `probe-${Math.random()}`));
  return locateEventId(r.eventId)?.partition ?? -1;
}
