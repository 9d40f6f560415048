/**
 * End-to-end encryption: a room's m.room.encryption state marks it
 * encrypted (from then on only m.room.encrypted is sent to it, through the
 * adapter's crypto, or nothing when the crypto is off; the status says which).
 * A single m.room.encrypted event, which anyone can send, does not mark the
 * room: it is decrypted (dispatch.ts) or, without crypto, dropped
 * (`encrypted`).
 */
import type { InboundState } from './context.js';

export function onEncryption(s: InboundState, roomId: string): void {
  s.deps.onEncrypted(roomId);
}
