/**
 * A catch-up read asks Redis once per room for what it has, not once more to
 * learn that nothing is left (issue 24, point 4): a room's timeline read
 * returning fewer entries than asked is the end of it, so the page is done
 * after one round of reads; a page cut by the limit still continues on the
 * next page with nothing lost.
 */
import { describe, expect, inject, it } from 'vitest';
import { partitionOf } from '../../src/core/position.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { testPrefix } from '../harness/redis.js';

const PARTITIONS = 4;

describe('catch-up round trips', () => {
  it('one XRANGE per room read for a page that holds all of it; pages cut by the limit lose nothing', async () => {
    const calls: string[] = [];
    const log = createEventLog({ partitions: PARTITIONS, log: silentLogger(), redis: { url: inject('redisUrl'), prefix: testPrefix('roundtrips') }, onRedisCommand: (name) => calls.push(name) });
    // one room alone in its partition, three sharing another (the merged read)
    const alone = 'alone';
    const shared: string[] = [];
    for (let i = 0; shared.length < 3; i++) {
      const room = `shared${i}`;
      if (partitionOf(room, PARTITIONS) !== partitionOf(alone, PARTITIONS)) {
        if (shared.length === 0 || partitionOf(room, PARTITIONS) === partitionOf(shared[0] ?? '', PARTITIONS)) shared.push(room);
      }
    }
    const rooms = [alone, ...shared];
    for (const id of rooms) await log.rooms.put({ id, links: [] });
    for (let i = 0; i < 10; i++) for (const room of rooms) await log.append(message(room, `${room}-${i}`));

    calls.length = 0;
    const page = await log.read(undefined, { rooms: new Set(rooms), limit: 100 });
    expect(page.events).toHaveLength(40);
    expect(calls.filter((c) => c === 'xrange')).toHaveLength(rooms.length);

    // the next page from there: one more read per room, nothing new
    calls.length = 0;
    const empty = await log.read(page.next, { rooms: new Set(rooms), limit: 100 });
    expect(empty.events).toHaveLength(0);
    expect(calls.filter((c) => c === 'xrange')).toHaveLength(rooms.length);

    // small pages: every event once, each room in order
    const seen: string[] = [];
    let since: string | undefined;
    for (let guard = 0; guard < 100; guard++) {
      const small = await log.read(since, { rooms: new Set(rooms), limit: 7 });
      since = small.next;
      if (small.events.length === 0) break;
      seen.push(...small.events.map((e) => (e.kind === 'message' ? e.content.body : '')));
    }
    expect(seen).toHaveLength(40);
    expect(new Set(seen).size).toBe(40);
    for (const room of rooms) expect(seen.filter((b) => b.startsWith(`${room}-`))).toEqual(Array.from({ length: 10 }, (_, i) => `${room}-${i}`));
    await log.close();
  });
});
