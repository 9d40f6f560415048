/**
 * An occupant's action as an event draft: references resolved to event ids
 * (a stanza-id is our event id; a correction names the sender's own message
 * id, looked up in the id map), and the rule that only the sender corrects
 * or retracts its message.
 */
import { randomUUID } from 'node:crypto';
import { nativeKey } from '../../src/core/adapter.js';
import type { EventDraft, LogEvent } from '../../src/core/event.js';
import { locateEventId } from '../../src/core/position.js';
import type { RoomsContext } from './context.js';
import { occupantUid } from './identity.js';
import { ID, OCCUPANT_ID, ORIGIN_ID, occupantIdem, scoped } from './ids.js';
import { NS, type XmlElement } from './ns.js';
import type { Action } from './parse.js';
import type { Occupant, RoomState } from './state.js';
import { textContent } from './styling.js';

export type DraftOutcome =
  | { readonly ok: true; readonly draft: EventDraft }
  | { readonly ok: false; readonly condition: 'item-not-found' | 'forbidden'; readonly text: string }
  /** nothing to store (a marker on something we do not know) */
  | undefined;

async function byEventId(ctx: RoomsContext, room: RoomState, ref: string): Promise<LogEvent | undefined> {
  return locateEventId(ref) ? ctx.sink.getEvent(room.room, ref) : undefined;
}

async function byOwnId(ctx: RoomsContext, room: RoomState, bare: string, ref: string): Promise<LogEvent | undefined> {
  for (const name of [ID, ORIGIN_ID]) {
    const id = await ctx.sink.resolve(room.room, nativeKey('xmpp', name, scoped(bare, ref)));
    if (id !== undefined) return ctx.sink.getEvent(room.room, id);
  }
  return undefined;
}

/** A reference of the occupant's: by stanza-id (our event id) or by its own message id; corrections try the latter first. */
export async function resolveRef(ctx: RoomsContext, room: RoomState, bare: string, ref: string, ownIdFirst: boolean): Promise<LogEvent | undefined> {
  if (ownIdFirst) return (await byOwnId(ctx, room, bare, ref)) ?? (await byEventId(ctx, room, ref));
  return (await byEventId(ctx, room, ref)) ?? (await byOwnId(ctx, room, bare, ref));
}

function common(ctx: RoomsContext, room: RoomState, occupant: Occupant, stanza: XmlElement, now: number) {
  const id = stanza.attrs['id'] || undefined;
  const originId = stanza.getChild('origin-id', NS.sid)?.attrs['id'] || undefined;
  const ids: Record<string, string> = { [OCCUPANT_ID]: occupant.occupantId };
  if (id !== undefined && id.length <= 512) ids[ID] = scoped(occupant.bare, id);
  if (originId !== undefined && originId.length <= 512) ids[ORIGIN_ID] = scoped(occupant.bare, originId);
  return {
    v: 1 as const,
    idem: occupantIdem(ctx.name, room.room, occupant.bare, originId ?? id ?? `nid:${randomUUID()}`),
    room: room.room,
    sender: { uid: occupantUid(occupant.bare), proto: 'xmpp' as const, native: occupant.bare, display: occupant.nick, auth: 'server' as const },
    origin: { proto: 'xmpp' as const, via: ctx.name, ids },
    ts: { received: now },
  };
}

const notFound = (what: string): DraftOutcome => ({ ok: false, condition: 'item-not-found', text: `${what} is not in this room's archive` });

export async function draftFor(ctx: RoomsContext, room: RoomState, occupant: Occupant, stanza: XmlElement, action: Action, now: number): Promise<DraftOutcome> {
  const base = common(ctx, room, occupant, stanza, now);
  const uid = occupantUid(occupant.bare);
  switch (action.kind) {
    case 'message': {
      const target = action.replyTo !== undefined ? await resolveRef(ctx, room, occupant.bare, action.replyTo, false) : undefined;
      return { ok: true, draft: { ...base, kind: 'message', content: textContent(stanza, action.body), ...(target ? { rel: { replyTo: target.eventId } } : {}) } };
    }
    case 'edit': {
      const target = await resolveRef(ctx, room, occupant.bare, action.replaces, true);
      if (!target) return notFound('the corrected message');
      if (target.sender.uid !== uid) return { ok: false, condition: 'forbidden', text: 'only its sender corrects a message' };
      // an edit always names the original (XEP-0308 says the same of the id a client sends)
      const original = target.kind === 'edit' ? target.rel.replaces : target.eventId;
      return { ok: true, draft: { ...base, kind: 'edit', content: textContent(stanza, action.body), rel: { replaces: original } } };
    }
    case 'retraction': {
      const target = await resolveRef(ctx, room, occupant.bare, action.redacts, false);
      if (!target) return notFound('the retracted message');
      if (target.sender.uid !== uid) return { ok: false, condition: 'forbidden', text: 'only its sender retracts a message' };
      return { ok: true, draft: { ...base, kind: 'retraction', rel: { redacts: target.eventId } } };
    }
    case 'reaction': {
      const target = await resolveRef(ctx, room, occupant.bare, action.reactsTo, false);
      if (!target) return notFound('the message reacted to');
      return { ok: true, draft: { ...base, kind: 'reaction', rel: { reactsTo: target.eventId }, reaction: { keys: [...action.keys] } } };
    }
    case 'marker': {
      const target = await resolveRef(ctx, room, occupant.bare, action.upTo, false);
      return target ? { ok: true, draft: { ...base, kind: 'marker', rel: { upTo: target.eventId } } } : undefined;
    }
  }
}
