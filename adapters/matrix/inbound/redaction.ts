/**
 * m.room.redaction: retracts a message, or — when it redacts an annotation
 * reaction.ts recorded — removes that one key from the sender's reaction set.
 */
import { senderOf, type MatrixEvent, type Normalised } from '../normalise.js';
import { displayOf, drop, ingest, resolve, type InboundState } from './context.js';

export async function onRedaction(s: InboundState, ev: MatrixEvent, room: string, n: Extract<Normalised, { action: 'redaction' }>): Promise<void> {
  const store = s.deps.store;
  const annotation = await store.inboundAnnotation(ev.room_id, n.redacts);
  if (annotation) {
    const map = await store.inboundAnnotations(ev.room_id, annotation.target, annotation.sender);
    if (map[annotation.key] === n.redacts) {
      delete map[annotation.key];
      await store.setInboundAnnotations(ev.room_id, annotation.target, annotation.sender, map);
    }
    const reactsTo = await resolve(s, room, annotation.target);
    if (reactsTo === undefined) return drop(s, 'unknown-target', { roomId: ev.room_id, eventId: ev.event_id, target: annotation.target });
    // The set belongs to the annotation's sender, even when a moderator redacted it.
    const display = await displayOf(s, ev.room_id, annotation.sender);
    await ingest(s, { ...n.base, sender: senderOf(annotation.sender, display), kind: 'reaction', rel: { reactsTo }, reaction: { keys: Object.keys(map) } });
    return;
  }
  const redacts = await resolve(s, room, n.redacts);
  if (redacts === undefined) return drop(s, 'unknown-target', { roomId: ev.room_id, eventId: ev.event_id, target: n.redacts });
  const target = await s.deps.sink.getEvent(room, redacts);
  // A redaction of an annotation we did not see as one (one of our own ghosts' reactions): no set to shrink.
  if (target?.kind === 'reaction') return drop(s, 'unsupported-redaction', { roomId: ev.room_id, eventId: ev.event_id, target: n.redacts });
  await ingest(s, { ...n.base, kind: 'retraction', rel: { redacts } });
}
