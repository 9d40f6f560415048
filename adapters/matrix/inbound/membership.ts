/**
 * m.room.member: who is in a room under which display name (for the
 * senders of later events), and invites of our bot to a linked room, which
 * it accepts. Nothing of it goes into the log.
 */
import type { Normalised } from '../normalise.js';
import { boundedDisplays, displayKey, type InboundState } from './context.js';

export async function onMembership(s: InboundState, roomId: string, n: Extract<Normalised, { action: 'membership' }>, linked: boolean): Promise<void> {
  const key = displayKey(roomId, n.userId);
  if (n.membership === 'join') boundedDisplays(s).set(key, n.display ?? null);
  else s.displays.delete(key);
  if (n.userId === s.deps.botUserId() && n.membership === 'invite' && linked) await s.deps.onInvite(roomId);
}
