/**
 * The room archive (adapters/xmpp-rooms/mam.ts) after the partition count is
 * raised (issue 24): a room keeps the partition it was created on, so MAM
 * must find a room's events where they are, not where a hash of today's
 * count would put them. Driven through the archive query handler on a real
 * event log (memory and Redis), with the count raised between two batches.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { handleArchiveQuery } from '../../../adapters/xmpp-rooms/mam.js';
import { parseXmppRoomsConfig } from '../../../adapters/xmpp-rooms/config.js';
import type { RoomsContext } from '../../../adapters/xmpp-rooms/context.js';
import { NS, xml, type XmlElement } from '../../../adapters/xmpp-rooms/ns.js';
import { createState, syncRooms } from '../../../adapters/xmpp-rooms/state.js';
import { contentInFormat } from '../../../src/bridge/format/index.js';
import { createIngestSink } from '../../../src/bridge/ingest.js';
import { createRoomLinks } from '../../../src/bridge/links.js';
import type { EventLog } from '../../../src/core/ports.js';
import { eventIdFor, locateEventId, partitionOf } from '../../../src/core/position.js';
import { createEventLog } from '../../../src/eventlog/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { dropPrefix, testPrefix } from '../../harness/redis.js';
import { message } from '../../fixtures/events.js';
import { until } from '../xmpp/helpers.js';

const DOMAIN = 'rooms.example.org';
/** A room whose partition under 16 (2) is not its hash under 32 (18): the old lookup looked in the wrong partition. */
const ROOM = 'hall';
const ROOM_JID = `${ROOM}@${DOMAIN}`;
const BEFORE = 16;
const AFTER = 32;
const REQUESTER = 'alice@example.org/phone';

interface Answer {
  readonly ids: string[];
  readonly bodies: string[];
  readonly complete: boolean;
  readonly last: string | undefined;
  /** the error condition, when the query was refused */
  readonly error: string | undefined;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function contextOn(log: EventLog): Promise<{ ctx: RoomsContext; sent: XmlElement[] }> {
  const links = await createRoomLinks({ rooms: log.rooms, logger: silentLogger() });
  cleanups.push(async () => links.close());
  const config = parseXmppRoomsConfig({ service: 'xmpp://127.0.0.1:5347', domain: DOMAIN, secret: 'unused', access: [{ jid: 'alice@example.org', user: 'alice' }] });
  const state = createState();
  syncRooms(state, DOMAIN, [{ room: ROOM, target: ROOM, name: undefined }]);
  const sent: XmlElement[] = [];
  const ctx: RoomsContext = {
    name: 'rooms',
    config,
    log: silentLogger(),
    sink: createIngestSink({ log, logger: silentLogger() }),
    links,
    archive: log,
    grants: async (user) => (user === 'alice' ? [ROOM] : []),
    contentIn: contentInFormat,
    state,
    send: async (stanza) => void sent.push(stanza),
    flush: async () => undefined,
  };
  return { ctx, sent };
}

async function query(ctx: RoomsContext, sent: XmlElement[], opts: { fields?: Record<string, string>; max?: number; after?: string }): Promise<Answer> {
  const queryid = randomUUID();
  const from = sent.length;
  const fields = Object.entries(opts.fields ?? {}).map(([name, v]) => xml('field', { var: name }, xml('value', {}, v)));
  const q = xml(
    'query',
    { xmlns: NS.mam, queryid },
    xml('x', { xmlns: NS.data, type: 'submit' }, xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, NS.mam)), ...fields),
    xml('set', { xmlns: NS.rsm }, opts.max !== undefined ? xml('max', {}, String(opts.max)) : undefined, opts.after !== undefined ? xml('after', {}, opts.after) : undefined),
  );
  const reply = await handleArchiveQuery(ctx, xml('iq', { type: 'set', id: queryid, from: REQUESTER, to: ROOM_JID }, q), q);
  const results = sent.slice(from).map((s) => s.getChild('result', NS.mam)).filter((r): r is XmlElement => r?.attrs['queryid'] === queryid);
  return {
    ids: results.map((r) => r.attrs['id'] ?? ''),
    bodies: results.map((r) => r.getChild('forwarded', NS.forward)?.getChild('message')?.getChildText('body') ?? ''),
    complete: reply.name === 'fin' && reply.attrs['complete'] === 'true',
    last: reply.getChild('set', NS.rsm)?.getChildText('last') ?? undefined,
    error: reply.name === 'error' ? reply.getChildElements().find((c) => c.getNS() === NS.stanzas)?.name : undefined,
  };
}

const backends: Array<{ name: string; create(): Promise<EventLog> }> = [
  { name: 'memory', create: async () => createEventLog({ partitions: BEFORE, log: silentLogger() }) },
  {
    name: 'redis',
    async create() {
      const prefix = testPrefix('rooms-mam-partitions');
      cleanups.push(async () => {
        const redis = new Redis(inject('redisUrl'));
        await dropPrefix(redis, prefix);
        redis.disconnect();
      });
      return createEventLog({ partitions: BEFORE, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    },
  },
];

describe.each(backends)('xmpp-rooms MAM after the partition count is raised ($name log)', (backend) => {
  it('finds the room where it was created: after-id, before-id, start and paging give exactly the right pages; an unknown id is item-not-found', async () => {
    expect(partitionOf(ROOM, AFTER)).not.toBe(partitionOf(ROOM, BEFORE));
    const log = await backend.create();
    cleanups.push(() => log.close());
    await log.open();
    await log.rooms.put({ id: ROOM, links: [{ endpoint: 'rooms', target: ROOM }] });

    const append = async (body: string) => (await log.append(message(ROOM, body))).eventId;
    const early: string[] = [];
    for (let i = 0; i < 5; i++) early.push(await append(`early ${i}`));
    // the next batch starts on a later millisecond, so `start` can name it exactly
    const lastEarlyMs = locateEventId(early.at(-1) as string)?.pos.ms ?? Infinity;
    await until(() => Date.now() > lastEarlyMs + 1, 'the clock to pass the early batch');

    expect(await log.raisePartitions(AFTER)).toBe(AFTER);
    expect(log.info.partitions).toBe(AFTER);
    const late: string[] = [];
    for (let i = 0; i < 5; i++) late.push(await append(`late ${i}`));
    const all = [...early, ...late];
    // the room kept its partition: every event is where the old count's hash put the room
    expect(all.map((id) => locateEventId(id)?.partition)).toEqual(all.map(() => partitionOf(ROOM, BEFORE)));
    expect(locateEventId(late[0] as string)?.pos.ms).toBeGreaterThan(lastEarlyMs);
    const bodies = (ids: string[]) => ids.map((id) => (early.includes(id) ? `early ${early.indexOf(id)}` : `late ${late.indexOf(id)}`));

    const { ctx, sent } = await contextOn(log);

    const everything = await query(ctx, sent, { max: 100 });
    expect(everything).toMatchObject({ ids: all, bodies: bodies(all), complete: true, error: undefined });

    const afterId = await query(ctx, sent, { fields: { 'after-id': early[2] as string }, max: 100 });
    expect(afterId).toMatchObject({ ids: all.slice(3), bodies: bodies(all.slice(3)), complete: true, error: undefined });

    const beforeId = await query(ctx, sent, { fields: { 'before-id': late[1] as string }, max: 100 });
    expect(beforeId).toMatchObject({ ids: all.slice(0, 6), complete: true, error: undefined });

    const between = await query(ctx, sent, { fields: { 'after-id': early[1] as string, 'before-id': late[3] as string }, max: 100 });
    expect(between).toMatchObject({ ids: all.slice(2, 8), complete: true, error: undefined });

    const start = await query(ctx, sent, { fields: { start: new Date(locateEventId(late[0] as string)?.pos.ms ?? 0).toISOString() }, max: 100 });
    expect(start).toMatchObject({ ids: late, bodies: bodies(late), complete: true, error: undefined });

    // paging forward with RSM after, from an after-id: pages of 3, complete exactly on the last
    const paged: string[] = [];
    let page = await query(ctx, sent, { fields: { 'after-id': early[0] as string }, max: 3 });
    const completes = [page.complete];
    paged.push(...page.ids);
    while (!page.complete) {
      page = await query(ctx, sent, { max: 3, after: page.last as string });
      expect(page.error).toBeUndefined();
      completes.push(page.complete);
      paged.push(...page.ids);
    }
    expect(paged).toEqual(all.slice(1));
    expect(completes).toEqual([false, false, true]);

    // unknown ids: one that is not in the log (on the room's partition and on the new hash's), one that is no id
    const first = locateEventId(all[0] as string);
    if (!first) throw new Error('not an event id');
    const missing = eventIdFor(first.partition, { ms: first.pos.ms, seq: first.pos.seq + 1000 });
    const elsewhere = eventIdFor(partitionOf(ROOM, AFTER), first.pos);
    for (const id of [missing, elsewhere, '0000000000000000000']) {
      expect((await query(ctx, sent, { fields: { 'after-id': id } })).error, `after-id ${id}`).toBe('item-not-found');
      expect((await query(ctx, sent, { fields: { 'before-id': id } })).error, `before-id ${id}`).toBe('item-not-found');
    }
  });
});
