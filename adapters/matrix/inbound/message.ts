/**
 * m.room.message and m.sticker → a `message` draft, its reply and thread
 * targets resolved to our event ids; and the echo of one of our own sends,
 * which the sink records against our event (nothing new is appended).
 */
import type { MatrixEvent, Normalised } from '../normalise.js';
import { ingest, note, resolve, type InboundState } from './context.js';

export async function onMessage(s: InboundState, ev: MatrixEvent, room: string, n: Extract<Normalised, { action: 'message' }>): Promise<void> {
  for (const reason of n.notes) note(s, reason, ev);
  const replyTo = n.replyTo !== undefined ? await resolve(s, room, n.replyTo) : undefined;
  const thread = n.thread !== undefined ? await resolve(s, room, n.thread) : undefined;
  const rel = { ...(replyTo !== undefined ? { replyTo } : {}), ...(thread !== undefined ? { thread } : {}) };
  await ingest(s, { ...n.base, kind: 'message', content: n.content, ...(Object.keys(rel).length > 0 ? { rel } : {}) });
}

export async function onEcho(s: InboundState, n: Extract<Normalised, { action: 'echo' }>): Promise<void> {
  await ingest(s, n.draft);
}
