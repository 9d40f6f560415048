/**
 * A Redis log written before the partition count was stored (issue 24): no
 * `{log}` keys, rooms at fnv1a32(room) mod the count it ran with. The first
 * open of this version finds that count — also when another one is configured
 * — records every room's partition, and raises to the configured count.
 * Such a log keeps key layout 1 (one hash tag per partition).
 */
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { decodeSyncCursor } from '../../src/core/cursor.js';
import type { EventLog } from '../../src/core/ports.js';
import { ZERO_POS, partitionOf } from '../../src/core/position.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { legacyVectorCursor } from '../fixtures/legacy-cursor.js';
import { testPrefix } from '../harness/redis.js';

const redis = new Redis(inject('redisUrl'));
afterAll(() => redis.quit());

const open = (prefix: string, partitions: number): EventLog => createEventLog({ partitions, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });

describe('a log from before the stored partition count', () => {
  it('is opened at a larger count: its rooms are found where they are, old cursors read exactly the rest', async () => {
    const prefix = testPrefix('legacy');
    // key layout 1, as logs of before had: a stored count with no layout keeps it
    await redis.hset(`${prefix}{log}:partitions`, 'partitions', 16, 'format', 2);
    const old = open(prefix, 16);
    const rooms = Array.from({ length: 10 }, (_, i) => `legacy${i}`);
    for (const id of rooms) await old.rooms.put({ id, links: [] });
    for (let i = 0; i < 20; i++) await old.append(message(rooms[i % 10] ?? '', `m${i}`));
    const page = await old.read(undefined, { rooms: new Set(rooms), limit: 100 });
    const positions = decodeSyncCursor(page.next);
    // the cursor as that version wrote it: every one of the 16 partitions
    const cursor = legacyVectorCursor(Array.from({ length: 16 }, (_, p) => positions.get(p) ?? ZERO_POS));
    await old.close();
    // what this version adds: without it, the log is one from before
    await redis.del(`${prefix}{log}:partitions`, `${prefix}{log}:room-partition`);

    const upgraded = open(prefix, 64);
    await upgraded.open();
    expect(upgraded.info.partitions).toBe(64);
    expect(Number(await redis.hget(`${prefix}{log}:partitions`, 'partitions'))).toBe(64);
    for (const room of rooms) expect(Number(await redis.hget(`${prefix}{log}:room-partition`, room))).toBe(partitionOf(room, 16));
    expect(await redis.hget(`${prefix}{log}:partitions`, 'layout')).toBeNull();
    expect(await redis.exists(`${prefix}{p:${String(partitionOf('legacy0', 16)).padStart(2, '0')}}:room:legacy0`)).toBe(1);
    for (let i = 20; i < 30; i++) await upgraded.append(message(rooms[i % 10] ?? '', `m${i}`));
    const rest = await upgraded.read(cursor, { rooms: new Set(rooms), limit: 100 });
    // one event per room: exactly the ten sent after the cursor (order is defined within a room only)
    expect(rest.events.map((e) => (e.kind === 'message' ? e.content.body : '')).sort()).toEqual(Array.from({ length: 10 }, (_, i) => `m${20 + i}`).sort());
    await upgraded.close();
  });
});
