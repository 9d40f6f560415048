/**
 * Log → Matrix: the delivery engine calls deliver() per event and linked
 * room; one switch hands each kind to its handler — message.ts (messages,
 * edits, attachments), reaction.ts, retraction.ts, receipt.ts — and the
 * outcome is counted. A failure becomes `retry` (with the homeserver's
 * retry-after on a 429, so order is kept) or `rejected` (errors.ts).
 */
import type { DeliveryContext, DeliveryResult, DeliveryTarget } from '../../../src/core/adapter.js';
import type { LogEvent } from '../../../src/core/event.js';
import { deliveryFailure, MatrixApiError } from '../errors.js';
import { cryptoUnavailable } from '../crypto/session.js';
import { checkEncryptionNow, clearRoomRefusal, refusesClearRoom } from '../rooms.js';
import type { MatrixAdapterState } from '../state.js';
import { sendEdit, sendMessage } from './message.js';
import { sendReaction } from './reaction.js';
import { sendReceipt } from './receipt.js';
import { sendRetraction } from './retraction.js';

export async function deliver(s: MatrixAdapterState, event: LogEvent, target: DeliveryTarget, context: DeliveryContext): Promise<DeliveryResult> {
  const roomId = target.link.target;
  const counters = s.outbound.counters;
  if (event.origin.via === s.name) {
    counters.skipped++;
    return { status: 'skipped', reason: 'our own event' };
  }
  if (refusesClearRoom(s, roomId)) {
    // encryption.mode: required — the room may have turned encrypted since our last /sync or transaction.
    try {
      await checkEncryptionNow(s, roomId);
    } catch (err) {
      counters.retried++;
      return { status: 'retry', reason: `Matrix room ${roomId}: its encryption state could not be read (${err instanceof Error ? err.message : String(err)})`, afterMs: 2_000 };
    }
    if (refusesClearRoom(s, roomId)) {
      counters.rejected++;
      return { status: 'rejected', reason: clearRoomRefusal(roomId) };
    }
  }
  if (s.rooms.encrypted.has(roomId) && !s.crypto.machine) {
    const problem = cryptoUnavailable(s);
    if (problem !== undefined) {
      counters.rejected++;
      return { status: 'rejected', reason: `Matrix room ${roomId} is end-to-end encrypted; ${problem}` };
    }
    // Configured but not open yet (connecting): later, never in clear.
    counters.retried++;
    return { status: 'retry', reason: `Matrix room ${roomId} is end-to-end encrypted and the crypto is not ready yet`, afterMs: 2_000 };
  }
  try {
    const result = await deliverKind(s, event, roomId, context);
    if (result.status === 'delivered') counters.delivered++;
    else if (result.status === 'skipped') counters.skipped++;
    return result;
  } catch (err) {
    const result = deliveryFailure(err);
    if (result.status === 'retry') {
      counters.retried++;
      if (err instanceof MatrixApiError && err.rateLimited) counters.rateLimited++;
    } else if (result.status === 'rejected') {
      counters.rejected++;
    }
    s.log[result.status === 'rejected' ? 'warn' : 'info']({ roomId, eventId: event.eventId, kind: event.kind, attempt: context.attempt, result }, 'Matrix delivery failed');
    return result;
  }
}

/** The one switch: each kind to its handler, with its relation targets as Matrix event ids. */
function deliverKind(s: MatrixAdapterState, event: LogEvent, roomId: string, context: DeliveryContext): Promise<DeliveryResult> {
  const refs = context.references;
  switch (event.kind) {
    case 'message':
      return sendMessage(s, event, roomId, { replyTo: refs.replyTo?.['mx.eventId'], thread: refs.thread?.['mx.eventId'] });
    case 'edit': {
      const original = refs.replaces?.['mx.eventId'];
      if (original === undefined) return Promise.resolve({ status: 'skipped', reason: 'the edited message never reached this Matrix room' });
      return sendEdit(s, event, roomId, original);
    }
    case 'reaction': {
      const targetId = refs.reactsTo?.['mx.eventId'];
      if (targetId === undefined) return Promise.resolve({ status: 'skipped', reason: 'the reacted-to message never reached this Matrix room' });
      return sendReaction(s, event, roomId, targetId);
    }
    case 'retraction':
      return sendRetraction(s, event, roomId, refs.redacts ?? {});
    case 'marker':
    case 'receipt': {
      if (event.kind === 'receipt' && event.receipt.type === 'delivered') return Promise.resolve({ status: 'skipped', reason: 'Matrix has no delivery receipts' });
      const upTo = refs.upTo?.['mx.eventId'];
      if (upTo === undefined) return Promise.resolve({ status: 'skipped', reason: 'the read event never reached this Matrix room' });
      return sendReceipt(s, event, roomId, upTo);
    }
    default:
      return Promise.resolve({ status: 'skipped', reason: `${event.kind} events are not sent to Matrix` });
  }
}
