/**
 * Log events → XMPP stanzas. Pure: what needs the log (the quoted text of a
 * reply, the bridge's combined reaction set) is looked up by the adapter and
 * passed in.
 *
 * Every stanza carries our event id as `id` and `<origin-id>` (echo detection,
 * dedupe of resends). References use the id the XEPs require: the room's
 * stanza-id in a MUC (XEP-0424 §5.1, XEP-0444 §4.2, XEP-0461 §4.1, XEP-0333
 * §4), the origin-id / id in 1:1; corrections name the original's `id`
 * (XEP-0308), which for a message we sent is its event id.
 */
import type { ReferenceIds } from '../../src/core/adapter.js';
import type { Content, LogEvent, Sender } from '../../src/core/event.js';
import { truncateToBytes, utf8Length } from '../../src/core/text.js';
import { ID, ORIGIN_ID, STANZA_ID, STANZA_ID_BY, rawId, rawStanzaId } from './ids.js';
import { codePointLength } from '../../src/core/codepoints.js';
import { hasStyling } from './text.js';
import { NS, stripInvalidXmlChars, xml, type XmlElement } from './xml.js';

export interface RenderInput {
  readonly event: LogEvent;
  readonly chat: 'groupchat' | 'chat';
  /** the MUC or the peer, bare */
  readonly to: string;
  readonly references: ReferenceIds;
  /** the content in XEP-0393 (DeliveryContext.content) */
  readonly content?: Content | undefined;
  /** the expanded relay prefix for the sender ('' for none) */
  readonly prefix: string;
  /** a reply's quoted original (its author and text), for the XEP-0428 fallback */
  readonly quote?: { readonly author: string; readonly text: string } | undefined;
  /** a reply's original author as a JID (occupant JID in a MUC), for XEP-0461 `to` */
  readonly replyAuthor?: string | undefined;
  /** reactions: the whole set the bridge account shows on the target (XEP-0444 is per sender, and we are one sender) */
  readonly reactionKeys?: readonly string[] | undefined;
}

export type Rendered =
  | { readonly ok: true; readonly stanza: XmlElement }
  | { readonly ok: 'skip'; readonly reason: string }
  | { readonly ok: false; readonly reason: string };

const RETRACT_FALLBACK = 'This person attempted to retract a previous message, but it is unsupported by your client.';
const QUOTE_MAX_LINES = 3;
const QUOTE_MAX_CHARS = 200;

/** Relay-mode prefix: `{{display}}` and `{{uid}}` are replaced. */
export function expandPrefix(template: string, sender: Pick<Sender, 'uid' | 'display'>): string {
  return template.replace(/\{\{\s*(display|uid)\s*\}\}/g, (_, name: string) => (name === 'uid' ? sender.uid : (sender.display ?? sender.uid)));
}

/** The id a reference to `ids` uses in this chat type, or undefined when the target has none we can use. */
export function referenceId(ids: Readonly<Record<string, string>> | undefined, chat: 'groupchat' | 'chat', conversation: string): string | undefined {
  if (!ids) return undefined;
  if (chat === 'groupchat') {
    // The room's stanza-id; a stanza-id by anything else (our account archive) is useless in the room.
    if (ids[STANZA_ID_BY] !== conversation) return undefined;
    return rawStanzaId(ids[STANZA_ID]);
  }
  return rawId(ids[ORIGIN_ID]) ?? rawId(ids[ID]);
}

/** True when the referenced message is one the bridge sent: its id is the event id (we set id = origin-id = event id). */
export function sentByUs(ids: Readonly<Record<string, string>> | undefined, eventId: string | undefined): boolean {
  if (!ids || eventId === undefined) return false;
  return rawId(ids[ORIGIN_ID]) === eventId || rawId(ids[ID]) === eventId;
}

function envelope(input: RenderInput, children: Array<XmlElement | undefined>): XmlElement {
  const id = input.event.eventId;
  return xml(
    'message',
    { to: input.to, type: input.chat, id },
    ...children.filter((c): c is XmlElement => c !== undefined),
    xml('origin-id', { xmlns: NS.sid, id }),
  );
}

/** The text to send: formatted XEP-0393 when there is some, else the plain body. */
function textOf(content: Content | undefined): { text: string; styled: boolean } {
  if (!content) return { text: '', styled: false };
  if (content.format === 'xep0393' && content.formatted !== undefined) return { text: content.formatted, styled: true };
  return { text: content.body, styled: false };
}

/** Prefix + text; a text that opens with a block (quote, code) starts on its own line so the block still parses. */
function withPrefix(prefix: string, text: string): string {
  if (prefix === '') return text;
  if (/^(?:>|```)/.test(text)) return `${prefix.trimEnd()}\n${text}`;
  return prefix + text;
}

function quoteFallback(quote: { author: string; text: string }): string {
  let text = quote.text.length > QUOTE_MAX_CHARS ? `${quote.text.slice(0, QUOTE_MAX_CHARS)}…` : quote.text;
  const lines = text.split('\n');
  if (lines.length > QUOTE_MAX_LINES) text = `${lines.slice(0, QUOTE_MAX_LINES).join('\n')}…`;
  return `> ${quote.author}:\n${text
    .split('\n')
    .map((l) => `> ${l}`)
    .join('\n')}\n`;
}

/**
 * Size rule (README "Message size"): a body stays within this many bytes of
 * escaped XML, so the stanza fits Prosody's default c2s_stanza_size_limit
 * (256 KiB) with room for the envelope; a longer one is cut with the marker.
 */
export const MAX_BODY_XML_BYTES = 192 * 1024;

/** UTF-8 bytes of `text` as a text node: `&` `<` `>` are escaped. */
function xmlTextBytes(text: string): number {
  let extra = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x26) extra += 4;
    else if (c === 0x3c || c === 0x3e) extra += 3;
  }
  return utf8Length(text) + extra;
}

function textChildren(input: RenderInput, text: string, styled: boolean, attachments: Content['attachments']): XmlElement[] {
  const lines = [withPrefix(input.prefix, text)];
  const [first, ...more] = attachments ?? [];
  // XEP-0066 carries one URL that clients show; more go into the text. A lone attachment's body is
  // exactly its URL: clients show it inline only then (XEP-0066 §4, as clients implement it).
  if (first && text === '') lines[0] = more.length === 0 ? first.url : withPrefix(input.prefix, first.url);
  for (const a of more) lines.push(a.url);
  const body = truncateToBytes(stripInvalidXmlChars(lines.join('\n')), MAX_BODY_XML_BYTES, xmlTextBytes);
  return [
    xml('body', {}, body),
    ...(!styled && hasStyling(body) ? [xml('unstyled', { xmlns: NS.styling })] : []),
    ...(first ? [xml('x', { xmlns: NS.oob }, xml('url', {}, stripInvalidXmlChars(first.url)), first.name ? xml('desc', {}, stripInvalidXmlChars(first.name)) : undefined)] : []),
  ];
}

export function render(input: RenderInput): Rendered {
  const { event, chat, to, references } = input;
  switch (event.kind) {
    case 'message': {
      const { text, styled } = textOf(input.content ?? event.content);
      const attachments = (input.content ?? event.content).attachments;
      const target = referenceId(references.replyTo, chat, to);
      const children = textChildren(input, text, styled, attachments);
      if (target !== undefined && event.rel?.replyTo) {
        const fallback = input.quote ? stripInvalidXmlChars(quoteFallback(input.quote)) : '';
        const body = children[0] as XmlElement;
        const withQuote = fallback + body.getText();
        children[0] = xml('body', {}, withQuote);
        children.push(xml('reply', { xmlns: NS.reply, ...(input.replyAuthor !== undefined ? { to: input.replyAuthor } : {}), id: target }));
        if (fallback !== '') {
          children.push(xml('fallback', { xmlns: NS.fallback, for: NS.reply }, xml('body', { start: 0, end: codePointLength(fallback) })));
        }
      }
      children.push(xml('markable', { xmlns: NS.markers }));
      return { ok: true, stanza: envelope(input, children) };
    }
    case 'edit': {
      const ids = references.replaces;
      if (!sentByUs(ids, event.rel.replaces)) return { ok: 'skip', reason: 'the edited message was not sent by the bridge here (XEP-0308 lets only its sender correct it)' };
      const { text, styled } = textOf(input.content ?? event.content);
      const children = textChildren(input, text, styled, (input.content ?? event.content).attachments);
      children.push(xml('replace', { xmlns: NS.correct, id: event.rel.replaces }));
      return { ok: true, stanza: envelope(input, children) };
    }
    case 'retraction': {
      const ids = references.redacts;
      if (!sentByUs(ids, event.rel.redacts)) return { ok: 'skip', reason: 'the retracted message was not sent by the bridge here (XEP-0424 lets only its sender retract it)' };
      const target = referenceId(ids, chat, to) ?? rawId(ids?.[ORIGIN_ID]);
      if (target === undefined) return { ok: 'skip', reason: 'no id of the retracted message at this endpoint' };
      return {
        ok: true,
        stanza: envelope(input, [
          xml('retract', { xmlns: NS.retract, id: target }),
          xml('fallback', { xmlns: NS.fallback, for: NS.retract }),
          xml('body', {}, RETRACT_FALLBACK),
          xml('store', { xmlns: NS.hints }),
        ]),
      };
    }
    case 'reaction': {
      const target = referenceId(references.reactsTo, chat, to);
      if (target === undefined) return { ok: 'skip', reason: 'no id of the reacted-to message at this endpoint' };
      const keys = input.reactionKeys ?? event.reaction.keys;
      return {
        ok: true,
        stanza: envelope(input, [
          xml('reactions', { xmlns: NS.reactions, id: target }, ...keys.map((k) => xml('reaction', {}, stripInvalidXmlChars(k)))),
          xml('store', { xmlns: NS.hints }),
        ]),
      };
    }
    case 'marker': {
      const ids = references.upTo;
      // XEP-0333 §5: never mark our own messages.
      if (sentByUs(ids, event.rel.upTo)) return { ok: 'skip', reason: 'a marker on a message the bridge sent' };
      const target = chat === 'groupchat' ? referenceId(ids, chat, to) : rawId(ids?.[ID]);
      if (target === undefined) return { ok: 'skip', reason: 'no id of the marked message at this endpoint' };
      return { ok: true, stanza: envelope(input, [xml('displayed', { xmlns: NS.markers, id: target })]) };
    }
    default:
      return { ok: 'skip', reason: `${event.kind} events are not sent to XMPP` };
  }
}
