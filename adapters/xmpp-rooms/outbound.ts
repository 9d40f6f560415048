/**
 * Events out to the occupants: the reflection of an occupant's message and
 * every event a delivery worker hands over go the same way — rendered once
 * per recipient resource, each copy with the event id as stanza-id.
 * Resources still receiving their join history keep live events in a
 * backlog; events their history already covered are not sent twice.
 */
import type { DeliveryContext, DeliveryResult, DeliveryTarget } from '../../src/core/adapter.js';
import type { Content, LogEvent } from '../../src/core/event.js';
import type { RoomsContext } from './context.js';
import { senderNick } from './identity.js';
import type { XmlElement } from './ns.js';
import { recordedOccupantId, renderEvent, visibleId } from './render.js';
import { count, type OccupantSession, type RoomState } from './state.js';

/** Builds the event's message for one recipient; undefined when the event is not shown in rooms. */
export type MessageFor = (to: string) => XmlElement | undefined;

export async function messageBuilder(ctx: RoomsContext, room: RoomState, event: LogEvent, content?: Content): Promise<MessageFor> {
  const nick = senderNick(room, event);
  let replacesId: string | undefined;
  if (event.kind === 'edit') {
    const original = await ctx.archive.getEvent(room.room, event.rel.replaces).catch(() => undefined);
    if (original) replacesId = visibleId(original, ctx.name);
  }
  const occupantId = recordedOccupantId(event, ctx.name);
  // Live deliveries come converted; the reflection, join history and MAM render from the log and convert the same way.
  const shown = content ?? ctx.contentIn(event, 'xep0393');
  return (to) => {
    const message = renderEvent({ event, roomJid: room.jid, nick, via: ctx.name, content: shown, replacesId, occupantId });
    if (message) message.attrs['to'] = to;
    return message;
  };
}

/** Sends to one resource now, or keeps it for after its join history; skips what its history covered. */
export async function sendToSession(ctx: RoomsContext, session: OccupantSession, event: LogEvent, build: MessageFor): Promise<boolean> {
  if (!session.live) {
    session.backlog.push(event);
    return false;
  }
  if (session.floor !== undefined && event.eventId <= session.floor) return false;
  const message = build(session.jid);
  if (!message) return false;
  await ctx.send(message);
  return true;
}

/** Every resource of every occupant (or those `only` selects) gets the event. */
export async function fanout(ctx: RoomsContext, room: RoomState, event: LogEvent, options: { content?: Content; only?: (session: OccupantSession) => boolean } = {}): Promise<number> {
  const build = await messageBuilder(ctx, room, event, options.content);
  let sent = 0;
  for (const occupant of [...room.occupants.values()]) {
    for (const session of [...occupant.sessions.values()]) {
      if (options.only && !options.only(session)) continue;
      if (await sendToSession(ctx, session, event, build)) sent++;
    }
  }
  return sent;
}

/** The adapter port's deliver(): an event from another endpoint to everyone in the room. */
export async function deliverEvent(ctx: RoomsContext, online: boolean, event: LogEvent, target: DeliveryTarget, context: DeliveryContext): Promise<DeliveryResult> {
  const room = ctx.state.rooms.get(target.link.target);
  if (!room || room.room !== target.room) return { status: 'skipped', reason: `no room ${target.link.target} on this component` };
  if (!online) return { status: 'retry', reason: 'the component is not connected' };
  try {
    const sent = await fanout(ctx, room, event, context.content ? { content: context.content } : {});
    // A write into a connection that has just dropped succeeds locally: delivered only once the server has it.
    if (sent > 0) await ctx.flush();
  } catch (err) {
    return { status: 'retry', reason: err instanceof Error ? err.message : String(err) };
  }
  count(ctx.state, 'delivered');
  // The archive is the log: nothing to record; the stanza-id occupants see is the event id.
  return { status: 'delivered', nativeIds: {} };
}
