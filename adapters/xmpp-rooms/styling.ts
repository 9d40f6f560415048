/**
 * XEP-0393 message styling, both ways, as the bridge-account adapter
 * (adapters/xmpp) does it (adapters do not import each other): an
 * occupant's text that a styling client would show styled, and is not
 * marked `<unstyled/>`, is stored as `format: 'xep0393'`; on the way out
 * styled content is sent as its XEP-0393 text, and plain text that a client
 * would style carries `<unstyled/>`. So an occupant's styled message comes
 * back as it was sent, never converted twice.
 */
import type { Content } from '../../src/core/event.js';
import { NS, type XmlElement } from './ns.js';

// XEP-0393 §6: an opening directive starts a line or follows whitespace and is
// not followed by whitespace; the closing one is not preceded by whitespace;
// spans do not cross lines.
const SPAN = /(?:^|\s)([*_~`])(?=\S)[^\n]*?\S\1/mu;
const BLOCK = /^(?:```|>)/mu;

/** True when a XEP-0393 client would show styling in this text. */
export function hasStyling(text: string): boolean {
  return BLOCK.test(text) || SPAN.test(text);
}

/** An occupant's text as stored: styled unless the stanza says `<unstyled/>` or nothing in it is styling. */
export function textContent(stanza: XmlElement, body: string): Content {
  const styled = stanza.getChild('unstyled', NS.styling) === undefined && hasStyling(body);
  return styled ? { body, format: 'xep0393', formatted: body } : { body };
}

/** The `<body/>` text to send for content already in XEP-0393 (converted), and whether it needs `<unstyled/>`. */
export function styledText(content: Content): { readonly text: string; readonly unstyled: boolean } {
  if (content.format === 'xep0393' && content.formatted !== undefined) return { text: content.formatted, unstyled: false };
  return { text: content.body, unstyled: hasStyling(content.body) };
}
