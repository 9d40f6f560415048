/**
 * Bot-mode catch-up: which events of a joined room's /sync timeline are
 * bridged (sync.ts appends them in order before it saves the batch token).
 * - A room we have just joined is bridged from our join on (what came
 *   before only tells membership and encryption state).
 * - The very first sync (no saved token) bridges nothing old: it only learns
 *   the state the timeline shows.
 * - A `limited` timeline (the homeserver left events out) is completed from
 *   /messages, from the previous token up to the timeline's `prev_batch`,
 *   before the timeline itself.
 * Appservice mode needs none of this: the homeserver keeps what it could not
 * push and sends it again (transactions.ts).
 */
import type { Logger } from 'pino';
import { mxPath, type JsonObject, type MatrixHttp } from './client.js';
import type { InboundPort } from './inbound/dispatch.js';
import { isObject } from './normalise.js';

export interface CatchupCounters {
  gapFills: number;
  gapEvents: number;
}

export interface CatchupDeps {
  readonly http: MatrixHttp;
  /** our bot */
  readonly userId: string;
  readonly inbound: InboundPort;
  readonly log: Logger;
  readonly isLinked: (roomId: string) => boolean;
  /** ends a gap fill when the loop stops */
  readonly signal: AbortSignal;
  readonly counters: CatchupCounters;
}

const GAP_PAGE = 100;
const MAX_GAP_PAGES = 50;

const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const obj = (v: unknown): JsonObject => (isObject(v) ? v : {});

/** The events of one room's timeline to bridge, in order; what is not bridged is observed for its state. */
export async function timelineToBridge(d: CatchupDeps, roomId: string, timeline: JsonObject, since: string | undefined): Promise<unknown[]> {
  const events = arr(timeline['events']);
  const joinedAt = ownJoinIndex(d.userId, events);
  if (joinedAt >= 0) {
    for (const ev of events.slice(0, joinedAt + 1)) await d.inbound.observeState(ev, roomId);
    return events.slice(joinedAt + 1);
  }
  if (since === undefined) {
    for (const ev of events) await d.inbound.observeState(ev, roomId);
    return [];
  }
  if (timeline['limited'] === true && typeof timeline['prev_batch'] === 'string' && d.isLinked(roomId)) {
    return [...(await gap(d, roomId, since, timeline['prev_batch'])), ...events];
  }
  return events;
}

/** The index of our own (new) join in a timeline, -1 when there is none. */
function ownJoinIndex(userId: string, events: unknown[]): number {
  for (let i = events.length - 1; i >= 0; i--) {
    const ev = obj(events[i]);
    if (ev['type'] !== 'm.room.member' || ev['state_key'] !== userId) continue;
    const membership = obj(ev['content'])['membership'];
    const before = obj(obj(ev['unsigned'])['prev_content'])['membership'];
    if (membership === 'join' && before !== 'join') return i;
  }
  return -1;
}

/** The events of a `limited` gap: /messages forward from the last token up to the timeline's start. */
async function gap(d: CatchupDeps, roomId: string, from: string, to: string): Promise<unknown[]> {
  d.counters.gapFills++;
  const out: unknown[] = [];
  let cursor = from;
  for (let page = 0; page < MAX_GAP_PAGES; page++) {
    const res = await d.http.request('GET', mxPath`/_matrix/client/v3/rooms/${roomId}/messages`, {
      query: { from: cursor, to, dir: 'f', limit: GAP_PAGE },
      signal: d.signal,
    });
    const chunk = arr(res['chunk']);
    out.push(...chunk);
    const end = res['end'];
    if (typeof end !== 'string' || chunk.length === 0 || end === cursor) {
      d.counters.gapEvents += out.length;
      return out;
    }
    cursor = end;
  }
  d.counters.gapEvents += out.length;
  d.log.warn({ roomId, events: out.length }, 'sync gap longer than the fill limit; older events of the gap are not bridged');
  return out;
}
