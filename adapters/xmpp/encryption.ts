/**
 * Encrypted conversations (issue 26). normalise.ts turns an encrypted message
 * into the undecryptable notice; here the conversation is remembered as
 * encrypted (state `xmpp-encrypted:<name>`) before the event is appended, its
 * sender told once (per `encryptedNoticeIntervalMs`, in memory), and delivery
 * asks `encryptionSeen` so that nothing goes to it in clear from then on
 * unless `allowPlaintextAfterEncrypted`.
 */
import { randomUUID } from 'node:crypto';
import { Value } from '@sinclair/typebox/value';
import { UndecryptableReason, type Undecryptable } from '../../src/core/event.js';
import type { Parsed } from './normalise.js';
import type { XmppAdapterState } from './state.js';
import { NS, xml } from './xml.js';

/** Ids of the notices we send about encrypted messages: their reflections and archive copies are not bridged. */
export const NOTICE_ID_PREFIX = 'sg-notice-';

/** Remembers (in the state store when given) that a conversation sent encrypted messages. */
export async function markEncrypted(s: XmppAdapterState, conversation: string, how: Undecryptable): Promise<void> {
  if (s.encryptedConversations.get(conversation)) return;
  if (s.stateStore) await s.stateStore.set(s.encryptedNamespace, conversation, JSON.stringify({ ...how, at: Date.now() }));
  s.encryptedConversations.set(conversation, how);
  s.log.info({ conversation, reason: how.reason }, 'encrypted messages from this conversation: nothing is sent to it in clear from now on' + (s.config.allowPlaintextAfterEncrypted ? ' (allowed by allowPlaintextAfterEncrypted)' : ''));
}

/** The encryption a conversation used, if it ever sent us an encrypted message. */
export async function encryptionSeen(s: XmppAdapterState, conversation: string): Promise<Undecryptable | undefined> {
  const cached = s.encryptedConversations.get(conversation);
  if (cached !== undefined) return cached ?? undefined;
  const raw = s.stateStore ? await s.stateStore.get(s.encryptedNamespace, conversation) : undefined;
  const how = parseEncrypted(raw);
  s.encryptedConversations.set(conversation, how ?? null);
  return how;
}

/** Tells the sender of an encrypted message what happened to it: once per conversation and interval. */
export function sendEncryptedNotice(s: XmppAdapterState, p: Parsed): void {
  const { config, connection } = s;
  // A bridge that is an OMEMO device says so, with the fingerprint to encrypt for.
  const device = s.omemo && s.omemo.state !== 'loading' && s.omemo.state !== 'failed' ? s.omemo : undefined;
  const text = device ? config.omemoNotice.replaceAll('{{fingerprint}}', device.fingerprint) : config.encryptedNotice;
  if (text === '' || !connection.online) return;
  const now = Date.now();
  const last = s.noticeSentAt.get(p.conversation);
  if (last !== undefined && now - last < config.encryptedNoticeIntervalMs) return;
  // A room we are not in cannot be told (yet): the next encrypted message tries again.
  if (p.chat === 'groupchat' && !s.rooms.get(p.conversation)?.joined) return;
  s.noticeSentAt.set(p.conversation, now);
  const id = `${NOTICE_ID_PREFIX}${randomUUID()}`;
  const stanza = xml('message', { to: p.conversation, type: p.chat, id }, xml('body', {}, text), xml('origin-id', { xmlns: NS.sid, id }));
  s.counters.encryptedNotices++;
  connection.send(stanza).catch((err: unknown) => {
    s.noticeSentAt.delete(p.conversation);
    s.log.warn({ err, conversation: p.conversation }, 'could not send the notice about an encrypted message');
  });
}

function parseEncrypted(raw: string | undefined): Undecryptable | undefined {
  if (raw === undefined) return undefined;
  try {
    const parsed = JSON.parse(raw) as unknown;
    if (typeof parsed !== 'object' || parsed === null) return undefined;
    const { reason, scheme } = parsed as { reason?: unknown; scheme?: unknown };
    // A stored entry we cannot read still says the conversation used encryption.
    const how: Undecryptable = { reason: Value.Check(UndecryptableReason, reason) ? reason : 'unknown-encryption' };
    return typeof scheme === 'string' ? { ...how, scheme } : how;
  } catch {
    return { reason: 'unknown-encryption' };
  }
}
