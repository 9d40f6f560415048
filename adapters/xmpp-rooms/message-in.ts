/**
 * Groupchat messages from occupants: appended to the log FIRST; only once
 * the append is durable is the event reflected to every occupant, each copy
 * with `<stanza-id by=room id=<event id>>`. So the sender learns the archive
 * id of its own message from its reflection, and a reflection means
 * "stored". A failed append bounces an error to the sender and nothing is
 * reflected. A resend of the same origin-id (after a reconnect) is the same
 * event: it is reflected again to the sender only, with the same stanza-id.
 * Whatever stanza-id the client put in is ignored: the copies are built from
 * the log event.
 */
import type { EventDraft, LogEvent } from '../../src/core/event.js';
import type { RoomsContext } from './context.js';
import { draftFor } from './draft.js';
import { bareJid, errorReply, localOf, resourceOf, stanzaError, type ErrorType, type XmlElement } from './ns.js';
import { fanout } from './outbound.js';
import { parseAction } from './parse.js';
import { count, countRefusal, occupantOf, takeToken, type RoomState } from './state.js';

async function bounce(ctx: RoomsContext, stanza: XmlElement, type: ErrorType, condition: string, text: string): Promise<void> {
  countRefusal(ctx.state, condition);
  await ctx.send(errorReply(stanza, stanzaError(type, condition, text)));
}

async function appendAndReflect(ctx: RoomsContext, stanza: XmlElement, room: RoomState, from: string, draft: EventDraft): Promise<void> {
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
    const original = await ctx.sink.getEvent(room.room, result.eventId);
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
  const parsed = parseAction(stanza);
  if (parsed === undefined) return; // chat states and other payload-only messages: nothing to store
  if (!parsed.ok) return bounce(ctx, stanza, 'modify', 'bad-request', parsed.problem);
  if (!takeToken(ctx.state, `${room.room}\0${occupant.bare}`, ctx.config.rateLimit, Date.now())) {
    return bounce(ctx, stanza, 'wait', 'resource-constraint', 'too many messages: slow down');
  }
  const body = 'body' in parsed.action ? parsed.action.body : '';
  if (Buffer.byteLength(body, 'utf8') > ctx.config.maxBodyBytes) {
    return bounce(ctx, stanza, 'modify', 'not-acceptable', `the body is over ${ctx.config.maxBodyBytes} bytes`);
  }
  const outcome = await draftFor(ctx, room, occupant, stanza, parsed.action, Date.now());
  if (outcome === undefined) return;
  if (!outcome.ok) return bounce(ctx, stanza, outcome.condition === 'forbidden' ? 'auth' : 'cancel', outcome.condition, outcome.text);
  await appendAndReflect(ctx, stanza, room, from, outcome.draft);
}
