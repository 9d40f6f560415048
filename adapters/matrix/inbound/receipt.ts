/**
 * Read receipts (m.receipt EDUs) → `marker` drafts up to our event for the
 * receipted one. Matrix clients also send receipts on events we did not
 * bridge (a topic change, a state event): those move the marker up to the
 * latest bridged event at or before them, which noteForReceipts remembers
 * as events pass through dispatch.ts.
 */
import { markerDraft, readReceiptsOf } from '../normalise.js';
import { displayOf, drop, ingest, normaliseContext, resolve, type InboundState } from './context.js';

/** how many unbridged events are remembered for receipts (the most recent) */
const MAX_RECEIPT_TARGETS = 10_000;

export async function handleReceipts(s: InboundState, roomId: string, content: unknown): Promise<void> {
  const rooms = s.deps.links.roomsFor(s.deps.name, roomId);
  if (rooms.length === 0 || s.deps.refusesClear?.(roomId) === true) return;
  for (const receipt of readReceiptsOf(content)) {
    if (s.deps.isOurs(receipt.userId)) continue;
    const display = await displayOf(s, roomId, receipt.userId);
    for (const room of rooms) {
      let upTo = await resolve(s, room, receipt.eventId);
      // A receipt on an event we did not bridge: up to the latest bridged event before it.
      const before = upTo === undefined ? s.receiptTargets.get(receipt.eventId) : undefined;
      if (before !== undefined) upTo = await resolve(s, room, before);
      if (upTo === undefined) {
        drop(s, 'unknown-target', { roomId, receipt: receipt.eventId, userId: receipt.userId });
        continue;
      }
      await ingest(s, markerDraft(roomId, receipt, upTo, normaliseContext(s, room, display)));
    }
  }
}

/**
 * Remembers, for an event that did not reach the log, the latest event
 * before it that did: a read receipt on it then moves the marker that far.
 * Events arrive in timeline order, so "latest seen" is "latest at or before".
 */
export async function noteForReceipts(s: InboundState, roomId: string, eventId: string, room: string): Promise<void> {
  if ((await resolve(s, room, eventId)) !== undefined) {
    s.lastBridged.set(roomId, eventId);
    return;
  }
  const before = s.lastBridged.get(roomId);
  if (before === undefined) return;
  s.receiptTargets.set(eventId, before);
  if (s.receiptTargets.size > MAX_RECEIPT_TARGETS) s.receiptTargets.delete(s.receiptTargets.keys().next().value ?? eventId);
}
