/**
 * The storage primitives a log backend offers, per partition. The cursor,
 * read, tail and history logic on top of them is shared (partitioned-log.ts),
 * so the memory and the Redis log behave the same by construction and the
 * contract suite checks the primitives through it.
 */
import type { DraftOf, EventDraft, LogEvent } from '../core/event.js';
import type { DeadLetter, RoomStore, StateStore } from '../core/ports.js';
import type { StreamPos } from '../core/position.js';
import { SyncgateError } from '../core/errors.js';

export interface FeedEntry {
  readonly pos: StreamPos;
  readonly room: string;
  /** undefined when retention removed the room entry but the feed still lists it */
  readonly draft: EventDraft | undefined;
  /**
   * The event's stored JSON text (format 2 or 3, codec.ts), when the backend
   * has it: a sync page is written from it without decoding (issue 19).
   * Absent for format-1 entries and in memory.
   */
  readonly stored?: string | undefined;
  /** format 3's `stored`: the entry id's milliseconds, which its received time is an offset from; undefined for format 2 */
  readonly storedBase?: number | undefined;
  /**
   * The event as a new object of its own with `eventId` and `cursor` set,
   * when the backend decodes entries itself: spares read() a copy of every
   * event (issue 19). undefined when the entry is gone.
   */
  toEvent?(eventId: string, cursor: string): LogEvent | undefined;
}

export interface FeedPage {
  /** matching entries, in feed order */
  readonly entries: FeedEntry[];
  /** the last feed position examined (matching or not); `after` when nothing was there */
  readonly scannedTo: StreamPos;
  /** how many feed entries were examined */
  readonly scanned: number;
  /** true when nothing is left after this page (a read that came back short), so no further read is needed to learn it */
  readonly exhausted?: boolean;
}

/** A feed entry read through a consumer group. */
export interface GroupEntry extends FeedEntry {
  /** the stream id text (what XACK takes) */
  readonly id: string;
}

export interface ReplayEntry extends GroupEntry {
  readonly replayId: string;
}

export interface GroupLag {
  readonly events: number;
  /** when the oldest unacknowledged entry was appended (ms since the epoch) */
  readonly oldestMs: number | undefined;
}

/** A dead letter as one partition stores it; the queue adds the partition to its id. */
export type DeadRecord = Omit<DeadLetter, 'id'> & { readonly streamId: string };

export interface StreamBounds {
  readonly first: StreamPos | undefined;
  readonly last: StreamPos | undefined;
  /** the highest position retention has removed (0-0 when none) */
  readonly maxDeleted: StreamPos;
}

export interface AppendRequest {
  readonly partition: number;
  readonly draft: EventDraft;
  /** idempotency and alias lookup keys, already scoped to the room */
  readonly idemField: string;
  readonly aliasFields: readonly string[];
}

export type AppendOutcome =
  | { readonly status: 'appended' | 'duplicate'; readonly pos: StreamPos }
  | { readonly status: 'room-unknown' };

export interface RetentionPolicy {
  /** approximate cap per room timeline; 0 = none */
  readonly roomMaxLen: number;
  /** cap per partition feed; 0 = none */
  readonly feedMaxLen: number;
  /** events older than this are removed by trim(); 0 = keep forever */
  readonly maxAgeMs: number;
  /** how long idempotency keys and native-id aliases are kept at least */
  readonly idTtlMs: number;
  /** cap per room telemetry stream */
  readonly telemetryMaxLen: number;
}

export type RoomFilterFn = (room: string) => boolean;

/**
 * How appends store an event (codec.ts): 1 = ten fields (what builds before
 * format 2 read), 2 = one field `e`, 3 = one field `f` (fewer bytes: the
 * received time as an offset from the entry id; what builds before format
 * 3 cannot read). Stored with the partition count; a log without one
 * (written before the gate) writes format 1 until it is raised.
 */
export type WriteFormat = 1 | 2 | 3;

/** the newest write format: what a new log starts with */
export const LATEST_WRITE_FORMAT: WriteFormat = 3;

/** SG_ERR_STATE_FENCED for a write under `token` to a namespace fenced at `stored` (memory and Redis alike) */
export function fencedWrite(ns: string, token: number, stored?: number): SyncgateError {
  const by = stored === undefined ? 'a later lease holder' : `a later lease holder (token ${stored})`;
  return new SyncgateError('SG_ERR_STATE_FENCED', `state write to ${ns} under fencing token ${token} refused: ${by} wrote or claimed it since`);
}

/** The partition count and write format stored with a log (issue 24): both only ever raised. */
export interface PartitionMeta {
  readonly partitions: number;
  readonly format: WriteFormat;
}

export interface LogBackend {
  readonly backend: 'memory' | 'redis';
  readonly durable: boolean;
  /** false while the connection to the store is lost */
  readonly available: boolean;
  readonly rooms: RoomStore;
  readonly state: StateStore;

  // --- the partition count and the room → partition directory (docs/architecture.md, "Partitions")
  /**
   * The stored partition count; when the log has none yet, stores
   * `configured` (or, for a log written before the count was stored, the
   * count its rooms were written with) and returns that. A new log (no
   * count and no rooms) stores the latest write format too; an existing one
   * keeps what it has (none = format 1).
   */
  openPartitions(configured: number): Promise<PartitionMeta>;
  /** the stored partition count (another replica may have raised it) */
  readPartitions(): Promise<number>;
  /** raises the stored count to `count` (never lowers it); returns the stored count */
  raisePartitions(count: number): Promise<number>;
  /**
   * The stored write format (1 when none is stored: a log from before the
   * format gate); appends of this process write it from then on.
   */
  readWriteFormat(): Promise<WriteFormat>;
  /** raises the stored write format to `format` (never lowers it); returns the stored one, which appends then write */
  raiseWriteFormat(format: WriteFormat): Promise<WriteFormat>;
  /** a room's partition as this process knows it already (no I/O); rooms never move */
  knownRoomPartition(room: string): number | undefined;
  /**
   * The key group of a partition (keys.ts): the partitions of one group share
   * one delivery lease per consumer group, so a process renews one lease per
   * group, not per partition (layout 1: every partition is its own group).
   */
  leaseGroupOf(partition: number): number;
  /** a room's partition from the directory; undefined for a room that never existed */
  roomPartition(room: string): Promise<number | undefined>;
  /** the room's partition, assigning `hash mod stored count` when it has none: a new room */
  assignRoomPartition(room: string, hash: number): Promise<number>;
  /** the consumer groups of a partition's feed */
  groupNames(partition: number): Promise<string[]>;

  append(request: AppendRequest): Promise<AppendOutcome>;
  /** entries after `after` (exclusive), at most `count` examined, drafts loaded for matching rooms */
  readFeed(partition: number, after: StreamPos, count: number, match: RoomFilterFn): Promise<FeedPage>;
  /** entries before `before` (exclusive), newest first */
  readFeedReverse(partition: number, before: StreamPos | undefined, count: number, match: RoomFilterFn): Promise<FeedPage>;
  /**
   * Blocks up to `timeoutMs` for entries after `after`, all rooms. Only the
   * shared live reader of a partition calls it, so a process holds one
   * blocking connection per partition.
   */
  waitFeed(partition: number, after: StreamPos, timeoutMs: number, count: number): Promise<FeedEntry[]>;
  feedBounds(partition: number): Promise<StreamBounds>;
  /** the last feed position retention removed (0-0 when none): what `limited` is computed from */
  trimmedUpTo(partition: number): Promise<StreamPos>;
  /** the same for rooms' timelines, in the order given */
  roomsTrimmedUpTo(partition: number, rooms: readonly string[]): Promise<StreamPos[]>;
  roomBounds(partition: number, room: string): Promise<StreamBounds>;
  /** room timeline entries; `from` exclusive; `dir` f = ascending, b = descending */
  roomRange(partition: number, room: string, from: StreamPos | undefined, dir: 'f' | 'b', count: number): Promise<FeedEntry[]>;
  lookup(partition: number, fields: readonly string[]): Promise<Array<StreamPos | undefined>>;
  addAliases(partition: number, pos: StreamPos, fields: readonly string[]): Promise<void>;
  appendTelemetry(partition: number, draft: DraftOf<'telemetry'>): Promise<string>;
  /** newest first before `page.before` (exclusive; default the end), or oldest first after `page.after` */
  telemetry(partition: number, room: string, limit: number, page?: { readonly before?: StreamPos; readonly after?: StreamPos }): Promise<Array<{ id: string; draft: DraftOf<'telemetry'> }>>;
  trimByAge(partition: number, rooms: readonly string[], cutoffMs: number): Promise<void>;
  // --- outbound delivery (consumer groups on the feed, leases, dead letters)
  /** at the feed's end, or (`fromStart`, a partition added by a raise) at its start */
  groupCreate(partition: number, group: string, fromStart?: boolean): Promise<void>;
  /** `new`: entries never delivered to the group (XREADGROUP >); `pending`: this consumer's unacknowledged ones */
  groupRead(partition: number, group: string, consumer: string, mode: 'new' | 'pending', count: number): Promise<GroupEntry[]>;
  groupClaim(partition: number, group: string, consumer: string, count: number, minIdleMs: number): Promise<GroupEntry[]>;
  /** takes or renews the lease; `replace`: also take it from that holder (compare and set) */
  leaseAcquire(partition: number, group: string, owner: string, ttlMs: number, replace?: string): Promise<boolean>;
  /** the current holder, if any */
  leaseHolder(partition: number, group: string): Promise<string | undefined>;
  /** the lease's fencing token while `owner` holds it (DeliveryQueue.leaseToken) */
  leaseToken(partition: number, group: string, owner: string): Promise<number | undefined>;
  leaseRelease(partition: number, group: string, owner: string): Promise<void>;
  groupAck(partition: number, group: string, owner: string, ids: readonly string[]): Promise<boolean>;
  deadLetter(partition: number, group: string, owner: string, entry: { id: string; room: string; eventId: string }, reason: string, attempts: number): Promise<boolean>;
  replays(partition: number, group: string, count: number): Promise<ReplayEntry[]>;
  replayDone(partition: number, group: string, owner: string, replayId: string): Promise<boolean>;
  deadList(partition: number, limit: number): Promise<DeadRecord[]>;
  deadMove(partition: number, streamIds: readonly string[], mode: 'replay' | 'drop'): Promise<number>;
  deadCount(partition: number): Promise<number>;
  /** entries delivered to the group and not acknowledged yet (0 when the group does not exist) */
  pendingCount(partition: number, group: string): Promise<number>;
  /**
   * How far the group is behind on this partition: entries not acknowledged
   * (its pending list plus those not read yet) and the feed time of the oldest
   * of them (undefined when none).
   */
  groupLag(partition: number, group: string): Promise<GroupLag>;
  deliverySet(partition: number, field: string, value: string): Promise<void>;
  deliveryGet(partition: number, field: string): Promise<string | undefined>;
  /** deliveryGet for many fields in one step (the console's timeline page) */
  deliveryGetMany(partition: number, fields: readonly string[]): Promise<Array<string | undefined>>;

  ping(): Promise<void>;
  /** partitions whose store does not answer now (a Redis Cluster shard with no master), ascending; [] when all answer */
  unavailablePartitions(): Promise<number[]>;
  /** interrupts blocking reads and releases connections */
  close(): Promise<void>;
}
