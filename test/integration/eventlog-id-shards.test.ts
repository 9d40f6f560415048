/**
 * Key layout 3 (keys.ts; issue 19, point 6): a new log splits each bucket of
 * its id map (idempotency keys and native-id aliases) over `idshards` small
 * hashes, which Redis keeps in its compact encoding (listpack, ~31 bytes a
 * field) instead of one large hash table (~69 bytes a field). A log created
 * before (layout 2, one hash per partition and bucket) keeps its one hash:
 * its idempotency keys and aliases still resolve, and it is written as before.
 */
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import type { EventLog } from '../../src/core/ports.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { ID_SHARDS, keySpace } from '../../src/eventlog/keys.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { dropPrefix, testPrefix } from '../harness/redis.js';

const redis = new Redis(inject('redisUrl'));
afterAll(() => redis.quit());

const open = (prefix: string): EventLog => createEventLog({ partitions: 2, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });

/** every id-map hash of the log: name, encoding, fields */
async function idMaps(prefix: string): Promise<Array<{ key: string; encoding: string; fields: string[] }>> {
  const keys = (await redis.keys(`${prefix}*:ids:*`)).filter((key) => !key.endsWith(':ttl')).sort();
  return Promise.all(keys.map(async (key) => ({ key, encoding: String(await redis.object('ENCODING', key)), fields: await redis.hkeys(key) })));
}

/** appends `n` events to room r, each with one native-id alias; checks idempotency and aliases resolve */
async function appendAndCheck(log: EventLog, n: number, tag: string): Promise<string[]> {
  const drafts = Array.from({ length: n }, (_, i) => message('r', `${tag} ${i}`, { idem: `api:dev1:${tag}-${i}` }));
  const results = await Promise.all(drafts.map((d, i) => log.append(d, { aliases: [`xmpp:id:alice@example.org:${tag}-${i}`] })));
  expect(results.every((r) => !r.duplicate)).toBe(true);
  const again = await Promise.all(drafts.map((d) => log.append(d)));
  expect(again.map((r) => [r.duplicate, r.eventId])).toEqual(results.map((r) => [true, r.eventId]));
  const resolved = await Promise.all(drafts.map((_, i) => log.resolve('r', `xmpp:id:alice@example.org:${tag}-${i}`)));
  expect(resolved).toEqual(results.map((r) => r.eventId));
  return results.map((r) => r.eventId);
}

describe('id map shards (key layout 3)', () => {
  it('a new log stores layout 3 with its shard count and writes its id map as small listpack hashes named by keys.ts', async () => {
    const prefix = testPrefix('idshards');
    const log = open(prefix);
    await log.rooms.put({ id: 'r', links: [] });
    const ids = await appendAndCheck(log, 300, 'new');
    // an alias added later, to an event already in the log, is found in its shard too
    await log.alias('r', ids[7] ?? '', ['trace:later-7']);
    expect(await log.resolve('r', 'trace:later-7')).toBe(ids[7]);
    await log.close();

    expect(await redis.hgetall(`${prefix}{log}:meta`)).toEqual({ partitions: '2', format: '2', layout: '3', groups: '18', idshards: String(ID_SHARDS) });
    const maps = await idMaps(prefix);
    // 601 fields over up to 1,024 hashes: many hashes, none large, all compact
    expect(maps.length).toBeGreaterThan(200);
    expect(maps.reduce((n, m) => n + m.fields.length, 0)).toBe(601);
    expect(maps.every((m) => m.encoding === 'listpack' && m.fields.length <= 16)).toBe(true);
    // each field is in the hash the client looks it up in (the scripts and keys.ts agree)
    const keys = keySpace(prefix, 3);
    keys.setLayout(3, 18, ID_SHARDS);
    for (const m of maps) {
      const [, partition, bucket] = /:p(\d+):ids:(\d+):\d+$/.exec(m.key) ?? [];
      expect(partition, m.key).toBeDefined();
      for (const field of m.fields) expect(keys.ids(Number(partition), Number(bucket), field)).toBe(m.key);
    }
    // each hash has the id map's lifetime, given once (the bucket's ttl bitmap, which has it too, says which have it)
    for (const m of maps) expect(await redis.ttl(m.key), m.key).toBeGreaterThan(0);
    const bitmaps = await redis.keys(`${prefix}*:ids:*:ttl`);
    expect(bitmaps.length).toBeGreaterThan(0);
    for (const key of bitmaps) expect(await redis.ttl(key)).toBeGreaterThan(0);
    await expect(bitmaps.reduce(async (n, key) => (await n) + (await redis.bitcount(key)), Promise.resolve(0))).resolves.toBe(maps.length);
    await dropPrefix(redis, prefix);
  });

  it('a layout-2 log (created before layout 3) keeps one id-map hash per partition and bucket: old keys resolve, new ones are written there', async () => {
    const prefix = testPrefix('idshards2');
    const setup = open(prefix);
    await setup.rooms.put({ id: 'r', links: [] });
    await setup.close();
    // the meta as the builds of layout 2 wrote it
    await redis.hset(`${prefix}{log}:meta`, 'layout', '2');
    await redis.hdel(`${prefix}{log}:meta`, 'idshards');

    const log = open(prefix);
    const first = await appendAndCheck(log, 50, 'old');
    await log.close();
    const maps = await idMaps(prefix);
    expect(maps.map((m) => m.key.replace(/\d+$/, 'B'))).toEqual([expect.stringMatching(/:p\d\d:ids:B$/)]);
    expect(maps[0]?.fields.length).toBe(100);

    // opened again (a restart), the same log: its keys still resolve, and new ones go to the same hash
    const again = open(prefix);
    expect(await again.resolve('r', 'api:dev1:old-3')).toBe(first[3]);
    expect((await again.append(message('r', 'repeat', { idem: 'api:dev1:old-4' }))).eventId).toBe(first[4]);
    await appendAndCheck(again, 20, 'later');
    await again.alias('r', first[0] ?? '', ['trace:old-0']);
    expect(await again.resolve('r', 'trace:old-0')).toBe(first[0]);
    await again.close();
    const after = await idMaps(prefix);
    expect(after.map((m) => m.key)).toEqual(maps.map((m) => m.key));
    expect(after[0]?.fields.length).toBe(141);
    expect(await redis.hget(`${prefix}{log}:meta`, 'layout')).toBe('2');
    await dropPrefix(redis, prefix);
  });
});
