/**
 * End-to-end encryption: a room's m.room.encryption state marks it
 * encrypted (the adapter then bridges nothing to or from it and says so in
 * its status). A single m.room.encrypted event, which anyone can send, does
 * not: normalise.ts drops it with the reason `encrypted`.
 */
import type { InboundState } from './context.js';

export function onEncryption(s: InboundState, roomId: string): void {
  s.deps.onEncrypted(roomId);
}
