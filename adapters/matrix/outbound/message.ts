/**
 * Messages and edits → m.room.message. A message with attachments becomes
 * one media event per file (m.image, m.file …, the first carries the caption
 * and the relations); an https attachment is first uploaded to the
 * homeserver's media repository (mediaUploadMaxBytes; on failure it stays a
 * text link, logged); into an end-to-end encrypted room the file is
 * encrypted first and sent as `file` (crypto/attachments.ts).
 */
import type { DeliveryResult } from '../../../src/core/adapter.js';
import type { Attachment } from '../../../src/core/event.js';
import { encryptAttachment } from '../crypto/attachments.js';
import { cryptoUnavailable } from '../crypto/session.js';
import { MatrixEncryptedRoomError } from '../errors.js';
import { mediaTxnId, renderEdit, renderMedia, renderMessage, type MediaRef } from '../render.js';
import { checkEncryptionNow } from '../rooms.js';
import type { MatrixAdapterState } from '../state.js';
import { renderOptions, send, speaker, type Logged } from './send.js';

/** attachment URL → its upload, so a retried delivery does not upload again */
const MAX_REMEMBERED_UPLOADS = 1000;

export async function sendMessage(s: MatrixAdapterState, event: Logged<'message'>, roomId: string, refs: { replyTo: string | undefined; thread: string | undefined }): Promise<DeliveryResult> {
  let who = await speaker(s, event, roomId);
  const messageRefs = { ...(refs.replyTo !== undefined ? { replyTo: refs.replyTo } : {}), ...(refs.thread !== undefined ? { thread: refs.thread } : {}) };
  // Whether the files go encrypted is decided before any upload: a room that turned encrypted since our
  // last /sync or transaction must not get a clear upload (send() would read it only after the upload).
  if ((event.content.attachments?.length ?? 0) > 0 && !s.rooms.encrypted.has(roomId) && !who.encryptionChecked && cryptoUnavailable(s) === undefined) {
    await checkEncryptionNow(s, roomId);
    who = { ...who, encryptionChecked: true };
  }
  const encrypted = s.rooms.encrypted.has(roomId);
  const media = await mediaOf(s, event, encrypted ? roomId : undefined);
  if (media.length > 0) {
    // One media event per file; the message's native id is the first (it carries the caption and relations).
    const contents = renderMedia(event, media, messageRefs, renderOptions(s, event, who));
    let first: string | undefined;
    for (const [i, content] of contents.entries()) {
      // Files uploaded in clear never go into a room that turned encrypted meanwhile: retried, they are encrypted.
      if (!encrypted && s.rooms.encrypted.has(roomId)) throw new MatrixEncryptedRoomError(roomId, 'it turned encrypted while the attachments were uploaded in clear; retried with encrypted files');
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
 * Into an encrypted room (`encryptedRoom`) every file is fetched (an mxc://
 * one from the media repository), encrypted (crypto/attachments.ts) and the
 * ciphertext uploaded: the event gets `file`, never `url`, and no plaintext
 * reaches the media repository. One that cannot be uploaded stays a text
 * link (logged) — in an encrypted room, inside the encrypted caption.
 */
async function mediaOf(s: MatrixAdapterState, event: Logged<'message'>, encryptedRoom: string | undefined): Promise<MediaRef[]> {
  const out: MediaRef[] = [];
  const uploads = s.outbound.uploads;
  for (const attachment of event.content.attachments ?? []) {
    const isMxc = /^mxc:\/\/[^/]+\/[^/]+$/.test(attachment.url);
    if (isMxc && encryptedRoom === undefined) {
      out.push({ attachment, mxc: attachment.url });
      continue;
    }
    const scheme = /^(https?):\/\//i.exec(attachment.url)?.[1]?.toLowerCase();
    if (s.config.mediaUploadMaxBytes === 0 || (!isMxc && scheme !== 'https' && !(scheme === 'http' && s.config.mediaUploadAllowHttp))) continue;
    // An encrypted upload is the room's own (its key goes to the room's members only).
    const cacheKey = encryptedRoom === undefined ? attachment.url : `${encryptedRoom}\n${attachment.url}`;
    const known = uploads.get(cacheKey);
    if (known) {
      out.push({ ...known, attachment });
      continue;
    }
    try {
      const uploaded = await upload(s, attachment, encryptedRoom !== undefined);
      uploads.set(cacheKey, uploaded);
      if (uploads.size > MAX_REMEMBERED_UPLOADS) uploads.delete(uploads.keys().next().value ?? cacheKey);
      out.push(uploaded);
    } catch (err) {
      s.log.warn({ err, eventId: event.eventId, url: attachment.url, encrypted: encryptedRoom !== undefined }, 'attachment not uploaded to the media repository; sent as a link');
    }
  }
  return out;
}

async function upload(s: MatrixAdapterState, attachment: Attachment, encrypt: boolean): Promise<MediaRef> {
  const { data, type } = /^mxc:/.test(attachment.url) ? await fromRepository(s, attachment.url) : await fetchFile(s, attachment.url);
  const mime = attachment.mime ?? type ?? 'application/octet-stream';
  const name = attachment.name ?? (decodeURIComponent(new URL(attachment.url).pathname.split('/').pop() ?? '') || 'file');
  if (!encrypt) {
    const mxc = await uploadBytes(s, data, mime, name);
    return { attachment, mxc, mime, size: data.length };
  }
  // The spec: the ciphertext is uploaded as application/octet-stream, with no name that would tell what it is.
  const { ciphertext, file } = encryptAttachment(data);
  const mxc = await uploadBytes(s, ciphertext, 'application/octet-stream', undefined);
  return { attachment, mxc, mime, size: data.length, file: { ...file, url: mxc } };
}

async function uploadBytes(s: MatrixAdapterState, data: Uint8Array, contentType: string, filename: string | undefined): Promise<string> {
  const answer = await s.http.request('POST', '/_matrix/media/v3/upload', { raw: { data, contentType }, query: { filename } });
  const mxc = answer['content_uri'];
  if (typeof mxc !== 'string' || !mxc.startsWith('mxc://')) throw new Error('the upload answered no content_uri');
  return mxc;
}

async function fromRepository(s: MatrixAdapterState, mxc: string): Promise<{ data: Buffer; type: string | undefined }> {
  const { data, contentType } = await s.http.download(mxc, s.config.mediaUploadMaxBytes);
  return { data, type: contentType };
}

async function fetchFile(s: MatrixAdapterState, url: string): Promise<{ data: Buffer; type: string | undefined }> {
  const max = s.config.mediaUploadMaxBytes;
  const res = await fetch(url, { signal: AbortSignal.timeout(s.config.requestTimeoutMs), redirect: 'follow' });
  if (!res.ok || !res.body) throw new Error(`GET ${url}: HTTP ${res.status}`);
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > max) {
    await res.body.cancel();
    throw new Error(`${url} has ${declared} bytes (mediaUploadMaxBytes ${max})`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of res.body) {
    size += chunk.length;
    if (size > max) throw new Error(`${url} is over mediaUploadMaxBytes (${max})`);
    chunks.push(chunk);
  }
  return { data: Buffer.concat(chunks), type: res.headers.get('content-type')?.split(';')[0]?.trim() };
}
