/**
 * Inbound MUC presence (XEP-0045), one handler per kind: a presence error
 * (our join refused), our own available presence (the join answer: the room
 * is entered, muc.ts), our own unavailable presence (a nick change, or we were
 * kicked or banned), and the presence of other occupants (their nick history,
 * for rooms without occupant ids). Presence from anything but a room we are
 * in is ignored.
 */
import { enterRoom, scheduleRejoin } from '../muc.js';
import { parseMucPresence, type MucPresence } from '../protocol.js';
import type { MucState, XmppAdapterState } from '../state.js';
import type { XmlElement } from '../xml.js';

export function onPresence(s: XmppAdapterState, stanza: XmlElement): void {
  const p = parseMucPresence(stanza);
  if (!p) return;
  const room = s.rooms.get(p.room);
  if (!room) return;
  if (p.type === 'error') {
    if (room.joining && p.nick === room.nick) room.joining.resolve({ ok: false, condition: p.condition });
    return;
  }
  if (!p.self) {
    followNick(s, room, p);
    followRealJid(room, p);
  }
  // A join answer without the self-presence status code still names our nick.
  if (!p.self && !(room.joining && p.nick === room.nick && p.type === 'available')) return;
  if (p.type === 'available') onSelfAvailable(s, room, p);
  else onSelfUnavailable(s, room, p);
}

/** Our own available presence: the answer to a join, or an update while in the room. */
function onSelfAvailable(s: XmppAdapterState, room: MucState, p: MucPresence): void {
  if (p.occupantId !== undefined) room.occupantId = p.occupantId;
  room.nick = p.nick;
  if (room.joining) {
    // The join answer: queue the room's catch-up now, before any stanza after it (in the same read) is handled.
    enterRoom(s, room, room.joining.gen, p.codes.has('201'));
    room.joining.resolve({ ok: true });
  }
}

/** Our own unavailable presence: a nick change (303), or we are out of the room. */
function onSelfUnavailable(s: XmppAdapterState, room: MucState, p: MucPresence): void {
  if (p.codes.has('303') && p.newNick) {
    room.nick = p.newNick;
    return;
  }
  if (!room.joined) return;
  room.joined = false;
  if (p.codes.has('301')) {
    room.gaveUp = 'banned from the room';
    s.log.error({ room: room.jid }, 'banned from the MUC; not rejoining');
    return;
  }
  s.log.warn({ room: room.jid, codes: [...p.codes] }, 'removed from the MUC; rejoining');
  scheduleRejoin(s, room);
}

/** Keeps the real JIDs of the other occupants (non-anonymous rooms): whom OMEMO in the room encrypts to, and who sent what. */
function followRealJid(room: MucState, p: MucPresence): void {
  if (p.type === 'unavailable') {
    room.realJids.delete(p.nick);
    if (p.codes.has('303') && p.newNick !== undefined && p.jid !== undefined) room.realJids.set(p.newNick, p.jid);
    return;
  }
  if (p.type === 'available' && p.jid !== undefined) room.realJids.set(p.nick, p.jid);
}

/** Keeps the nick history of other occupants (see MucState.nickKeys). */
function followNick(s: XmppAdapterState, room: MucState, p: MucPresence): void {
  if (p.type === 'unavailable' && p.codes.has('303') && p.newNick !== undefined && p.newNick !== p.nick) {
    const key = room.nickKeys.get(p.nick) ?? p.nick;
    // The old nick keeps its entry: its messages still queued are from the same occupant.
    room.nickKeys.set(p.nick, key);
    room.nickKeys.set(p.newNick, key);
    room.renamedTo.add(p.newNick);
    room.present.delete(p.nick);
    s.log.debug({ room: room.jid, from: p.nick, to: p.newNick, key }, 'MUC occupant changed nick');
    return;
  }
  if (p.type === 'unavailable') room.present.delete(p.nick);
  if (p.type !== 'available' || room.present.has(p.nick)) return;
  room.present.add(p.nick);
  // The available presence that follows a 303 is the renamed occupant's own.
  if (room.renamedTo.delete(p.nick)) return;
  // Before our self-presence: the occupant list of the join, people we knew or never saw.
  if (!room.joined) return;
  if (room.nickKeys.has(p.nick) || [...room.nickKeys.values()].includes(p.nick)) {
    // Someone new on a nick that names another occupant's key.
    const key = `${p.nick}#${++room.nickKeySeq}`;
    room.nickKeys.set(p.nick, key);
    s.log.debug({ room: room.jid, nick: p.nick, key }, 'a newcomer on a nick with a history; it gets a key of its own');
  }
}
