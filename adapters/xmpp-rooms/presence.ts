/**
 * Presence in (XEP-0045 §7.2, §7.14): joining sends the occupant list, the
 * self-presence (110, and 100: the room is non-anonymous), the history from
 * the log and the subject; leaving tells the others once the occupant's last
 * resource has left. Several resources of one JID share one occupant (nick,
 * occupant-id); each gets everything.
 */
import { mayUse } from './access.js';
import type { RoomsContext } from './context.js';
import { sendHistory, type HistoryRequest } from './history.js';
import { occupantIdFor } from './identity.js';
import { NS, bareJid, errorReply, localOf, resourceOf, stanzaError, xml, type XmlElement } from './ns.js';
import { count, countRefusal, occupantByBare, occupantOf, type Occupant, type RoomState } from './state.js';

const MAX_NICK = 256;

function occupantPresence(room: RoomState, occupant: Occupant, to: string, extra: { self?: boolean; type?: 'unavailable'; fullJid?: string } = {}): XmlElement {
  return xml(
    'presence',
    { from: `${room.jid}/${occupant.nick}`, to, ...(extra.type ? { type: extra.type } : {}) },
    xml(
      'x',
      { xmlns: NS.mucUser },
      xml('item', { affiliation: 'member', role: extra.type === 'unavailable' ? 'none' : 'participant', jid: extra.fullJid ?? [...occupant.sessions.keys()][0] }),
      extra.self ? xml('status', { code: '110' }) : undefined,
      extra.self && extra.type !== 'unavailable' ? xml('status', { code: '100' }) : undefined,
    ),
    xml('occupant-id', { xmlns: NS.occupantId, id: occupant.occupantId }),
  );
}

async function refuse(ctx: RoomsContext, stanza: XmlElement, type: 'auth' | 'cancel' | 'modify' | 'wait', condition: string, text?: string): Promise<void> {
  countRefusal(ctx.state, condition);
  const reply = errorReply(stanza, stanzaError(type, condition, text));
  reply.append(xml('x', { xmlns: NS.muc }));
  await ctx.send(reply);
}

/** The <history/> of a join: what the client asked for, capped by the config. */
export function historyRequest(join: XmlElement | undefined, defaults: { historyDefault: number; historyMax: number }, now: number): HistoryRequest {
  const h = join?.getChild('history');
  const int = (name: string): number | undefined => {
    const v = h?.attrs[name];
    return v !== undefined && /^\d{1,9}$/.test(v) ? Number(v) : undefined;
  };
  let max = int('maxstanzas') ?? defaults.historyDefault;
  if (int('maxchars') === 0) max = 0;
  const seconds = int('seconds');
  const sinceText = h?.attrs['since'];
  const sinceMs = sinceText !== undefined && !Number.isNaN(Date.parse(sinceText)) ? Date.parse(sinceText) : undefined;
  const since = seconds !== undefined ? now - seconds * 1000 : sinceMs;
  return { max: Math.min(max, defaults.historyMax), ...(since !== undefined ? { since } : {}) };
}

async function join(ctx: RoomsContext, stanza: XmlElement, room: RoomState, from: string, nick: string): Promise<void> {
  const bare = bareJid(from);
  if (nick.length === 0 || nick.length > MAX_NICK || nick.trim() !== nick) return refuse(ctx, stanza, 'modify', 'jid-malformed', 'a nick is needed');
  const holder = room.occupants.get(nick);
  if (holder && holder.bare !== bare) return refuse(ctx, stanza, 'cancel', 'conflict', 'that nick is in use');
  const verdict = await mayUse(ctx, bare, room.room);
  if (!verdict.ok) return refuse(ctx, stanza, 'auth', verdict.condition, verdict.condition === 'forbidden' ? 'you are not a member of this room' : 'this service does not know your account');
  const existing = occupantByBare(room, bare);
  if (existing && existing.nick !== nick) return refuse(ctx, stanza, 'cancel', 'not-acceptable', `your account is in this room as ${existing.nick}; join with that nick`);
  // A resource already in the room that joins again (a client that lost track) gets the full join again.
  existing?.sessions.delete(from);
  const occupant: Occupant = existing ?? { nick, bare, user: verdict.user, occupantId: occupantIdFor(ctx.config.secret, room.room, bare), sessions: new Map() };
  const session = { jid: from, floor: undefined, live: false, backlog: [] };
  occupant.sessions.set(from, session);
  const isNew = !existing;
  room.occupants.set(nick, occupant);
  count(ctx.state, 'joins');

  for (const other of room.occupants.values()) if (other !== occupant) await ctx.send(occupantPresence(room, other, from));
  if (isNew) {
    for (const other of room.occupants.values()) {
      if (other === occupant) continue;
      for (const jid of other.sessions.keys()) await ctx.send(occupantPresence(room, occupant, jid, { fullJid: from }));
    }
  }
  await ctx.send(occupantPresence(room, occupant, from, { self: true, fullJid: from }));
  await sendHistory(ctx, room, session, historyRequest(stanza.getChild('x', NS.muc), ctx.config, Date.now()));
  await ctx.send(xml('message', { type: 'groupchat', from: room.jid, to: from, id: `subject-${room.room}` }, xml('subject', {}, room.name ?? '')));
}

async function leave(ctx: RoomsContext, room: RoomState, from: string): Promise<void> {
  const occupant = occupantOf(room, from);
  if (!occupant) return;
  occupant.sessions.delete(from);
  count(ctx.state, 'leaves');
  await ctx.send(occupantPresence(room, occupant, from, { self: true, type: 'unavailable', fullJid: from })).catch(() => undefined);
  if (occupant.sessions.size > 0) return;
  room.occupants.delete(occupant.nick);
  for (const other of room.occupants.values()) {
    for (const jid of other.sessions.keys()) await ctx.send(occupantPresence(room, occupant, jid, { type: 'unavailable', fullJid: from }));
  }
}

/** The one handler for presence stanzas. */
export async function handlePresence(ctx: RoomsContext, stanza: XmlElement): Promise<void> {
  const from = stanza.attrs['from'];
  const to = stanza.attrs['to'];
  const type = stanza.attrs['type'];
  if (from === undefined || to === undefined || resourceOf(from) === undefined) return;
  const local = localOf(to);
  const room = local === undefined ? undefined : ctx.state.rooms.get(local);
  // An error bounce or unavailable presence from a resource: it is gone (from every room, for an error).
  if (type === 'unavailable' || type === 'error') {
    if (room) await leave(ctx, room, from);
    else if (type === 'error') for (const r of ctx.state.rooms.values()) await leave(ctx, r, from);
    return;
  }
  if (type !== undefined) return; // subscriptions and probes: rooms have no roster
  if (!room) {
    if (local !== undefined) await refuse(ctx, stanza, 'cancel', 'item-not-found', 'no such room');
    return;
  }
  const nick = resourceOf(to);
  if (nick === undefined) return refuse(ctx, stanza, 'modify', 'jid-malformed', 'join as room@service/nick');
  // Presence without the MUC element from a resource that is in: a status change, nothing to store.
  if (!stanza.getChild('x', NS.muc) && occupantOf(room, from)?.nick === nick) return;
  await join(ctx, stanza, room, from, nick);
}
