/**
 * Stanzas for what @xmpp/client does not provide: Carbons (XEP-0280), MAM
 * queries (XEP-0313 with RSM paging), MUC join/leave and self-presence
 * (XEP-0045), MUC self-ping (XEP-0410) and disco#info. Pure builders and
 * parsers; the session sends them.
 */
import { createHash } from 'node:crypto';
import { NS, xml, type XmlElement } from './xml.js';
import { bareJid, resourceOf } from './normalise.js';

export function carbonsEnable(): XmlElement {
  return xml('iq', { type: 'set' }, xml('enable', { xmlns: NS.carbons }));
}

export function discoInfo(to: string): XmlElement {
  return xml('iq', { type: 'get', to }, xml('query', { xmlns: NS.discoInfo }));
}

/** Who we say we are in disco#info (and in the XEP-0115 hash). */
export const DISCO_IDENTITY = { category: 'client', type: 'bot', name: 'syncgate' } as const;
export const CAPS_NODE = 'https://syncgate.invalid/caps';

/**
 * XEP-0115 entity capabilities for our presence: the server's PEP learns from it which
 * notifications we want (`…devicelist+notify`, XEP-0163 §4.3), without a disco round trip.
 */
export function capsElement(features: readonly string[]): XmlElement {
  return xml('c', { xmlns: 'http://jabber.org/protocol/caps', hash: 'sha-1', node: CAPS_NODE, ver: capsVer(DISCO_IDENTITY, features) });
}

/** XEP-0115 §5.1 for one identity (no xml:lang) and no extended forms. */
export function capsVer(identity: { readonly category: string; readonly type: string; readonly name: string }, features: readonly string[]): string {
  const s = `${identity.category}/${identity.type}//${identity.name}<${[...features].sort().map((f) => `${f}<`).join('')}`;
  return createHash('sha1').update(s, 'utf8').digest('base64');
}

export function discoFeatures(reply: XmlElement): Set<string> {
  const query = reply.getChild('query', NS.discoInfo);
  return new Set((query?.getChildren('feature') ?? []).map((f) => f.attrs['var']).filter((v): v is string => v !== undefined));
}

export interface MamQuery {
  /** the archive: undefined for our own account, else the room's bare JID */
  readonly to: string | undefined;
  readonly queryId: string;
  readonly max: number;
  /** RSM: results after this archive id */
  readonly after?: string | undefined;
  /** RSM: the page before this id; '' = the last page (used to learn the newest id) */
  readonly before?: string | undefined;
  /** form field `start` (ms) */
  readonly start?: number | undefined;
}

export function mamQuery(q: MamQuery): XmlElement {
  const fields = [xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, NS.mam))];
  if (q.start !== undefined) fields.push(xml('field', { var: 'start' }, xml('value', {}, new Date(q.start).toISOString())));
  const set = xml(
    'set',
    { xmlns: NS.rsm },
    xml('max', {}, String(q.max)),
    q.after !== undefined ? xml('after', {}, q.after) : undefined,
    q.before !== undefined ? xml('before', {}, q.before) : undefined,
  );
  return xml('iq', { type: 'set', ...(q.to !== undefined ? { to: q.to } : {}) }, xml('query', { xmlns: NS.mam, queryid: q.queryId }, xml('x', { xmlns: NS.data, type: 'submit' }, ...fields), set));
}

export interface MamFin {
  readonly complete: boolean;
  readonly first: string | undefined;
  readonly last: string | undefined;
}

export function parseFin(reply: XmlElement): MamFin | undefined {
  const fin = reply.getChild('fin', NS.mam);
  if (!fin) return undefined;
  const set = fin.getChild('set', NS.rsm);
  return { complete: fin.attrs['complete'] === 'true', first: set?.getChildText('first') ?? undefined, last: set?.getChildText('last') ?? undefined };
}

export function mucJoin(room: string, nick: string, password: string | undefined): XmlElement {
  return xml(
    'presence',
    { to: `${room}/${nick}` },
    // History comes from MAM, from our own position; the room's own history would only duplicate it.
    xml('x', { xmlns: NS.muc }, xml('history', { maxstanzas: '0' }), password !== undefined ? xml('password', {}, password) : undefined),
  );
}

/**
 * Answers the status 201 of a room we created (XEP-0045 §10.1.2): without
 * `fields`, the empty submit of an instant room (the server's defaults);
 * with them, only those — callers pass only fields the server's own form
 * offered, since some servers refuse a whole form over one unknown field.
 */
export function mucConfigSubmit(room: string, fields: ReadonlyMap<string, string> = new Map()): XmlElement {
  const form =
    fields.size === 0
      ? xml('x', { xmlns: NS.data, type: 'submit' })
      : xml(
          'x',
          { xmlns: NS.data, type: 'submit' },
          xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, MUC_ROOMCONFIG)),
          ...[...fields].map(([name, value]) => xml('field', { var: name }, xml('value', {}, value))),
        );
  return xml('iq', { type: 'set', to: room }, xml('query', { xmlns: NS.mucOwner }, form));
}

export const MUC_ROOMCONFIG = 'http://jabber.org/protocol/muc#roomconfig';

export function mucConfigGet(room: string): XmlElement {
  return xml('iq', { type: 'get', to: room }, xml('query', { xmlns: NS.mucOwner }));
}

/** The field names a room configuration form offers. */
export function formFieldNames(reply: XmlElement): Set<string> {
  const form = reply.getChild('query', NS.mucOwner)?.getChild('x', NS.data);
  return new Set((form?.getChildren('field') ?? []).map((f) => f.attrs['var']).filter((v): v is string => v !== undefined));
}

export function mucLeave(room: string, nick: string): XmlElement {
  return xml('presence', { to: `${room}/${nick}`, type: 'unavailable' });
}

export function selfPing(room: string, nick: string): XmlElement {
  return xml('iq', { type: 'get', to: `${room}/${nick}` }, xml('ping', { xmlns: NS.ping }));
}

/** What a self-ping's error says about our membership (XEP-0410 §3.2). */
export function selfPingVerdict(condition: string | undefined): 'joined' | 'not-joined' | 'unknown' {
  switch (condition) {
    case 'service-unavailable':
    case 'feature-not-implemented':
      // The room forwarded the ping to our client, which did not answer it: we are in.
      return 'joined';
    case 'item-not-found':
    case 'not-acceptable':
    case 'not-allowed':
      return 'not-joined';
    default:
      return 'unknown';
  }
}

export interface MucPresence {
  readonly room: string;
  readonly nick: string;
  /** status 110: this presence is about us */
  readonly self: boolean;
  readonly type: 'available' | 'unavailable' | 'error';
  readonly codes: ReadonlySet<string>;
  readonly occupantId: string | undefined;
  /** the error condition of an error presence */
  readonly condition: string | undefined;
  /** status 303: the new nick */
  readonly newNick: string | undefined;
  /** the occupant's real bare JID, when the room shows it (non-anonymous rooms, XEP-0045 §7.2.3) */
  readonly jid: string | undefined;
}

/** A presence from a MUC occupant (one with a muc#user child, or an error to our join). */
export function parseMucPresence(p: XmlElement): MucPresence | undefined {
  if (!p.is('presence')) return undefined;
  const room = bareJid(p.attrs['from']);
  const nick = resourceOf(p.attrs['from']);
  if (room === undefined || nick === undefined) return undefined;
  const type = p.attrs['type'] === 'unavailable' ? 'unavailable' : p.attrs['type'] === 'error' ? 'error' : p.attrs['type'] === undefined ? 'available' : undefined;
  if (type === undefined) return undefined;
  const x = p.getChild('x', NS.mucUser);
  if (!x && type !== 'error') return undefined;
  const codes = new Set((x?.getChildren('status') ?? []).map((s) => s.attrs['code']).filter((c): c is string => c !== undefined));
  const error = p.getChild('error');
  const condition = error?.getChildElements().find((c) => c.getNS() === NS.stanzas)?.name;
  return {
    room,
    nick,
    self: codes.has('110'),
    type,
    codes,
    occupantId: p.getChild('occupant-id', NS.occupantId)?.attrs['id'],
    condition,
    newNick: x?.getChild('item')?.attrs['nick'],
    jid: bareJid(x?.getChild('item')?.attrs['jid'])?.toLowerCase(),
  };
}

/** XEP-0184 receipt for a message we appended. */
export function receipt(to: string, id: string): XmlElement {
  return xml('message', { to, type: 'chat' }, xml('received', { xmlns: NS.receipts, id }));
}
