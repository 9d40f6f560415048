/**
 * Builds that do not know a log's key layout must not run on it (issue 24).
 *
 * Builds from before key layout 2 (those that store the partition count) do
 * `HGET <prefix>{log}:partitions partitions` first thing at start, and ignore
 * any `layout` field: on a layout-2 log they would write under layout 1's
 * names beside the log. So a layout-2 log keeps its meta hash at
 * `<prefix>{log}:meta` and a string (the fence) at `<prefix>{log}:partitions`:
 * their first command fails with WRONGTYPE and they stop before writing. A
 * layout-1 log keeps its hash where those builds read it. And this build
 * refuses a log whose stored layout, group count or write format it does not
 * know (SG_ERR_LOG_TOO_NEW) instead of reading it as the latest it knows.
 */
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import type { EventLog } from '../../src/core/ports.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { LAYOUT_FENCE, groupTags, hashSlot, keySpace } from '../../src/eventlog/keys.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { dropPrefix, testPrefix } from '../harness/redis.js';

const redis = new Redis(inject('redisUrl'));
afterAll(() => redis.quit());

const open = (prefix: string, options: { partitions?: number; keyGroups?: number } = {}): EventLog =>
  createEventLog({ partitions: options.partitions ?? 16, log: silentLogger(), redis: { url: inject('redisUrl'), prefix, ...(options.keyGroups !== undefined ? { keyGroups: options.keyGroups } : {}) } });

/** The open script of the last build before layout 2 (lua/open-1.lua at ade4feb^), as it ran at start after its HGET. */
const OPEN_BEFORE_LAYOUT_2 = `if redis.call('HEXISTS', KEYS[1], 'partitions') == 0 then
  redis.call('HSET', KEYS[1], 'partitions', ARGV[1], 'format', ARGV[2])
end
return 1`;

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

describe('key layout fence', () => {
  it('a new log keeps its meta at {log}:meta and a fence where older builds read theirs: their start fails before any write', async () => {
    const prefix = testPrefix('fence');
    const log = open(prefix);
    await log.rooms.put({ id: 'r', links: [] });
    await log.append(message('r', 'one'));
    await log.close();

    expect(await redis.get(`${prefix}{log}:partitions`)).toBe(LAYOUT_FENCE);
    expect(await redis.hgetall(`${prefix}{log}:meta`)).toEqual({ partitions: '16', format: '3', layout: '2', groups: '18' });
    const before = (await redis.keys(`${prefix}*`)).sort();
    // what a build from before layout 2 does at start: its stored count, then its open script
    await expect(redis.hget(`${prefix}{log}:partitions`, 'partitions')).rejects.toThrow(/WRONGTYPE/);
    await expect(redis.eval(OPEN_BEFORE_LAYOUT_2, 1, `${prefix}{log}:partitions`, 16, 2)).rejects.toThrow(/WRONGTYPE/);
    expect((await redis.keys(`${prefix}*`)).sort()).toEqual(before);

    // this build opens it again as it was
    const again = open(prefix);
    const { events } = await again.read(undefined, { rooms: new Set(['r']), limit: 10 });
    expect(events.map((e) => (e.kind === 'message' ? e.content.body : ''))).toEqual(['one']);
    await again.close();
    await dropPrefix(redis, prefix);
  });

  it('a layout-2 log whose meta hash is still at {log}:partitions (the first layout-2 builds) gets it moved and the fence', async () => {
    const prefix = testPrefix('fencemove');
    const log = open(prefix, { partitions: 4 });
    await log.rooms.put({ id: 'r', links: [] });
    await log.append(message('r', 'before'));
    await log.close();
    // as those builds left it
    await redis.del(`${prefix}{log}:partitions`);
    await redis.rename(`${prefix}{log}:meta`, `${prefix}{log}:partitions`);
    await redis.hdel(`${prefix}{log}:partitions`, 'groups');

    const moved = open(prefix, { partitions: 8 });
    await moved.open();
    expect(moved.info.partitions).toBe(8);
    expect(await redis.get(`${prefix}{log}:partitions`)).toBe(LAYOUT_FENCE);
    expect(await redis.hgetall(`${prefix}{log}:meta`)).toEqual({ partitions: '8', format: '3', layout: '2' });
    await moved.append(message('r', 'after'));
    const { events } = await moved.read(undefined, { rooms: new Set(['r']), limit: 10 });
    expect(events.map((e) => (e.kind === 'message' ? e.content.body : ''))).toEqual(['before', 'after']);
    await moved.close();
    await dropPrefix(redis, prefix);
  });

  it('a layout-1 log keeps its meta hash at {log}:partitions, where older builds read it', async () => {
    const prefix = testPrefix('fencel1');
    await redis.hset(`${prefix}{log}:partitions`, 'partitions', 16, 'format', 2);
    const log = open(prefix);
    await log.rooms.put({ id: 'r', links: [] });
    await log.append(message('r', 'one'));
    await log.close();
    expect(await redis.type(`${prefix}{log}:partitions`)).toBe('hash');
    expect(await redis.exists(`${prefix}{log}:meta`)).toBe(0);
    expect(await redis.hget(`${prefix}{log}:partitions`, 'partitions')).toBe('16');
    expect((await redis.keys(`${prefix}{p:*`)).length).toBeGreaterThan(0);
    await dropPrefix(redis, prefix);
  });

  it('a log with a newer key layout, group count or write format than this build knows is refused: SG_ERR_LOG_TOO_NEW', async () => {
    for (const [field, value] of [
      ['layout', '3'],
      ['groups', '100000'],
      ['format', '4'],
    ] as const) {
      const prefix = testPrefix('toonew');
      const setup = open(prefix);
      await setup.rooms.put({ id: 'r', links: [] });
      await setup.close();
      await redis.hset(`${prefix}{log}:meta`, field, value);
      const log = open(prefix);
      expect(await codeOf(log.open()), `${field} ${value}`).toBe('SG_ERR_LOG_TOO_NEW');
      await log.close();
      await dropPrefix(redis, prefix);
    }
  });

  it('redis.keyGroups chooses the group count of a new log; the log keeps it whatever later replicas configure', async () => {
    const prefix = testPrefix('groups');
    const log = open(prefix, { partitions: 48, keyGroups: 24 });
    const rooms = Array.from({ length: 40 }, (_, i) => `g${i}`);
    for (const id of rooms) await log.rooms.put({ id, links: [] });
    for (const id of rooms) await log.append(message(id, id));
    await log.close();
    expect(await redis.hget(`${prefix}{log}:meta`, 'groups')).toBe('24');

    // the keys are in 24 groups: partition p in group p mod 24, on the group's evenly spaced slot
    const keys = keySpace(prefix, 2);
    keys.setLayout(2, 24);
    const tags = groupTags(24);
    const feeds = await redis.keys(`${prefix}{*}:p*:feed`);
    expect(feeds.length).toBeGreaterThan(10);
    for (const feed of feeds) {
      const p = Number(/:p(\d+):feed$/.exec(feed)?.[1]);
      expect(feed).toBe(keys.feed(p));
      expect(feed).toContain(`{${tags[p % 24] ?? ''}}`);
    }
    expect(new Set(feeds.map((f) => hashSlot(f))).size).toBeGreaterThan(10);

    // a replica configured otherwise (or not at all) reads the same log
    for (const keyGroups of [18, undefined]) {
      const other = open(prefix, { partitions: 48, ...(keyGroups !== undefined ? { keyGroups } : {}) });
      const { events } = await other.read(undefined, { rooms: new Set(rooms), limit: 100 });
      expect(events.map((e) => e.room).sort()).toEqual([...rooms].sort());
      await other.close();
    }
    expect(await redis.hget(`${prefix}{log}:meta`, 'groups')).toBe('24');
    await dropPrefix(redis, prefix);
  });
});
