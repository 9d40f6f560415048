/**
 * Redis-specific guarantees that the shared contract cannot see: connection
 * use of the live tail, and the key layout.
 */
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it, vi } from 'vitest';
import type { TailItem } from '../../src/core/ports.js';
import { isSyncgateError } from '../../src/core/errors.js';
import { decodeFields, decodeFieldsV1, encodeFields, encodeFieldsV1, storedText3 } from '../../src/eventlog/codec.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { LATEST_KEY_LAYOUT, keySpace } from '../../src/eventlog/keys.js';
import { partitionOf } from '../../src/core/position.js';
import { deviceView, viewFor } from '../../src/http/view.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { dropPrefix, testPrefix } from '../harness/redis.js';

const admin = new Redis(inject('redisUrl'));
afterAll(() => admin.quit());

async function clientNames(prefix: string): Promise<string[]> {
  const list = await admin.client('LIST');
  return String(list)
    .split('\n')
    .map((line) => /(?:^| )name=(\S*)/.exec(line)?.[1] ?? '')
    .filter((name) => name.startsWith(prefix));
}

describe('Redis event log', () => {
  it('100 concurrent tails share one blocking connection per partition', async () => {
    const prefix = testPrefix('conn');
    const partitions = 4;
    const log = createEventLog({ partitions, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    const rooms = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
    for (const id of rooms) await log.rooms.put({ id, links: [] });
    const iterators = Array.from({ length: 100 }, () => log.tail(undefined, { rooms: 'all' })[Symbol.asyncIterator]());
    const firsts: Array<Promise<IteratorResult<TailItem>>> = iterators.map((it) => it.next());
    const appended = [];
    for (const room of rooms) appended.push(await log.append(message(room, `to ${room}`)));
    const got = await Promise.all(firsts);
    for (const r of got) expect(r.done).toBe(false);
    // every tail is live now; count the connections this log holds
    const names = await clientNames(prefix);
    const tails = names.filter((n) => n.includes('tail:'));
    expect(tails.length).toBeLessThanOrEqual(partitions);
    expect(new Set(tails).size).toBe(tails.length);
    // besides the blocking readers: the command connection and the appends' own (order across outages)
    expect(names.filter((n) => !n.includes('tail:')).sort()).toEqual([`${prefix}append`, `${prefix}main`]);
    // each of the 100 tails sees all 8 events exactly once
    const seen = await Promise.all(
      iterators.map(async (it, i) => {
        const first = got[i];
        const ids = first && !first.done && first.value.type === 'event' ? [first.value.event.eventId] : [];
        while (ids.length < appended.length) {
          const r = await it.next();
          if (r.done) break;
          if (r.value.type === 'event') ids.push(r.value.event.eventId);
        }
        await it.return?.();
        return ids;
      }),
    );
    for (const ids of seen) expect(new Set(ids)).toEqual(new Set(appended.map((a) => a.eventId)));
    await log.close();
  });

  it('keeps every key of a partition under one hash tag, and an event costs one entry per stream', async () => {
    const prefix = testPrefix('keys');
    const log = createEventLog({ partitions: 16, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    await log.rooms.put({ id: 'ops', links: [] });
    await log.append(message('ops', 'hello'), { aliases: ['xmpp:id:x'] });
    const keys = (await admin.keys(`${prefix}*`)).sort();
    // the log's own keys (count, directory) share `{log}`; every other hash tag is the partition's
    const tagged = keys.filter((k) => /\{[^}]+\}/.test(k) && !k.includes('{log}'));
    const tags = new Set(tagged.map((k) => /\{[^}]+\}:p\d\d/.exec(k)?.[0]));
    expect(tags.size).toBe(1);
    expect(tagged.length).toBeGreaterThan(2);
    const feed = tagged.find((k) => k.endsWith(':feed')) ?? '';
    const room = tagged.find((k) => k.endsWith(':room:ops')) ?? '';
    expect(await admin.xlen(feed)).toBe(1);
    expect(await admin.xlen(room)).toBe(1);
    await log.close();
  });
  it('appends of different partitions made together go to Redis in one script call, or two when eight or more meet an idle log, each with its own outcome', async () => {
    const prefix = testPrefix('xpart');
    const calls: string[] = [];
    const log = createEventLog({ partitions: 16, log: silentLogger(), redis: { url: inject('redisUrl'), prefix }, onRedisCommand: (name) => calls.push(name) });
    const rooms = Array.from({ length: 16 }, (_, i) => `room-${i}`);
    for (const id of rooms) await log.rooms.put({ id, links: [] });
    // the rooms are spread over the partitions (a new room's partition: its hash mod the count)
    expect(new Set(rooms.map((room) => partitionOf(room, 16))).size).toBeGreaterThan(8);
    await log.append(message('room-0', 'first', { idem: 'api:dev1:dup' }));
    // 16 rooms, a duplicate of the event above and an unknown room, all in one tick
    const drafts = [...rooms.map((room, i) => message(room, `m${i}`)), message('room-0', 'again', { idem: 'api:dev1:dup' }), message('nowhere', 'lost')];
    calls.length = 0;
    const settled = await Promise.allSettled(drafts.map((d) => log.append(d)));
    const scripts = calls.filter((c) => c === 'evalsha' || c === 'eval');
    // 18 appends of one tick on an idle log: two calls of nine, so Redis runs the first while the second is built
    expect(scripts.length).toBe(2);
    expect(settled.slice(0, 16).map((s) => s.status === 'fulfilled' && !s.value.duplicate)).toEqual(rooms.map(() => true));
    expect(settled[16]?.status === 'fulfilled' && settled[16].value.duplicate).toBe(true);
    expect(settled[17]?.status === 'rejected' && isSyncgateError(settled[17].reason, 'SG_ERR_ROOM_UNKNOWN')).toBe(true);
    // each event in its own partition's feed and room, readable in order
    const { events } = await log.read(undefined, { rooms: 'all', limit: 100 });
    expect(events.map((e) => ('content' in e ? e.content.body : '')).sort()).toEqual(['first', ...rooms.map((_, i) => `m${i}`)].sort());
    for (const room of rooms) expect(events.filter((e) => e.room === room).length).toBe(room === 'room-0' ? 2 : 1);

    // fewer than eight together: one call
    calls.length = 0;
    await Promise.all(rooms.slice(0, 7).map((room) => log.append(message(room, 'few'))));
    expect(calls.filter((c) => c === 'evalsha' || c === 'eval').length).toBe(1);
    await log.close();
    await dropPrefix(admin, prefix);
  });

  it('a tick of appends to one room sent as two script calls keeps the order they were made in', async () => {
    const prefix = testPrefix('split');
    const calls: string[] = [];
    const log = createEventLog({ partitions: 4, log: silentLogger(), redis: { url: inject('redisUrl'), prefix }, onRedisCommand: (name) => calls.push(name) });
    await log.rooms.put({ id: 'r', links: [] });
    await log.append(message('r', 'before'));
    calls.length = 0;
    const bodies = Array.from({ length: 21 }, (_, i) => `m${i}`);
    const results = await Promise.all(bodies.map((body) => log.append(message('r', body))));
    expect(calls.filter((c) => c === 'evalsha' || c === 'eval').length).toBe(2);
    // the event ids follow the order the appends were made in, and so does the room's timeline
    expect([...results.map((r) => r.eventId)].sort()).toEqual(results.map((r) => r.eventId));
    const { events } = await log.read(undefined, { rooms: 'all', limit: 100 });
    expect(events.map((e) => ('content' in e ? e.content.body : ''))).toEqual(['before', ...bodies]);
    await log.close();
    await dropPrefix(admin, prefix);
  });

  it('keeps control characters and quotes exactly, and stores a lone surrogate as UTF-8 would (U+FFFD) without failing the batch it travels in', async () => {
    const prefix = testPrefix('surrogate');
    const log = createEventLog({ partitions: 1, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    await log.rooms.put({ id: 'r', links: [] });
    // Appended together: one script call carries all three.
    const controls = 'nul \u0000 us \u001f quote " backslash \\ slash / del \u007f';
    const drafts = [message('r', controls), message('r', 'half a pair: \ud83d!', { idem: 'api:dev1:lone-\udc00' }), message('r', 'after 🚀')];
    const results = await Promise.all(drafts.map((d) => log.append(d)));
    expect(results.map((r) => r.duplicate)).toEqual([false, false, false]);
    const { events } = await log.read(undefined, { rooms: 'all', limit: 10 });
    expect(events.map((e) => ('content' in e ? e.content.body : ''))).toEqual([controls, 'half a pair: \ufffd!', 'after 🚀']);
    expect(events[1]?.idem).toBe('api:dev1:lone-\ufffd');
    // The same key again is a duplicate of it, not a new event.
    expect((await log.append(drafts[1] as (typeof drafts)[number])).duplicate).toBe(true);
    await log.close();
    await dropPrefix(admin, prefix);
  });

  it('reads a log written in format 1 (ten fields per entry, before issue 19) and format 2 next to format-3 entries: read, history, getEvent and tail', async () => {
    const prefix = testPrefix('format1');
    const log = createEventLog({ partitions: 1, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    await log.rooms.put({ id: 'r', links: [] });
    const keys = keySpace(prefix, LATEST_KEY_LAYOUT);
    // An entry as the old append script wrote it: the feed's `r=<room>`, the timeline entry at the same id.
    const old = message('r', 'written by the old format, é 🚀', { idem: 'api:dev1:old' });
    const id = await admin.xadd(keys.feed(0), '*', 'r', 'r');
    await admin.xadd(keys.room(0, 'r'), id ?? '', ...encodeFieldsV1(old));
    // and one as format 2 (one field `e`, the received time whole)
    const second = message('r', 'written by format 2, é 🚀', { idem: 'api:dev1:second' });
    const id2 = await admin.xadd(keys.feed(0), '*', 'r', 'r');
    await admin.xadd(keys.room(0, 'r'), id2 ?? '', ...encodeFields(second));
    const fresh = message('r', 'written by the new format, é 🚀', { idem: 'api:dev1:new' });
    await log.append(fresh);
    expect(((await admin.xrange(keys.room(0, 'r'), '-', '+')) as Array<[string, string[]]>).map(([, fields]) => fields[0])).toEqual(['k', 'e', 'f']);
    const { events } = await log.read(undefined, { rooms: 'all', limit: 10 });
    const drafts = events.map(({ eventId: _e, cursor: _c, ...draft }) => draft);
    expect(drafts).toEqual([old, second, fresh]);
    // A device's rooms are read from their timelines directly (replies in Buffers since issue 19's fourth pass): both formats, UTF-8 intact.
    const granted = new Set(['r']);
    expect((await log.read(undefined, { rooms: granted, limit: 10 })).events).toEqual(events);
    const json = await log.readJson(undefined, { rooms: granted, limit: 10 }, deviceView('dev1'));
    expect(json.events).toEqual(events.map((e) => JSON.stringify(viewFor(e, 'dev1'))));
    const history = await log.roomHistory('r', { dir: 'b', limit: 10 });
    expect(history.events.map((e) => e.eventId)).toEqual(events.map((e) => e.eventId).reverse());
    const first = events[0];
    expect(first && (await log.getEvent('r', first.eventId))).toEqual(first);
    const it = log.tail(undefined, { rooms: 'all' })[Symbol.asyncIterator]();
    const tailed: string[] = [];
    while (tailed.length < 3) {
      const r = await it.next();
      if (r.done) break;
      if (r.value.type === 'event') tailed.push(r.value.event.idem);
    }
    await it.return?.();
    expect(tailed).toEqual(['api:dev1:old', 'api:dev1:second', 'api:dev1:new']);
    await log.close();
    await dropPrefix(admin, prefix);
  });

  it('caps a room under batched appends: a suffix of at most the cap plus one trim step is kept, and the trim mark is the last entry removed', async () => {
    const prefix = testPrefix('capbatch');
    const log = createEventLog({ partitions: 2, log: silentLogger(), redis: { url: inject('redisUrl'), prefix }, retention: { roomMaxLen: 10 } });
    await log.rooms.put({ id: 'r', links: [] });
    const start = await log.head();
    // 64 producers: script calls of many events each
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < 1000) await log.append(message('r', `m${next++}`));
      }),
    );
    const keys = keySpace(prefix, LATEST_KEY_LAYOUT);
    const p = Number(await admin.hget(keys.roomPartitions(), 'r'));
    const kept = (await admin.xrange(keys.room(p, 'r'), '-', '+')) as Array<[string, string[]]>;
    // capped to 10 whenever a call left more than 10 + 100 (the trim step)
    expect(kept.length).toBeGreaterThanOrEqual(10);
    expect(kept.length).toBeLessThanOrEqual(110);
    const mark = await admin.hget(keys.trimMarks(p), keys.room(p, 'r'));
    const feed = (await admin.xrange(keys.feed(p), '-', '+')) as Array<[string, string[]]>;
    const firstKept = feed.findIndex(([id]) => id === kept[0]?.[0]);
    expect(firstKept).toBeGreaterThan(0);
    expect(mark).toBe(feed[firstKept - 1]?.[0]);
    const page = await log.read(start, { rooms: new Set(['r']), limit: 1000 });
    expect(page.limited).toBe(true);
    expect(page.events.map((e) => e.eventId)).toHaveLength(kept.length);
    await log.close();
    await dropPrefix(admin, prefix);
  });

  it('sets the expiry of a partition\'s id-map bucket once a minute, not in every append call', async () => {
    const prefix = testPrefix('idexpiry');
    const idTtlMs = 30 * 24 * 3600 * 1000;
    const log = createEventLog({ partitions: 1, log: silentLogger(), redis: { url: inject('redisUrl'), prefix }, retention: { idTtlMs } });
    await log.rooms.put({ id: 'r', links: [] });
    const keys = keySpace(prefix, LATEST_KEY_LAYOUT);
    const idsKey = (at: number) => keys.ids(0, Math.floor(at / idTtlMs));
    const start = Date.now();
    await log.append(message('r', 'one'));
    const ttl = await admin.ttl(idsKey(start));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual((2 * idTtlMs) / 1000);
    // taken away (as if the key were made again): within the minute no call sets it again
    await admin.persist(idsKey(start));
    await log.append(message('r', 'two'));
    expect(await admin.ttl(idsKey(start))).toBe(-1);
    // a minute on, the next call does
    const later = Date.now() + 61_000;
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => later);
    try {
      await log.append(message('r', 'three'));
    } finally {
      clock.mockRestore();
    }
    expect(await admin.ttl(idsKey(later))).toBeGreaterThan(0);
    // and the duplicates still find the first appends
    expect((await log.append(message('r', 'one again', { idem: (await log.read(undefined, { rooms: 'all', limit: 1 })).events[0]?.idem ?? '' }))).duplicate).toBe(true);
    await log.close();
    await dropPrefix(admin, prefix);
  });

  describe('write format gate', () => {
    const open = (prefix: string) => createEventLog({ partitions: 2, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    /** the timeline entries of room r, as stored: [id, flat fields] */
    const timeline = async (prefix: string) => {
      const keys = keySpace(prefix, LATEST_KEY_LAYOUT);
      const entries: Array<[string, string[]]> = [];
      for (let p = 0; p < 2; p++) entries.push(...((await admin.xrange(keys.room(p, 'r'), '-', '+')) as Array<[string, string[]]>));
      return entries;
    };

    it('a new log stores format 3 and writes one field `f`, the received time as an offset from the id', async () => {
      const prefix = testPrefix('fmtnew');
      const log = open(prefix);
      await log.rooms.put({ id: 'r', links: [] });
      const fresh = message('r', 'fresh', { idem: 'api:dev1:txn-fresh', origin: { proto: 'api', via: 'api', ids: { 'api.txnId': 'txn-fresh' } } });
      await log.append(fresh);
      expect(await log.writeFormat()).toBe(3);
      expect(await admin.hget(keySpace(prefix, LATEST_KEY_LAYOUT).partitionMeta(), 'format')).toBe('3');
      const stored = await timeline(prefix);
      expect(stored.map(([, fields]) => fields[0])).toEqual(['f']);
      const [id, fields] = stored[0] ?? ['', []];
      const ms = Number(id.split('-')[0]);
      // the script wrote the offset from its own id: the text is what storedText3 gives for that id
      expect(fields[1]).toBe(storedText3(fresh, ms));
      expect(decodeFields('r', fields, ms)).toEqual(fresh);
      // builds that read formats 1 and 2 only cannot read it: why existing logs keep their format until raised
      expect(() => decodeFieldsV1('r', fields)).toThrow();
      // received times far from the id (a clock far behind or ahead, an imported event): offsets of 13 digits either way
      const skewed = [message('r', 'old', { ts: { received: 5 } }), message('r', 'ahead', { ts: { received: Date.now() + 10 * 365 * 24 * 3600 * 1000 } }), message('r', 'past 2^53', { ts: { received: 1e20 } })];
      for (const draft of skewed) await log.append(draft);
      const back = (await log.read(undefined, { rooms: 'all', limit: 10 })).events.map(({ eventId: _e, cursor: _c, ...draft }) => draft);
      expect(back).toEqual([fresh, ...skewed]);
      const json = await log.readJson(undefined, { rooms: new Set(['r']), limit: 10 }, deviceView('dev1'));
      expect(json.events.map((text) => (JSON.parse(text) as { ts: { received: number } }).ts.received)).toEqual([fresh, ...skewed].map((d) => d.ts.received));
      // the last one, whose difference from its id would not be exact, was stored whole (format 2)
      expect((await timeline(prefix)).map(([, f]) => f[0])).toEqual(['f', 'f', 'f', 'e']);
      await log.close();
      await dropPrefix(admin, prefix);
    });

    it('a log with format-1 entries and no stored format writes format 1 until raised, then 2, then 3; replicas follow; lowering refused', async () => {
      const prefix = testPrefix('fmtold');
      const keys = keySpace(prefix, LATEST_KEY_LAYOUT);
      // The log as a build before the gate left it: count stored, no format, a format-1 entry.
      const setup = open(prefix);
      await setup.rooms.put({ id: 'r', links: [] });
      await setup.close();
      await admin.hdel(keys.partitionMeta(), 'format');
      const old = message('r', 'old build', { idem: 'api:dev1:old' });
      const p = Number(await admin.hget(keys.roomPartitions(), 'r'));
      const id = await admin.xadd(keys.feed(p), '*', 'r', 'r');
      await admin.xadd(keys.room(p, 'r'), id ?? '', ...encodeFieldsV1(old));

      const a = open(prefix);
      const b = open(prefix);
      const before = [message('r', 'one', { idem: 'api:dev1:1' }), message('r', 'two \u{1F600}', { idem: 'api:dev1:2' }), message('r', 'three', { idem: 'api:dev1:3' })];
      await Promise.all(before.map((e) => a.append(e)));
      await b.append(message('r', 'four', { idem: 'api:dev1:4' }));
      expect(await a.writeFormat()).toBe(1);
      expect(await admin.hget(keys.partitionMeta(), 'format')).toBeNull();
      // an old-build reader (format 1 only) reads everything appended
      const oldReader = (await timeline(prefix)).map(([, fields]) => decodeFieldsV1('r', fields));
      expect(oldReader.map((d) => d.idem)).toEqual(['api:dev1:old', 'api:dev1:1', 'api:dev1:2', 'api:dev1:3', 'api:dev1:4']);
      expect(oldReader.slice(1, 4)).toEqual(before);

      await expectCode(a.raiseWriteFormat(2), undefined);
      await a.append(message('r', 'five', { idem: 'api:dev1:5' }));
      // b follows the raise when it reads the partition count again (delivery does once a lease period)
      await b.partitionCount();
      await b.append(message('r', 'six', { idem: 'api:dev1:6' }));
      const formatsOf = async () => (await timeline(prefix)).map(([, fields]) => (fields[0] === 'e' ? 2 : fields[0] === 'f' ? 3 : fields.length / 2 === 10 ? 1 : 0));
      expect(await formatsOf()).toEqual([1, 1, 1, 1, 1, 2, 2]);
      await expectCode(b.raiseWriteFormat(1), 'SG_ERR_LOG_FORMAT_LOWERED');
      expect(await admin.hget(keys.partitionMeta(), 'format')).toBe('2');
      // then to format 3, once no replica of a build that reads only formats 1 and 2 runs
      await expectCode(b.raiseWriteFormat(3), undefined);
      const later = [message('r', 'seven', { idem: 'api:dev1:7' }), message('r', 'eight', { idem: 'api:dev1:8' })];
      await b.append(later[0] as (typeof later)[number]);
      await a.partitionCount();
      await a.append(later[1] as (typeof later)[number]);
      expect(await formatsOf()).toEqual([1, 1, 1, 1, 1, 2, 2, 3, 3]);
      await expectCode(a.raiseWriteFormat(2), 'SG_ERR_LOG_FORMAT_LOWERED');
      // the new build reads all three
      const { events } = await b.read(undefined, { rooms: 'all', limit: 20 });
      expect(events.map((e) => e.idem)).toEqual(['api:dev1:old', ...[1, 2, 3, 4, 5, 6, 7, 8].map((n) => `api:dev1:${n}`)]);
      expect(events.slice(-2).map(({ eventId: _e, cursor: _c, ...draft }) => draft)).toEqual(later);
      const json = await a.readJson(undefined, { rooms: new Set(['r']), limit: 20 }, deviceView('dev1'));
      expect(json.events).toEqual(events.map((e) => JSON.stringify(viewFor(e, 'dev1'))));
      await a.close();
      await b.close();
      await dropPrefix(admin, prefix);
    });
  });
});

/** resolves when the promise fails with `code`, or succeeds when `code` is undefined */
async function expectCode(promise: Promise<unknown>, code: string | undefined): Promise<void> {
  const err: unknown = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err === undefined ? undefined : isSyncgateError(err) ? err.code : String(err)).toBe(code);
}
