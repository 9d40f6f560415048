/**
 * Namespaces and stanza-building helpers of the rooms component. The
 * bridge-account adapter (adapters/xmpp) has its own: adapters do not import
 * each other.
 */
import { xml } from '@xmpp/component';
import type { XmlElement } from '@xmpp/client';

export { xml };
export type { XmlElement } from '@xmpp/client';

export const NS = {
  sid: 'urn:xmpp:sid:0',
  delay: 'urn:xmpp:delay',
  forward: 'urn:xmpp:forward:0',
  mam: 'urn:xmpp:mam:2',
  mamExtended: 'urn:xmpp:mam:2#extended',
  rsm: 'http://jabber.org/protocol/rsm',
  data: 'jabber:x:data',
  muc: 'http://jabber.org/protocol/muc',
  mucUser: 'http://jabber.org/protocol/muc#user',
  discoInfo: 'http://jabber.org/protocol/disco#info',
  discoItems: 'http://jabber.org/protocol/disco#items',
  occupantId: 'urn:xmpp:occupant-id:0',
  ping: 'urn:xmpp:ping',
  stanzas: 'urn:ietf:params:xml:ns:xmpp-stanzas',
  styling: 'urn:xmpp:styling:0',
} as const;

export type ErrorType = 'auth' | 'cancel' | 'continue' | 'modify' | 'wait';

/** An RFC 6120 <error/> with a defined condition and an optional text. */
export function stanzaError(type: ErrorType, condition: string, text?: string): XmlElement {
  return xml('error', { type }, xml(condition, { xmlns: NS.stanzas }), text !== undefined ? xml('text', { xmlns: NS.stanzas }, text) : undefined);
}

/** The error bounce of a message or presence: same id, from/to swapped. */
export function errorReply(stanza: XmlElement, error: XmlElement): XmlElement {
  return xml(stanza.name, { type: 'error', from: stanza.attrs['to'], to: stanza.attrs['from'], ...(stanza.attrs['id'] !== undefined ? { id: stanza.attrs['id'] } : {}) }, error);
}

export function bareJid(jid: string): string {
  const slash = jid.indexOf('/');
  return (slash < 0 ? jid : jid.slice(0, slash)).toLowerCase();
}

export function resourceOf(jid: string): string | undefined {
  const slash = jid.indexOf('/');
  return slash < 0 ? undefined : jid.slice(slash + 1);
}

export function localOf(jid: string): string | undefined {
  const at = jid.indexOf('@');
  return at < 0 ? undefined : jid.slice(0, at).toLowerCase();
}

export function domainOf(bare: string): string {
  return bare.slice(bare.indexOf('@') + 1);
}
