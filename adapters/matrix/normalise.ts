/**
 * Pure: a Matrix client event (as /sync, /messages or an AS transaction
 * serve it) → what it means for the log, with relation targets still as
 * Matrix event ids (the adapter resolves them through the id map).
 *
 * - m.room.message (text, notice, emote, media, location) and m.sticker →
 *   message; an emote becomes a body starting with `/me ` (the XMPP
 *   convention, XEP-0245), media become attachments by URL.
 * - HTML `formatted_body` → `format: 'html'`, sanitised with the spec's
 *   recommended allowlist; the legacy reply fallback (`<mx-reply>`, leading
 *   `> ` lines) is stripped from replies (rich replies, v1.13).
 * - m.replace → edit with the content of `m.new_content`; m.in_reply_to →
 *   reply; m.thread → thread (+ reply unless it is only the thread fallback);
 *   m.annotation → one key of a reaction set; m.room.redaction → retraction
 *   or reaction removal; m.receipt m.read → marker (m.read.private never).
 * - Idempotency: `mx:<event_id>` (docs/protocols.md, "What every adapter does"); receipts, which have
 *   no event id, `mx:receipt:<room>:<user>:<event>[:<thread>]`.
 * - Echo: an event from our own namespace (ghosts, the bot) carrying our
 *   content key names the log event it came from (ECHO_ID_KEY); the key is
 *   trusted from nobody else, so a Matrix user cannot make the gateway drop
 *   or re-alias messages by adding it.
 */
import { createHash } from 'node:crypto';
import sanitizeHtml from 'sanitize-html';
import type { IOptions } from 'sanitize-html';
import { ECHO_ID_KEY } from '../../src/core/adapter.js';
import { MAX_BODY_CHARS, UNDECRYPTABLE_NOTICE, type Content, type DraftOf, type Origin, type Sender, type Timestamps, type UndecryptableReason } from '../../src/core/event.js';
import { stripReplyFallbackBody, truncate, truncateMarked } from '../../src/core/text.js';
import { parseEncryptedFile, type EncryptedFile } from './crypto/attachments.js';
import type { DropReason } from './errors.js';

/** The user ids of the pills (links to https://matrix.to/#/@user:server) in an event's HTML. */
export function pillUserIds(html: string | undefined): string[] {
  if (html === undefined) return [];
  const out: string[] = [];
  // The pills of a rich-reply fallback name the replied-to sender, not a mention.
  const own = html.replace(/<mx-reply>[\s\S]*?<\/mx-reply>/gi, '');
  for (const match of own.matchAll(/<a\s[^>]*href\s*=\s*["']https:\/\/matrix\.to\/#\/((?:@|%40)[^"'?/]+)/gi)) {
    try {
      out.push(decodeURIComponent(match[1] ?? ''));
    } catch {
      // not a valid percent-encoding: not a pill
    }
    if (out.length >= 100) break;
  }
  return out;
}

/** The content key that carries our event id on everything we send. */
export const CONTENT_KEY = 'org.syncgate.event_id';
export const HTML_FORMAT = 'org.matrix.custom.html';

const MAX_ID_CHARS = 255;
const MAX_KEY_CHARS = 64;
const MAX_DISPLAY_CHARS = 256;

export type JsonObject = Record<string, unknown>;

/** The fields of a client event the adapter reads (ClientEvent, spec "Room Events"). */
export interface MatrixEvent {
  readonly event_id: string;
  readonly type: string;
  readonly sender: string;
  readonly room_id: string;
  readonly origin_server_ts: number;
  readonly content: JsonObject;
  readonly state_key?: string;
  readonly redacts?: string;
  readonly unsigned?: JsonObject;
}

export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** Checks the shape of an untrusted event; `roomId` fills in the room for /sync timelines, which omit it. */
export function parseMatrixEvent(raw: unknown, roomId?: string): MatrixEvent | { readonly invalid: string } {
  if (!isObject(raw)) return { invalid: 'not an object' };
  const eventId = str(raw['event_id']);
  const type = str(raw['type']);
  const sender = str(raw['sender']);
  const room = str(raw['room_id']) ?? roomId;
  const ts = raw['origin_server_ts'];
  const content = raw['content'];
  if (eventId === undefined || !eventId.startsWith('$') || eventId.length > MAX_ID_CHARS) return { invalid: 'event_id' };
  if (type === undefined || type.length === 0 || type.length > MAX_ID_CHARS) return { invalid: 'type' };
  if (sender === undefined || !/^@[^:]+:.+$/.test(sender) || sender.length > MAX_ID_CHARS) return { invalid: 'sender' };
  if (room === undefined || !room.startsWith('!') || room.length > MAX_ID_CHARS) return { invalid: 'room_id' };
  if (typeof ts !== 'number' || !Number.isSafeInteger(ts) || ts < 0) return { invalid: 'origin_server_ts' };
  if (!isObject(content)) return { invalid: 'content' };
  const ev: { -readonly [K in keyof MatrixEvent]: MatrixEvent[K] } = { event_id: eventId, type, sender, room_id: room, origin_server_ts: ts, content };
  const stateKey = raw['state_key'];
  if (typeof stateKey === 'string') ev.state_key = stateKey;
  const redacts = raw['redacts'];
  if (typeof redacts === 'string') ev.redacts = redacts;
  if (isObject(raw['unsigned'])) ev.unsigned = raw['unsigned'];
  return ev;
}

// ------------------------------------------------------------------ HTML

const ALLOWED_TAGS = [
  'font', 'del', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'blockquote', 'p', 'a', 'ul', 'ol', 'sup', 'sub', 'li', 'b', 'i', 'u',
  'strong', 'em', 's', 'strike', 'code', 'hr', 'br', 'div', 'table', 'thead', 'tbody', 'tr', 'th', 'td', 'caption', 'pre',
  'span', 'img', 'details', 'summary',
];

/** The spec's recommended tags and attributes ("m.room.message msgtypes"), links only to safe schemes, images only mxc. */
const HTML_OPTIONS: IOptions = {
  allowedTags: ALLOWED_TAGS,
  allowedAttributes: {
    font: ['data-mx-bg-color', 'data-mx-color', 'color'],
    span: ['data-mx-bg-color', 'data-mx-color', 'data-mx-spoiler'],
    a: ['href'],
    img: ['width', 'height', 'alt', 'title', 'src'],
    ol: ['start'],
    code: ['class'],
  },
  allowedClasses: { code: [/^language-[\w.+#-]{1,32}$/] },
  allowedSchemes: ['https', 'http', 'ftp', 'mailto', 'magnet'],
  allowedSchemesByTag: { img: ['mxc'] },
  allowedSchemesAppliedToAttributes: ['href', 'src'],
  allowProtocolRelative: false,
  disallowedTagsMode: 'discard',
  // The content of these goes too: code, or (mx-reply) the reply fallback.
  nonTextTags: ['mx-reply', 'script', 'style', 'textarea', 'noscript', 'iframe', 'object', 'embed', 'template', 'svg', 'math', 'title', 'head'],
  nestingLimit: 100,
  parseStyleAttributes: false,
};

export function sanitizeMatrixHtml(html: string): string {
  return sanitizeHtml(html, HTML_OPTIONS);
}

/** The same parse and serialisation with nothing removed: what the input "is" once normalised. */
const KEEP_ALL: IOptions = { allowedTags: false, allowedAttributes: false, allowVulnerableTags: true, nonTextTags: [], parseStyleAttributes: false };

/** Sanitises and tells whether anything was removed (not merely re-serialised, like `<br>` → `<br />`). */
export function sanitizeWithReport(html: string): { html: string; removed: boolean } {
  const clean = sanitizeMatrixHtml(html);
  // The reply fallback (<mx-reply>) is stripped as the spec asks: expected, not a change worth a warning.
  const expected = html.replace(/<mx-reply>[\s\S]*?<\/mx-reply>/gi, '');
  return { html: clean, removed: clean !== expected && clean !== sanitizeHtml(expected, KEEP_ALL) };
}

/** The plain text of sanitised HTML, for a body that must not carry markup. */
export function htmlToText(html: string): string {
  return sanitizeHtml(html.replace(/<br\s*\/?>/gi, '\n').replace(/<\/p>/gi, '\n'), { allowedTags: [], allowedAttributes: {}, nonTextTags: HTML_OPTIONS.nonTextTags ?? [] })
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&')
    .trim();
}

// ------------------------------------------------------------------ events

export interface NormaliseContext {
  /** the adapter instance name (origin.via) */
  readonly via: string;
  /** the gateway room the Matrix room is linked to */
  readonly room: string;
  readonly now: number;
  /** our ghosts and our bot */
  readonly isOurs: (userId: string) => boolean;
  /** the sender's display name in the room, when known */
  readonly display?: string;
  /** mxc://server/id → attachment URL */
  readonly mediaUrl?: (mxc: string) => string;
}

/** The fields every draft of one Matrix event shares. */
export interface DraftBase {
  readonly v: 1;
  readonly idem: string;
  readonly room: string;
  readonly sender: Sender;
  readonly origin: Origin;
  readonly ts: Timestamps;
}

export type Normalised =
  | { readonly action: 'ignore'; readonly reason: DropReason; readonly detail?: string }
  /** one of ours came back: for the sink to record its native ids against our event */
  | { readonly action: 'echo'; readonly draft: DraftOf<'message'> }
  | { readonly action: 'message'; readonly base: DraftBase; readonly content: Content; readonly replyTo?: string; readonly thread?: string; readonly notes: readonly DropReason[]; readonly encryptedFile?: EncryptedFileRef }
  | { readonly action: 'edit'; readonly base: DraftBase; readonly content: Content; readonly replaces: string; readonly notes: readonly DropReason[] }
  | { readonly action: 'annotation'; readonly base: DraftBase; readonly target: string; readonly key: string }
  | { readonly action: 'redaction'; readonly base: DraftBase; readonly redacts: string }
  | { readonly action: 'membership'; readonly userId: string; readonly membership: string; readonly display?: string }
  | { readonly action: 'encryption' };

export function senderOf(userId: string, display: string | undefined, ours = false): Sender {
  return {
    uid: `matrix:${userId}`,
    proto: 'matrix',
    native: userId,
    ...(display !== undefined && display !== '' ? { display: truncate(display, MAX_DISPLAY_CHARS) } : {}),
    auth: 'server',
    ...(ours ? { puppet: true } : {}),
  };
}

function baseOf(ev: MatrixEvent, ctx: NormaliseContext): DraftBase {
  return {
    v: 1,
    idem: `mx:${ev.event_id}`,
    room: ctx.room,
    sender: senderOf(ev.sender, ctx.display),
    origin: { proto: 'matrix', via: ctx.via, ids: { 'mx.eventId': ev.event_id } },
    ts: { origin: ev.origin_server_ts, received: ctx.now },
  };
}

function relatesTo(content: JsonObject): JsonObject | undefined {
  const rel = content['m.relates_to'];
  return isObject(rel) ? rel : undefined;
}

function replyTarget(rel: JsonObject | undefined): string | undefined {
  const inReply = rel?.['m.in_reply_to'];
  return isObject(inReply) ? str(inReply['event_id']) : undefined;
}

function mxcToAttachment(url: unknown, info: unknown, name: string | undefined, ctx: NormaliseContext): NonNullable<Content['attachments']>[number] | undefined {
  if (typeof url !== 'string' || !/^mxc:\/\/[^/]+\/[^/]+$/.test(url) || url.length > 1024) return undefined;
  const meta = isObject(info) ? info : {};
  const mime = str(meta['mimetype']);
  const size = meta['size'];
  return {
    url: ctx.mediaUrl ? ctx.mediaUrl(url) : url,
    ...(mime !== undefined && mime.length <= 255 ? { mime } : {}),
    ...(typeof size === 'number' && Number.isSafeInteger(size) && size >= 0 ? { size } : {}),
    ...(name !== undefined && name !== '' ? { name: truncate(name, 1024) } : {}),
  };
}

/** An encrypted file of a message (its attachment's URL is still the ciphertext's mxc://), or why its `file` is not one. */
export type EncryptedFileRef = { readonly file: EncryptedFile } | { readonly problem: string };

type ContentResult = { readonly content: Content; readonly notes: DropReason[]; readonly encryptedFile?: EncryptedFileRef } | { readonly ignore: DropReason; readonly detail: string };

/** The content of an m.room.message (or of its `m.new_content`). */
export function contentOf(c: JsonObject, ctx: NormaliseContext, opts: { isReply: boolean; sticker?: boolean; encryptedFiles?: boolean }): ContentResult {
  const notes: DropReason[] = [];
  let body = str(c['body']);
  if (body === undefined) return { ignore: 'malformed-event', detail: 'content.body is not a string' };
  const msgtype = opts.sticker ? 'm.image' : str(c['msgtype']);
  if (msgtype === undefined) return { ignore: 'malformed-event', detail: 'content.msgtype is not a string' };
  // An encrypted file (spec "Sending encrypted attachments") in a message; in an edit's new content it is not bridged.
  if (c['file'] !== undefined && !opts.encryptedFiles) return { ignore: 'encrypted', detail: 'encrypted media (content.file)' };
  let encryptedFile: EncryptedFileRef | undefined;
  if (opts.isReply) body = stripReplyFallbackBody(body);

  let formatted: string | undefined;
  const rawHtml = str(c['formatted_body']);
  if (c['format'] === HTML_FORMAT && rawHtml !== undefined) {
    const sanitised = sanitizeWithReport(rawHtml);
    formatted = sanitised.html;
    if (sanitised.removed) notes.push('html-sanitised');
    if (formatted.trim() === '') formatted = undefined;
  }

  const attachments: NonNullable<Content['attachments']> = [];
  switch (msgtype) {
    case 'm.text':
    case 'm.notice':
      break;
    case 'm.emote':
      body = `/me ${body}`;
      if (formatted !== undefined) formatted = `/me ${formatted}`;
      break;
    case 'm.image':
    case 'm.file':
    case 'm.audio':
    case 'm.video': {
      // With `filename` set and different, `body` is a caption (spec v1.10 "media captions").
      const filename = str(c['filename']);
      const caption = filename !== undefined && filename !== body ? body : undefined;
      if (c['file'] !== undefined) {
        // The ciphertext's mxc:// stays until the inbound handler checked the file and gave it the gateway's URL.
        encryptedFile = parseEncryptedFile(c['file']);
        const { mediaUrl: _clearOnly, ...asIs } = ctx;
        const attachment = 'file' in encryptedFile ? mxcToAttachment(encryptedFile.file.url, c['info'], filename ?? body, asIs) : undefined;
        if (attachment) attachments.push(attachment);
      } else {
        const attachment = mxcToAttachment(c['url'], c['info'], filename ?? body, ctx);
        if (!attachment) return { ignore: 'malformed-event', detail: `${msgtype} without a valid mxc:// url` };
        attachments.push(attachment);
      }
      body = caption ?? filename ?? body;
      if (caption === undefined) formatted = undefined;
      break;
    }
    case 'm.location': {
      const geo = str(c['geo_uri']);
      if (geo !== undefined) body = `${body} (${geo})`;
      break;
    }
    default:
      // The spec: show `body` for a msgtype you do not know.
      notes.push('unsupported-msgtype');
  }

  if (body.length > MAX_BODY_CHARS) {
    body = truncateMarked(body, MAX_BODY_CHARS);
    notes.push('body-truncated');
  }
  if (formatted !== undefined && formatted.length > MAX_BODY_CHARS * 2) {
    formatted = undefined;
    notes.push('body-truncated');
  }

  const mentions: string[] = [];
  const m = c['m.mentions'];
  // Intentional mentions (spec v1.7); clients older than that mention only by a pill in the HTML.
  const mentioned = isObject(m) ? (Array.isArray(m['user_ids']) ? m['user_ids'] : []) : pillUserIds(rawHtml);
  for (const id of mentioned) {
    if (typeof id === 'string' && id.startsWith('@') && id.length <= 240 && !ctx.isOurs(id)) mentions.push(`matrix:${id}`);
    if (mentions.length >= 100) break;
  }

  const content: { -readonly [K in keyof Content]: Content[K] } = { body };
  if (formatted !== undefined) {
    content.format = 'html';
    content.formatted = formatted;
  }
  if (mentions.length > 0) content.mentions = [...new Set(mentions)];
  if (attachments.length > 0) content.attachments = attachments;
  return { content, notes, ...(encryptedFile !== undefined ? { encryptedFile } : {}) };
}

/** One Matrix room event → what it means for the log (relation targets still Matrix ids). */
export function normaliseEvent(ev: MatrixEvent, ctx: NormaliseContext): Normalised {
  if (ev.type === 'm.room.member') {
    if (ev.state_key === undefined) return { action: 'ignore', reason: 'malformed-event', detail: 'm.room.member without state_key' };
    const display = str(ev.content['displayname']);
    return { action: 'membership', userId: ev.state_key, membership: str(ev.content['membership']) ?? '', ...(display !== undefined ? { display } : {}) };
  }
  if (ev.type === 'm.room.encryption' && ev.state_key === '') return { action: 'encryption' };
  if (ev.unsigned?.['redacted_because'] !== undefined) return { action: 'ignore', reason: 'redacted' };

  if (ctx.isOurs(ev.sender)) {
    const ours = str(ev.content[CONTENT_KEY]);
    if (ours === undefined || ours.length === 0 || ours.length > 64) return { action: 'ignore', reason: 'own-event' };
    const base = baseOf(ev, ctx);
    return {
      action: 'echo',
      draft: {
        ...base,
        kind: 'message',
        sender: { ...base.sender, puppet: true },
        origin: { ...base.origin, ids: { ...base.origin.ids, [ECHO_ID_KEY]: ours } },
        content: { body: '' },
      },
    };
  }
  if (ev.state_key !== undefined) return { action: 'ignore', reason: 'unsupported-type', detail: ev.type };

  switch (ev.type) {
    case 'm.room.message':
    case 'm.sticker':
      return messageOf(ev, ctx);
    case 'm.reaction': {
      const rel = relatesTo(ev.content);
      const target = str(rel?.['event_id']);
      const key = str(rel?.['key']);
      if (rel?.['rel_type'] !== 'm.annotation' || target === undefined || key === undefined) {
        return { action: 'ignore', reason: 'invalid-reaction', detail: 'not an m.annotation with event_id and key' };
      }
      if (key.length === 0 || key.length > MAX_KEY_CHARS) return { action: 'ignore', reason: 'invalid-reaction', detail: `key length ${key.length}` };
      return { action: 'annotation', base: baseOf(ev, ctx), target, key };
    }
    case 'm.room.redaction': {
      // Room v11 moved `redacts` into content; older rooms have it at the top level.
      const redacts = str(ev.content['redacts']) ?? ev.redacts;
      if (redacts === undefined || !redacts.startsWith('$')) return { action: 'ignore', reason: 'malformed-event', detail: 'redaction without redacts' };
      return { action: 'redaction', base: baseOf(ev, ctx), redacts };
    }
    case 'm.room.encrypted':
      return { action: 'ignore', reason: 'encrypted' };
    default:
      return { action: 'ignore', reason: 'unsupported-type', detail: ev.type };
  }
}

/**
 * An m.room.encrypted event the adapter's crypto could not decrypt: the
 * neutral notice marked `undecryptable`, so devices on other protocols see
 * that a message could not be read rather than nothing. Ours are ignored.
 */
export function undecryptableOf(ev: MatrixEvent, ctx: NormaliseContext, reason: UndecryptableReason): Normalised {
  if (ctx.isOurs(ev.sender)) return { action: 'ignore', reason: 'own-event' };
  const algorithm = str(ev.content['algorithm']);
  const scheme = algorithm !== undefined && algorithm.length > 0 && algorithm.length <= 256 ? algorithm : undefined;
  return {
    action: 'message',
    base: baseOf(ev, ctx),
    content: { body: UNDECRYPTABLE_NOTICE, undecryptable: { reason, ...(scheme !== undefined ? { scheme } : {}) } },
    notes: [],
  };
}

function messageOf(ev: MatrixEvent, ctx: NormaliseContext): Normalised {
  const rel = relatesTo(ev.content);
  const relType = str(rel?.['rel_type']);
  const sticker = ev.type === 'm.sticker';
  if (relType === 'm.replace') {
    const replaces = str(rel?.['event_id']);
    const newContent = ev.content['m.new_content'];
    if (replaces === undefined || !isObject(newContent)) return { action: 'ignore', reason: 'invalid-edit', detail: 'm.replace without event_id or m.new_content' };
    const result = contentOf(newContent, ctx, { isReply: false, sticker });
    if ('ignore' in result) return { action: 'ignore', reason: result.ignore, detail: result.detail };
    return { action: 'edit', base: baseOf(ev, ctx), content: result.content, replaces, notes: result.notes };
  }
  let thread: string | undefined;
  let replyTo = replyTarget(rel);
  if (relType === 'm.thread') {
    thread = str(rel?.['event_id']);
    // In a thread, m.in_reply_to with is_falling_back is only for clients without threads.
    if (rel?.['is_falling_back'] === true) replyTo = undefined;
  }
  const result = contentOf(ev.content, ctx, { isReply: replyTo !== undefined, sticker, encryptedFiles: true });
  if ('ignore' in result) return { action: 'ignore', reason: result.ignore, detail: result.detail };
  return {
    action: 'message',
    base: baseOf(ev, ctx),
    content: result.content,
    ...(result.encryptedFile !== undefined ? { encryptedFile: result.encryptedFile } : {}),
    ...(replyTo !== undefined ? { replyTo } : {}),
    ...(thread !== undefined ? { thread } : {}),
    notes: result.notes,
  };
}

// ------------------------------------------------------------------ receipts

export interface ReceiptRef {
  readonly userId: string;
  readonly eventId: string;
  readonly ts?: number;
  readonly threadId?: string;
}

/** The public read receipts (`m.read`) of an m.receipt EDU's content; `m.read.private` is never read. */
export function readReceiptsOf(content: unknown): ReceiptRef[] {
  if (!isObject(content)) return [];
  const out: ReceiptRef[] = [];
  for (const [eventId, byType] of Object.entries(content)) {
    if (!eventId.startsWith('$') || eventId.length > MAX_ID_CHARS || !isObject(byType)) continue;
    const read = byType['m.read'];
    if (!isObject(read)) continue;
    for (const [userId, info] of Object.entries(read)) {
      if (!/^@[^:]+:.+$/.test(userId) || userId.length > MAX_ID_CHARS) continue;
      const meta = isObject(info) ? info : {};
      const ts = meta['ts'];
      const thread = str(meta['thread_id']);
      out.push({
        userId,
        eventId,
        ...(typeof ts === 'number' && Number.isSafeInteger(ts) && ts >= 0 ? { ts } : {}),
        ...(thread !== undefined && thread !== 'main' ? { threadId: thread } : {}),
      });
    }
  }
  return out;
}

/** A read receipt as a marker ("read up to"), once the target is resolved to a log event. */
export function markerDraft(roomId: string, receipt: ReceiptRef, upTo: string, ctx: NormaliseContext): DraftOf<'marker'> {
  const thread = receipt.threadId !== undefined ? `:${receipt.threadId}` : '';
  let idem = `mx:receipt:${roomId}:${receipt.userId}:${receipt.eventId}${thread}`;
  // Ids of up to 255 characters each can exceed the 512 allowed for a key.
  if (idem.length > 512) idem = `mx:receipt:sha256:${createHash('sha256').update(idem).digest('hex')}`;
  return {
    v: 1,
    kind: 'marker',
    idem,
    room: ctx.room,
    sender: senderOf(receipt.userId, ctx.display),
    origin: { proto: 'matrix', via: ctx.via, ids: {} },
    ts: { ...(receipt.ts !== undefined ? { origin: receipt.ts } : {}), received: ctx.now },
    rel: { upTo },
  };
}
