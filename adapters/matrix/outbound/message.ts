/**
 * Messages and edits → m.room.message. A message with attachments becomes
 * one media event per file (m.image, m.file …, the first carries the caption
 * and the relations); an https attachment is first uploaded to the
 * homeserver's media repository (mediaUploadMaxBytes; on failure it stays a
 * text link, logged).
 */
import type { DeliveryResult } from '../../../src/core/adapter.js';
import type { Attachment } from '../../../src/core/event.js';
import { mediaTxnId, renderEdit, renderMedia, renderMessage, type MediaRef } from '../render.js';
import type { MatrixAdapterState } from '../state.js';
import { renderOptions, send, speaker, type Logged } from './send.js';

/** attachment URL → its upload, so a retried delivery does not upload again */
const MAX_REMEMBERED_UPLOADS = 1000;

export async function sendMessage(s: MatrixAdapterState, event: Logged<'message'>, roomId: string, refs: { replyTo: string | undefined; thread: string | undefined }): Promise<DeliveryResult> {
  const who = await speaker(s, event, roomId);
  const messageRefs = { ...(refs.replyTo !== undefined ? { replyTo: refs.replyTo } : {}), ...(refs.thread !== undefined ? { thread: refs.thread } : {}) };
  const media = await mediaOf(s, event);
  if (media.length > 0) {
    // One media event per file; the message's native id is the first (it carries the caption and relations).
    const contents = renderMedia(event, media, messageRefs, renderOptions(s, event, who));
    let first: string | undefined;
    for (const [i, content] of contents.entries()) {
      const id = await send(s, roomId, 'm.room.message', mediaTxnId(event.eventId, i), content, who);
      first ??= id;
    }
    if (first !== undefined) return { status: 'delivered', nativeIds: { 'mx.eventId': first } };
  }
  const content = renderMessage(event, messageRefs, renderOptions(s, event, who));
  const id = await send(s, roomId, 'm.room.message', event.eventId, content, who);
  return { status: 'delivered', nativeIds: { 'mx.eventId': id } };
}

export async function sendEdit(s: MatrixAdapterState, event: Logged<'edit'>, roomId: string, original: string): Promise<DeliveryResult> {
  const who = await speaker(s, event, roomId);
  const id = await send(s, roomId, 'm.room.message', event.eventId, renderEdit(event, original, renderOptions(s, event, who)), who);
  return { status: 'delivered', nativeIds: { 'mx.eventId': id } };
}

/**
 * The message's attachments that are, or now were put, in the media
 * repository: mxc:// URLs as they are; https ones (http with
 * `mediaUploadAllowHttp`) fetched and uploaded up to `mediaUploadMaxBytes`.
 * One that cannot be uploaded stays a text link (logged).
 */
async function mediaOf(s: MatrixAdapterState, event: Logged<'message'>): Promise<MediaRef[]> {
  const out: MediaRef[] = [];
  const uploads = s.outbound.uploads;
  for (const attachment of event.content.attachments ?? []) {
    if (/^mxc:\/\/[^/]+\/[^/]+$/.test(attachment.url)) {
      out.push({ attachment, mxc: attachment.url });
      continue;
    }
    const scheme = /^(https?):\/\//i.exec(attachment.url)?.[1]?.toLowerCase();
    if (s.config.mediaUploadMaxBytes === 0 || (scheme !== 'https' && !(scheme === 'http' && s.config.mediaUploadAllowHttp))) continue;
    const known = uploads.get(attachment.url);
    if (known) {
      out.push({ ...known, attachment });
      continue;
    }
    try {
      const uploaded = await upload(s, attachment);
      uploads.set(attachment.url, uploaded);
      if (uploads.size > MAX_REMEMBERED_UPLOADS) uploads.delete(uploads.keys().next().value ?? attachment.url);
      out.push(uploaded);
    } catch (err) {
      s.log.warn({ err, eventId: event.eventId, url: attachment.url }, 'attachment not uploaded to the media repository; sent as a link');
    }
  }
  return out;
}

async function upload(s: MatrixAdapterState, attachment: Attachment): Promise<MediaRef> {
  const max = s.config.mediaUploadMaxBytes;
  const res = await fetch(attachment.url, { signal: AbortSignal.timeout(s.config.requestTimeoutMs), redirect: 'follow' });
  if (!res.ok || !res.body) throw new Error(`GET ${attachment.url}: HTTP ${res.status}`);
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > max) {
    await res.body.cancel();
    throw new Error(`${attachment.url} has ${declared} bytes (mediaUploadMaxBytes ${max})`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of res.body) {
    size += chunk.length;
    if (size > max) throw new Error(`${attachment.url} is over mediaUploadMaxBytes (${max})`);
    chunks.push(chunk);
  }
  const mime = attachment.mime ?? res.headers.get('content-type')?.split(';')[0]?.trim() ?? 'application/octet-stream';
  const name = attachment.name ?? (decodeURIComponent(new URL(attachment.url).pathname.split('/').pop() ?? '') || 'file');
  const answer = await s.http.request('POST', '/_matrix/media/v3/upload', { raw: { data: Buffer.concat(chunks), contentType: mime }, query: { filename: name } });
  const mxc = answer['content_uri'];
  if (typeof mxc !== 'string' || !mxc.startsWith('mxc://')) throw new Error('the upload answered no content_uri');
  return { attachment, mxc, mime, size };
}
