/**
 * Balanced room placement on one Redis (`redis.roomPlacement: balanced`,
 * room-placement.ts; the default on a cluster only, hash here): new rooms
 * created together spread one per partition; a replica started later places new rooms away from the partition carrying
 * the most traffic; the directory keeps every room where it was placed, for
 * replicas placing by hash too.
 */
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import type { EventLog } from '../../src/core/ports.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { keySpace } from '../../src/eventlog/keys.js';
import { partitionOf } from '../../src/core/position.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { dropPrefix, testPrefix } from '../harness/redis.js';

const redis = new Redis(inject('redisUrl'));
afterAll(() => redis.quit());

const open = (prefix: string, roomPlacement?: 'balanced'): EventLog =>
  createEventLog({ partitions: 16, log: silentLogger(), redis: { url: inject('redisUrl'), prefix, ...(roomPlacement ? { roomPlacement } : {}) } });

describe('balanced room placement', () => {
  it('spreads new rooms over partitions, keeps away from the busiest, and every replica finds them', async () => {
    const prefix = testPrefix('placement');
    const keys = keySpace(prefix, 2);
    const partitionOfRoom = async (room: string) => Number(await redis.hget(keys.roomPartitions(), room));
    const a = open(prefix, 'balanced');
    const first = Array.from({ length: 16 }, (_, i) => `first${i}`);
    await Promise.all(first.map((id) => a.rooms.put({ id, links: [] })));
    const placed = await Promise.all(first.map(partitionOfRoom));
    expect([...placed].sort((x, y) => x - y)).toEqual(Array.from({ length: 16 }, (_, p) => p));

    // traffic: 40 events in first0's partition, 5 in every other
    const busy = placed[0] ?? 0;
    for (let i = 0; i < 40; i++) await a.append(message('first0', `busy${i}`));
    for (const room of first.slice(1)) for (let i = 0; i < 5; i++) await a.append(message(room, `m${i}`));
    await a.close();

    // a replica started now reads the loads: 30 new rooms, none in the busy partition
    const b = open(prefix, 'balanced');
    const second = Array.from({ length: 30 }, (_, i) => `second${i}`);
    for (const id of second) await b.rooms.put({ id, links: [] });
    const placedLater = await Promise.all(second.map(partitionOfRoom));
    expect(placedLater).not.toContain(busy);
    const perPartition = Array.from({ length: 16 }, (_, p) => placedLater.filter((x) => x === p).length).filter((_, p) => p !== busy);
    expect(Math.max(...perPartition) - Math.min(...perPartition)).toBeLessThanOrEqual(1);
    expect(Number(await redis.hget(keys.roomCounts(), String(busy)))).toBe(1);

    // a replica placing by hash reads every room where it was placed
    await b.append(message('second7', 'later'));
    await b.close();
    const c = open(prefix);
    const { events } = await c.read(undefined, { rooms: new Set(['first0', 'second7']), limit: 100 });
    expect(events.filter((e) => e.room === 'first0')).toHaveLength(40);
    expect(events.filter((e) => e.room === 'second7').map((e) => (e.kind === 'message' ? e.content.body : ''))).toEqual(['later']);
    await c.close();
    await dropPrefix(redis, prefix);
  });

  it('is not the default on one Redis: with one master there is nothing to balance, new rooms go by hash', async () => {
    const prefix = testPrefix('placement-default');
    const keys = keySpace(prefix, 2);
    const log = open(prefix);
    // traffic in one partition, which balanced placement would avoid
    await log.rooms.put({ id: 'loud', links: [] });
    for (let i = 0; i < 20; i++) await log.append(message('loud', `m${i}`));
    const loud = partitionOf('loud', 16);
    const rooms: string[] = [];
    for (let i = 0; rooms.length < 3; i++) if (partitionOf(`quiet${i}`, 16) === loud) rooms.push(`quiet${i}`);
    for (const id of rooms) await log.rooms.put({ id, links: [] });
    expect(await Promise.all(rooms.map(async (room) => Number(await redis.hget(keys.roomPartitions(), room))))).toEqual([loud, loud, loud]);
    await log.close();
    await dropPrefix(redis, prefix);
  });
});
