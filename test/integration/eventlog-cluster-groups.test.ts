/**
 * Appends and the id map on a Redis Cluster with key layout 2 (issue 19):
 * the appends of one tick to partitions of one key group (p ≡ g mod 18, one
 * hash slot) go as one script call, one per group; the id map of a batch
 * of several partitions resolves and deduplicates there as on one Redis.
 */
import { describe, expect, it } from 'vitest';
import { createEventLog } from '../../src/eventlog/index.js';
import { KEY_GROUPS } from '../../src/eventlog/keys.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { testPrefix } from '../harness/redis.js';
import { useRedisCluster } from '../harness/redis-cluster-suite.js';
import { firstPerPartition, placeRooms } from '../harness/room-partition.js';

const { started } = useRedisCluster();
const PARTITIONS = 64;

/** the first room placed in each partition of key group g, at most `count` */
function roomsOfGroup(placed: Map<string, number>, g: number, count: number): string[] {
  return [...firstPerPartition(placed)].filter(([p]) => p % KEY_GROUPS === g).slice(0, count).map(([, room]) => room);
}

describe('layout 2 on a Redis Cluster', () => {
  it('one tick of appends to several partitions of a key group is one script call, one per group', async () => {
    const prefix = testPrefix('cgroups');
    const calls: string[] = [];
    const log = createEventLog({ partitions: PARTITIONS, log: silentLogger(), redis: { cluster: { nodes: started().nodes }, prefix }, onRedisCommand: (name) => calls.push(name) });
    // rooms are created until four partitions of group 0 and three of group 5 have one (the room directory says where each went)
    const placed = await placeRooms(log, 'g-room-', (sofar) => roomsOfGroup(sofar, 0, 4).length === 4 && roomsOfGroup(sofar, 5, 3).length === 3);
    const group0 = roomsOfGroup(placed, 0, 4);
    const group5 = roomsOfGroup(placed, 5, 3);
    expect(new Set(group0.map((r) => placed.get(r))).size).toBe(4);
    await log.append(message(group0[0] ?? '', 'first', { idem: 'api:dev1:dup' }));

    calls.length = 0;
    const drafts = [...group0.map((room, i) => message(room, `a${i}`)), message(group0[0] ?? '', 'again', { idem: 'api:dev1:dup' })];
    const settled = await Promise.all(drafts.map((d) => log.append(d)));
    expect(calls.filter((c) => c === 'evalsha' || c === 'eval').length).toBe(1);
    expect(settled.map((s) => s.duplicate)).toEqual([false, false, false, false, true]);

    // two groups in one tick: one call each
    calls.length = 0;
    await Promise.all([...group0, ...group5].map((room, i) => log.append(message(room, `b${i}`))));
    expect(calls.filter((c) => c === 'evalsha' || c === 'eval').length).toBe(2);

    const { events } = await log.read(undefined, { rooms: 'all', limit: 100 });
    for (const room of group0) expect(events.filter((e) => e.room === room).length).toBe(room === group0[0] ? 3 : 2);
    for (const room of group5) expect(events.filter((e) => e.room === room).length).toBe(1);
    await log.close();
  });

  it('the id map keeps every key, alias and duplicate across grouped batches', async () => {
    const prefix = testPrefix('cidmap');
    const log = createEventLog({ partitions: PARTITIONS, log: silentLogger(), redis: { cluster: { nodes: started().nodes }, prefix } });
    await log.rooms.put({ id: 'ops', links: [] });
    const n = 3_500;
    const ids: string[] = [];
    for (let i = 0; i < n; i += 64) {
      const chunk = Array.from({ length: Math.min(64, n - i) }, (_, j) => i + j);
      const done = await Promise.all(chunk.map((k) => log.append(message('ops', `m${k}`, { idem: `api:dev1:t-${k}` }), { aliases: [`xmpp:id:a@example.org:m-${k}`] })));
      ids.push(...done.map((d) => d.eventId));
    }
    const resolved = await Promise.all(Array.from({ length: n }, (_, k) => log.resolve('ops', `xmpp:id:a@example.org:m-${k}`)));
    expect(resolved).toEqual(ids);
    const again = await Promise.all(Array.from({ length: n }, (_, k) => log.append(message('ops', `again ${k}`, { idem: `api:dev1:t-${k}` }))));
    expect(again.map((a) => (a.duplicate ? a.eventId : ''))).toEqual(ids);
    await log.alias('ops', ids[1] ?? '', ['matrix:$later']);
    expect(await log.resolve('ops', 'matrix:$later')).toBe(ids[1]);

    await log.close();
  });
});
