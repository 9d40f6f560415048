/**
 * The component's state, explicit and in one place: who is in which room
 * (held in memory only: after a restart clients notice through a self-ping
 * or a refused message and join again), the nicks given to senders from
 * other protocols, the room index built from the links, and the counters.
 */
import type { LogEvent } from '../../src/core/event.js';

/** One joined resource (full JID) of an occupant. */
export interface OccupantSession {
  readonly jid: string;
  /**
   * The newest event id the join's history covered: live events up to it are
   * not sent again (a delivery can lag behind the history read).
   */
  floor: string | undefined;
  /** false while the join's history is being sent; live events wait in `backlog` */
  live: boolean;
  readonly backlog: LogEvent[];
}

export interface Occupant {
  readonly nick: string;
  readonly bare: string;
  /** the gateway user the access rules mapped the JID to */
  readonly user: string;
  readonly occupantId: string;
  readonly sessions: Map<string, OccupantSession>;
}

export interface RoomState {
  /** the gateway room id */
  readonly room: string;
  /** room@domain */
  readonly jid: string;
  readonly name: string | undefined;
  readonly occupants: Map<string, Occupant>;
  /** the nick each sender (event sender uid) is shown under, unique in the room */
  readonly nicks: Map<string, string>;
  /**
   * The log partition the room's events live in, learnt from its first event
   * (a room keeps its partition when the count is raised, so it is not a hash
   * of today's count); undefined until the room has an event.
   */
  partition?: number;
}

export const COUNTER_NAMES = ['joins', 'leaves', 'messagesIn', 'duplicatesIn', 'reflections', 'delivered', 'mamQueries', 'refused', 'appendFailures'] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];

export interface ComponentState {
  /** by room JID local part */
  readonly rooms: Map<string, RoomState>;
  readonly counters: Record<CounterName, number>;
  /** refusals by XMPP error condition */
  readonly refusals: Record<string, number>;
  /** message rate per (room, bare JID): tokens left and when they were counted */
  readonly buckets: Map<string, { tokens: number; at: number }>;
}

export function createState(): ComponentState {
  return {
    rooms: new Map(),
    counters: Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0])) as Record<CounterName, number>,
    refusals: {},
    buckets: new Map(),
  };
}

/**
 * Rebuilds the room index from the links, keeping the occupants of rooms that
 * stay. Two gateway rooms linking the same local part: the first (by room id)
 * keeps it; the others are returned, to be reported.
 */
export function syncRooms(state: ComponentState, domain: string, links: ReadonlyArray<{ readonly room: string; readonly target: string; readonly name: string | undefined }>): string[] {
  const wanted = new Map<string, (typeof links)[number]>();
  const shadowed: string[] = [];
  for (const l of [...links].sort((a, b) => (a.room < b.room ? -1 : a.room > b.room ? 1 : 0))) {
    if (wanted.has(l.target)) shadowed.push(l.room);
    else wanted.set(l.target, l);
  }
  for (const local of [...state.rooms.keys()]) {
    const current = state.rooms.get(local);
    const link = wanted.get(local);
    if (!link || current?.room !== link.room) state.rooms.delete(local);
  }
  for (const [local, link] of wanted) {
    const current = state.rooms.get(local);
    if (current) {
      if (current.name !== link.name) state.rooms.set(local, { ...current, name: link.name });
      continue;
    }
    state.rooms.set(local, { room: link.room, jid: `${local}@${domain}`, name: link.name, occupants: new Map(), nicks: new Map() });
  }
  return shadowed;
}

export function roomByGatewayId(state: ComponentState, room: string): RoomState | undefined {
  for (const r of state.rooms.values()) if (r.room === room) return r;
  return undefined;
}

/** The occupant a full JID is in the room as. */
export function occupantOf(room: RoomState, fullJid: string): Occupant | undefined {
  for (const o of room.occupants.values()) if (o.sessions.has(fullJid)) return o;
  return undefined;
}

export function occupantByBare(room: RoomState, bare: string): Occupant | undefined {
  for (const o of room.occupants.values()) if (o.bare === bare) return o;
  return undefined;
}

export function count(state: ComponentState, name: CounterName): void {
  state.counters[name]++;
}

export function countRefusal(state: ComponentState, condition: string): void {
  state.counters.refused++;
  state.refusals[condition] = (state.refusals[condition] ?? 0) + 1;
}

/** Takes one token of the (room, account) bucket; false when it is empty (a flood). */
export function takeToken(state: ComponentState, key: string, limit: { perSecond: number; burst: number }, now: number): boolean {
  const bucket = state.buckets.get(key) ?? { tokens: limit.burst, at: now };
  bucket.tokens = Math.min(limit.burst, bucket.tokens + ((now - bucket.at) / 1000) * limit.perSecond);
  bucket.at = now;
  state.buckets.set(key, bucket);
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}
