/**
 * m.room.message and m.sticker → a `message` draft, its reply and thread
 * targets resolved to our event ids; and the echo of one of our own sends,
 * which the sink records against our event (nothing new is appended).
 * An encrypted file (`content.file`) is fetched, checked and given the
 * gateway's URL before the draft is appended (crypto/media.ts); one that
 * cannot be is marked `undecryptable` with the attachment's reason — never
 * dropped, never bridged unchecked.
 */
import { MAX_BODY_CHARS, UNREADABLE_ATTACHMENT_NOTICE, type Content } from '../../../src/core/event.js';
import type { MatrixEvent, Normalised } from '../normalise.js';
import { ingest, note, resolve, type InboundState } from './context.js';

export async function onMessage(s: InboundState, ev: MatrixEvent, room: string, n: Extract<Normalised, { action: 'message' }>): Promise<void> {
  for (const reason of n.notes) note(s, reason, ev);
  const replyTo = n.replyTo !== undefined ? await resolve(s, room, n.replyTo) : undefined;
  const thread = n.thread !== undefined ? await resolve(s, room, n.thread) : undefined;
  const rel = { ...(replyTo !== undefined ? { replyTo } : {}), ...(thread !== undefined ? { thread } : {}) };
  const content = n.encryptedFile !== undefined ? await withEncryptedFile(s, ev, room, n.content, n.encryptedFile) : n.content;
  await ingest(s, { ...n.base, kind: 'message', content, ...(Object.keys(rel).length > 0 ? { rel } : {}) });
}

async function withEncryptedFile(s: InboundState, ev: MatrixEvent, room: string, content: Content, ref: NonNullable<Extract<Normalised, { action: 'message' }>['encryptedFile']>): Promise<Content> {
  const attachment = content.attachments?.[0];
  const media = s.deps.encryptedMedia;
  const outcome =
    'problem' in ref || !attachment
      ? { failure: 'attachment-unavailable' as const, detail: 'problem' in ref ? ref.problem : 'no attachment' }
      : media
        ? await media.admit({ mxEventId: ev.event_id, index: 0, roomId: ev.room_id, room, file: ref.file, ...(attachment.mime !== undefined ? { mime: attachment.mime } : {}), ...(attachment.name !== undefined ? { name: attachment.name } : {}) })
        : { failure: 'attachment-unavailable' as const, detail: 'encrypted attachments are not kept by this adapter' };
  if ('url' in outcome && attachment) return { ...content, attachments: [{ ...attachment, url: outcome.url }] };
  const failure = 'failure' in outcome ? outcome.failure : 'attachment-unavailable';
  s.counters.undecryptable[failure] = (s.counters.undecryptable[failure] ?? 0) + 1;
  s.deps.log.warn({ roomId: ev.room_id, mxEventId: ev.event_id, reason: failure, detail: 'detail' in outcome ? outcome.detail : undefined }, 'encrypted attachment marked unreadable in the log');
  // The caption (or the file's name) stays readable; the file is not given, and the marker says why.
  const said = content.body.trim().slice(0, MAX_BODY_CHARS - UNREADABLE_ATTACHMENT_NOTICE.length - 1);
  return { body: said === '' ? UNREADABLE_ATTACHMENT_NOTICE : `${UNREADABLE_ATTACHMENT_NOTICE} ${said}`, undecryptable: { reason: failure, scheme: 'm.encrypted-file.v2' } };
}

export async function onEcho(s: InboundState, n: Extract<Normalised, { action: 'echo' }>): Promise<void> {
  await ingest(s, n.draft);
}
