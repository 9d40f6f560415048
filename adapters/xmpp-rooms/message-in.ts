/**
 * Groupchat messages from occupants: appended to the log FIRST; only once
 * the append is durable is the message reflected to every occupant, each
 * copy with `<stanza-id by=room id=<event id>>`. So the sender learns the
 * archive id of its own message from its reflection, and a reflection means
 * "stored". A failed append bounces an error to the sender and nothing is
 * reflected. A resend of the same origin-id (after a reconnect) is the same
 * event: it is reflected again to the sender only, with the same stanza-id.
 * Whatever stanza-id the client put in is ignored: the copies are built from
 * the log event.
 */
import { randomUUID } from 'node:crypto';
import type { DraftOf, LogEvent } from '../../src/core/event.js';
import type { RoomsContext } from './context.js';
import { occupantUid } from './identity.js';
import { ID, OCCUPANT_ID, ORIGIN_ID, occupantIdem, scoped } from './ids.js';
import { NS, bareJid, errorReply, localOf, resourceOf, stanzaError, type ErrorType, type XmlElement } from './ns.js';
import { fanout } from './outbound.js';
import { count, countRefusal, occupantOf, type Occupant, type RoomState } from './state.js';

async function bounce(ctx: RoomsContext, stanza: XmlElement, type: ErrorType, condition: string, text: string): Promise<void> {
  countRefusal(ctx.state, condition);
  await ctx.send(errorReply(stanza, stanzaError(type, condition, text)));
}

/** The event draft of a plain groupchat message. */
export function messageDraft(ctx: RoomsContext, room: RoomState, occupant: Occupant, stanza: XmlElement, body: string, now: number): DraftOf<'message'> {
  const id = stanza.attrs['id'] || undefined;
  const originId = stanza.getChild('origin-id', NS.sid)?.attrs['id'] || undefined;
  const ids: Record<string, string> = { [OCCUPANT_ID]: occupant.occupantId };
  if (id !== undefined && id.length <= 512) ids[ID] = scoped(occupant.bare, id);
  if (originId !== undefined && originId.length <= 512) ids[ORIGIN_ID] = scoped(occupant.bare, originId);
  const raw = originId ?? id ?? `nid:${randomUUID()}`;
  return {
    v: 1,
    kind: 'message',
    idem: occupantIdem(ctx.name, room.room, occupant.bare, raw),
    room: room.room,
    sender: { uid: occupantUid(occupant.bare), proto: 'xmpp', native: occupant.bare, display: occupant.nick, auth: 'server' },
    origin: { proto: 'xmpp', via: ctx.name, ids },
    ts: { received: now },
    content: { body },
  };
}

async function appendAndReflect(ctx: RoomsContext, stanza: XmlElement, room: RoomState, occupant: Occupant, from: string, body: string): Promise<void> {
  const draft = messageDraft(ctx, room, occupant, stanza, body, Date.now());
  let result;
  try {
    result = await ctx.sink.ingest(draft);
  } catch (err) {
    count(ctx.state, 'appendFailures');
    ctx.log.warn({ err, room: room.room }, 'append failed: the sender gets an error, nothing is reflected');
    return bounce(ctx, stanza, 'wait', 'internal-server-error', 'the message could not be stored; send it again');
  }
  if (result.status === 'ignored' || result.status === 'echo') return bounce(ctx, stanza, 'modify', 'not-acceptable', `not stored: ${result.status === 'ignored' ? result.reason : 'echo'}`);
  if (result.status === 'duplicate') {
    count(ctx.state, 'duplicatesIn');
    const original = await ctx.archive.getEvent(room.room, result.eventId);
    if (original) await fanout(ctx, room, original, { only: (s) => s.jid === from });
    return;
  }
  count(ctx.state, 'messagesIn');
  const event = { ...draft, eventId: result.eventId, cursor: result.cursor } as LogEvent;
  await fanout(ctx, room, event);
  count(ctx.state, 'reflections');
}

/** The one handler for message stanzas. */
export async function handleMessage(ctx: RoomsContext, stanza: XmlElement): Promise<void> {
  const from = stanza.attrs['from'];
  const to = stanza.attrs['to'];
  const type = stanza.attrs['type'];
  if (from === undefined || to === undefined || type === 'error') return;
  const local = localOf(to);
  const room = local === undefined ? undefined : ctx.state.rooms.get(local);
  if (!room) return bounce(ctx, stanza, 'cancel', 'item-not-found', 'no such room');
  if (type !== 'groupchat' || resourceOf(to) !== undefined) return bounce(ctx, stanza, 'modify', 'bad-request', 'only groupchat messages to the room are accepted');
  const occupant = occupantOf(room, from);
  if (!occupant || bareJid(from) !== occupant.bare) return bounce(ctx, stanza, 'modify', 'not-acceptable', 'you are not in this room; join it first');
  const body = stanza.getChildText('body');
  if (body === null || body.length === 0) return; // chat states and other payload-only messages: nothing to store
  await appendAndReflect(ctx, stanza, room, occupant, from, body);
}
