/**
 * Native ids of what occupants send, as they go into `origin.ids` (and so
 * into the id map), and idempotency keys.
 *
 *   xmpp.id / xmpp.originId = <sender bare JID>/<raw id>   (client-chosen: scoped by sender)
 *   xmpp.occupantId         = <occupant-id we gave the sender>
 *
 * The room's stanza-id of every event is the event id itself, so it needs no
 * entry: a client's reference by stanza-id is our event id.
 */
export const ID = 'xmpp.id';
export const ORIGIN_ID = 'xmpp.originId';
export const OCCUPANT_ID = 'xmpp.occupantId';

export function scoped(bare: string, raw: string): string {
  return `${bare}/${raw}`;
}

/** The raw id from a scoped value (bare JIDs contain no '/'). */
export function rawOf(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const i = value.indexOf('/');
  return i < 0 ? undefined : value.slice(i + 1);
}

/** Idempotency: a client's resend of the same origin-id (or id) in the same room is the same event. */
export function occupantIdem(adapter: string, room: string, bare: string, raw: string): string {
  return `xmpp-rooms:${adapter}:${room}:${bare}:${raw}`.slice(0, 512);
}
