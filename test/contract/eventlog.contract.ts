/**
 * The EventLog contract: one suite, run against every implementation
 * (memory and Redis). Each test builds its own log on its own key prefix.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { decodeSyncCursor, encodeSyncCursor, startCursor } from '../../src/core/cursor.js';
import { isSyncgateError } from '../../src/core/errors.js';
import type { LogEvent } from '../../src/core/event.js';
import type { AppendResult, EventLog, TailItem } from '../../src/core/ports.js';
import { ZERO_POS, comparePos, locateEventId } from '../../src/core/position.js';
import { viewJsonOfEvent } from '../../src/eventlog/codec.js';
import type { RetentionPolicy } from '../../src/eventlog/index.js';
import { message, reaction } from '../fixtures/events.js';
import { firstPerPartition, partitionOfRoom, placeRooms } from '../harness/room-partition.js';

export interface LogFactoryOptions {
  partitions?: number;
  retention?: Partial<RetentionPolicy>;
  tailBuffer?: number;
  /** the same name opens the same stored log again (another replica, or a restart) */
  store?: string;
}

export interface ContractTarget {
  name: string;
  create(options?: LogFactoryOptions): Promise<EventLog>;
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  try {
    await promise;
  } catch (err) {
    expect(isSyncgateError(err) ? err.code : String(err)).toBe(code);
    return;
  }
  throw new Error(`expected ${code}, got success`);
}

async function withRooms(log: EventLog, ...rooms: string[]): Promise<void> {
  for (const id of rooms) await log.rooms.put({ id, links: [] });
}

/** Collects events from a tail until `done` says so or the deadline passes. */
async function collect(iter: AsyncIterable<TailItem>, done: (events: LogEvent[]) => boolean, timeoutMs = 30_000): Promise<LogEvent[]> {
  const events: LogEvent[] = [];
  const it = iter[Symbol.asyncIterator]();
  const deadline = Date.now() + timeoutMs;
  try {
    while (!done(events)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`tail timed out with ${events.length} events`);
      let timer: NodeJS.Timeout | undefined;
      const r = await Promise.race([
        it.next(),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`tail timed out with ${events.length} events`)), left))),
      ]);
      clearTimeout(timer);
      if (r.done) break;
      if (r.value.type === 'event') events.push(r.value.event);
    }
  } finally {
    await it.return?.();
  }
  return events;
}

export function eventLogContract(target: ContractTarget): void {
  describe(`EventLog contract: ${target.name}`, () => {
    const open: EventLog[] = [];
    const make = async (options?: LogFactoryOptions) => {
      const log = await target.create(options);
      open.push(log);
      return log;
    };
    afterEach(async () => {
      await Promise.all(open.splice(0).map((l) => l.close()));
    });

    it('appends in order and reads back across rooms with positions that match the append results', async () => {
      const log = await make();
      await withRooms(log, 'ops', 'lobby', 'dev');
      const rooms = ['ops', 'lobby', 'dev'];
      const results = [];
      for (let i = 0; i < 30; i++) results.push(await log.append(message(rooms[i % 3] ?? 'ops', `m${i}`)));
      const read = await log.read(undefined, { rooms: 'all', limit: 100 });
      expect(read.limited).toBe(false);
      expect(read.events).toHaveLength(30);
      // order is defined per room (rooms may live in different partitions)
      for (const room of rooms) {
        const bodies = read.events.filter((e) => e.room === room).map((e) => (e.kind === 'message' ? e.content.body : ''));
        expect(bodies).toEqual(Array.from({ length: 30 }, (_, i) => i).filter((i) => rooms[i % 3] === room).map((i) => `m${i}`));
      }
      const byId = new Map(read.events.map((e) => [e.eventId, e]));
      for (const r of results) {
        expect(r.duplicate).toBe(false);
        expect(byId.get(r.eventId)?.cursor).toBe(r.cursor);
      }
      // a room filter returns exactly that room's events, in order
      const ops = await log.read(undefined, { rooms: new Set(['ops']), limit: 100 });
      expect(ops.events.map((e) => e.eventId)).toEqual(results.filter((_, i) => i % 3 === 0).map((r) => r.eventId));
      // nothing after the end
      const after = await log.read(read.next, { rooms: 'all', limit: 100 });
      expect(after.events).toEqual([]);
    });

    it('keeps every field of an event through the store', async () => {
      const log = await make();
      await withRooms(log, 'ops');
      const first = await log.append(message('ops', 'héllo 👋 שלום', { content: { body: 'héllo 👋 שלום', format: 'html', formatted: '<b>héllo</b>', mentions: ['bob'] }, ts: { received: 1_700_000_000_000, origin: 1_699_999_999_000 } }));
      const r = reaction('ops', first.eventId, ['👍', '🎉']);
      await log.append(r);
      const { events } = await log.read(undefined, { rooms: 'all', limit: 10 });
      const [m, re] = events;
      expect(m).toMatchObject({ kind: 'message', content: { body: 'héllo 👋 שלום', format: 'html', formatted: '<b>héllo</b>', mentions: ['bob'] }, ts: { received: 1_700_000_000_000, origin: 1_699_999_999_000 } });
      const { eventId: _e, cursor: _c, ...stored } = re as LogEvent;
      expect(stored).toEqual(r);
    });

    it('readJson: the same page as read, each event as the JSON of its device view (own txnId echoed, hidden ids left out)', async () => {
      const log = await make({ partitions: 4 });
      await withRooms(log, 'ops', 'lobby', 'dev');
      const first = await log.append(message('ops', 'mine "quoted" \\ 🚀', { origin: { proto: 'api', via: 'api', ids: { 'api.txnId': 't-1', 'api.device': 'dev1' } } }));
      await log.append(message('lobby', 'theirs', { origin: { proto: 'api', via: 'api', ids: { 'api.txnId': 't-2', 'api.device': 'dev2', 'xmpp.id': 'x1' } }, content: { body: 'theirs', format: 'html', formatted: '<i>theirs</i>' } }));
      await log.append(reaction('dev', first.eventId, ['👍']));
      for (let i = 0; i < 20; i++) await log.append(message(['ops', 'lobby', 'dev'][i % 3] ?? 'ops', `m${i}`));
      const view = { hiddenIds: ['api.txnId', 'api.device'], echo: { deviceKey: 'api.device', txnKey: 'api.txnId', deviceId: 'dev1' } };
      let since: string | undefined;
      let pages = 0;
      let seen = 0;
      for (;;) {
        const typed = await log.read(since, { rooms: new Set(['ops', 'lobby', 'dev']), limit: 7 });
        const json = await log.readJson(since, { rooms: new Set(['ops', 'lobby', 'dev']), limit: 7 }, view);
        expect({ next: json.next, limited: json.limited }).toEqual({ next: typed.next, limited: typed.limited });
        expect(json.events.map((e) => JSON.parse(e) as unknown)).toEqual(typed.events.map((e) => JSON.parse(viewJsonOfEvent(e, view)) as unknown));
        if (typed.events.length === 0) break;
        since = typed.next;
        seen += json.events.length;
        pages++;
      }
      // 23 events in pages of at most 7: several pages, every event once
      expect(seen).toBe(23);
      expect(pages).toBeGreaterThanOrEqual(4);
      const all = await log.readJson(undefined, { rooms: 'all', limit: 100 }, view);
      const views = all.events.map((e) => JSON.parse(e) as { eventId: string; unsigned?: unknown; origin?: { ids?: object }; idem?: unknown });
      const mine = views.find((v) => v.eventId === first.eventId);
      expect(mine?.unsigned).toEqual({ txnId: 't-1' });
      expect(mine?.origin?.ids).toEqual({});
      expect(mine?.idem).toBeUndefined();
      expect(views.filter((v) => v.unsigned !== undefined)).toHaveLength(1);
    });

    it('is idempotent: the same key returns the first eventId and cursor and appends nothing', async () => {
      const log = await make();
      await withRooms(log, 'ops');
      const draft = message('ops', 'once');
      const first = await log.append(draft);
      const again = await log.append({ ...draft, content: { body: 'different body, same key' } });
      const concurrent = await Promise.all(Array.from({ length: 20 }, () => log.append(draft)));
      const fields = (r: AppendResult) => ({ eventId: r.eventId, cursor: r.cursor, duplicate: r.duplicate });
      expect(fields(again)).toEqual({ ...fields(first), duplicate: true });
      for (const c of concurrent) expect(fields(c)).toEqual({ ...fields(first), duplicate: true });
      const { events } = await log.read(undefined, { rooms: 'all', limit: 100 });
      expect(events).toHaveLength(1);
      // the same key in another room is another event
      await withRooms(log, 'other');
      const other = await log.append({ ...draft, room: 'other' });
      expect(other.duplicate).toBe(false);
      expect(other.eventId).not.toBe(first.eventId);
    });

    it('rejects bad input with a coded error and appends nothing', async () => {
      const log = await make();
      await withRooms(log, 'ops');
      const good = message('ops', 'x');
      await expectCode(log.append({ ...good, kind: 'nonsense' } as unknown as typeof good), 'SG_ERR_EVENT_INVALID');
      await expectCode(log.append({ ...good, content: { body: 42 } } as unknown as typeof good), 'SG_ERR_EVENT_INVALID');
      await expectCode(log.append({ ...good, room: 'no such/room' }), 'SG_ERR_EVENT_INVALID');
      await expectCode(log.append({ ...good, room: 'ghost' }), 'SG_ERR_ROOM_UNKNOWN');
      await expectCode(log.append({ ...good, kind: 'typing', typing: { active: true } } as unknown as typeof good), 'SG_ERR_EVENT_INVALID');
      await expectCode(log.read('garbage-garbage', { rooms: 'all', limit: 10 }), 'SG_ERR_CURSOR_INVALID');
      await expectCode(log.read('', { rooms: 'all', limit: 10 }), 'SG_ERR_CURSOR_INVALID');
      // a partition this log does not have: a cursor of another log
      const foreign = encodeSyncCursor(new Map([[log.info.partitions, { ms: 1, seq: 0 }]]));
      await expectCode(log.read(foreign, { rooms: 'all', limit: 10 }), 'SG_ERR_CURSOR_INVALID');
      const head = await log.head();
      const tampered = head.slice(0, -2) + (head.endsWith('A') ? 'BB' : 'AA');
      await expectCode(log.read(tampered, { rooms: 'all', limit: 10 }), 'SG_ERR_CURSOR_INVALID');
      const appended = await log.append(good);
      // an event position is not a sync cursor
      await expectCode(log.read(appended.cursor, { rooms: 'all', limit: 10 }), 'SG_ERR_CURSOR_INVALID');
      await expectCode(log.read(undefined, { rooms: 'all', limit: 0 }), 'SG_ERR_PARAM_INVALID');
      const { events } = await log.read(undefined, { rooms: 'all', limit: 100 });
      expect(events.map((e) => e.eventId)).toEqual([appended.eventId]);
    });

    it('resumes from any cursor with exactly the rest', async () => {
      const log = await make({ partitions: 4 });
      const rooms = ['a', 'b', 'c', 'd', 'e', 'f'];
      await withRooms(log, ...rooms);
      const ids: string[] = [];
      for (let i = 0; i < 120; i++) ids.push((await log.append(message(rooms[i % rooms.length] ?? 'a', `m${i}`))).eventId);
      // page through with small pages, remembering every cursor
      const cursors: Array<{ cursor: string | undefined; seenBefore: number }> = [{ cursor: undefined, seenBefore: 0 }];
      const seen: string[] = [];
      let since: string | undefined;
      for (let guard = 0; guard < 100; guard++) {
        const page = await log.read(since, { rooms: 'all', limit: 7 });
        if (page.events.length === 0) break;
        expect(page.events.length).toBeLessThanOrEqual(7);
        seen.push(...page.events.map((e) => e.eventId));
        since = page.next;
        cursors.push({ cursor: since, seenBefore: seen.length });
      }
      expect([...seen].sort()).toEqual([...ids].sort());
      expect(new Set(seen).size).toBe(ids.length);
      // a room subset pages through exactly its rooms' events, in per-room order
      const subset = new Set(['a', 'c', 'e']);
      const subsetSeen: string[] = [];
      let s2: string | undefined;
      for (let guard = 0; guard < 100; guard++) {
        const page = await log.read(s2, { rooms: subset, limit: 5 });
        if (page.events.length === 0) break;
        subsetSeen.push(...page.events.map((e) => e.eventId));
        s2 = page.next;
      }
      const expectedSubset = ids.filter((_, i) => subset.has(rooms[i % rooms.length] ?? ''));
      expect(subsetSeen.length).toBe(expectedSubset.length);
      for (const room of subset) {
        const inRoom = new Set(ids.filter((_, i) => rooms[i % rooms.length] === room));
        expect(subsetSeen.filter((id) => inRoom.has(id))).toEqual(ids.filter((id) => inRoom.has(id)));
      }
      // from every cursor, reading to the end gives exactly the events not yet seen at that point
      for (const { cursor, seenBefore } of cursors) {
        const rest: string[] = [];
        let s = cursor;
        for (let guard = 0; guard < 100; guard++) {
          const page = await log.read(s, { rooms: 'all', limit: 50 });
          if (page.events.length === 0) break;
          rest.push(...page.events.map((e) => e.eventId));
          s = page.next;
        }
        expect(new Set(rest)).toEqual(new Set(seen.slice(seenBefore)));
      }
    });

    it('latest() gives the newest events and a cursor after which only new events come', async () => {
      const log = await make();
      await withRooms(log, 'ops', 'dev');
      for (let i = 0; i < 20; i++) await log.append(message(i % 2 ? 'ops' : 'dev', `m${i}`));
      const latest = await log.latest({ rooms: new Set(['ops']), limit: 3 });
      expect(latest.events.map((e) => (e.kind === 'message' ? e.content.body : ''))).toEqual(['m15', 'm17', 'm19']);
      const fresh = await log.append(message('ops', 'new'));
      const next = await log.read(latest.next, { rooms: new Set(['ops']), limit: 10 });
      expect(next.events.map((e) => e.eventId)).toEqual([fresh.eventId]);
    });

    it('pages room history both ways', async () => {
      const log = await make();
      await withRooms(log, 'ops', 'dev');
      const ids: string[] = [];
      for (let i = 0; i < 25; i++) {
        ids.push((await log.append(message('ops', `m${i}`))).eventId);
        await log.append(message('dev', `noise${i}`));
      }
      const back: string[] = [];
      let from: string | undefined;
      for (let guard = 0; guard < 10; guard++) {
        const page = await log.roomHistory('ops', from === undefined ? { dir: 'b', limit: 10 } : { dir: 'b', limit: 10, from });
        back.push(...page.events.map((e) => e.eventId));
        expect(page.limited).toBe(false);
        if (!page.next) break;
        from = page.next;
      }
      expect(back).toEqual([...ids].reverse());
      const forward = await log.roomHistory('ops', { dir: 'f', limit: 10 });
      expect(forward.events.map((e) => e.eventId)).toEqual(ids.slice(0, 10));
      const forward2 = await log.roomHistory('ops', { dir: 'f', limit: 100, from: forward.next ?? '' });
      expect(forward2.events.map((e) => e.eventId)).toEqual(ids.slice(10));
      expect(forward2.next).toBeUndefined();
      await expectCode(log.roomHistory('nope', { dir: 'b', limit: 10 }), 'SG_ERR_ROOM_UNKNOWN');
      const devCursor = (await log.roomHistory('dev', { dir: 'b', limit: 1 })).events[0]?.cursor ?? '';
      if ((await partitionOfRoom(log, 'dev')) !== (await partitionOfRoom(log, 'ops'))) {
        await expectCode(log.roomHistory('ops', { dir: 'b', limit: 10, from: devCursor }), 'SG_ERR_CURSOR_INVALID');
      }
    });

    it('resolves idempotency keys and aliases to event ids within a room, and finds events by id', async () => {
      const log = await make();
      await withRooms(log, 'ops', 'dev');
      const draft = message('ops', 'hi');
      const r = await log.append(draft, { aliases: ['xmpp:id:alice@x:abc'] });
      expect(await log.resolve('ops', draft.idem)).toBe(r.eventId);
      expect(await log.resolve('ops', 'xmpp:id:alice@x:abc')).toBe(r.eventId);
      expect(await log.resolve('dev', 'xmpp:id:alice@x:abc')).toBeUndefined();
      await log.alias('ops', r.eventId, ['mx:$delivered']);
      expect(await log.resolve('ops', 'mx:$delivered')).toBe(r.eventId);
      const later = await log.append(message('ops', 'later'));
      await log.alias('ops', later.eventId, ['mx:$delivered']);
      expect(await log.resolve('ops', 'mx:$delivered')).toBe(r.eventId); // the first mapping wins
      const got = await log.getEvent('ops', r.eventId);
      expect(got?.eventId).toBe(r.eventId);
      expect(got?.cursor).toBe(r.cursor);
      expect(await log.getEvent('dev', r.eventId)).toBeUndefined();
      expect(await log.getEvent('ops', 'not-an-id')).toBeUndefined();
    });

    it('reports limited when retention removed events after the cursor', async () => {
      const log = await make({ partitions: 2, retention: { roomMaxLen: 10 } });
      await withRooms(log, 'ops');
      const start = await log.head();
      for (let i = 0; i < 400; i++) await log.append(message('ops', `m${i}`));
      const fromStart = await log.read(start, { rooms: 'all', limit: 1000 });
      expect(fromStart.limited).toBe(true);
      const bodies = fromStart.events.map((e) => (e.kind === 'message' ? e.content.body : ''));
      expect(bodies.length).toBeLessThan(400);
      expect(bodies.at(-1)).toBe('m399');
      // what was kept is a suffix, in order
      const firstKept = Number(bodies[0]?.slice(1));
      expect(bodies).toEqual(Array.from({ length: 400 - firstKept }, (_, i) => `m${firstKept + i}`));
      // the same through a room filter (read from the room's timeline directly)
      const filtered = await log.read(start, { rooms: new Set(['ops']), limit: 1000 });
      expect(filtered.limited).toBe(true);
      expect(filtered.events.map((e) => e.eventId)).toEqual(fromStart.events.map((e) => e.eventId));
      const history = await log.roomHistory('ops', { dir: 'b', limit: 1000 });
      expect(history.limited).toBe(true);
      // a cursor after the trimmed part is not limited
      const head = await log.head();
      await log.append(message('ops', 'fresh'));
      const fromHead = await log.read(head, { rooms: 'all', limit: 10 });
      expect(fromHead.limited).toBe(false);
      expect(fromHead.events).toHaveLength(1);
    });

    it('trims by age and then reports limited for older cursors', async () => {
      const log = await make({ retention: { maxAgeMs: 1 } });
      await withRooms(log, 'ops');
      const start = await log.head();
      await log.append(message('ops', 'old'));
      const t = Date.now();
      while (Date.now() <= t + 2) await new Promise((r) => setImmediate(r));
      await log.trim();
      const read = await log.read(start, { rooms: 'all', limit: 10 });
      expect(read.limited).toBe(true);
      expect(read.events).toEqual([]);
    });

    it('tail: history first, then live, no gap and no duplicate', async () => {
      const log = await make({ partitions: 4 });
      await withRooms(log, 'a', 'b', 'c');
      const before: string[] = [];
      for (let i = 0; i < 50; i++) before.push((await log.append(message(['a', 'b', 'c'][i % 3] ?? 'a', `h${i}`))).eventId);
      const ac = new AbortController();
      const got = collect(log.tail(undefined, { rooms: 'all', signal: ac.signal }), (ev) => ev.length >= 100);
      const after: string[] = [];
      for (let i = 0; i < 50; i++) after.push((await log.append(message(['a', 'b', 'c'][i % 3] ?? 'a', `l${i}`))).eventId);
      const events = await got;
      expect(new Set(events.map((e) => e.eventId))).toEqual(new Set([...before, ...after]));
      expect(events).toHaveLength(100);
      ac.abort();
    });

    it('tail: a room filter and a cursor; every item carries a resumable cursor', async () => {
      const log = await make({ partitions: 4 });
      await withRooms(log, 'a', 'b');
      for (let i = 0; i < 10; i++) await log.append(message(i % 2 ? 'a' : 'b', `x${i}`));
      const head = await log.head();
      const items: TailItem[] = [];
      const it = log.tail(head, { rooms: new Set(['a']) })[Symbol.asyncIterator]();
      const want: string[] = [];
      for (let i = 0; i < 10; i++) {
        const r = await log.append(message(i % 2 ? 'a' : 'b', `y${i}`));
        if (i % 2) want.push(r.eventId);
      }
      while (items.length < 5) {
        const r = await it.next();
        if (r.done) break;
        items.push(r.value);
      }
      await it.return?.();
      expect(items.map((i) => (i.type === 'event' ? i.event.eventId : 'limited'))).toEqual(want);
      // resuming from the cursor of the 2nd item yields exactly items 3..5
      const resume = await log.read(items[1]?.next, { rooms: new Set(['a']), limit: 100 });
      expect(resume.events.map((e) => e.eventId)).toEqual(want.slice(2));
    });

    it('tail: a consumer slower than the live feed still gets every event once (bounded buffer)', async () => {
      const log = await make({ partitions: 2, tailBuffer: 8 });
      await withRooms(log, 'a', 'b');
      const ids: string[] = [];
      const it = log.tail(undefined, { rooms: 'all' })[Symbol.asyncIterator]();
      const writer = (async () => {
        for (let i = 0; i < 300; i++) ids.push((await log.append(message(i % 2 ? 'a' : 'b', `s${i}`))).eventId);
      })();
      const seen: string[] = [];
      while (seen.length < 300) {
        const r = await it.next();
        if (r.done) break;
        if (r.value.type === 'event') seen.push(r.value.event.eventId);
        if (seen.length % 25 === 0) await new Promise((resolve) => setTimeout(resolve, 5)); // deliberately slow consumer
      }
      await writer;
      await it.return?.();
      expect(seen).toHaveLength(300);
      expect(new Set(seen)).toEqual(new Set(ids));
    });

    it('tail: from a cursor older than a running live reader, with or without rooms in that partition, catches up and goes live', async () => {
      const log = await make({ partitions: 16 });
      const byPartition = firstPerPartition(await placeRooms(log, 't', (placed) => new Set(placed.values()).size >= 3));
      const [live = '', mine = '', beside = ''] = [...byPartition.values()];
      // a room in the live reader's partition that is not `live` itself
      const livePartition = await partitionOfRoom(log, live);
      const besides = await placeRooms(log, 's', (placed) => [...placed.values()].includes(livePartition));
      const liveBeside = [...besides].find(([, p]) => p === livePartition)?.[0] ?? '';
      const c0 = await log.head();
      await log.append(message(live, 'before the live reader'));
      // another device's tail starts the live reader of `live`'s partition after c0
      const other = new AbortController();
      const otherTail = log.tail(await log.head(), { rooms: new Set([live]), signal: other.signal })[Symbol.asyncIterator]();
      const otherFirst = otherTail.next();
      await log.append(message(live, 'wakes the live reader'));
      // once it has its first event, that tail is attached live (and stays so)
      const first = await otherFirst;
      const firstEvent = first.done === false && first.value.type === 'event' ? first.value.event : undefined;
      expect(firstEvent?.kind === 'message' ? firstEvent.content.body : undefined).toBe('wakes the live reader');
      for (const rooms of [[mine], [beside, liveBeside]]) {
        const tail = collect(log.tail(c0, { rooms: new Set(rooms) }), (ev) => ev.length >= rooms.length);
        const want = [];
        for (const room of rooms) want.push((await log.append(message(room, `for ${rooms.length}`))).eventId);
        expect((await tail).map((e) => e.eventId).sort()).toEqual(want.sort());
      }
      other.abort();
    });

    it('tail: a cursor from ahead of the log does not hold back other tails of the partition', async () => {
      const log = await make({ partitions: 4 });
      await withRooms(log, 'a');
      await log.append(message('a', 'first'));
      const head = await log.head();
      const ahead = encodeSyncCursor(new Map([...decodeSyncCursor(head)].map(([p, pos]) => [p, { ms: pos.ms + 3_600_000, seq: 0 }])));
      // the tail from the future starts the live readers
      const future = new AbortController();
      const it = log.tail(ahead, { rooms: new Set(['a']), signal: future.signal })[Symbol.asyncIterator]();
      const pending = it.next();
      const tail = collect(log.tail(head, { rooms: new Set(['a']) }), (ev) => ev.length >= 1);
      const sent = await log.append(message('a', 'second'));
      expect((await tail).map((e) => e.eventId)).toEqual([sent.eventId]);
      future.abort();
      expect((await pending).done).toBe(true);
    });

    it('read: every limit from 1 up returns the next events of any partition', async () => {
      const log = await make({ partitions: 16 });
      // one room in each of the 16 partitions, each with one event
      const rooms = firstPerPartition(await placeRooms(log, 'p', (placed) => new Set(placed.values()).size >= 16));
      const start = await log.head();
      const appended: string[] = [];
      for (const p of [...rooms.keys()].sort((a, b) => b - a)) appended.push((await log.append(message(rooms.get(p) ?? '', `in ${p}`))).eventId);
      for (const limit of [1, 2, 3, 5]) {
        for (const filter of ['all', new Set(rooms.values())] as const) {
          const seen: string[] = [];
          let next = start;
          for (let page = 0; page < 64 && seen.length < 16; page++) {
            const r = await log.read(next, { rooms: filter, limit });
            expect(r.events.length).toBeGreaterThan(0);
            expect(r.events.length).toBeLessThanOrEqual(limit);
            expect(r.next).not.toBe(next);
            seen.push(...r.events.map((e) => e.eventId));
            next = r.next;
          }
          expect(new Set(seen).size).toBe(seen.length);
          expect(new Set(seen)).toEqual(new Set(appended));
          expect((await log.read(next, { rooms: filter, limit })).events).toEqual([]);
        }
      }
    });

    it('read: pages stay full when the rooms read are spread unevenly over partitions', async () => {
      const log = await make({ partitions: 4 });
      // three rooms in one partition, one in another: traffic per partition follows its rooms
      const inPartition = (placed: Map<string, number>, p: number) => [...placed].filter(([, q]) => q === p).map(([room]) => room);
      const placed = await placeRooms(log, 'u', (m) => inPartition(m, 0).length >= 3 && inPartition(m, 1).length >= 1);
      const rooms = [...inPartition(placed, 0).slice(0, 3), ...inPartition(placed, 1).slice(0, 1)];
      const start = await log.head();
      for (let i = 0; i < 400; i++) await log.append(message(rooms[i % rooms.length] ?? '', `m${i}`));
      const seen = new Set<string>();
      let next = start;
      let pages = 0;
      for (;;) {
        const r = await log.read(next, { rooms: new Set(rooms), limit: 40 });
        if (r.events.length === 0) break;
        pages++;
        for (const e of r.events) seen.add(e.eventId);
        next = r.next;
        expect(pages).toBeLessThan(40);
      }
      expect(seen.size).toBe(400);
      // 400 events at 40 a page: 10 pages (equal shares per partition gave 15: the
      // one-room partition ran dry first, then each page was half full)
      expect(pages).toBeLessThanOrEqual(11);
    });

    it('4 writers × 4 tails over 10,000 events: every tail sees exactly the suffix after its cursor', async () => {
      const log = await make({ partitions: 8 });
      const rooms = Array.from({ length: 12 }, (_, i) => `room${i}`);
      await withRooms(log, ...rooms);
      const TOTAL = 10_000;
      const WRITERS = 4;
      const appended: Array<{ eventId: string }> = [];
      let written = 0;
      const writer = async (w: number) => {
        for (let i = 0; i < TOTAL / WRITERS; i++) {
          appended.push(await log.append(message(rooms[(i * WRITERS + w) % rooms.length] ?? 'room0', `w${w}-${i}`)));
          written++;
        }
      };
      const tails: Array<Promise<{ start: string | undefined; events: LogEvent[] }>> = [];
      const startTail = (start: string | undefined) => {
        const startVec = start === undefined ? startCursor() : decodeSyncCursor(start);
        const expectedCount = () =>
          appended.filter((a) => {
            const loc = locateEventId(a.eventId);
            const pos = loc ? (startVec.get(loc.partition) ?? ZERO_POS) : undefined;
            return loc !== undefined && pos !== undefined && comparePos(loc.pos, pos) > 0;
          }).length;
        let expected: number | undefined;
        const done = (ev: LogEvent[]) => written === TOTAL && ev.length >= (expected ??= expectedCount());
        tails.push(collect(log.tail(start, { rooms: 'all' }), done, 120_000).then((events) => ({ start, events })));
      };
      const writers = Array.from({ length: WRITERS }, (_, w) => writer(w));
      startTail(undefined);
      // the other tails start while appends are in flight, from the cursor of that moment
      for (const threshold of [TOTAL / 4, TOTAL / 2, (3 * TOTAL) / 4]) {
        while (written < threshold) await new Promise((r) => setTimeout(r, 2));
        startTail(await log.head());
      }
      await Promise.all(writers);
      const results = await Promise.all(tails);
      for (const { start, events } of results) {
        const startVec = start === undefined ? startCursor() : decodeSyncCursor(start);
        const expected = appended
          .filter((a) => {
            const loc = locateEventId(a.eventId);
            const pos = loc ? (startVec.get(loc.partition) ?? ZERO_POS) : undefined;
            return loc !== undefined && pos !== undefined && comparePos(loc.pos, pos) > 0;
          })
          .map((a) => a.eventId);
        const got = events.map((e) => e.eventId);
        expect(new Set(got).size).toBe(got.length); // no duplicate
        expect(got.length).toBe(expected.length); // no gap
        expect(new Set(got)).toEqual(new Set(expected));
        // per-partition order is log order
        const lastByPartition = new Map<number, string>();
        for (const id of got) {
          const p = locateEventId(id)?.partition ?? -1;
          const prev = lastByPartition.get(p);
          if (prev !== undefined) expect(id > prev).toBe(true);
          lastByPartition.set(p, id);
        }
      }
      expect(results.map((r) => r.events.length)[0]).toBe(TOTAL);
    });

    it('leases: renewed by their owner, refused to others until they expire, taken at once from a holder `reclaim` accepts', async () => {
      const log = await make();
      const ttl = 600_000;
      expect(await log.delivery.acquireLease(0, 'out:x', 'dead#1#aa', ttl)).toBe(true);
      expect(await log.delivery.acquireLease(0, 'out:x', 'dead#1#aa', ttl)).toBe(true);
      expect(await log.delivery.acquireLease(0, 'out:x', 'other#2#bb', ttl)).toBe(false);
      expect(await log.delivery.acquireLease(0, 'out:x', 'other#2#bb', ttl, (holder) => holder === 'someone-else')).toBe(false);
      expect(await log.delivery.acquireLease(0, 'out:x', 'dead#1#cc', ttl, (holder) => holder === 'dead#1#aa')).toBe(true);
      expect(await log.delivery.acquireLease(0, 'out:x', 'dead#1#aa', ttl)).toBe(false);
    });

    it('leases: a fencing token per lease that grows each time the lease is taken and stays while it is renewed; none for a non-holder', async () => {
      const log = await make();
      const ttl = 600_000;
      expect(await log.delivery.acquireLease(0, 'conn:f', 'a#1#aa', ttl)).toBe(true);
      const first = await log.delivery.leaseToken(0, 'conn:f', 'a#1#aa');
      expect(first).toBeGreaterThan(0);
      expect(await log.delivery.leaseToken(0, 'conn:f', 'b#2#bb')).toBeUndefined();
      // renewed: the same token
      expect(await log.delivery.acquireLease(0, 'conn:f', 'a#1#aa', ttl)).toBe(true);
      expect(await log.delivery.leaseToken(0, 'conn:f', 'a#1#aa')).toBe(first);
      // taken by another owner: a larger token, and the former holder has none
      expect(await log.delivery.acquireLease(0, 'conn:f', 'b#2#bb', ttl, (holder) => holder === 'a#1#aa')).toBe(true);
      const second = await log.delivery.leaseToken(0, 'conn:f', 'b#2#bb');
      expect(second).toBeGreaterThan(first ?? Infinity);
      expect(await log.delivery.leaseToken(0, 'conn:f', 'a#1#aa')).toBeUndefined();
      // released and taken again (even by the same owner as before): larger again
      await log.delivery.releaseLease(0, 'conn:f', 'b#2#bb');
      expect(await log.delivery.acquireLease(0, 'conn:f', 'a#1#aa', ttl)).toBe(true);
      expect(await log.delivery.leaseToken(0, 'conn:f', 'a#1#aa')).toBeGreaterThan(second ?? Infinity);
      // another lease has its own holder
      expect(await log.delivery.leaseToken(0, 'conn:other', 'a#1#aa')).toBeUndefined();
    });

    it('state: a fenced update under a former lease holder\'s token is refused and leaves the namespace unchanged', async () => {
      const log = await make();
      const ttl = 600_000;
      expect(await log.delivery.acquireLease(0, 'conn:mx', 'a#1#aa', ttl)).toBe(true);
      const tokenA = (await log.delivery.leaseToken(0, 'conn:mx', 'a#1#aa')) ?? -1;
      expect(await log.state.fencedUpdate('mx-crypto', tokenA, [['olm', 'a1'], ['megolm', 'a1'], ['otk', 'a1']], [])).toBe(0);
      // B takes the lease over (A paused past it) and claims the namespace before it reads
      expect(await log.delivery.acquireLease(0, 'conn:mx', 'b#2#bb', ttl, (holder) => holder === 'a#1#aa')).toBe(true);
      const tokenB = (await log.delivery.leaseToken(0, 'conn:mx', 'b#2#bb')) ?? -1;
      expect(await log.state.fencedUpdate('mx-crypto', tokenB, [], [])).toBe(0);
      expect(await log.state.fencedUpdate('mx-crypto', tokenB, [['olm', 'b1']], ['otk'])).toBe(1);
      const before = (await log.state.entries('mx-crypto')).sort();
      // A resumes and writes its stale records: refused, nothing of it lands
      await expectCode(log.state.fencedUpdate('mx-crypto', tokenA, [['olm', 'a2'], ['megolm', 'a2'], ['new', 'a2']], ['megolm']), 'SG_ERR_STATE_FENCED');
      await expectCode(log.state.fencedUpdate('mx-crypto', tokenA, [], []), 'SG_ERR_STATE_FENCED');
      expect((await log.state.entries('mx-crypto')).sort()).toEqual(before);
      expect(await log.state.get('mx-crypto', 'olm')).toBe('b1');
      expect(await log.state.get('mx-crypto', 'otk')).toBeUndefined();
      // B goes on writing; another namespace is fenced on its own
      expect(await log.state.fencedUpdate('mx-crypto', tokenB, [['megolm', 'b2']], [])).toBe(0);
      expect(await log.state.get('mx-crypto', 'megolm')).toBe('b2');
      expect(await log.state.fencedUpdate('other', tokenA, [['k', 'v']], [])).toBe(0);
    });

    it('state: a fenced update applies thousands of keys in one write', async () => {
      const log = await make();
      const many = Array.from({ length: 1500 }, (_, i) => [`k${i}`, `v${i}`] as const);
      expect(await log.state.fencedUpdate('bulk', 7, many, [])).toBe(0);
      const gone = many.slice(0, 1200).map(([k]) => k);
      expect(await log.state.fencedUpdate('bulk', 7, [['k0', 'again']], gone)).toBe(1199);
      const left = await log.state.entries('bulk');
      // the 300 kept, k0 set again, and the fencing token's own field
      expect(left.length).toBe(302);
      expect(await log.state.get('bulk', 'k0')).toBe('again');
      expect(await log.state.get('bulk', 'k1499')).toBe('v1499');
    });

    it('pendingCount: entries read by a group and not acknowledged, over all partitions; 0 for an unknown group', async () => {
      const log = await make();
      const partitions = log.info.partitions;
      for (let p = 0; p < partitions; p++) await log.delivery.ensureGroup(p, 'out:pend');
      expect(await log.delivery.pendingCount('out:pend')).toBe(0);
      await withRooms(log, 'room0', 'room1', 'room2', 'room3', 'room4', 'room5');
      for (let i = 0; i < 6; i++) await log.append(message(`room${i}`, `p${i}`));
      const read = [];
      for (let p = 0; p < partitions; p++) {
        await log.delivery.acquireLease(p, 'out:pend', 'me#1#aa', 600_000);
        read.push(...(await log.delivery.readNew(p, 'out:pend', 'me#1#aa', 100, 0)).map((e) => ({ p, id: e.id })));
      }
      expect(read).toHaveLength(6);
      expect(await log.delivery.pendingCount('out:pend')).toBe(6);
      const first = read[0];
      if (first) await log.delivery.ack(first.p, 'out:pend', 'me#1#aa', [first.id]);
      expect(await log.delivery.pendingCount('out:pend')).toBe(5);
      expect(await log.delivery.pendingCount('out:nobody')).toBe(0);
    });

    it('lag: unacknowledged entries of a group (read or not yet read) and the feed time of the oldest; 0 and none when caught up', async () => {
      const log = await make();
      const partitions = log.info.partitions;
      for (let p = 0; p < partitions; p++) await log.delivery.ensureGroup(p, 'out:lag');
      expect(await log.delivery.lag('out:lag')).toEqual({ events: 0, oldestMs: undefined });
      await withRooms(log, 'room0', 'room1', 'room2', 'room3');
      const before = Date.now();
      for (let i = 0; i < 4; i++) await log.append(message(`room${i}`, `l${i}`));
      const unread = await log.delivery.lag('out:lag');
      expect(unread.events).toBe(4);
      expect(unread.oldestMs).toBeGreaterThanOrEqual(before - 1000);
      expect(unread.oldestMs).toBeLessThanOrEqual(Date.now());
      // read (pending) still counts; acknowledged does not
      const read: Array<{ p: number; id: string }> = [];
      for (let p = 0; p < partitions; p++) {
        await log.delivery.acquireLease(p, 'out:lag', 'me#1#aa', 600_000);
        read.push(...(await log.delivery.readNew(p, 'out:lag', 'me#1#aa', 100, 0)).map((e) => ({ p, id: e.id })));
      }
      expect((await log.delivery.lag('out:lag')).events).toBe(4);
      for (const r of read) await log.delivery.ack(r.p, 'out:lag', 'me#1#aa', [r.id]);
      expect(await log.delivery.lag('out:lag')).toEqual({ events: 0, oldestMs: undefined });
      expect(await log.delivery.lag('out:nobody')).toEqual({ events: 0, oldestMs: undefined });
    });

    it('delivery records keep the time of the confirmation (also without native ids); retry notes are shared and cleared', async () => {
      const log = await make();
      await withRooms(log, 'rec');
      const a = await log.append(message('rec', 'a'));
      const b = await log.append(message('rec', 'b'));
      const before = Date.now();
      await log.delivery.recordDelivery('rec', a.eventId, 'mqtt', {});
      await log.delivery.recordDelivery('rec', b.eventId, 'xmpp', { stanzaId: 's-1' });
      const [ra, rb] = await log.delivery.deliveryRecords('rec', [a.eventId, b.eventId], 'mqtt');
      expect(ra?.nativeIds).toEqual({});
      expect(ra?.at).toBeGreaterThanOrEqual(before);
      expect(rb).toBeUndefined();
      expect((await log.delivery.deliveryRecords('rec', [b.eventId], 'xmpp'))[0]?.nativeIds).toEqual({ stanzaId: 's-1' });
      // what references read: the native ids only, none when there are none
      expect(await log.delivery.deliveredIds('rec', b.eventId, 'xmpp')).toEqual({ stanzaId: 's-1' });
      expect(await log.delivery.deliveredIds('rec', a.eventId, 'mqtt')).toBeUndefined();

      await log.delivery.noteRetry('rec', b.eventId, 'mqtt', { attempt: 2, nextAt: 123, error: 'refused', at: 100 });
      expect(await log.delivery.retries()).toEqual([{ room: 'rec', eventId: b.eventId, endpoint: 'mqtt', attempt: 2, nextAt: 123, error: 'refused', at: 100 }]);
      await log.delivery.noteRetry('rec', b.eventId, 'mqtt', undefined);
      expect(await log.delivery.retries()).toEqual([]);
    });

    it('state: advance is monotonic, setIfAbsent sets once', async () => {
      const log = await make();
      expect(await log.state.advance('markers', 'alice:ops', 'B')).toBe('B');
      expect(await log.state.advance('markers', 'alice:ops', 'A')).toBe('B');
      expect(await log.state.advance('markers', 'alice:ops', 'C')).toBe('C');
      expect(await log.state.get('markers', 'alice:ops')).toBe('C');
      expect(await log.state.setIfAbsent('devices', 'd1', 'x')).toBe(true);
      expect(await log.state.setIfAbsent('devices', 'd1', 'y')).toBe(false);
      expect(await log.state.entries('devices')).toEqual([['d1', 'x']]);
      expect(await log.state.delete('devices', 'd1')).toBe(true);
      expect(await log.state.get('devices', 'd1')).toBeUndefined();
    });

    it('state: update sets and deletes several keys of a namespace at once', async () => {
      const log = await make();
      await log.state.set('crypto', 'old', '0');
      await log.state.set('crypto', 'kept', 'k');
      await log.state.update('crypto', [['a', '1'], ['b', '2'], ['kept', 'k2']], ['old', 'missing']);
      expect((await log.state.entries('crypto')).sort()).toEqual([['a', '1'], ['b', '2'], ['kept', 'k2']]);
      // a key both set and deleted is set; an empty update changes nothing
      await log.state.update('crypto', [['a', '3']], ['a', 'b']);
      await log.state.update('crypto', [], []);
      expect((await log.state.entries('crypto')).sort()).toEqual([['a', '3'], ['kept', 'k2']]);
      expect(await log.state.entries('other')).toEqual([]);
    });

    it('rooms: put, get, list, delete, and watchers hear about changes', async () => {
      const log = await make();
      const heard: string[] = [];
      const stop = await log.rooms.watch((room) => heard.push(room));
      await log.rooms.put({ id: 'ops', name: 'Ops', links: [{ endpoint: 'xmpp', target: 'ops@conference.example.org' }] });
      await log.rooms.put({ id: 'dev', links: [] });
      expect((await log.rooms.get('ops'))?.links[0]?.target).toBe('ops@conference.example.org');
      expect((await log.rooms.list()).map((r) => r.id)).toEqual(['dev', 'ops']);
      expect(await log.rooms.delete('dev')).toBe(true);
      expect(await log.rooms.delete('dev')).toBe(false);
      await expectCode(log.append(message('dev', 'x')), 'SG_ERR_ROOM_UNKNOWN');
      const deadline = Date.now() + 5000;
      while (heard.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      stop();
      expect(heard).toEqual(['ops', 'dev', 'dev']);
    });

    it('telemetry goes to its own capped stream, not the timeline', async () => {
      const log = await make({ retention: { telemetryMaxLen: 5 } });
      await withRooms(log, 'ops');
      for (let i = 0; i < 8; i++) {
        await log.appendTelemetry({
          v: 1,
          kind: 'telemetry',
          idem: `mqtt:dev1:${i}`,
          room: 'ops',
          sender: { uid: 'dev1', proto: 'mqtt', native: 'dev1', auth: 'broker-acl' },
          origin: { proto: 'mqtt', via: 'mqtt', ids: { 'mqtt.topic': 'devices/dev1/telemetry/temp' } },
          ts: { received: Date.now() },
          telemetry: { contentType: 'application/json', payload: JSON.stringify({ t: i }) },
        });
      }
      const rows = await log.telemetry('ops', 100);
      expect(rows.length).toBeGreaterThanOrEqual(5);
      expect(rows.length).toBeLessThanOrEqual(8);
      expect(rows[0]?.event.telemetry.payload).toBe(JSON.stringify({ t: 7 }));
      expect((await log.read(undefined, { rooms: 'all', limit: 10 })).events).toEqual([]);
    });

    it('pages telemetry by entry id: backwards newest first, forwards oldest first', async () => {
      const log = await make();
      await withRooms(log, 'ops');
      for (let i = 0; i < 7; i++) {
        await log.appendTelemetry({
          v: 1,
          kind: 'telemetry',
          idem: `mqtt:dev1:p${i}`,
          room: 'ops',
          sender: { uid: 'dev1', proto: 'mqtt', native: 'dev1', auth: 'broker-acl' },
          origin: { proto: 'mqtt', via: 'mqtt', ids: {} },
          ts: { received: Date.now() },
          telemetry: { contentType: 'application/json', payload: JSON.stringify({ t: i }) },
        });
      }
      const t = (rows: Array<{ event: { telemetry: { payload: string } } }>) => rows.map((r) => (JSON.parse(r.event.telemetry.payload) as { t: number }).t);
      const newest = await log.telemetry('ops', 3);
      expect(t(newest)).toEqual([6, 5, 4]);
      const older = await log.telemetry('ops', 3, { before: newest.at(-1)?.id as string });
      expect(t(older)).toEqual([3, 2, 1]);
      expect(t(await log.telemetry('ops', 3, { before: older.at(-1)?.id as string }))).toEqual([0]);
      expect(t(await log.telemetry('ops', 10, { after: older[0]?.id as string }))).toEqual([4, 5, 6]);
      expect(t(await log.telemetry('ops', 10, { after: newest[0]?.id as string }))).toEqual([]);
      await expect(log.telemetry('ops', 3, { before: 'garbage' })).rejects.toMatchObject({ code: 'SG_ERR_CURSOR_INVALID' });
    });
  });
}
