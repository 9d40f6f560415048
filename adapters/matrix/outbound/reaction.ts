/**
 * A reaction (the sender's whole key set on a message) → one m.annotation
 * per key: the added keys are sent, the removed ones redacted. The
 * annotation ids are kept in the adapter store per (room, target, Matrix
 * user, key): context.references carries only the reacted-to message's ids,
 * not those of the previous reaction event. In bot mode one bot annotation
 * stands for every remote sender holding the key and is redacted when the
 * last one lets go.
 */
import type { DeliveryResult } from '../../../src/core/adapter.js';
import { mxPath } from '../client.js';
import { deliveryFailure, isMatrixApiError } from '../errors.js';
import { isObject } from '../normalise.js';
import { annotationTxnId, renderAnnotation, renderRedaction, unannotateTxnId } from '../render.js';
import type { MatrixAdapterState } from '../state.js';
import { redact, send, speaker, type Logged, type Speaker } from './send.js';

export async function sendReaction(s: MatrixAdapterState, event: Logged<'reaction'>, roomId: string, targetId: string): Promise<DeliveryResult> {
  const who = await speaker(s, event, roomId);
  const uid = event.sender.uid;
  const before = await s.store.sentKeys(roomId, targetId, uid);
  const after = event.reaction.keys;
  const nativeIds: Record<string, string> = {};
  // Each key on its own: one that fails does not keep the others from going out.
  const held = new Set(before);
  let failure: unknown;
  for (const key of after.filter((k) => !before.includes(k))) {
    try {
      await addAnnotation(s, event, roomId, targetId, who, key, nativeIds);
      held.add(key);
    } catch (err) {
      failure ??= err;
      s.log.warn({ err, roomId, eventId: event.eventId, key }, 'Matrix reaction key not sent');
    }
  }
  for (const key of before.filter((k) => !after.includes(k))) {
    try {
      await removeAnnotation(s, event, roomId, targetId, who, key, nativeIds);
      held.delete(key);
    } catch (err) {
      failure ??= err;
      s.log.warn({ err, roomId, eventId: event.eventId, key }, 'Matrix reaction key not removed');
    }
  }
  // What is on the homeserver now: a retry sends only what is still missing.
  await s.store.setSentKeys(roomId, targetId, uid, failure === undefined ? after : [...held]);
  if (failure !== undefined) return deliveryFailure(failure);
  return { status: 'delivered', nativeIds };
}

async function addAnnotation(s: MatrixAdapterState, event: Logged<'reaction'>, roomId: string, targetId: string, who: Speaker, key: string, nativeIds: Record<string, string>): Promise<void> {
  const uid = event.sender.uid;
  const held = await s.store.sentAnnotation(roomId, targetId, who.userId, key);
  let id = held?.id;
  if (id === undefined) {
    try {
      id = await send(s, roomId, 'm.reaction', annotationTxnId(event.eventId, key), renderAnnotation(event.eventId, targetId, key), who);
    } catch (err) {
      // Our state was lost but the annotation exists: find it. Synapse answers M_DUPLICATE_ANNOTATION
      // since 1.80, and a 400 M_UNKNOWN before; a 400 M_UNKNOWN is a duplicate only if the annotation is there.
      const duplicate = isMatrixApiError(err, 'M_DUPLICATE_ANNOTATION') || (isMatrixApiError(err, 'M_UNKNOWN') && err.status === 400);
      if (!duplicate) throw err;
      id = await findAnnotation(s, roomId, targetId, who, key);
      if (id === undefined) throw err;
    }
  }
  const holders = [...new Set([...(held?.holders ?? []), uid])];
  await s.store.setSentAnnotation(roomId, targetId, who.userId, key, { id, holders });
  nativeIds[`mx.annotation.${key}`] = id;
  // A bot-mode annotation shared with another sender is not this event's own Matrix event
  // (one held by this sender alone is: an earlier attempt of this delivery sent it).
  if (held === undefined || held.holders.every((h) => h === uid)) nativeIds['mx.eventId'] ??= id;
}

async function removeAnnotation(s: MatrixAdapterState, event: Logged<'reaction'>, roomId: string, targetId: string, who: Speaker, key: string, nativeIds: Record<string, string>): Promise<void> {
  const uid = event.sender.uid;
  const held = await s.store.sentAnnotation(roomId, targetId, who.userId, key);
  const id = held?.id ?? (await findAnnotation(s, roomId, targetId, who, key));
  if (id === undefined) return;
  const holders = (held?.holders ?? [uid]).filter((h) => h !== uid);
  if (holders.length > 0) {
    await s.store.setSentAnnotation(roomId, targetId, who.userId, key, { id, holders });
    return;
  }
  const redaction = await redact(s, roomId, id, unannotateTxnId(event.eventId, key), renderRedaction(event.eventId), who);
  await s.store.setSentAnnotation(roomId, targetId, who.userId, key, undefined);
  nativeIds['mx.eventId'] ??= redaction;
}

/** Our user's annotation with `key` on `targetId`, from the homeserver's relations. */
async function findAnnotation(s: MatrixAdapterState, roomId: string, targetId: string, who: Speaker, key: string): Promise<string | undefined> {
  let from: string | undefined;
  for (let page = 0; page < 20; page++) {
    const res = await s.http.request('GET', mxPath`/_matrix/client/v1/rooms/${roomId}/relations/${targetId}/m.annotation/m.reaction`, {
      query: { limit: 100, ...(from !== undefined ? { from } : {}) },
      ...(who.asUser !== undefined ? { asUser: who.asUser } : {}),
    });
    const chunk = Array.isArray(res['chunk']) ? res['chunk'] : [];
    for (const ev of chunk) {
      if (!isObject(ev) || ev['sender'] !== who.userId) continue;
      const rel = isObject(ev['content']) ? ev['content']['m.relates_to'] : undefined;
      if (isObject(rel) && rel['key'] === key && typeof ev['event_id'] === 'string') return ev['event_id'];
    }
    const next = res['next_batch'];
    if (typeof next !== 'string') return undefined;
    from = next;
  }
  return undefined;
}
