/**
 * The storage primitives a log backend offers, per partition. The cursor,
 * read, tail and history logic on top of them is shared (partitioned-log.ts),
 * so the memory and the Redis log behave the same by construction and the
 * contract suite checks the primitives through it.
 */
import type { DraftOf, EventDraft } from '../core/event.js';
import type { RoomStore, StateStore } from '../core/ports.js';
import type { StreamPos } from '../core/position.js';

export interface FeedEntry {
  readonly pos: StreamPos;
  readonly room: string;
  /** undefined when retention removed the room entry but the feed still lists it */
  readonly draft: EventDraft | undefined;
}

export interface FeedPage {
  /** matching entries, in feed order */
  readonly entries: FeedEntry[];
  /** the last feed position examined (matching or not); `after` when nothing was there */
  readonly scannedTo: StreamPos;
  /** how many feed entries were examined */
  readonly scanned: number;
}

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

export interface LogBackend {
  readonly backend: 'memory' | 'redis';
  readonly durable: boolean;
  readonly partitions: number;
  readonly rooms: RoomStore;
  readonly state: StateStore;

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
  roomBounds(partition: number, room: string): Promise<StreamBounds>;
  /** room timeline entries; `from` exclusive; `dir` f = ascending, b = descending */
  roomRange(partition: number, room: string, from: StreamPos | undefined, dir: 'f' | 'b', count: number): Promise<FeedEntry[]>;
  lookup(partition: number, fields: readonly string[]): Promise<Array<StreamPos | undefined>>;
  addAliases(partition: number, pos: StreamPos, fields: readonly string[]): Promise<void>;
  appendTelemetry(partition: number, draft: DraftOf<'telemetry'>): Promise<string>;
  telemetry(partition: number, room: string, limit: number): Promise<Array<{ id: string; draft: DraftOf<'telemetry'> }>>;
  trimByAge(partition: number, rooms: readonly string[], cutoffMs: number): Promise<void>;
  ping(): Promise<void>;
  /** interrupts blocking reads and releases connections */
  close(): Promise<void>;
}
