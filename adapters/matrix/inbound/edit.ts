/**
 * m.replace → an `edit` of our event for the original; only the original's
 * sender may edit it (docs/protocols.md, "Matrix", pitfall 7).
 */
import type { MatrixEvent, Normalised } from '../normalise.js';
import { drop, ingest, note, resolve, type InboundState } from './context.js';

export async function onEdit(s: InboundState, ev: MatrixEvent, room: string, n: Extract<Normalised, { action: 'edit' }>): Promise<void> {
  for (const reason of n.notes) note(s, reason, ev);
  const replaces = await resolve(s, room, n.replaces);
  if (replaces === undefined) return drop(s, 'unknown-target', { roomId: ev.room_id, eventId: ev.event_id, target: n.replaces });
  const original = await s.deps.sink.getEvent(room, replaces);
  if (original && original.sender.native !== ev.sender) {
    return drop(s, 'edit-sender-mismatch', { roomId: ev.room_id, eventId: ev.event_id, sender: ev.sender, originalSender: original.sender.native });
  }
  await ingest(s, { ...n.base, kind: 'edit', content: n.content, rel: { replaces } });
}
