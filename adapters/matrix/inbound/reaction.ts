/**
 * m.reaction (an m.annotation with one key) → a `reaction` draft carrying
 * the sender's whole key set on the target (XEP-0444 semantics): the keys
 * held per (room, target, sender) are kept in the adapter store, so a
 * redaction of one annotation (redaction.ts) can shrink the set.
 */
import type { MatrixEvent, Normalised } from '../normalise.js';
import { drop, ingest, resolve, type InboundState } from './context.js';

/** more keys than this on one target from one sender is not a reaction set */
const MAX_KEYS = 64;

export async function onAnnotation(s: InboundState, ev: MatrixEvent, room: string, n: Extract<Normalised, { action: 'annotation' }>): Promise<void> {
  const reactsTo = await resolve(s, room, n.target);
  if (reactsTo === undefined) return drop(s, 'unknown-target', { roomId: ev.room_id, eventId: ev.event_id, target: n.target });
  const store = s.deps.store;
  const map = await store.inboundAnnotations(ev.room_id, n.target, ev.sender);
  const held = map[n.key];
  // Federation can deliver a second annotation with the same key (docs/protocols.md, "Matrix"): the set is unchanged.
  if (held !== undefined && held !== ev.event_id) return drop(s, 'duplicate-annotation', { roomId: ev.room_id, eventId: ev.event_id, key: n.key });
  map[n.key] = ev.event_id;
  const keys = Object.keys(map);
  if (keys.length > MAX_KEYS) return drop(s, 'invalid-reaction', { roomId: ev.room_id, eventId: ev.event_id, detail: `more than ${MAX_KEYS} keys` });
  await store.setInboundAnnotation(ev.event_id, { roomId: ev.room_id, target: n.target, sender: ev.sender, key: n.key });
  await store.setInboundAnnotations(ev.room_id, n.target, ev.sender, map);
  await ingest(s, { ...n.base, kind: 'reaction', rel: { reactsTo }, reaction: { keys } });
}
