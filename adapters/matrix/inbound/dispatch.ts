/**
 * Matrix → log, shared by both modes (transactions.ts in appservice mode,
 * sync.ts in bot mode): one room event is parsed, routed to the gateway rooms
 * linked to its Matrix room, normalised (normalise.ts) and handed to the one
 * handler for what it is — message.ts, edit.ts, reaction.ts, redaction.ts,
 * membership.ts, encryption.ts; read receipts come as EDUs to receipt.ts.
 * The handlers append through the sink (context.ts, with the durability
 * contract stated there).
 */
import type { RetryOutcome } from '../crypto/held.js';
import type { MatrixEvent, Normalised } from '../normalise.js';
import { normaliseEvent, parseMatrixEvent, undecryptableOf } from '../normalise.js';
import { createInboundState, displayOf, drop, normaliseContext, type InboundCounters, type InboundDeps, type InboundState } from './context.js';
import { onEdit } from './edit.js';
import { onEncryption } from './encryption.js';
import { onMembership } from './membership.js';
import { onEcho, onMessage } from './message.js';
import { onAnnotation } from './reaction.js';
import { handleReceipts, noteForReceipts } from './receipt.js';
import { onRedaction } from './redaction.js';

export type { InboundCounters, InboundDeps } from './context.js';

/** What the receiving side (transactions, the /sync loop) calls. */
export interface InboundPort {
  readonly counters: InboundCounters;
  /** One room event from a transaction, a /sync timeline or a /messages page. */
  handleEvent(raw: unknown, roomIdHint?: string): Promise<void>;
  /** Only what membership and encryption state tell us: display names, invites of our bot, encrypted rooms. */
  observeState(raw: unknown, roomIdHint?: string): Promise<void>;
  /** The content of an m.receipt EDU for one Matrix room: public read receipts → markers. */
  handleReceipts(roomId: string, content: unknown): Promise<void>;
  /**
   * A held encrypted event again (crypto/held.ts): bridged when it decrypts now
   * (`released`); bridged as the undecryptable notice when its key was
   * withheld meanwhile (`withheld`) or, when `final`, still cannot be read.
   */
  retryHeld(raw: unknown, roomId: string, final: boolean): Promise<RetryOutcome>;
}

/** Matrix event types that may be appended (only these need the sender's display name, which can cost a request). */
const BRIDGED_TYPES: ReadonlySet<string> = new Set(['m.room.message', 'm.sticker', 'm.reaction', 'm.room.redaction']);

export function createInbound(deps: InboundDeps): InboundPort {
  const s = createInboundState(deps);
  return {
    counters: s.counters,
    handleEvent: (raw, roomIdHint) => handleEvent(s, raw, roomIdHint),
    observeState: (raw, roomIdHint) => observeState(s, raw, roomIdHint),
    handleReceipts: (roomId, content) => handleReceipts(s, roomId, content),
    retryHeld: async (raw, roomId, final) => {
      const parsed = parseMatrixEvent(raw, roomId);
      if ('invalid' in parsed) return 'released';
      return handleParsed(s, parsed, final ? 'final' : 'retry');
    },
  };
}

export async function handleEvent(s: InboundState, raw: unknown, roomIdHint?: string): Promise<void> {
  s.counters.events++;
  const parsed = parseMatrixEvent(raw, roomIdHint);
  if ('invalid' in parsed) {
    drop(s, 'malformed-event', { field: parsed.invalid, eventId: eventIdOf(raw) });
    return;
  }
  await handleParsed(s, parsed, 'live');
}

/**
 * One parsed event. An encrypted one is decrypted first; when it cannot be
 * (yet), a live one is held (crypto/held.ts) unless its key was withheld, a
 * retry leaves it held unless its key was withheld meanwhile, and a final
 * attempt bridges the undecryptable notice. Resolves `released` when it was
 * bridged (or handled), `withheld` when it was marked for a withheld key,
 * `held` when it stays held or was marked at the end of its hold.
 */
async function handleParsed(s: InboundState, parsed: MatrixEvent, attempt: 'live' | 'retry' | 'final'): Promise<RetryOutcome> {
  let ev: MatrixEvent = parsed;
  const rooms = s.deps.links.roomsFor(s.deps.name, ev.room_id);
  if (ev.type === 'm.room.encrypted' && ev.state_key === undefined && rooms.length > 0 && s.deps.refusesClear?.(ev.room_id) !== true) {
    const clear = await s.deps.decrypt?.({ ...ev }, ev.room_id);
    if (clear?.ok === true) {
      // From here on it is the event it carried; the relation stays the clear one (crypto/machine.ts).
      ev = { ...ev, type: clear.type, content: clear.content };
    } else if (clear?.ok === false) {
      // A retry leaves it held, unless its sender withheld the key meanwhile: that key never comes, so it is marked now.
      if (attempt === 'retry' && clear.reason !== 'keys-withheld') return 'held';
      if (attempt === 'live' && clear.reason !== 'keys-withheld' && !s.deps.isOurs(ev.sender) && (await s.deps.hold?.(ev, clear.reason))) {
        s.deps.log.info({ roomId: ev.room_id, eventId: ev.event_id, sender: ev.sender, reason: clear.reason }, 'Matrix event cannot be decrypted yet; held until its room key arrives');
        return 'held';
      }
      s.deps.log.warn({ roomId: ev.room_id, eventId: ev.event_id, sender: ev.sender, reason: clear.reason, detail: clear.detail }, 'Matrix event could not be decrypted; bridged as the undecryptable notice');
      s.counters.undecryptable[clear.reason] = (s.counters.undecryptable[clear.reason] ?? 0) + 1;
      const display = s.deps.isOurs(ev.sender) ? undefined : await displayOf(s, ev.room_id, ev.sender);
      for (const room of rooms) await dispatch(s, ev, room, undecryptableOf(ev, normaliseContext(s, room, display), clear.reason));
      if (rooms[0] !== undefined) await noteForReceipts(s, ev.room_id, ev.event_id, rooms[0]);
      return clear.reason === 'keys-withheld' ? 'withheld' : 'held';
    }
  }
  if (ev.type === 'm.room.member' || ev.type === 'm.room.encryption') {
    const n = normaliseEvent(ev, normaliseContext(s, '', undefined));
    if (n.action === 'membership' || n.action === 'encryption') await onState(s, ev.room_id, n, rooms.length > 0);
    else if (n.action === 'ignore' && rooms.length > 0) drop(s, n.reason, { roomId: ev.room_id, eventId: ev.event_id, type: ev.type });
    if (rooms[0] !== undefined) await noteForReceipts(s, ev.room_id, ev.event_id, rooms[0]);
    return 'released';
  }
  if (rooms.length === 0) {
    drop(s, 'unlinked-room', { roomId: ev.room_id, eventId: ev.event_id });
    return 'released';
  }
  if (s.deps.refusesClear?.(ev.room_id) === true) {
    // encryption.mode: required — a room in clear is refused (rooms.ts); its m.room.encryption state above lifts that.
    drop(s, 'unencrypted-room', { roomId: ev.room_id, eventId: ev.event_id, type: ev.type });
    return 'released';
  }
  const display = !s.deps.isOurs(ev.sender) && BRIDGED_TYPES.has(ev.type) ? await displayOf(s, ev.room_id, ev.sender) : undefined;
  for (const room of rooms) await dispatch(s, ev, room, normaliseEvent(ev, normaliseContext(s, room, display)));
  if (rooms[0] !== undefined) await noteForReceipts(s, ev.room_id, ev.event_id, rooms[0]);
  return 'released';
}

export async function observeState(s: InboundState, raw: unknown, roomIdHint?: string): Promise<void> {
  const ev = parseMatrixEvent(raw, roomIdHint);
  if ('invalid' in ev) return;
  const n = normaliseEvent(ev, normaliseContext(s, '', undefined));
  if (n.action === 'membership' || n.action === 'encryption') await onState(s, ev.room_id, n, s.deps.links.roomsFor(s.deps.name, ev.room_id).length > 0);
}

/** The one switch: each kind of normalised event to its handler. */
async function dispatch(s: InboundState, ev: MatrixEvent, room: string, n: Normalised): Promise<void> {
  switch (n.action) {
    case 'ignore':
      drop(s, n.reason, { roomId: ev.room_id, eventId: ev.event_id, ...(n.detail !== undefined ? { detail: n.detail } : {}) });
      return;
    case 'membership':
    case 'encryption':
      return;
    case 'echo':
      return onEcho(s, n);
    case 'message':
      return onMessage(s, ev, room, n);
    case 'edit':
      return onEdit(s, ev, room, n);
    case 'annotation':
      return onAnnotation(s, ev, room, n);
    case 'redaction':
      return onRedaction(s, ev, room, n);
  }
}

function onState(s: InboundState, roomId: string, n: Extract<Normalised, { action: 'membership' | 'encryption' }>, linked: boolean): Promise<void> {
  if (n.action === 'encryption') {
    onEncryption(s, roomId);
    return Promise.resolve();
  }
  return onMembership(s, roomId, n, linked);
}

function eventIdOf(raw: unknown): string | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const id = (raw as { event_id?: unknown }).event_id;
  return typeof id === 'string' ? id.slice(0, 255) : undefined;
}
