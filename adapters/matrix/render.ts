/**
 * Pure: log events → Matrix event contents, with relation targets given as
 * Matrix event ids (from DeliveryContext.references).
 *
 * Everything we send carries our event id in the content key
 * (`org.syncgate.event_id`) so that it is recognised when it comes back, and
 * goes out with a transaction id derived from our event id (txnIds below), so
 * a retried delivery is a retransmission to the homeserver, not a new event.
 */
import { createHash } from 'node:crypto';
import MarkdownIt from 'markdown-it';
import type { Attachment, Content, DraftOf, Sender } from '../../src/core/event.js';
import { truncateToBytes, utf8Length } from '../../src/core/text.js';
import { CONTENT_KEY, HTML_FORMAT, sanitizeMatrixHtml, type JsonObject } from './normalise.js';
import type { EncryptedFile } from './crypto/attachments.js';

const markdown = new MarkdownIt({ html: false, linkify: true, breaks: true });

export function escapeHtml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

/** Bot mode: the relayed sender in front of the text (`{{display}}`, `{{uid}}`). */
export function expandPrefix(template: string, sender: Pick<Sender, 'uid' | 'display'>): string {
  return template.replace(/\{\{\s*(display|uid)\s*\}\}/g, (_, name: string) => (name === 'uid' ? sender.uid : (sender.display ?? sender.uid)));
}

export interface RenderOptions {
  /** bot mode: the expanded sender prefix; absent in appservice mode (the ghost is the sender) */
  readonly prefix?: string;
  /** bot mode: who an emote is by (`/me waves` → "Alice waves" from the bot) */
  readonly emoteName?: string;
  /** Matrix user ids the message mentions (`content.mentions` resolved by the adapter) */
  readonly mentions?: readonly string[];
}

/** A pill (spec "User and room mentions"): a link to the user's matrix.to URL. */
export function pill(userId: string, text: string): string {
  return `<a href="https://matrix.to/#/${escapeHtml(userId)}">${escapeHtml(text)}</a>`;
}

/**
 * Turns the first mention of each user in the HTML's text — the full user id,
 * else `@localpart` — into a pill; text inside tags or existing links is left
 * alone. A user whose name is not in the text gets no pill (m.mentions still
 * names them).
 */
export function addPills(html: string, userIds: readonly string[]): string {
  let out = html;
  for (const userId of userIds) {
    const colon = userId.indexOf(':');
    for (const candidate of colon > 0 ? [userId, userId.slice(0, colon)] : [userId]) {
      const next = pillFirst(out, userId, escapeHtml(candidate), candidate);
      if (next !== out) {
        out = next;
        break;
      }
    }
  }
  return out;
}

/** The first `needle` in text outside tags and links, as a pill; `html` unchanged when there is none. */
function pillFirst(html: string, userId: string, needle: string, text: string): string {
  const parts = html.split(/(<[^>]*>)/);
  let inLink = 0;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] ?? '';
    if (i % 2 === 1) {
      if (/^<a[\s>]/i.test(part)) inLink++;
      else if (/^<\/a>/i.test(part)) inLink = Math.max(0, inLink - 1);
      continue;
    }
    const at = inLink > 0 ? -1 : part.indexOf(needle);
    if (at < 0) continue;
    parts[i] = `${part.slice(0, at)}${pill(userId, text)}${part.slice(at + needle.length)}`;
    return parts.join('');
  }
  return html;
}

interface TextContent {
  msgtype: 'm.text' | 'm.emote' | 'm.notice';
  body: string;
  format?: typeof HTML_FORMAT;
  formatted_body?: string;
}

/** Body and HTML of a log message's content; `/me ` becomes m.emote, attachments become links. */
export function textContent(content: Content, opts: RenderOptions = {}): TextContent {
  // A message that could not be decrypted: the neutral notice as an m.notice (what clients show as
  // a notice, not as words of the sender), never anything else of the content.
  if (content.undecryptable) return { msgtype: 'm.notice', body: opts.prefix ? `${opts.prefix}${content.body}` : content.body };
  let body = content.body;
  let html: string | undefined;
  if (content.format === 'html' && content.formatted !== undefined) html = sanitizeMatrixHtml(content.formatted);
  else if (content.format === 'markdown') html = sanitizeMatrixHtml(markdown.render(content.formatted ?? content.body).trim());

  if (opts.mentions !== undefined && opts.mentions.length > 0) {
    // Older clients notice a mention only by its pill: give them one, in HTML made from the body if need be.
    const withPills = addPills(html ?? escapeHtml(body).replace(/\n/g, '<br>'), opts.mentions);
    if (html !== undefined || withPills.includes('<a href="https://matrix.to/')) html = withPills;
  }

  let msgtype: TextContent['msgtype'] = 'm.text';
  if (body.startsWith('/me ')) {
    msgtype = 'm.emote';
    body = body.slice(4);
    if (html !== undefined) html = html.replace(/^(<p>)?\/me /, '$1');
  }
  for (const a of content.attachments ?? []) {
    const label = a.name ?? 'attachment';
    body += `${body === '' ? '' : '\n'}${label}: ${a.url}`;
    if (html !== undefined) html += `<br><a href="${escapeHtml(a.url)}">${escapeHtml(label)}</a>`;
  }
  if (msgtype === 'm.emote' && opts.emoteName !== undefined) {
    body = `${opts.emoteName} ${body}`;
    if (html !== undefined) html = `${escapeHtml(opts.emoteName)} ${html}`;
  } else if (opts.prefix !== undefined && opts.prefix !== '') {
    body = `${opts.prefix}${body}`;
    if (html !== undefined) html = `${escapeHtml(opts.prefix)}${html}`;
  }
  const out: TextContent = { msgtype, body };
  // HTML that says nothing more than the body is left out, as clients do.
  if (html !== undefined && html !== escapeHtml(body)) {
    out.format = HTML_FORMAT;
    out.formatted_body = html;
  }
  return out;
}

/**
 * Size rule (README "Message size"): Synapse refuses an event over 65,536
 * bytes of JSON (M_TOO_LARGE), signatures and hashes included. The text of
 * one event stays within this many bytes of JSON; the rest of the content
 * and the envelope fit in what is left. The adapter declares it as its
 * `maxBodyBytes`.
 */
export const MAX_TEXT_JSON_BYTES = 60_000;

const jsonBytes = (value: unknown): number => utf8Length(JSON.stringify(value));

/**
 * Keeps a text content within `budget` bytes of JSON: first the HTML goes
 * (it cannot be cut safely), then the body is cut with the visible marker.
 */
export function fitTextContent(text: TextContent, budget: number = MAX_TEXT_JSON_BYTES): TextContent {
  if (jsonBytes(text) <= budget) return text;
  const plain: TextContent = { msgtype: text.msgtype, body: text.body };
  if (jsonBytes(plain) <= budget) return plain;
  return { ...plain, body: truncateToBytes(plain.body, budget, (body) => jsonBytes({ ...plain, body })) };
}

/** Intentional mentions (spec v1.7 `m.mentions`), when there are any. */
function mentionsOf(opts: RenderOptions): JsonObject {
  return opts.mentions !== undefined && opts.mentions.length > 0 ? { 'm.mentions': { user_ids: [...new Set(opts.mentions)] } } : {};
}

export interface MessageRefs {
  /** Matrix event id of the replied-to event */
  readonly replyTo?: string;
  /** Matrix event id of the thread root */
  readonly thread?: string;
}

/** An m.room.message for a log message. */
export function renderMessage(event: DraftOf<'message'> & { eventId: string }, refs: MessageRefs, opts: RenderOptions = {}): JsonObject {
  return { ...fitTextContent(textContent(event.content, opts)), ...mentionsOf(opts), ...relationsOf(refs), [CONTENT_KEY]: event.eventId };
}

function relationsOf(refs: MessageRefs): JsonObject {
  if (refs.thread !== undefined) {
    // Threads (spec "Threading"): the reply fallback points at the replied event, else at the root.
    return {
      'm.relates_to': {
        rel_type: 'm.thread',
        event_id: refs.thread,
        is_falling_back: refs.replyTo === undefined,
        'm.in_reply_to': { event_id: refs.replyTo ?? refs.thread },
      },
    };
  }
  if (refs.replyTo !== undefined) return { 'm.relates_to': { 'm.in_reply_to': { event_id: refs.replyTo } } };
  return {};
}

/** An attachment in the homeserver's media repository. */
export interface MediaRef {
  readonly attachment: Attachment;
  readonly mxc: string;
  /** the type the file was uploaded with, when the attachment does not say */
  readonly mime?: string;
  readonly size?: number;
  /** in an encrypted room: the ciphertext's EncryptedFile, sent as `file` instead of `url` (never both) */
  readonly file?: EncryptedFile;
}

/** The msgtype of a file by its media type (spec "m.room.message msgtypes"). */
export function mediaMsgtype(mime: string | undefined): 'm.image' | 'm.video' | 'm.audio' | 'm.file' {
  if (mime?.startsWith('image/')) return 'm.image';
  if (mime?.startsWith('video/')) return 'm.video';
  if (mime?.startsWith('audio/')) return 'm.audio';
  return 'm.file';
}

/**
 * A message with attachments in the media repository: one media event per
 * file (m.image, m.file, m.video, m.audio with `url` and `info`). The text
 * of the message is the first file's caption (spec v1.10 "Media captions":
 * `filename` is the file's name, `body` — and `formatted_body` — the
 * caption); replies, threads and mentions go on that first event. Other
 * attachments (not uploaded) stay links in the caption.
 */
export function renderMedia(event: DraftOf<'message'> & { eventId: string }, media: readonly MediaRef[], refs: MessageRefs, opts: RenderOptions = {}): JsonObject[] {
  const uploaded = new Set(media.map((m) => m.attachment));
  const rest = (event.content.attachments ?? []).filter((a) => !uploaded.has(a));
  const { attachments: _all, ...textOnly } = event.content;
  const captionContent: Content = rest.length > 0 ? { ...textOnly, attachments: rest } : textOnly;
  const hasCaption = captionContent.body.trim() !== '' || rest.length > 0;
  return media.map((m, i) => {
    const name = m.attachment.name ?? m.mxc.slice(m.mxc.lastIndexOf('/') + 1);
    const mime = m.attachment.mime ?? m.mime;
    const size = m.attachment.size ?? m.size;
    const info: JsonObject = { ...(mime !== undefined ? { mimetype: mime } : {}), ...(size !== undefined ? { size } : {}) };
    const content: JsonObject = { msgtype: mediaMsgtype(mime), body: name, filename: name, ...(m.file ? { file: { ...m.file } } : { url: m.mxc }), info };
    if (i === 0) {
      // The caption, or in bot mode at least who sent it ("<Carol> cat.png" is a caption, not the name).
      const caption = hasCaption ? fitTextContent(textContent(captionContent, opts)) : opts.prefix ? { body: `${opts.prefix}${name}` } : undefined;
      if (caption !== undefined) {
        const { msgtype: _msgtype, ...text } = caption as TextContent;
        Object.assign(content, text);
      }
      Object.assign(content, mentionsOf(opts), relationsOf(refs));
    }
    content[CONTENT_KEY] = event.eventId;
    return content;
  });
}

/** Transaction id of the `index`th media event of a message (the first is the message's own). */
export function mediaTxnId(eventId: string, index: number): string {
  return index === 0 ? eventId : `${eventId}.m.${index}`;
}

/** An m.replace of `original` (always the original: Matrix forbids editing an edit). */
export function renderEdit(event: DraftOf<'edit'> & { eventId: string }, original: string, opts: RenderOptions = {}): JsonObject {
  // The new text goes twice (fallback and m.new_content): each gets half.
  const next = fitTextContent(textContent(event.content, opts), (MAX_TEXT_JSON_BYTES - 16) / 2);
  const fallback: JsonObject = { msgtype: next.msgtype, body: `* ${next.body}` };
  if (next.formatted_body !== undefined) {
    fallback['format'] = HTML_FORMAT;
    fallback['formatted_body'] = `* ${next.formatted_body}`;
  }
  // m.mentions goes in the new content only: the edit itself would notify everyone again (spec "Mentions", edits).
  return { ...fallback, 'm.new_content': { ...next, ...mentionsOf(opts) }, 'm.relates_to': { rel_type: 'm.replace', event_id: original }, [CONTENT_KEY]: event.eventId };
}

export function renderAnnotation(eventId: string, target: string, key: string): JsonObject {
  return { 'm.relates_to': { rel_type: 'm.annotation', event_id: target, key }, [CONTENT_KEY]: eventId };
}

export function renderRedaction(eventId: string, reason?: string): JsonObject {
  return { ...(reason !== undefined ? { reason } : {}), [CONTENT_KEY]: eventId };
}

/**
 * Transaction ids: our event id for the one Matrix event an event becomes;
 * per reaction key a suffix from the key's hash (one event id can add or
 * remove several annotations).
 */
export function annotationTxnId(eventId: string, key: string): string {
  return `${eventId}.a.${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
}

export function unannotateTxnId(eventId: string, key: string): string {
  return `${eventId}.r.${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
}
