/**
 * Service discovery (XEP-0030) of the service and its rooms: the service is
 * a MUC service whose rooms are the gateway rooms linked to this adapter;
 * disco#items lists the rooms the requester may join.
 */
import { userOf } from './access.js';
import type { RoomsContext } from './context.js';
import { NS, bareJid, localOf, resourceOf, stanzaError, xml, type XmlElement } from './ns.js';

export const ROOM_FEATURES = [
  NS.muc,
  'muc_persistent',
  'muc_membersonly',
  'muc_nonanonymous',
  'muc_unmoderated',
  'muc_public',
  NS.mam,
  NS.mamExtended,
  NS.sid,
  NS.occupantId,
  NS.discoInfo,
  NS.ping,
] as const;

export const SERVICE_FEATURES = [NS.muc, NS.discoInfo, NS.discoItems] as const;

function feature(name: string): XmlElement {
  return xml('feature', { var: name });
}

export function discoInfo(ctx: RoomsContext, stanza: XmlElement): XmlElement {
  const to = stanza.attrs['to'] ?? '';
  const local = localOf(to);
  if (local === undefined) {
    return xml('query', { xmlns: NS.discoInfo }, xml('identity', { category: 'conference', type: 'text', name: 'syncgate rooms' }), ...SERVICE_FEATURES.map(feature));
  }
  const room = ctx.state.rooms.get(local);
  if (!room || resourceOf(to) !== undefined) return stanzaError('cancel', 'item-not-found');
  const name = room.name ?? room.room;
  return xml(
    'query',
    { xmlns: NS.discoInfo },
    xml('identity', { category: 'conference', type: 'text', name }),
    ...ROOM_FEATURES.map(feature),
    xml(
      'x',
      { xmlns: NS.data, type: 'result' },
      xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, 'http://jabber.org/protocol/muc#roominfo')),
      xml('field', { var: 'muc#roomconfig_roomname', type: 'text-single' }, xml('value', {}, name)),
      xml('field', { var: 'muc#roominfo_occupants', type: 'text-single' }, xml('value', {}, String(room.occupants.size))),
    ),
  );
}

export async function discoItems(ctx: RoomsContext, stanza: XmlElement): Promise<XmlElement> {
  const to = stanza.attrs['to'] ?? '';
  if (localOf(to) !== undefined) {
    // A room's items are its occupants; non-anonymous rooms may list them, we keep them to the room itself.
    return ctx.state.rooms.has(localOf(to) ?? '') ? xml('query', { xmlns: NS.discoItems }) : stanzaError('cancel', 'item-not-found');
  }
  const user = userOf(ctx.config.access, bareJid(stanza.attrs['from'] ?? ''));
  const granted = new Set(user === undefined ? [] : await ctx.grants(user));
  const rooms = [...ctx.state.rooms.values()].filter((r) => granted.has(r.room));
  return xml('query', { xmlns: NS.discoItems }, ...rooms.map((r) => xml('item', { jid: r.jid, name: r.name ?? r.room })));
}

/** XEP-0410 self-ping: a result while the resource is in the room under that nick, else not-acceptable (rejoin). */
export function selfPing(ctx: RoomsContext, stanza: XmlElement): XmlElement | Record<string, never> | undefined {
  const to = stanza.attrs['to'] ?? '';
  const from = stanza.attrs['from'] ?? '';
  const room = ctx.state.rooms.get(localOf(to) ?? '');
  if (!room) return localOf(to) === undefined ? {} : stanzaError('cancel', 'item-not-found');
  const nick = resourceOf(to);
  if (nick === undefined) return undefined;
  return room.occupants.get(nick)?.sessions.has(from) ? {} : stanzaError('cancel', 'not-acceptable');
}
