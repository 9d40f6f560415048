/** A read marker or read receipt → an m.read receipt on the Matrix event it reads up to, from the sender's ghost or the bot. */
import type { DeliveryResult } from '../../../src/core/adapter.js';
import type { LogEvent } from '../../../src/core/event.js';
import { mxPath } from '../client.js';
import type { MatrixAdapterState } from '../state.js';
import { speaker } from './send.js';

export async function sendReceipt(s: MatrixAdapterState, event: LogEvent, roomId: string, upTo: string): Promise<DeliveryResult> {
  // Receipts are never encrypted: the ghost may send them in an encrypted room too.
  const who = await speaker(s, event, roomId, { clear: true });
  await s.http.request('POST', mxPath`/_matrix/client/v3/rooms/${roomId}/receipt/m.read/${upTo}`, {
    body: {},
    ...(who.asUser !== undefined ? { asUser: who.asUser } : {}),
  });
  return { status: 'delivered', nativeIds: {} };
}
