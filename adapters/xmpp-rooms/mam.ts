/**
 * The room archive (XEP-0313 v2 with XEP-0059 paging), served from the room
 * timeline: archive ids are event ids. `start`/`end`, `after-id`/`before-id`,
 * `ids` (#extended), `with` (an occupant's room JID, or a real bare JID),
 * RSM `after`/`before`/`max`, paging both ways; `<fin complete="true">`
 * exactly when the page reaches the edge in its direction; an unknown id is
 * item-not-found. A device that asks `after-id=<last stanza-id it saw>` gets
 * exactly what /v1/sync would give an HTTP device from the same point.
 */
import { encodeEventPosition } from '../../src/core/cursor.js';
import type { LogEvent } from '../../src/core/event.js';
import { comparePos, justBefore, locateEventId, type StreamPos } from '../../src/core/position.js';
import { mayUse } from './access.js';
import type { RoomsContext } from './context.js';
import { occupantUid } from './identity.js';
import { NS, bareJid, localOf, resourceOf, stanzaError, xml, type XmlElement } from './ns.js';
import { messageBuilder } from './outbound.js';
import { storedAt } from './render.js';
import { count, countRefusal, type RoomState } from './state.js';

const READ_PAGE = 500;

export interface ArchiveQuery {
  readonly queryId: string | undefined;
  /** exclusive bounds */
  readonly lower: StreamPos | undefined;
  readonly upper: StreamPos | undefined;
  readonly ids: readonly string[] | undefined;
  readonly with: string | undefined;
  readonly max: number;
  /** RSM <before/> was given: the page ends at the upper bound */
  readonly backwards: boolean;
}

class QueryError extends Error {
  constructor(
    readonly type: 'cancel' | 'modify' | 'auth',
    readonly condition: string,
    text: string,
  ) {
    super(text);
  }
}

function formFields(query: XmlElement): Map<string, string[]> {
  const fields = new Map<string, string[]>();
  const form = query.getChild('x', NS.data);
  for (const field of form?.getChildren('field') ?? []) {
    const name = field.attrs['var'];
    if (name !== undefined) fields.set(name, field.getChildren('value').map((v) => v.getText()));
  }
  return fields;
}

function parseTime(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) throw new QueryError('modify', 'bad-request', `${name} is not a date-time`);
  return ms;
}

function minPos(a: StreamPos | undefined, b: StreamPos | undefined): StreamPos | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return comparePos(a, b) <= 0 ? a : b;
}

function maxPos(a: StreamPos | undefined, b: StreamPos | undefined): StreamPos | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return comparePos(a, b) >= 0 ? a : b;
}

/** The partition holding the room's events, read off its first event once (undefined while it has none). */
async function roomPartition(ctx: RoomsContext, room: RoomState): Promise<number | undefined> {
  if (room.partition === undefined) {
    const first = (await ctx.archive.roomHistory(room.room, { dir: 'f', limit: 1 })).events[0];
    const location = first === undefined ? undefined : locateEventId(first.eventId);
    if (location) room.partition = location.partition;
  }
  return room.partition;
}

/** The position of an archive id of this room; item-not-found when it is not one. */
async function positionOfId(ctx: RoomsContext, room: RoomState, id: string): Promise<StreamPos> {
  const location = locateEventId(id);
  if (!location || location.partition !== (await roomPartition(ctx, room)) || !(await ctx.archive.getEvent(room.room, id))) {
    throw new QueryError('cancel', 'item-not-found', `no archived message ${id} in this room`);
  }
  return location.pos;
}

export async function parseQuery(ctx: RoomsContext, room: RoomState, query: XmlElement): Promise<ArchiveQuery> {
  const fields = formFields(query);
  const one = (name: string) => fields.get(name)?.[0];
  const set = query.getChild('set', NS.rsm);
  const maxText = set?.getChildText('max') ?? undefined;
  if (maxText !== undefined && !/^\d{1,9}$/.test(maxText)) throw new QueryError('modify', 'bad-request', 'max must be a number');
  const max = Math.min(maxText === undefined ? ctx.config.mamDefaultPage : Number(maxText), ctx.config.mamMaxPage);
  const pos = async (id: string | undefined) => (id === undefined || id === '' ? undefined : positionOfId(ctx, room, id));
  const start = parseTime(one('start'), 'start');
  const end = parseTime(one('end'), 'end');
  const rsmAfter = set?.getChildText('after') ?? undefined;
  const beforeEl = set?.getChild('before');
  const rsmBefore = beforeEl?.getText() ?? undefined;
  let lower = maxPos(await pos(one('after-id')), await pos(rsmAfter));
  if (start !== undefined) lower = maxPos(lower, justBefore({ ms: start, seq: 0 }));
  let upper = minPos(await pos(one('before-id')), await pos(rsmBefore));
  if (end !== undefined) upper = minPos(upper, { ms: end + 1, seq: 0 });
  const ids = fields.get('ids');
  if (ids) for (const id of ids) await positionOfId(ctx, room, id);
  return { queryId: query.attrs['queryid'], lower, upper, ids, with: one('with'), max, backwards: beforeEl !== undefined };
}

function matchesWith(room: RoomState, message: XmlElement, event: LogEvent, withJid: string | undefined): boolean {
  if (withJid === undefined) return true;
  const nick = resourceOf(withJid);
  if (nick !== undefined) return bareJid(withJid) === room.jid && message.attrs['from'] === `${room.jid}/${nick}`;
  return event.sender.uid === occupantUid(bareJid(withJid));
}

interface Item {
  readonly event: LogEvent;
  readonly message: XmlElement;
}

interface Found {
  readonly items: Item[];
  readonly complete: boolean;
}

/** The event's archived message, or undefined when the query does not select it. */
type Select = (event: LogEvent) => Promise<XmlElement | undefined>;

/** Up to max items within the bounds, in log order, and whether the page reaches the edge it moves toward. */
async function findPage(ctx: RoomsContext, room: RoomState, q: ArchiveQuery, select: Select): Promise<Found> {
  const found: Item[] = [];
  const done = (complete: boolean): Found => ({ items: q.backwards ? found.reverse() : found, complete });
  if (q.ids) {
    for (const id of [...new Set(q.ids)].sort()) {
      const event = await ctx.archive.getEvent(room.room, id);
      const message = event ? await select(event) : undefined;
      if (event && message) found.push({ event, message });
    }
    return { items: found, complete: true };
  }
  const dir = q.backwards ? 'b' : 'f';
  const startAt = q.backwards ? q.upper : q.lower;
  const partition = startAt === undefined ? undefined : await roomPartition(ctx, room);
  // a room without events has nothing to page
  if (startAt !== undefined && partition === undefined) return done(true);
  let from = startAt === undefined || partition === undefined ? undefined : encodeEventPosition({ partitions: ctx.archive.info.partitions, partition, pos: startAt });
  // The first read asks for what a page needs (one more tells whether it is the last); filters read on.
  let limit = Math.min(READ_PAGE, q.max + 1);
  for (;;) {
    const page = await ctx.archive.roomHistory(room.room, { ...(from !== undefined ? { from } : {}), dir, limit });
    limit = READ_PAGE;
    for (const event of page.events) {
      const pos = locateEventId(event.eventId)?.pos;
      if (!pos) continue;
      const outside = q.backwards ? q.lower !== undefined && comparePos(pos, q.lower) <= 0 : q.upper !== undefined && comparePos(pos, q.upper) >= 0;
      if (outside) return done(true);
      const message = await select(event);
      if (!message) continue;
      if (found.length === q.max) return done(false);
      found.push({ event, message });
    }
    if (page.next === undefined) return done(true);
    from = page.next;
  }
}

function resultMessage(room: RoomState, requester: string, queryId: string | undefined, item: Item): XmlElement {
  const { event, message } = item;
  delete message.attrs['to'];
  return xml(
    'message',
    { from: room.jid, to: requester },
    xml(
      'result',
      { xmlns: NS.mam, id: event.eventId, ...(queryId !== undefined ? { queryid: queryId } : {}) },
      xml('forwarded', { xmlns: NS.forward }, xml('delay', { xmlns: NS.delay, stamp: new Date(storedAt(event)).toISOString() }), message),
    ),
  );
}

function fin(found: Found): XmlElement {
  const first = found.items[0]?.event.eventId;
  const last = found.items.at(-1)?.event.eventId;
  return xml(
    'fin',
    { xmlns: NS.mam, ...(found.complete ? { complete: 'true' } : {}) },
    xml('set', { xmlns: NS.rsm }, first !== undefined ? xml('first', {}, first) : undefined, last !== undefined ? xml('last', {}, last) : undefined),
  );
}

async function archiveQuery(ctx: RoomsContext, stanza: XmlElement, query: XmlElement): Promise<XmlElement> {
  const to = stanza.attrs['to'] ?? '';
  const requester = stanza.attrs['from'] ?? '';
  const local = resourceOf(to) === undefined ? localOf(to) : undefined;
  const room = local === undefined ? undefined : ctx.state.rooms.get(local);
  if (!room) throw new QueryError('cancel', 'item-not-found', 'no such room archive');
  const verdict = await mayUse(ctx, bareJid(requester), room.room);
  if (!verdict.ok) throw new QueryError('auth', verdict.condition, 'you are not a member of this room');
  const q = await parseQuery(ctx, room, query);
  count(ctx.state, 'mamQueries');
  const select: Select = async (event) => {
    const message = (await messageBuilder(ctx, room, event))(requester);
    return message && matchesWith(room, message, event, q.with) ? message : undefined;
  };
  const found = await findPage(ctx, room, q, select);
  for (const item of found.items) await ctx.send(resultMessage(room, requester, q.queryId, item));
  return fin(found);
}

/** The iq set handler: results as messages, then the <fin/> as the iq result (or an error). */
export async function handleArchiveQuery(ctx: RoomsContext, stanza: XmlElement, query: XmlElement): Promise<XmlElement> {
  try {
    return await archiveQuery(ctx, stanza, query);
  } catch (err) {
    if (!(err instanceof QueryError)) throw err;
    countRefusal(ctx.state, err.condition);
    return stanzaError(err.type, err.condition, err.message);
  }
}

/** The iq get handler: the search form (XEP-0313 §4.1.1). */
export function archiveForm(): XmlElement {
  const field = (name: string, type: string) => xml('field', { var: name, type });
  return xml(
    'query',
    { xmlns: NS.mam },
    xml(
      'x',
      { xmlns: NS.data, type: 'form' },
      xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, NS.mam)),
      field('with', 'jid-single'),
      field('start', 'text-single'),
      field('end', 'text-single'),
      field('after-id', 'text-single'),
      field('before-id', 'text-single'),
      field('ids', 'text-multi'),
    ),
  );
}
