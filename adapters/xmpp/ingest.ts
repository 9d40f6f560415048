/**
 * The last step of an inbound message, live or archived: normalise it
 * (normalise.ts, with what the session knows), resolve its references to
 * event ids, and append it to every room linked to its conversation through
 * the sink; then mark the archive entry handled and advance the position.
 * Appends are retried while the log is unavailable (`ingestRetryMs`).
 */
import { ECHO_ID_KEY, type IngestResult } from '../../src/core/adapter.js';
import { MAX_BODY_CHARS, type Undecryptable } from '../../src/core/event.js';
import { backoffDelay } from '../../src/core/backoff.js';
import { NOTICE_ID_PREFIX, markEncrypted, sendEncryptedNotice } from './encryption.js';
import { normaliseMessage, refsOf, toDraft, type Normalised, type NormaliseContext, type Parsed, type RoomFacts, type Source } from './normalise.js';
import { receipt } from './protocol.js';
import { sleep, type Target, type XmppAdapterState } from './state.js';
import { countResult, drop } from './status.js';
import type { ArchiveTrack } from './track.js';
import { NS, type XmlElement } from './xml.js';
import { openEncrypted } from './omemo.js';

/** Normalises one (unwrapped) message with what this session knows about the account and its rooms. */
export function normalise(s: XmppAdapterState, message: XmlElement, source: Source): Normalised {
  return normaliseMessage(message, source, context(s));
}

function context(s: XmppAdapterState): NormaliseContext {
  const { rooms } = s;
  return {
    account: s.account,
    now: Date.now(),
    accountStanzaIds: s.accountFacts.stanzaIds,
    maxBodyChars: MAX_BODY_CHARS,
    room(jid): RoomFacts | undefined {
      const r = rooms.get(jid);
      if (!r) return undefined;
      return { nick: r.nick, occupantId: r.occupantId, stanzaIds: r.facts?.stanzaIds ?? false, occupantIds: r.facts?.occupantIds ?? false, nickKey: (nick) => r.nickKeys.get(nick) ?? nick };
    },
  };
}

/** The native ids of one of our messages seen coming back, less the echo marker. */
export function withoutEcho(ids: Readonly<Record<string, string>>): Record<string, string> {
  const { [ECHO_ID_KEY]: _drop, ...rest } = ids;
  return rest;
}

/**
 * Runs `use` on the message as it reads once decrypted (an OMEMO message for our
 * device; any other message as it is), with the `settle` that commits its ratchet
 * state; 'replayed' for a message whose key was used before (bridged already).
 */
export async function withDecryption<T>(s: XmppAdapterState, message: XmlElement, use: (message: XmlElement, settle: (() => Promise<void>) | undefined) => Promise<T>): Promise<T | 'replayed'> {
  const opened = await openEncrypted(s, message);
  try {
    if (opened.replayed) return 'replayed';
    return await use(opened.message, opened.settle);
  } finally {
    opened.release();
  }
}

/** Retries an append while the log is unavailable, up to ingestRetryMs; then throws. */
export async function withRetry<T>(s: XmppAdapterState, op: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + s.config.ingestRetryMs;
  for (let attempt = 0; ; attempt++) {
    try {
      return await op();
    } catch (err) {
      s.counters.ingestErrors++;
      if (s.stopping || Date.now() >= deadline) throw err;
      s.log.warn({ err: err instanceof Error ? err.message : String(err), attempt }, 'the log is unavailable; retrying');
      await sleep(Math.min(backoffDelay(attempt, 50, 1000), Math.max(0, deadline - Date.now())));
    }
  }
}

function targetsFor(s: XmppAdapterState, conversation: string, chat: 'groupchat' | 'chat'): Target[] {
  return (s.targets.get(conversation) ?? []).filter((t) => t.options.type === chat);
}

/**
 * Appends one normalised message to every room it belongs to; advances the archive position when `advance`.
 * `settle` (a decrypted OMEMO message: its ratchet state) runs after the appends and before the position moves.
 */
export async function handleParsed(s: XmppAdapterState, p: Parsed, archiveTrack: ArchiveTrack, advance: boolean, settle?: () => Promise<void>): Promise<void> {
  if (p.fromUs && p.echoOf !== undefined) {
    s.reflected.set(`${p.conversation}\0${p.echoOf}`, withoutEcho(p.ids));
  }
  if (p.archived && archiveTrack.recent.has(p.archived.id)) {
    s.counters.duplicate++;
    return;
  }
  // Our notices about encrypted messages (their reflection, their archive copy) are not bridged.
  const notice = p.fromUs && p.echoOf?.startsWith(NOTICE_ID_PREFIX) === true;
  const ts = notice ? [] : targetsFor(s, p.conversation, p.chat);
  if (ts.length === 0 && !notice) drop(s, 'no-room', `no room links ${p.conversation}`, { conversation: p.conversation });
  const encryptedFromThem = p.encrypted !== undefined && !p.fromUs && ts.length > 0;
  // Decrypted (OMEMO): the conversation is encrypted from now on, and deliveries to it are encrypted (deliver.ts).
  if (settle && ts.length > 0) await withRetry(s, () => markEncrypted(s, p.conversation, { reason: 'omemo', scheme: NS.omemoLegacy }));
  // Remembered before the append: no delivery can send this conversation plaintext once the event exists.
  if (encryptedFromThem && p.encrypted) await withRetry(s, () => markEncrypted(s, p.conversation, p.encrypted as Undecryptable));
  let appended = false;
  let fresh = false;
  // Idempotency keys are scoped per room by the log, so one conversation may feed several rooms.
  for (const t of ts) {
    const result = await ingestFor(s, p, t.room);
    if (result?.status === 'appended' || result?.status === 'duplicate') appended = true;
    if (result?.status === 'appended') fresh = true;
  }
  if (settle) await withRetry(s, settle);
  if (encryptedFromThem && p.encrypted) {
    if (fresh) s.encrypted[p.encrypted.reason] = (s.encrypted[p.encrypted.reason] ?? 0) + 1;
    if (appended) sendEncryptedNotice(s, p);
  }
  if (p.archived && p.archived.archive === archiveTrack.archive) {
    archiveTrack.recent.set(p.archived.id, true);
    if (advance) archiveTrack.advance({ id: p.archived.id, ts: p.ts.origin ?? p.ts.received });
  }
  if (appended && p.receiptFor !== undefined && s.connection.online) {
    s.connection.send(receipt(p.conversation, p.receiptFor)).catch(() => undefined);
  }
}

/** One message into one room: references resolved to event ids (an echo of ours: to our event), then through the sink. */
async function ingestFor(s: XmppAdapterState, p: Parsed, room: string): Promise<IngestResult | undefined> {
  const { sink, name } = s;
  if (p.echoOf !== undefined) {
    const ours = await withRetry(s, () => sink.getEvent(room, p.echoOf as string));
    if (ours) {
      // Relations of an echo are not looked up: the sink drops it and records its native ids for our event.
      const all = { replyTo: ours.eventId, replaces: ours.eventId, redacts: ours.eventId, reactsTo: ours.eventId, upTo: ours.eventId };
      const draft = toDraft(p, { room, via: name, targets: all });
      if (!draft) return undefined;
      const result = await withRetry(s, () => sink.ingest(draft));
      countResult(s, result);
      return result;
    }
  }
  const resolved = await resolveRefs(s, p, room);
  if (!resolved) return undefined;
  const draft = toDraft(p, { room, via: name, targets: resolved });
  if (!draft) return undefined;
  const result = await withRetry(s, () => sink.ingest(draft));
  countResult(s, result);
  if (result.status === 'ignored') s.log.warn({ room, reason: result.reason }, 'XMPP message refused by the log');
  return result;
}

/**
 * The event ids a correction, retraction, reaction, marker, receipt or reply refers to
 * (refsOf names them per kind); undefined, after counting the drop, when one it needs is
 * missing or belongs to another sender.
 */
async function resolveRefs(s: XmppAdapterState, p: Parsed, room: string): Promise<Record<string, string> | undefined> {
  const resolved: Record<string, string> = {};
  for (const [rel, ref] of refsOf(p.action)) {
    let eventId: string | undefined;
    for (const key of ref.keys) {
      eventId = await withRetry(s, () => s.sink.resolve(room, key));
      if (eventId !== undefined) break;
    }
    eventId ??= ref.keys.map((key) => s.sentIds.get(`${room}\0${key}`)).find((id) => id !== undefined);
    if (eventId === undefined) {
      // A reply to something we do not have is still a message.
      if (rel === 'replyTo') continue;
      drop(s, 'unknown-target', `the ${p.action.kind} refers to a message not in the log`, { room, conversation: p.conversation });
      return undefined;
    }
    if (ref.sameSender) {
      const original = await withRetry(s, () => s.sink.getEvent(room, eventId as string));
      if (!original || original.sender.uid !== p.sender.uid) {
        drop(s, 'not-original-sender', `${p.sender.native} tried a ${p.action.kind} of a message by ${original?.sender.native ?? 'someone else'}`, { room });
        return undefined;
      }
    }
    resolved[rel] = eventId;
  }
  return resolved;
}
