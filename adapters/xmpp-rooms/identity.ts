/**
 * How people appear in a room: occupant ids (XEP-0421) and the nick every
 * event's sender is shown under.
 */
import { createHash } from 'node:crypto';
import type { LogEvent } from '../../src/core/event.js';
import type { RoomState } from './state.js';

/**
 * Stable per (room, bare JID), reveals neither, and the same after a restart
 * or on another replica: a keyed hash under the component secret.
 */
export function occupantIdFor(secret: string, room: string, bare: string): string {
  return createHash('sha256').update(`occupant-id\0${secret}\0${room}\0${bare}`).digest('base64url').slice(0, 22);
}

/** `xmpp:<bare JID>`: the gateway uid of an occupant. */
export function occupantUid(bare: string): string {
  return `xmpp:${bare}`;
}

/** A nick no occupant of another JID and no other sender holds: `name`, else `name (2)`, `name (3)` … */
function freeNick(room: RoomState, uid: string, wanted: string): string {
  const taken = (nick: string): boolean => {
    const occupant = room.occupants.get(nick);
    if (occupant && occupantUid(occupant.bare) !== uid) return true;
    for (const [other, n] of room.nicks) if (n === nick && other !== uid) return true;
    return false;
  };
  const base = wanted.trim().slice(0, 64) || 'someone';
  if (!taken(base)) return base;
  for (let i = 2; ; i++) if (!taken(`${base} (${i})`)) return `${base} (${i})`;
}

/**
 * The nick an event's sender is shown under in this room: a present
 * occupant's own nick; else the one it was given before; else its display
 * name made unique.
 */
export function senderNick(room: RoomState, event: LogEvent): string {
  const uid = event.sender.uid;
  for (const o of room.occupants.values()) if (occupantUid(o.bare) === uid) return o.nick;
  const known = room.nicks.get(uid);
  if (known !== undefined && !(room.occupants.has(known) && occupantUid(room.occupants.get(known)?.bare ?? '') !== uid)) return known;
  const nick = freeNick(room, uid, event.sender.display ?? event.sender.native);
  room.nicks.set(uid, nick);
  return nick;
}
