/**
 * What the inbound handlers share: their dependencies, counters and small
 * memories (display names, receipt targets), and the steps every handler
 * uses — resolve a Matrix event id to ours, append through the sink, drop
 * or note with a counted reason.
 *
 * Durability contract (all of inbound/): a handler resolves only after every
 * resulting draft is durable (or deliberately dropped, with a logged and
 * counted reason). It throws only when the log or the adapter state fails:
 * then the caller must not acknowledge (no 200 to the transaction, no new
 * sync token), so the homeserver or the next /sync brings it again.
 */
import type { Logger } from 'pino';
import { nativeKey, type IngestResult, type IngestSink, type LinkView } from '../../../src/core/adapter.js';
import type { EventDraft, UndecryptableReason } from '../../../src/core/event.js';
import { mxPath, type MatrixHttp } from '../client.js';
import { isMatrixApiError, type DropReason } from '../errors.js';
import type { Decrypted } from '../crypto/machine.js';
import type { EncryptedMedia } from '../crypto/media.js';
import type { JsonObject as MatrixJson, MatrixEvent, NormaliseContext } from '../normalise.js';
import type { AdapterStore } from '../store.js';

export interface InboundCounters {
  events: number;
  appended: number;
  duplicate: number;
  echo: number;
  ignored: number;
  /** events not appended, by reason */
  dropped: Record<string, number>;
  /** events appended after a change (body truncated, HTML sanitised …), by reason */
  changed: Record<string, number>;
  /** encrypted events bridged as the undecryptable notice, by reason */
  undecryptable: Record<string, number>;
}

export interface InboundDeps {
  readonly name: string;
  readonly log: Logger;
  readonly sink: IngestSink;
  readonly links: LinkView;
  readonly store: AdapterStore;
  readonly http: MatrixHttp;
  readonly isOurs: (userId: string) => boolean;
  /** our bot's user id (known for sure only after login) */
  readonly botUserId: () => string;
  readonly mediaUrl?: (mxc: string) => string;
  /** encrypted attachments: checked, kept and given a gateway URL (crypto/media.ts) */
  readonly encryptedMedia?: EncryptedMedia;
  /** our bot was invited to a linked room */
  readonly onInvite: (roomId: string) => Promise<void>;
  /** a room turned out to be end-to-end encrypted (its m.room.encryption state, not a stray m.room.encrypted event anyone can send) */
  readonly onEncrypted: (roomId: string) => void;
  /** decrypts an m.room.encrypted event; undefined when the adapter's crypto is not active */
  readonly decrypt?: (event: MatrixJson, roomId: string) => Promise<Decrypted> | undefined;
  /** `encryption.mode: required` and the room is in clear: nothing from it is bridged */
  readonly refusesClear?: (roomId: string) => boolean;
  /** holds an event that cannot be decrypted yet (durable when it resolves true); false: bridge the notice now */
  readonly hold?: (event: MatrixEvent, reason: UndecryptableReason) => Promise<boolean>;
}

export interface InboundState {
  readonly deps: InboundDeps;
  readonly counters: InboundCounters;
  /** (room, user) → display name (null: none, or not visible) */
  readonly displays: Map<string, string | null>;
  /** per Matrix room, the latest event seen that is in the log */
  readonly lastBridged: Map<string, string>;
  /** an event not in the log (a topic change, a state event …) → the latest bridged event before it, for receipts */
  readonly receiptTargets: Map<string, string>;
}

/** Reasons logged at warn: someone sent us something broken or hostile. The rest go to debug. */
const WARN_REASONS: ReadonlySet<DropReason> = new Set(['malformed-event', 'malformed-transaction', 'invalid-edit', 'invalid-reaction', 'edit-sender-mismatch', 'body-truncated', 'html-sanitised', 'invalid-event']);

/** how many display names are remembered before the memory starts afresh */
const MAX_DISPLAYS = 50_000;

export function createInboundState(deps: InboundDeps): InboundState {
  return {
    deps,
    counters: { events: 0, appended: 0, duplicate: 0, echo: 0, ignored: 0, dropped: {}, changed: {}, undecryptable: {} },
    displays: new Map(),
    lastBridged: new Map(),
    receiptTargets: new Map(),
  };
}

/** What normalise.ts needs to know about the gateway room and the sender. */
export function normaliseContext(s: InboundState, room: string, display: string | undefined): NormaliseContext {
  return {
    via: s.deps.name,
    room,
    now: Date.now(),
    isOurs: s.deps.isOurs,
    ...(display !== undefined ? { display } : {}),
    ...(s.deps.mediaUrl ? { mediaUrl: s.deps.mediaUrl } : {}),
  };
}

/** Our event id for a Matrix event id in `room`, when it reached the log. */
export function resolve(s: InboundState, room: string, mxEventId: string): Promise<string | undefined> {
  return s.deps.sink.resolve(room, nativeKey('matrix', 'mx.eventId', mxEventId));
}

export async function ingest(s: InboundState, draft: EventDraft): Promise<IngestResult> {
  const result = await s.deps.sink.ingest(draft);
  switch (result.status) {
    case 'appended':
      s.counters.appended++;
      break;
    case 'duplicate':
      s.counters.duplicate++;
      break;
    case 'echo':
      s.counters.echo++;
      break;
    case 'ignored':
      s.counters.ignored++;
      s.deps.log.debug({ idem: draft.idem, reason: result.reason }, 'inbound Matrix event not appended');
      break;
  }
  return result;
}

/** The sender's display name in the room: from member events seen, else asked once. */
export async function displayOf(s: InboundState, roomId: string, userId: string): Promise<string | undefined> {
  const key = displayKey(roomId, userId);
  const known = s.displays.get(key);
  if (known !== undefined) return known ?? undefined;
  try {
    const member = await s.deps.http.request('GET', mxPath`/_matrix/client/v3/rooms/${roomId}/state/m.room.member/${userId}`);
    const name = typeof member['displayname'] === 'string' ? member['displayname'] : null;
    boundedDisplays(s).set(key, name);
    return name ?? undefined;
  } catch (err) {
    // Not a member any more / not visible: remember that. Anything else: ask again next time.
    if (isMatrixApiError(err) && (err.status === 404 || err.status === 403)) boundedDisplays(s).set(key, null);
    return undefined;
  }
}

export function displayKey(roomId: string, userId: string): string {
  return `${roomId}\u0000${userId}`;
}

export function boundedDisplays(s: InboundState): Map<string, string | null> {
  if (s.displays.size > MAX_DISPLAYS) s.displays.clear();
  return s.displays;
}

/** A dropped event: counted and logged with its reason. */
export function drop(s: InboundState, reason: DropReason, details: Record<string, unknown>): void {
  s.counters.dropped[reason] = (s.counters.dropped[reason] ?? 0) + 1;
  const level = WARN_REASONS.has(reason) ? 'warn' : 'debug';
  s.deps.log[level]({ ...details, reason }, 'inbound Matrix event dropped');
}

/** A problem that did not stop the event (truncated, sanitised): counted and logged. */
export function note(s: InboundState, reason: DropReason, ev: MatrixEvent): void {
  s.counters.changed[reason] = (s.counters.changed[reason] ?? 0) + 1;
  s.deps.log.warn({ roomId: ev.room_id, eventId: ev.event_id, sender: ev.sender, reason }, 'inbound Matrix event changed before append');
}
