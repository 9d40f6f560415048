/**
 * Matrix → log, shared by both modes: routes a room event to the gateway
 * rooms linked to its Matrix room, resolves relation targets through the id
 * map, keeps reaction sets, and appends through the sink.
 *
 * Durability contract: `handleEvent` and `handleReceipts` resolve only after
 * every resulting draft is durable (or deliberately dropped, with a logged
 * and counted reason). They throw only when the log or the adapter state
 * fails: then the caller must not acknowledge (no 200 to the transaction, no
 * new sync token), so the homeserver or the next /sync brings it again.
 */
import type { Logger } from 'pino';
import { nativeKey, type IngestResult, type IngestSink, type LinkView } from '../../src/core/adapter.js';
import type { EventDraft } from '../../src/core/event.js';
import { mxPath, type MatrixHttp } from './client.js';
import { isMatrixApiError, type DropReason } from './errors.js';
import {
  markerDraft,
  normaliseEvent,
  parseMatrixEvent,
  readReceiptsOf,
  senderOf,
  type MatrixEvent,
  type NormaliseContext,
  type Normalised,
} from './normalise.js';
import type { AdapterStore } from './store.js';

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
  /** our bot was invited to a linked room */
  readonly onInvite: (roomId: string) => Promise<void>;
  /** a room turned out to be end-to-end encrypted (its m.room.encryption state, not a stray m.room.encrypted event anyone can send) */
  readonly onEncrypted: (roomId: string) => void;
}

/** how many unbridged events are remembered for receipts (the most recent) */
const MAX_RECEIPT_TARGETS = 10_000;

const BRIDGED_TYPES: ReadonlySet<string> = new Set(['m.room.message', 'm.sticker', 'm.reaction', 'm.room.redaction']);

/** Reasons logged at warn: someone sent us something broken or hostile. The rest go to debug. */
const WARN_REASONS: ReadonlySet<DropReason> = new Set(['malformed-event', 'malformed-transaction', 'invalid-edit', 'invalid-reaction', 'edit-sender-mismatch', 'body-truncated', 'html-sanitised', 'invalid-event']);

export class Inbound {
  readonly counters: InboundCounters = { events: 0, appended: 0, duplicate: 0, echo: 0, ignored: 0, dropped: {}, changed: {} };
  private readonly displays = new Map<string, string | null>();
  /** per Matrix room, the latest event seen that is in the log */
  private readonly lastBridged = new Map<string, string>();
  /** an event not in the log (a topic change, a state event …) → the latest bridged event before it, for receipts */
  private readonly receiptTargets = new Map<string, string>();

  constructor(private readonly deps: InboundDeps) {}

  /** One room event from a transaction, a /sync timeline or a /messages page. */
  async handleEvent(raw: unknown, roomIdHint?: string): Promise<void> {
    this.counters.events++;
    const ev = parseMatrixEvent(raw, roomIdHint);
    if ('invalid' in ev) {
      this.drop('malformed-event', { field: ev.invalid, eventId: eventIdOf(raw) });
      return;
    }
    const rooms = this.deps.links.roomsFor(this.deps.name, ev.room_id);
    if (ev.type === 'm.room.member' || ev.type === 'm.room.encryption') {
      const n = normaliseEvent(ev, this.context('', undefined));
      if (n.action === 'membership' || n.action === 'encryption') await this.observe(ev.room_id, n, rooms.length > 0);
      else if (n.action === 'ignore' && rooms.length > 0) this.drop(n.reason, { roomId: ev.room_id, eventId: ev.event_id, type: ev.type });
      if (rooms[0] !== undefined) await this.noteForReceipts(ev.room_id, ev.event_id, rooms[0]);
      return;
    }
    if (rooms.length === 0) {
      this.drop('unlinked-room', { roomId: ev.room_id, eventId: ev.event_id });
      return;
    }
    // Only what may be appended needs the sender's display name (it can cost a request).
    const display = !this.deps.isOurs(ev.sender) && BRIDGED_TYPES.has(ev.type) ? await this.displayOf(ev.room_id, ev.sender) : undefined;
    for (const room of rooms) {
      const n = normaliseEvent(ev, this.context(room, display));
      await this.apply(ev, room, n);
    }
    if (rooms[0] !== undefined) await this.noteForReceipts(ev.room_id, ev.event_id, rooms[0]);
  }

  /**
   * Remembers, for an event that did not reach the log, the latest event
   * before it that did: a read receipt on it (Matrix clients send receipts on
   * topic changes and other state events) then moves the marker that far.
   * Events arrive in timeline order, so "latest seen" is "latest at or before".
   */
  private async noteForReceipts(roomId: string, eventId: string, room: string): Promise<void> {
    if ((await this.resolve(room, eventId)) !== undefined) {
      this.lastBridged.set(roomId, eventId);
      return;
    }
    const before = this.lastBridged.get(roomId);
    if (before === undefined) return;
    this.receiptTargets.set(eventId, before);
    if (this.receiptTargets.size > MAX_RECEIPT_TARGETS) this.receiptTargets.delete(this.receiptTargets.keys().next().value ?? eventId);
  }

  /** Only what membership and encryption state tell us: display names, invites of our bot, encrypted rooms. */
  async observeState(raw: unknown, roomIdHint?: string): Promise<void> {
    const ev = parseMatrixEvent(raw, roomIdHint);
    if ('invalid' in ev) return;
    const n = normaliseEvent(ev, this.context('', undefined));
    if (n.action === 'membership' || n.action === 'encryption') {
      await this.observe(ev.room_id, n, this.deps.links.roomsFor(this.deps.name, ev.room_id).length > 0);
    }
  }

  /** The content of an m.receipt EDU for one Matrix room: public read receipts → markers. */
  async handleReceipts(roomId: string, content: unknown): Promise<void> {
    const rooms = this.deps.links.roomsFor(this.deps.name, roomId);
    if (rooms.length === 0) return;
    for (const receipt of readReceiptsOf(content)) {
      if (this.deps.isOurs(receipt.userId)) continue;
      const display = await this.displayOf(roomId, receipt.userId);
      for (const room of rooms) {
        let upTo = await this.resolve(room, receipt.eventId);
        // A receipt on an event we did not bridge: up to the latest bridged event before it.
        const before = upTo === undefined ? this.receiptTargets.get(receipt.eventId) : undefined;
        if (before !== undefined) upTo = await this.resolve(room, before);
        if (upTo === undefined) {
          this.drop('unknown-target', { roomId, receipt: receipt.eventId, userId: receipt.userId });
          continue;
        }
        await this.ingest(markerDraft(roomId, receipt, upTo, this.context(room, display)));
      }
    }
  }

  private context(room: string, display: string | undefined): NormaliseContext {
    return {
      via: this.deps.name,
      room,
      now: Date.now(),
      isOurs: this.deps.isOurs,
      ...(display !== undefined ? { display } : {}),
      ...(this.deps.mediaUrl ? { mediaUrl: this.deps.mediaUrl } : {}),
    };
  }

  private async observe(roomId: string, n: Extract<Normalised, { action: 'membership' | 'encryption' }>, linked: boolean): Promise<void> {
    if (n.action === 'encryption') {
      this.deps.onEncrypted(roomId);
      return;
    }
    const key = `${roomId}\u0000${n.userId}`;
    if (n.membership === 'join') this.bounded().set(key, n.display ?? null);
    else this.displays.delete(key);
    if (n.userId === this.deps.botUserId() && n.membership === 'invite' && linked) await this.deps.onInvite(roomId);
  }

  private async apply(ev: MatrixEvent, room: string, n: Normalised): Promise<void> {
    switch (n.action) {
      case 'ignore':
        this.drop(n.reason, { roomId: ev.room_id, eventId: ev.event_id, ...(n.detail !== undefined ? { detail: n.detail } : {}) });
        return;
      case 'membership':
      case 'encryption':
        return;
      case 'echo':
        await this.ingest(n.draft);
        return;
      case 'message': {
        for (const note of n.notes) this.note(note, ev);
        const replyTo = n.replyTo !== undefined ? await this.resolve(room, n.replyTo) : undefined;
        const thread = n.thread !== undefined ? await this.resolve(room, n.thread) : undefined;
        const rel = { ...(replyTo !== undefined ? { replyTo } : {}), ...(thread !== undefined ? { thread } : {}) };
        await this.ingest({ ...n.base, kind: 'message', content: n.content, ...(Object.keys(rel).length > 0 ? { rel } : {}) });
        return;
      }
      case 'edit': {
        for (const note of n.notes) this.note(note, ev);
        const replaces = await this.resolve(room, n.replaces);
        if (replaces === undefined) return this.drop('unknown-target', { roomId: ev.room_id, eventId: ev.event_id, target: n.replaces });
        // m.replace validity: only the original's sender may edit it (pitfall 7).
        const original = await this.deps.sink.getEvent(room, replaces);
        if (original && original.sender.native !== ev.sender) {
          return this.drop('edit-sender-mismatch', { roomId: ev.room_id, eventId: ev.event_id, sender: ev.sender, originalSender: original.sender.native });
        }
        await this.ingest({ ...n.base, kind: 'edit', content: n.content, rel: { replaces } });
        return;
      }
      case 'annotation':
        await this.annotate(ev, room, n);
        return;
      case 'redaction':
        await this.redact(ev, room, n);
        return;
    }
  }

  /** m.annotation adds one key to the sender's set on the target; the draft carries the whole set. */
  private async annotate(ev: MatrixEvent, room: string, n: Extract<Normalised, { action: 'annotation' }>): Promise<void> {
    const reactsTo = await this.resolve(room, n.target);
    if (reactsTo === undefined) return this.drop('unknown-target', { roomId: ev.room_id, eventId: ev.event_id, target: n.target });
    const store = this.deps.store;
    const map = await store.inboundAnnotations(ev.room_id, n.target, ev.sender);
    const held = map[n.key];
    // Federation can deliver a second annotation with the same key (docs/protocols.md, "Matrix"): the set is unchanged.
    if (held !== undefined && held !== ev.event_id) return this.drop('duplicate-annotation', { roomId: ev.room_id, eventId: ev.event_id, key: n.key });
    map[n.key] = ev.event_id;
    const keys = Object.keys(map);
    if (keys.length > 64) return this.drop('invalid-reaction', { roomId: ev.room_id, eventId: ev.event_id, detail: 'more than 64 keys' });
    await store.setInboundAnnotation(ev.event_id, { roomId: ev.room_id, target: n.target, sender: ev.sender, key: n.key });
    await store.setInboundAnnotations(ev.room_id, n.target, ev.sender, map);
    await this.ingest({ ...n.base, kind: 'reaction', rel: { reactsTo }, reaction: { keys } });
  }

  /** A redaction retracts a message, or removes one key from a reaction set when it redacts an annotation. */
  private async redact(ev: MatrixEvent, room: string, n: Extract<Normalised, { action: 'redaction' }>): Promise<void> {
    const store = this.deps.store;
    const annotation = await store.inboundAnnotation(ev.room_id, n.redacts);
    if (annotation) {
      const map = await store.inboundAnnotations(ev.room_id, annotation.target, annotation.sender);
      if (map[annotation.key] === n.redacts) {
        delete map[annotation.key];
        await store.setInboundAnnotations(ev.room_id, annotation.target, annotation.sender, map);
      }
      const reactsTo = await this.resolve(room, annotation.target);
      if (reactsTo === undefined) return this.drop('unknown-target', { roomId: ev.room_id, eventId: ev.event_id, target: annotation.target });
      // The set belongs to the annotation's sender, even when a moderator redacted it.
      const display = await this.displayOf(ev.room_id, annotation.sender);
      await this.ingest({ ...n.base, sender: senderOf(annotation.sender, display), kind: 'reaction', rel: { reactsTo }, reaction: { keys: Object.keys(map) } });
      return;
    }
    const redacts = await this.resolve(room, n.redacts);
    if (redacts === undefined) return this.drop('unknown-target', { roomId: ev.room_id, eventId: ev.event_id, target: n.redacts });
    const target = await this.deps.sink.getEvent(room, redacts);
    // A redaction of an annotation we did not see as one (one of our own ghosts' reactions): no set to shrink.
    if (target?.kind === 'reaction') return this.drop('unsupported-redaction', { roomId: ev.room_id, eventId: ev.event_id, target: n.redacts });
    await this.ingest({ ...n.base, kind: 'retraction', rel: { redacts } });
  }

  private resolve(room: string, mxEventId: string): Promise<string | undefined> {
    return this.deps.sink.resolve(room, nativeKey('matrix', 'mx.eventId', mxEventId));
  }

  private async ingest(draft: EventDraft): Promise<IngestResult> {
    const result = await this.deps.sink.ingest(draft);
    switch (result.status) {
      case 'appended':
        this.counters.appended++;
        break;
      case 'duplicate':
        this.counters.duplicate++;
        break;
      case 'echo':
        this.counters.echo++;
        break;
      case 'ignored':
        this.counters.ignored++;
        this.deps.log.debug({ idem: draft.idem, reason: result.reason }, 'inbound Matrix event not appended');
        break;
    }
    return result;
  }

  /** The sender's display name in the room: from member events seen, else asked once. */
  private async displayOf(roomId: string, userId: string): Promise<string | undefined> {
    const key = `${roomId}\u0000${userId}`;
    const known = this.displays.get(key);
    if (known !== undefined) return known ?? undefined;
    try {
      const member = await this.deps.http.request('GET', mxPath`/_matrix/client/v3/rooms/${roomId}/state/m.room.member/${userId}`);
      const name = typeof member['displayname'] === 'string' ? member['displayname'] : null;
      this.bounded().set(key, name);
      return name ?? undefined;
    } catch (err) {
      // Not a member any more / not visible: remember that. Anything else: ask again next time.
      if (isMatrixApiError(err) && (err.status === 404 || err.status === 403)) this.bounded().set(key, null);
      return undefined;
    }
  }

  private bounded(): Map<string, string | null> {
    if (this.displays.size > 50_000) this.displays.clear();
    return this.displays;
  }

  /** A dropped event: counted and logged with its reason. */
  drop(reason: DropReason, details: Record<string, unknown>): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + 1;
    const level = WARN_REASONS.has(reason) ? 'warn' : 'debug';
    this.deps.log[level]({ ...details, reason }, 'inbound Matrix event dropped');
  }

  /** A problem that did not stop the event (truncated, sanitised): counted and logged. */
  private note(reason: DropReason, ev: MatrixEvent): void {
    this.counters.changed[reason] = (this.counters.changed[reason] ?? 0) + 1;
    this.deps.log.warn({ roomId: ev.room_id, eventId: ev.event_id, sender: ev.sender, reason }, 'inbound Matrix event changed before append');
  }
}

function eventIdOf(raw: unknown): string | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const id = (raw as { event_id?: unknown }).event_id;
  return typeof id === 'string' ? id.slice(0, 255) : undefined;
}
