/**
 * Outbound: deliver() for one event to one linked conversation. Refused for a
 * conversation that sent encrypted messages (encryption.ts), retried while we
 * are not connected, not in the room, or not caught up; rendered (render.ts)
 * with our event id as `id` and `origin-id`; then confirmed — in 1:1 by the
 * XEP-0198 ack, in a MUC by the room's reflection, which the inbound message
 * handler hands over (`state.reflectionWaiters`) and whose stanza-id becomes a
 * native id of the event. A retry of a message whose reflection was seen since
 * is delivered without sending again.
 */
import type { DeliveryContext, DeliveryResult, DeliveryTarget } from '../../src/core/adapter.js';
import type { LogEvent, Undecryptable } from '../../src/core/event.js';
import { linkOptions, type LinkOptions } from './config.js';
import { encryptionSeen } from './encryption.js';
import { OmemoNoDevicesError, encryptStanza, roomRecipients } from './omemo.js';
import { XmppNotConnectedError } from './errors.js';
import { ID, ORIGIN_ID, lookupKey, scopedId, senderScope } from './ids.js';
import { expandPrefix, render } from './render.js';
import type { MucState, XmppAdapterState } from './state.js';
import { roomReady } from './status.js';
import { NS, type XmlElement } from './xml.js';

/** The adapter's deliver(): counted in flight, so that stop() waits for it. */
export function deliver(s: XmppAdapterState, event: LogEvent, target: DeliveryTarget, context: DeliveryContext): Promise<DeliveryResult> {
  if (s.stopping) return Promise.resolve({ status: 'retry', reason: 'the XMPP adapter is stopping', afterMs: 1000 });
  return track(s, deliverEvent(s, event, target, context));
}

function track<T>(s: XmppAdapterState, p: Promise<T>): Promise<T> {
  s.inFlight.add(p);
  void p.then(
    () => s.inFlight.delete(p),
    () => s.inFlight.delete(p),
  );
  return p;
}

async function deliverEvent(s: XmppAdapterState, event: LogEvent, target: DeliveryTarget, context: DeliveryContext): Promise<DeliveryResult> {
  if (event.origin.via === s.name) return { status: 'skipped', reason: 'came from this endpoint' };
  let options: LinkOptions;
  try {
    options = linkOptions(target.link);
  } catch (err) {
    return { status: 'rejected', reason: (err as Error).message };
  }
  const to = target.link.target.toLowerCase();
  let encrypt = false;
  if (event.kind === 'message' || event.kind === 'edit' || event.kind === 'reaction') {
    const how = await encryptionOf(s, to, options);
    if ('status' in how) return how;
    // Reactions go in clear in OMEMO conversations, as the clients send them; text is encrypted.
    encrypt = how.encrypt && event.kind !== 'reaction';
  }
  if (!s.connection.online) return { status: 'retry', reason: 'not connected to the XMPP server' };
  const chat = options.type;
  const room = chat === 'groupchat' ? s.rooms.get(to) : undefined;
  // Banned: retrying cannot help; the dead-letter stream keeps the event for a replay once the ban is lifted.
  if (room?.gaveUp) return { status: 'rejected', reason: `${room.gaveUp} (${to})` };
  if (chat === 'groupchat' && !roomReady(s, room)) return { status: 'retry', reason: `not (yet) in the MUC ${to}`, afterMs: 1000 };
  if (chat === 'chat' && !s.accountTrack.caughtUp) return { status: 'retry', reason: 'catching up with the account archive', afterMs: 1000 };

  // A retry of something whose reflection (or archive copy) we have seen since: it arrived.
  const seenKey = `${to}\0${event.eventId}`;
  const seen = s.reflected.get(seenKey);
  if (seen) return { status: 'delivered', nativeIds: seen };

  const original = await replyOriginal(s, event, to, room);
  const rendered = render({
    event,
    chat,
    to,
    references: context.references,
    content: context.content,
    prefix: expandPrefix(s.config.relayPrefix, event.sender),
    quote: original.quote,
    replyAuthor: original.author,
    reactionKeys: await reactionKeysFor(s, event, to),
  });
  if (rendered.ok === 'skip') return { status: 'skipped', reason: rendered.reason };
  if (!rendered.ok) return { status: 'rejected', reason: rendered.reason };
  let stanza = rendered.stanza;
  if (encrypt && s.omemo) {
    try {
      stanza = await encryptStanza(s, s.omemo, to, stanza, chat === 'groupchat' ? (roomRecipients(s, to) ?? []) : [to]);
    } catch (err) {
      // No device to encrypt to: a dead letter (replayable once the contact has one), never the text in clear.
      if (err instanceof OmemoNoDevicesError) return { status: 'rejected', reason: err.message };
      return { status: 'retry', reason: `OMEMO encryption failed: ${(err as Error).message}` };
    }
  }
  return chat === 'groupchat' ? sendToRoom(s, seenKey, stanza) : sendChat(s, event, to, stanza);
}

/**
 * Whether text to this conversation is OMEMO-encrypted: in 1:1 when our OMEMO device is up and the
 * contact sent OMEMO (or `omemo: required`). Otherwise nothing with text goes in clear to a
 * conversation that sent encrypted messages (unless allowPlaintextAfterEncrypted): a refusal.
 */
async function encryptionOf(s: XmppAdapterState, to: string, options: LinkOptions): Promise<{ encrypt: boolean } | DeliveryResult> {
  // In a MUC only where XEP-0384 works: members-only and non-anonymous (the occupants' real JIDs are known).
  const where = options.type === 'chat' || roomRecipients(s, to) !== undefined;
  const device = where && s.omemo && (s.omemo.state === 'ready' || s.omemo.state === 'published') ? s.omemo : undefined;
  if (s.config.omemo === 'required' && s.omemo && options.type === 'chat') {
    // Never in clear: encrypted, or later (loading), or a dead letter (the device could not be loaded).
    if (device) return { encrypt: true };
    if (s.omemo.state === 'loading') return { status: 'retry', reason: 'the OMEMO device is loading', afterMs: 1000 };
    return { status: 'rejected', reason: `omemo: required, but the OMEMO device is not available (${s.omemo.error ?? s.omemo.state}); nothing goes to ${to} in clear` };
  }
  if (device && s.config.omemo === 'required') return { encrypt: true };
  let how: Undecryptable | undefined;
  try {
    how = await encryptionSeen(s, to);
  } catch (err) {
    return { status: 'retry', reason: `could not read whether ${to} uses encryption: ${(err as Error).message}` };
  }
  if (!how) return { encrypt: false };
  if (how.reason === 'omemo' && how.scheme === NS.omemoLegacy && s.omemo) {
    if (device) return { encrypt: true };
    // Not known yet whether we can encrypt here (the device loading, the room's facts not in): later, not a dead letter.
    if (s.omemo.state === 'loading') return { status: 'retry', reason: 'the OMEMO device is loading', afterMs: 1000 };
    if (options.type === 'groupchat' && s.rooms.get(to)?.facts === undefined) return { status: 'retry', reason: `not (yet) in the MUC ${to}`, afterMs: 1000 };
  }
  if (s.config.allowPlaintextAfterEncrypted) return { encrypt: false };
  s.counters.plaintextRefused++;
  return { status: 'rejected', reason: `${to} sent end-to-end encrypted messages (${how.reason}); the bridge cannot encrypt them and sends it nothing in clear (allowPlaintextAfterEncrypted is off)` };
}

/** 1:1: the ids we chose are recorded before sending (a reply may come before the confirmation); confirmed by the server's ack. */
async function sendChat(s: XmppAdapterState, event: LogEvent, to: string, stanza: XmlElement): Promise<DeliveryResult> {
  const scope = senderScope(to, s.account);
  const nativeIds = { [ID]: scopedId(scope, event.eventId), [ORIGIN_ID]: scopedId(scope, event.eventId) };
  for (const [key, value] of Object.entries(nativeIds)) s.sentIds.set(`${event.room}\0${lookupKey(key, value)}`, event.eventId);
  try {
    await s.connection.sendConfirmed(stanza, s.config.deliveryTimeoutMs);
  } catch (err) {
    s.counters.deliveryRetries++;
    return { status: 'retry', reason: err instanceof Error ? err.message : String(err) };
  }
  s.counters.delivered++;
  return { status: 'delivered', nativeIds };
}

/** MUC: confirmed by the room's reflection of the message, whose native ids the delivery returns. */
async function sendToRoom(s: XmppAdapterState, seenKey: string, stanza: XmlElement): Promise<DeliveryResult> {
  let timer: NodeJS.Timeout | undefined;
  const reflection = new Promise<Record<string, string> | undefined>((resolve) => {
    s.reflectionWaiters.set(seenKey, resolve);
    timer = setTimeout(() => resolve(undefined), s.config.deliveryTimeoutMs);
  });
  try {
    await s.connection.send(stanza);
    const ids = await reflection;
    if (!ids) {
      s.counters.reflectionTimeouts++;
      s.counters.deliveryRetries++;
      return { status: 'retry', reason: 'the room did not reflect the message in time' };
    }
    s.counters.delivered++;
    return { status: 'delivered', nativeIds: ids };
  } catch (err) {
    s.counters.deliveryRetries++;
    return { status: 'retry', reason: err instanceof XmppNotConnectedError ? err.message : `send failed: ${(err as Error).message}` };
  } finally {
    clearTimeout(timer);
    s.reflectionWaiters.delete(seenKey);
  }
}

/** A reply's original: its quote, and its author's JID here (XEP-0461 `to`): the XMPP sender, else the bridge itself. */
async function replyOriginal(s: XmppAdapterState, event: LogEvent, to: string, room: MucState | undefined): Promise<{ quote?: { author: string; text: string }; author?: string }> {
  if (event.kind !== 'message' || !event.rel?.replyTo) return {};
  const original = await s.sink.getEvent(event.room, event.rel.replyTo).catch(() => undefined);
  if (!original || !('content' in original)) return {};
  const fromHere = original.origin.via === s.name && original.sender.proto === 'xmpp';
  const author = fromHere ? original.sender.native : room ? `${to}/${room.nick}` : s.account;
  return { quote: { author: original.sender.display ?? original.sender.uid, text: original.content.body }, author };
}

/** The set to send for a reaction: every remote sender's keys on the target, combined (kept in the state store when given). */
async function reactionKeysFor(s: XmppAdapterState, event: LogEvent, to: string): Promise<readonly string[] | undefined> {
  if (event.kind !== 'reaction') return undefined;
  const { stateStore, reactionNamespace } = s;
  const key = `${event.room}\0${to}\0${event.rel.reactsTo}`;
  let sets = s.reactionSets.get(key);
  if (!sets && stateStore) sets = parseReactionSets(await stateStore.get(reactionNamespace, key));
  sets ??= new Map<string, readonly string[]>();
  if (event.reaction.keys.length > 0) sets.set(event.sender.uid, event.reaction.keys);
  else sets.delete(event.sender.uid);
  s.reactionSets.set(key, sets);
  // Written before sending: a retry sends the same set, and a restart continues from it.
  if (stateStore) await stateStore.set(reactionNamespace, key, JSON.stringify(Object.fromEntries(sets)));
  return [...new Set([...sets.values()].flat())].slice(0, 64);
}

function parseReactionSets(raw: string | undefined): Map<string, readonly string[]> | undefined {
  if (raw === undefined) return undefined;
  try {
    const parsed = JSON.parse(raw) as unknown;
    if (typeof parsed !== 'object' || parsed === null) return undefined;
    const sets = new Map<string, readonly string[]>();
    for (const [sender, keys] of Object.entries(parsed)) {
      if (Array.isArray(keys) && keys.every((k) => typeof k === 'string')) sets.set(sender, keys as string[]);
    }
    return sets;
  } catch {
    return undefined;
  }
}
