/**
 * Ports: what the core, the HTTP layer and the bridge need from storage.
 * Implementations live in src/eventlog (memory, redis) and pass one contract
 * suite (test/contract/eventlog.contract.ts).
 */
import { Type, type Static } from '@sinclair/typebox';
import { RoomId, type DraftOf, type EventDraft, type LogEvent } from './event.js';

export interface AppendOptions {
  /**
   * Extra lookup keys (native ids) that resolve to this event in its room, in
   * the same namespace as idempotency keys, e.g. `xmpp:id:alice@x/1:abc`.
   * The idempotency key itself always resolves.
   */
  readonly aliases?: readonly string[];
}

export interface AppendResult {
  readonly eventId: string;
  /** the event's position token: equal to `cursor` on the event wherever it is read */
  readonly cursor: string;
  /** true when the idempotency key was seen before: nothing was appended */
  readonly duplicate: boolean;
}

/** Which rooms a read or a tail covers. */
export type RoomFilter = 'all' | ReadonlySet<string>;

export interface ReadOptions {
  readonly rooms: RoomFilter;
  readonly limit: number;
}

export interface ReadResult {
  readonly events: LogEvent[];
  /** the sync cursor after these events; pass it as the next `since` */
  readonly next: string;
  /** true when retention removed events after `since`: the client missed some */
  readonly limited: boolean;
}

/**
 * What a device sees of an event (src/http/view.ts): the log event without
 * its idempotency key and without the origin ids named in `hiddenIds`; when
 * `origin.ids[echo.deviceKey]` equals `echo.deviceId`, an `unsigned` member
 * `{ txnId: origin.ids[echo.txnKey] }` at the end (the sending device's own
 * transaction id).
 */
export interface DeviceView {
  readonly hiddenIds: readonly string[];
  readonly echo: { readonly deviceKey: string; readonly txnKey: string; readonly deviceId: string };
}

/** read() with each event as the JSON text of its device view: what a sync page is made of. */
export interface JsonReadResult {
  readonly events: string[];
  readonly next: string;
  readonly limited: boolean;
}

export type TailItem =
  | { readonly type: 'event'; readonly event: LogEvent; readonly next: string }
  | { readonly type: 'limited'; readonly next: string };

export interface TailOptions {
  readonly rooms: RoomFilter;
  readonly signal?: AbortSignal;
}

export type HistoryDirection = 'b' | 'f';

export interface HistoryOptions {
  /** an event position (`cursor` of an event): exclusive start; absent = the newest (b) or oldest (f) end */
  readonly from?: string;
  readonly dir: HistoryDirection;
  readonly limit: number;
}

export interface HistoryPage {
  /** in the order read: newest first for `b`, oldest first for `f` */
  readonly events: LogEvent[];
  /** pass as `from` for the next page; absent when the end was reached */
  readonly next?: string;
  /** true when paging backwards ran into retention */
  readonly limited: boolean;
}

export interface TelemetryPage {
  readonly before?: string;
  readonly after?: string;
}

export interface TelemetryEntry {
  readonly id: string;
  readonly event: DraftOf<'telemetry'>;
}

export const RoomLink = Type.Object(
  {
    /** adapter instance name, e.g. `xmpp`, `matrix`, `mqtt`, `api` */
    endpoint: Type.String({ pattern: '^[a-z][a-z0-9-]{0,31}$' }),
    /** the native address: MUC JID, Matrix room id, MQTT topic filter … */
    target: Type.String({ minLength: 1, maxLength: 1024 }),
    options: Type.Optional(Type.Record(Type.String({ maxLength: 64 }), Type.Union([Type.String({ maxLength: 4096 }), Type.Number(), Type.Boolean()]))),
  },
  { additionalProperties: false },
);
export type RoomLink = Static<typeof RoomLink>;

export const RoomSpec = Type.Object(
  {
    id: RoomId,
    name: Type.Optional(Type.String({ maxLength: 256 })),
    links: Type.Array(RoomLink, { maxItems: 64 }),
  },
  { additionalProperties: false },
);
export type RoomSpec = Static<typeof RoomSpec>;

export interface RoomStore {
  put(spec: RoomSpec): Promise<void>;
  get(room: string): Promise<RoomSpec | undefined>;
  list(): Promise<RoomSpec[]>;
  delete(room: string): Promise<boolean>;
  /** calls `listener` after any replica changed a room; resolves, with an unsubscribe function, once listening */
  watch(listener: (room: string) => void): Promise<() => void>;
}

/** Small shared state (devices, grants, markers): one hash per namespace. */
export interface StateStore {
  get(ns: string, key: string): Promise<string | undefined>;
  set(ns: string, key: string, value: string): Promise<void>;
  /** true when it was set, false when the key existed */
  setIfAbsent(ns: string, key: string, value: string): Promise<boolean>;
  delete(ns: string, key: string): Promise<boolean>;
  entries(ns: string): Promise<Array<[string, string]>>;
  /** sets `value` when it sorts after the stored value (or none is stored); returns the value now stored */
  advance(ns: string, key: string, value: string): Promise<string>;
  /**
   * Sets and deletes several keys of one namespace in one atomic write: a
   * crash leaves all of it or none (Redis: one MULTI on the namespace's hash).
   * A key in both lists is set.
   */
  update(ns: string, set: ReadonlyArray<readonly [string, string]>, del: readonly string[]): Promise<void>;
  /**
   * `update`, fenced by a lease's fencing token (DeliveryQueue.leaseToken):
   * applied only when `token` is at least the namespace's stored token (the
   * FENCE_FIELD of its hash; none stored: 0), which `token` then becomes, in
   * the same atomic write (Redis: one script on the namespace's one hash, so
   * also on a Cluster). A lower token — a former lease holder, resumed after
   * another one took over — changes nothing and throws SG_ERR_STATE_FENCED.
   * With nothing to set or delete it only raises the stored token: a new
   * holder's claim, made before it reads, after which no former holder's
   * write lands. Returns how many of `del` existed.
   */
  fencedUpdate(ns: string, token: number, set: ReadonlyArray<readonly [string, string]>, del: readonly string[]): Promise<number>;
}

/** The field of a fenced namespace's hash that holds its fencing token (StateStore.fencedUpdate); no adapter key starts with NUL. */
export const FENCE_FIELD = '\u0000fence';

/**
 * Secret state kept in the log's state store, encrypted at rest (AES-256-GCM
 * with a key derived from an operator's secret): an adapter's crypto keys and
 * sessions. Each value is bound to its namespace and key, so a value copied
 * under another key does not open. `get`/`entries` throw
 * `SG_ERR_STATE_SEALED_KEY` when a value does not open with the configured
 * secret (another secret, or altered data): never a silent fresh start.
 */
export interface SealedStore {
  get(key: string): Promise<Uint8Array | undefined>;
  /** resolves once the value is in the state store (a crash after this keeps it) */
  set(key: string, value: Uint8Array): Promise<void>;
  delete(key: string): Promise<boolean>;
  entries(): Promise<Array<[string, Uint8Array]>>;
  /** sets (each value sealed under its own key) and deletes several keys in one atomic write; resolves once it is in the state store */
  update(set: ReadonlyArray<readonly [string, Uint8Array]>, del: readonly string[]): Promise<void>;
  /**
   * A key name for `label` that reveals nothing of it without the secret
   * (HMAC-SHA-256 under a key derived from the secret and the namespace):
   * for records whose natural names (room ids, session ids) should not be
   * stored in clear. Stable for a given secret, namespace and label.
   */
  blind(label: string): string;
}

/** A feed entry handed to a delivery worker. */
export interface QueuedEntry {
  /** the feed position, as the stream id text */
  readonly id: string;
  readonly room: string;
  /** undefined when retention removed the event before it was delivered */
  readonly event: LogEvent | undefined;
  /** set for entries that come from a dead-letter replay */
  readonly replayId?: string;
}

export interface DeadLetter {
  /** `<partition>:<stream id>`: what list/replay/drop take */
  readonly id: string;
  readonly group: string;
  readonly room: string;
  readonly feedId: string;
  readonly eventId: string;
  readonly reason: string;
  readonly attempts: number;
  readonly ts: number;
}

/**
 * Outbound delivery state over the partition feeds (docs/architecture.md, "Delivery"): a consumer
 * group per (adapter instance, partition), a lease per group of partitions so one consumer is active
 * across replicas, fenced acks, a dead-letter stream, and the record of the
 * native ids each delivery produced.
 */
export interface DeliveryQueue {
  /** creates the group at the current end of the feed when it does not exist */
  ensureGroup(partition: number, group: string): Promise<void>;
  /**
   * Takes or renews the lease; false when another owner holds it. `reclaim`:
   * also take it from a holder for which it returns true (a dead earlier
   * incarnation of this replica), without waiting for the lease to expire.
   */
  acquireLease(partition: number, group: string, owner: string, ttlMs: number, reclaim?: (holder: string) => boolean): Promise<boolean>;
  releaseLease(partition: number, group: string, owner: string): Promise<void>;
  /**
   * The lease group of a partition: the partitions of one group share one
   * lease (per consumer group), taken and renewed together.
   */
  leaseGroupOf(partition: number): number;
  /** the owner holding a lease now, if any (the console shows which replica holds an adapter's connection) */
  leaseHolder(partition: number, group: string): Promise<string | undefined>;
  /**
   * The lease's fencing token while `owner` holds it (undefined when it does
   * not): a number that grows every time the lease is taken — by another
   * owner, or again after it lapsed — and stays while it is renewed. State
   * written with StateStore.fencedUpdate under it is refused once a later
   * holder wrote (or claimed) under its larger token.
   */
  leaseToken(partition: number, group: string, owner: string): Promise<number | undefined>;
  /** entries delivered to this consumer and not acknowledged (its own pending list) */
  readPending(partition: number, group: string, consumer: string, count: number): Promise<QueuedEntry[]>;
  /** takes over other consumers' pending entries idle for at least `minIdleMs` (a previous lease holder's) */
  claimStale(partition: number, group: string, consumer: string, count: number, minIdleMs?: number): Promise<QueuedEntry[]>;
  /** new entries for the group; waits up to `waitMs` (or until `signal` aborts) for one when there is none */
  readNew(partition: number, group: string, consumer: string, count: number, waitMs: number, signal?: AbortSignal): Promise<QueuedEntry[]>;
  /** acknowledges, only while `owner` holds the lease (fencing); false = lease lost, nothing done */
  ack(partition: number, group: string, owner: string, ids: readonly string[]): Promise<boolean>;
  /** moves an entry to the dead-letter stream and acknowledges it, fenced like ack */
  deadLetter(partition: number, group: string, owner: string, entry: { id: string; room: string; eventId: string }, reason: string, attempts: number): Promise<boolean>;
  /** dead letters queued for another try by `replayDead` */
  takeReplays(partition: number, group: string, count: number): Promise<QueuedEntry[]>;
  finishReplay(partition: number, group: string, owner: string, replayId: string): Promise<boolean>;
  listDead(limit: number, group?: string): Promise<DeadLetter[]>;
  /** one room's dead letters, oldest first, reading only its partition's dead-letter stream (up to `limit` entries of it) */
  listDeadOfRoom(room: string, limit: number): Promise<DeadLetter[]>;
  replayDead(ids: readonly string[]): Promise<number>;
  dropDead(ids: readonly string[]): Promise<number>;
  deadCount(group?: string): Promise<number>;
  /** entries delivered to the group on any partition and not acknowledged yet */
  pendingCount(group: string): Promise<number>;
  /** the native ids a confirmed delivery produced (none for some protocols), with the time of the confirmation; kept as long as native-id aliases */
  recordDelivery(room: string, eventId: string, endpoint: string, nativeIds: Readonly<Record<string, string>>): Promise<void>;
  /** the native ids recorded for that delivery; undefined when none were recorded */
  deliveredIds(room: string, eventId: string, endpoint: string): Promise<Record<string, string> | undefined>;
  /** the delivery records of these events at `endpoint`, in the order given (undefined: no confirmed delivery recorded) */
  deliveryRecords(room: string, eventIds: readonly string[], endpoint: string): Promise<Array<DeliveryRecord | undefined>>;
  /** notes (or, with undefined, clears) a failed attempt that will be retried: what the console shows as `retrying` */
  noteRetry(room: string, eventId: string, endpoint: string, note: RetryNote | undefined): Promise<void>;
  /** every retry noted and not cleared, on every replica */
  retries(): Promise<Array<RetryNote & { readonly room: string; readonly eventId: string; readonly endpoint: string }>>;
  /** how far the group is behind, over every partition */
  lag(group: string): Promise<DeliveryLag>;
}

export interface DeliveryRecord {
  readonly nativeIds: Readonly<Record<string, string>>;
  /** when the delivery was confirmed (ms since the epoch); absent for records written before it was kept */
  readonly at?: number;
}

export interface RetryNote {
  /** attempts made so far */
  readonly attempt: number;
  /** when the next attempt is due (ms since the epoch) */
  readonly nextAt: number;
  readonly error: string;
  readonly at: number;
}

export interface DeliveryLag {
  /** feed entries the group has not acknowledged (read and pending, or not read yet) */
  readonly events: number;
  /** when the oldest of them was appended; undefined when none */
  readonly oldestMs: number | undefined;
}

export interface EventLogInfo {
  readonly backend: 'memory' | 'redis';
  readonly durable: boolean;
  /** the partition count in effect now: it grows when the count is raised, by this replica or another */
  readonly partitions: number;
}

export interface EventLog {
  readonly info: EventLogInfo;
  /**
   * False while the store's connection is lost (always true in memory).
   * Appends made meanwhile wait, in order, until it is back; callers that
   * answer someone (the HTTP API) refuse at once instead.
   */
  readonly available: boolean;
  readonly rooms: RoomStore;
  readonly state: StateStore;
  readonly delivery: DeliveryQueue;

  /** Idempotent append of a timeline event; the room must exist. */
  append(draft: EventDraft, options?: AppendOptions): Promise<AppendResult>;
  /** Events after `since` (a sync cursor; absent = the beginning) in the given rooms. */
  read(since: string | undefined, options: ReadOptions): Promise<ReadResult>;
  /**
   * The same page as read(), each event as the JSON text of `view` of it
   * (the same members and values as JSON.stringify of the view of the
   * LogEvent). Written from the stored bytes where the store keeps the event
   * as one JSON text, without decoding it (issue 19).
   */
  readJson(since: string | undefined, options: ReadOptions, view: DeviceView): Promise<JsonReadResult>;
  /** The newest `limit` events of the rooms (oldest first) and the sync cursor of now. */
  latest(options: ReadOptions): Promise<ReadResult>;
  /** History after `since`, then live events, with no gap and no duplicate. */
  tail(since: string | undefined, options: TailOptions): AsyncIterable<TailItem>;
  /** The sync cursor of now for these rooms (default every room): the head of their partitions. */
  head(rooms?: RoomFilter): Promise<string>;
  roomHistory(room: string, options: HistoryOptions): Promise<HistoryPage>;
  getEvent(room: string, eventId: string): Promise<LogEvent | undefined>;
  /** native id / idempotency key → event id, within a room */
  resolve(room: string, key: string): Promise<string | undefined>;
  /** adds lookup keys for an event already in the log (e.g. native ids returned by a delivery) */
  alias(room: string, eventId: string, keys: readonly string[]): Promise<void>;
  /** telemetry goes to its own capped stream per room, never to the timeline */
  appendTelemetry(draft: DraftOf<'telemetry'>): Promise<{ id: string }>;
  /**
   * A room's telemetry: without `page`, or with `before` (an entry id,
   * exclusive), the newest `limit` entries before it, newest first; with
   * `after`, the oldest `limit` entries after it, oldest first.
   */
  telemetry(room: string, limit: number, page?: TelemetryPage): Promise<TelemetryEntry[]>;
  /** applies age-based retention now (it also runs periodically) */
  trim(): Promise<void>;
  /**
   * Resolves once the log's stored partition count is checked against the
   * configured one (and raised to it); rejects with SG_ERR_PARTITIONS_LOWERED
   * when the configured count is lower. Every operation waits for it.
   */
  open(): Promise<void>;
  /**
   * Raises the log's partition count (never lowers it: SG_ERR_PARTITIONS_LOWERED):
   * rooms keep their partitions, new rooms spread over all; every replica follows.
   * Returns the count now in effect.
   */
  raisePartitions(count: number): Promise<number>;
  /**
   * The log's stored write format (1: ten fields, what builds before format 2
   * read; 2: one field; 3: one field with fewer bytes, what builds before it
   * cannot read), followed by this process like the partition count.
   */
  writeFormat(): Promise<1 | 2 | 3>;
  /**
   * Raises the write format (never lowers it: SG_ERR_LOG_FORMAT_LOWERED); every
   * replica follows. Raise only once no replica of an older build runs.
   */
  raiseWriteFormat(format: 1 | 2 | 3): Promise<1 | 2 | 3>;
  /**
   * The stored partition count, followed by this process when another
   * replica (or the admin command) raised it: what `info.partitions` says
   * from then on. Delivery polls it to take up new partitions.
   */
  partitionCount(): Promise<number>;
  ping(): Promise<void>;
  /** partitions the store cannot serve now (a Redis Cluster shard lost with no replica), ascending */
  unavailablePartitions(): Promise<number[]>;
  close(): Promise<void>;
}
