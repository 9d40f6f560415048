/**
 * The join history (XEP-0045 §7.2.14), served from the log: the newest
 * events the client asked for, oldest first, each with its delay stamp and
 * stanza-id. Live events that arrive meanwhile wait in the session's backlog
 * and go out after, without those the history already covered.
 */
import type { LogEvent } from '../../src/core/event.js';
import type { RoomsContext } from './context.js';
import { messageBuilder, sendToSession } from './outbound.js';
import { storedAt, withDelay } from './render.js';
import type { OccupantSession, RoomState } from './state.js';

export interface HistoryRequest {
  /** at most this many events (0: none) */
  readonly max: number;
  /** only events stored at or after this time (ms) */
  readonly since?: number;
}

async function newestEvents(ctx: RoomsContext, room: RoomState, request: HistoryRequest): Promise<LogEvent[]> {
  if (request.max <= 0) return [];
  const page = await ctx.archive.roomHistory(room.room, { dir: 'b', limit: request.max });
  const events = request.since === undefined ? page.events : page.events.filter((e) => storedAt(e) >= (request.since ?? 0));
  return events.reverse();
}

export async function sendHistory(ctx: RoomsContext, room: RoomState, session: OccupantSession, request: HistoryRequest): Promise<void> {
  try {
    const events = await newestEvents(ctx, room, request);
    for (const event of events) {
      const build = await messageBuilder(ctx, room, event);
      const message = build(session.jid);
      if (message) await ctx.send(withDelay(message, room.jid, event));
    }
    session.floor = events.at(-1)?.eventId;
  } catch (err) {
    ctx.log.warn({ err, room: room.room }, 'join history could not be read; the occupant can fetch it from the archive');
  } finally {
    session.live = true;
    const backlog = session.backlog.splice(0);
    for (const event of backlog) {
      const build = await messageBuilder(ctx, room, event);
      await sendToSession(ctx, session, event, build).catch(() => undefined);
    }
  }
}
