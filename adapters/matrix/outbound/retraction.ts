/**
 * A retraction → a redaction of what the retracted event became in this
 * room: a message's one Matrix event, or a reaction event's annotation per key.
 */
import type { DeliveryResult } from '../../../src/core/adapter.js';
import { renderRedaction } from '../render.js';
import type { MatrixAdapterState } from '../state.js';
import { redact, speaker, type Logged } from './send.js';

export async function sendRetraction(s: MatrixAdapterState, event: Logged<'retraction'>, roomId: string, ids: Readonly<Record<string, string>>): Promise<DeliveryResult> {
  const main = ids['mx.eventId'];
  const targets = main !== undefined ? [main] : Object.entries(ids).filter(([k]) => k.startsWith('mx.annotation.')).map(([, v]) => v);
  if (targets.length === 0) return { status: 'skipped', reason: 'the retracted event never reached this Matrix room' };
  const who = await speaker(s, event, roomId);
  let first: string | undefined;
  for (const [i, id] of targets.entries()) {
    const redaction = await redact(s, roomId, id, i === 0 ? event.eventId : `${event.eventId}.${i}`, renderRedaction(event.eventId), who);
    first ??= redaction;
  }
  return { status: 'delivered', nativeIds: first !== undefined ? { 'mx.eventId': first } : {} };
}
