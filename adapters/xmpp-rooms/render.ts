/**
 * Log events as the room's messages (pure): what occupants get live, in the
 * join history and in MAM results. Every copy carries
 * `<stanza-id by="room@domain" id="<event id>"/>`, so a client holds our ids
 * whatever the event's origin.
 */
import type { Content, LogEvent } from '../../src/core/event.js';
import { locateEventId } from '../../src/core/position.js';
import { ID, OCCUPANT_ID, ORIGIN_ID, rawOf } from './ids.js';
import { NS, xml, type XmlElement } from './ns.js';
import { styledText } from './styling.js';

const NS_CORRECT = 'urn:xmpp:message-correct:0';
const NS_RETRACT = 'urn:xmpp:message-retract:1';
const NS_REACTIONS = 'urn:xmpp:reactions:0';
const NS_REPLY = 'urn:xmpp:reply:0';
const NS_MARKERS = 'urn:xmpp:chat-markers:0';
const NS_OOB = 'jabber:x:oob';

export interface RenderInput {
  readonly event: LogEvent;
  /** room@domain */
  readonly roomJid: string;
  /** the nick the sender is shown under */
  readonly nick: string;
  /** this adapter's name: events from its occupants keep their own message ids */
  readonly via: string;
  /** the content to show, in XEP-0393 (the delivery's converted content, else the event's converted by `contentIn`) */
  readonly content?: Content | undefined;
  /** XEP-0308 needs the corrected message's own id: the original's visible id when it is not its event id */
  readonly replacesId?: string | undefined;
  /** the occupant-id of the sender, when it is an occupant of this room */
  readonly occupantId?: string | undefined;
}

/** The `id` attribute occupants see on an event's message: the sender's own for our occupants, else the event id. */
export function visibleId(event: LogEvent, via: string): string {
  if (event.origin.via === via) return rawOf(event.origin.ids[ID]) ?? rawOf(event.origin.ids[ORIGIN_ID]) ?? event.eventId;
  return event.eventId;
}

/** Body (its XEP-0393 text when styled, `<unstyled/>` when plain text would look styled) and attachments. */
function contentChildren(content: Content): XmlElement[] {
  const { text, unstyled } = styledText(content);
  const children = [xml('body', {}, text)];
  if (unstyled) children.push(xml('unstyled', { xmlns: NS.styling }));
  for (const a of content.attachments ?? []) children.push(xml('x', { xmlns: NS_OOB }, xml('url', {}, a.url), a.name !== undefined ? xml('desc', {}, a.name) : undefined));
  return children;
}

/** The message children of the event's kind; undefined for kinds occupants are not shown. */
function kindChildren(input: RenderInput): XmlElement[] | undefined {
  const { event } = input;
  switch (event.kind) {
    case 'message': {
      const children = contentChildren(input.content ?? event.content);
      if (event.rel?.replyTo !== undefined) children.push(xml('reply', { xmlns: NS_REPLY, id: event.rel.replyTo }));
      return children;
    }
    case 'edit':
      return [...contentChildren(input.content ?? event.content), xml('replace', { xmlns: NS_CORRECT, id: input.replacesId ?? event.rel.replaces })];
    case 'retraction':
      return [xml('retract', { xmlns: NS_RETRACT, id: event.rel.redacts }), xml('body', {}, 'This person attempted to retract a previous message, but it is unsupported by your client.')];
    case 'reaction':
      return [xml('reactions', { xmlns: NS_REACTIONS, id: event.rel.reactsTo }, ...event.reaction.keys.map((k) => xml('reaction', {}, k)))];
    case 'marker':
      return [xml('displayed', { xmlns: NS_MARKERS, id: event.rel.upTo })];
    case 'receipt':
      return event.receipt.type === 'delivered' ? undefined : [xml('displayed', { xmlns: NS_MARKERS, id: event.rel.upTo })];
    default:
      return undefined;
  }
}

/** The groupchat message of an event, without `to` (set per recipient); undefined when it is not shown. */
export function renderEvent(input: RenderInput): XmlElement | undefined {
  const children = kindChildren(input);
  if (!children) return undefined;
  const { event, roomJid, via } = input;
  const own = event.origin.via === via;
  const originId = own ? rawOf(event.origin.ids[ORIGIN_ID]) : event.eventId;
  return xml(
    'message',
    { type: 'groupchat', from: `${roomJid}/${input.nick}`, id: visibleId(event, via) },
    ...children,
    originId !== undefined ? xml('origin-id', { xmlns: NS.sid, id: originId }) : undefined,
    xml('stanza-id', { xmlns: NS.sid, by: roomJid, id: event.eventId }),
    input.occupantId !== undefined ? xml('occupant-id', { xmlns: NS.occupantId, id: input.occupantId }) : undefined,
  );
}

/**
 * When the archive stored the event: the millisecond of its log position, the
 * clock MAM's start/end compare with, so stamps and time filters agree.
 */
export function storedAt(event: LogEvent): number {
  return locateEventId(event.eventId)?.pos.ms ?? event.ts.received;
}

/** A copy for the join history: with the time it was stored (XEP-0203). */
export function withDelay(message: XmlElement, roomJid: string, event: LogEvent): XmlElement {
  message.append(xml('delay', { xmlns: NS.delay, from: roomJid, stamp: new Date(storedAt(event)).toISOString() }));
  return message;
}

/** The occupant-id recorded on an event from one of our occupants. */
export function recordedOccupantId(event: LogEvent, via: string): string | undefined {
  return event.origin.via === via ? event.origin.ids[OCCUPANT_ID] : undefined;
}
