/**
 * XML pieces shared by the XMPP adapter: namespaces, the element type, a
 * parser for fixtures and logs, and the XML 1.0 character rules.
 */
import { xml, type XmlElement } from '@xmpp/client';

export { xml, type XmlElement } from '@xmpp/client';

export const NS = {
  client: 'jabber:client',
  sid: 'urn:xmpp:sid:0',
  delay: 'urn:xmpp:delay',
  forward: 'urn:xmpp:forward:0',
  carbons: 'urn:xmpp:carbons:2',
  mam: 'urn:xmpp:mam:2',
  rsm: 'http://jabber.org/protocol/rsm',
  data: 'jabber:x:data',
  muc: 'http://jabber.org/protocol/muc',
  mucUser: 'http://jabber.org/protocol/muc#user',
  mucOwner: 'http://jabber.org/protocol/muc#owner',
  discoInfo: 'http://jabber.org/protocol/disco#info',
  occupantId: 'urn:xmpp:occupant-id:0',
  correct: 'urn:xmpp:message-correct:0',
  retract: 'urn:xmpp:message-retract:1',
  retract0: 'urn:xmpp:message-retract:0',
  fasten: 'urn:xmpp:fasten:0',
  reactions: 'urn:xmpp:reactions:0',
  reply: 'urn:xmpp:reply:0',
  fallback: 'urn:xmpp:fallback:0',
  markers: 'urn:xmpp:chat-markers:0',
  receipts: 'urn:xmpp:receipts',
  oob: 'jabber:x:oob',
  styling: 'urn:xmpp:styling:0',
  hints: 'urn:xmpp:hints',
  ping: 'urn:xmpp:ping',
  nick: 'http://jabber.org/protocol/nick',
  stanzas: 'urn:ietf:params:xml:ns:xmpp-stanzas',
  chatStates: 'http://jabber.org/protocol/chatstates',
  /** XEP-0380 explicit message encryption */
  eme: 'urn:xmpp:eme:0',
  /** OMEMO 0.3 (XEP-0384 before 0.4), what Conversations, Gajim, Dino, Monal speak */
  omemoLegacy: 'eu.siacs.conversations.axolotl',
  omemo1: 'urn:xmpp:omemo:1',
  omemo2: 'urn:xmpp:omemo:2',
  /** XEP-0373 OpenPGP for XMPP */
  openpgp: 'urn:xmpp:openpgp:0',
  /** XEP-0027 (obsolete) OpenPGP */
  pgpLegacy: 'jabber:x:encrypted',
  otr: 'urn:xmpp:otr:0',
} as const;

/** Parses one XML element (a stanza from a fixture, a log line). Throws on malformed XML. */
export function parseXml(text: string): XmlElement {
  const parser = new xml.Parser();
  let root: XmlElement | undefined;
  let error: Error | undefined;
  parser.on('start', (el) => {
    root = el;
  });
  parser.on('element', (el) => {
    root?.append(el);
  });
  parser.on('error', (err) => {
    error = err;
  });
  try {
    parser.write(text.trim());
    parser.end();
  } catch (err) {
    // ltx throws from write() on an illegal character reference
    throw err instanceof Error ? err : new Error(String(err));
  }
  if (error) throw error;
  if (!root) throw new Error('no XML element in the input');
  return root;
}

/**
 * Characters XML 1.0 does not allow (§2.2): C0 controls other than tab, LF and
 * CR, lone surrogates, U+FFFE and U+FFFF. A server drops a stream that carries
 * one, so nothing we send may contain them, and text that arrives with them
 * came through something broken.
 */
// eslint-disable-next-line no-control-regex
const INVALID_XML_CHARS = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
// eslint-disable-next-line no-control-regex
const INVALID_XML_CHARS_G = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

export function hasInvalidXmlChars(text: string): boolean {
  return INVALID_XML_CHARS.test(text);
}

/** Removes what XML 1.0 cannot carry (see above): outbound text must never close our own stream. */
export function stripInvalidXmlChars(text: string): string {
  return text.replace(INVALID_XML_CHARS_G, '');
}

/** The text of every string child, recursively: for a whole-element sanity check. */
export function allText(el: XmlElement, out: string[] = []): string[] {
  for (const child of el.children) {
    if (typeof child === 'string') out.push(child);
    else allText(child, out);
  }
  for (const value of Object.values(el.attrs)) if (value !== undefined) out.push(value);
  return out;
}
