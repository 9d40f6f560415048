/**
 * EventLog over a LogBackend: cursors, reads, history and the live tail.
 *
 * The tail never starts from "now": a subscriber reads history from its
 * cursor until it reaches the end, then attaches to the partition's shared
 * live reader, which replays what it buffered after that point. Nothing falls
 * between history and live, and nothing is seen twice (docs/architecture.md, "Live tails").
 */
import type { Logger } from 'pino';
import {
  decodeEventPosition,
  decodeSyncCursor,
  encodeEventPosition,
  encodeSyncCursor,
  startCursor,
  type SyncCursor,
} from '../core/cursor.js';
import { SyncgateError, isSyncgateError } from '../core/errors.js';
import { isTimelineKind, parseEventDraft, type DraftOf, type EventDraft, type LogEvent } from '../core/event.js';
import type {
  AppendOptions,
  AppendResult,
  DeliveryQueue,
  DeviceView,
  EventLog,
  EventLogInfo,
  HistoryOptions,
  HistoryPage,
  JsonReadResult,
  ReadOptions,
  ReadResult,
  RoomFilter,
  TailItem,
  TailOptions,
  TelemetryEntry,
  TelemetryPage,
  RoomSpec,
  RoomStore,
} from '../core/ports.js';
import { MAX_PARTITIONS, ZERO_POS, comparePos, eventIdFor, justBefore, locateEventId, parseStreamId, type StreamPos } from '../core/position.js';
import type { FeedEntry, FeedPage, LogBackend, RetentionPolicy, RoomFilterFn, WriteFormat } from './backend.js';
import { viewJsonOfEvent, viewJsonOfStored } from './codec.js';
import { createDeliveryQueue } from './delivery-queue.js';
import { LiveFeed, type LiveSink } from './live-feed.js';

export const MAX_READ_LIMIT = 1000;
const SCAN_PAGE = 512;
/** up to this many rooms of a partition, reads go to the rooms' timelines instead of the feed */
const DIRECT_ROOMS_MAX = 64;
/** how many feed entries one read may examine per partition before it answers with what it has */
const SCAN_BUDGET = 8192;

export interface PartitionedLogOptions {
  readonly backend: LogBackend;
  /** the configured partition count: a new log is opened with it, an existing one raised to it (never lowered) */
  readonly partitions: number;
  readonly retention: RetentionPolicy;
  readonly log: Logger;
  /** live items buffered per tail before it falls back to reading history (no loss, bounded memory) */
  readonly tailBuffer?: number;
  /** how long one blocking read waits before it re-checks whether anyone still listens */
  readonly blockMs?: number;
}

function matcher(rooms: RoomFilter): RoomFilterFn {
  return rooms === 'all' ? () => true : (room) => rooms.has(room);
}

/**
 * What a read or a tail covers: the partitions of its rooms (every partition
 * for `all`), and the rooms of the filter in each. Its cursor names these
 * partitions only, so the cursor grows with the rooms a device reads.
 */
export interface ReadPlan {
  readonly partitions: readonly number[];
  /** the filter's rooms per partition; undefined for `all` */
  readonly rooms: ReadonlyMap<number, readonly string[]> | undefined;
  readonly match: RoomFilterFn;
}

function checkLimit(limit: number): void {
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_READ_LIMIT) {
    throw new SyncgateError('SG_ERR_PARAM_INVALID', `limit must be an integer in 1..${MAX_READ_LIMIT}`);
  }
}

/**
 * An append's result. The event id and position token are worked out when
 * first read: adapters ingesting a stream of messages mostly never read them,
 * and on that path they cost as much as a tenth of the append's own work.
 */
class Appended implements AppendResult {
  private id: string | undefined;
  private token: string | undefined;
  constructor(
    private readonly partitions: number,
    private readonly partition: number,
    private readonly pos: StreamPos,
    readonly duplicate: boolean,
  ) {}
  get eventId(): string {
    return (this.id ??= eventIdFor(this.partition, this.pos));
  }
  get cursor(): string {
    return (this.token ??= encodeEventPosition({ partitions: this.partitions, partition: this.partition, pos: this.pos }));
  }
  toJSON(): { eventId: string; cursor: string; duplicate: boolean } {
    return { eventId: this.eventId, cursor: this.cursor, duplicate: this.duplicate };
  }
}

export class PartitionedLog implements EventLog {
  private readonly backend: LogBackend;
  private readonly retention: RetentionPolicy;
  private readonly log: Logger;
  private readonly live: LiveFeed[] = [];
  private readonly blockMs: number;
  private readonly tailBuffer: number;
  /** the partition count this process runs with: the stored one, which only grows */
  private count: number;
  /** the log's write format as last read (the backend appends in it) */
  private format: WriteFormat = 1;
  /** checks (and raises) the stored partition count; every operation waits for it */
  private readonly ready: Promise<void>;
  private opened = false;
  private refreshing: Promise<void> | undefined;
  private readonly roomStore: RoomStore;
  private closed = false;
  private readonly sessions = new Set<TailSession>();
  private readonly entryEvents = new WeakMap<FeedEntry, LogEvent>();
  /** per live entry: the sync cursors after it, by the cursor before it (a few per entry) */
  private readonly entryCursors = new WeakMap<FeedEntry, Array<{ readonly prev: string; readonly next: string }>>();
  readonly delivery: DeliveryQueue;

  constructor(options: PartitionedLogOptions) {
    this.backend = options.backend;
    this.retention = options.retention;
    this.log = options.log;
    // A live stream's socket buffers too (it pauses at 64 KiB): a short queue per tail keeps
    // thousands of lagging clients' memory small, and one that overflows re-attaches to the
    // live reader's shared ring.
    this.tailBuffer = options.tailBuffer ?? 256;
    this.blockMs = options.blockMs ?? 5000;
    this.count = options.partitions;
    this.ready = this.init(options.partitions);
    // Awaited by every operation; a refusal (a lowered count) surfaces there and in open().
    this.ready.catch(() => undefined);
    this.delivery = createDeliveryQueue({
      backend: this.backend,
      live: (p) => this.liveFeed(p),
      partitions: () => this.count,
      whenReady: () => this.whenReady(),
      toLogEvent: (p, pos, draft) => this.toLogEvent(p, pos, draft),
      partitionOfRoom: async (room) => (await this.roomPartition(room)) ?? -1,
    });
    const rooms = this.backend.rooms;
    const ready = () => this.whenReady();
    this.roomStore = {
      put: async (spec: RoomSpec) => (await ready(), rooms.put(spec)),
      get: async (room: string) => (await ready(), rooms.get(room)),
      list: async () => (await ready(), rooms.list()),
      delete: async (room: string) => (await ready(), rooms.delete(room)),
      watch: (listener: (room: string) => void) => rooms.watch(listener),
    };
  }

  get info(): EventLogInfo {
    return { backend: this.backend.backend, durable: this.backend.durable, partitions: this.count };
  }

  get rooms(): RoomStore {
    return this.roomStore;
  }

  /** Resolves once the stored partition count is checked (and raised to the configured one); rejects with SG_ERR_PARTITIONS_LOWERED. */
  open(): Promise<void> {
    return this.ready;
  }

  private whenReady(): Promise<void> | void {
    if (!this.opened) return this.ready;
  }

  private async init(configured: number): Promise<void> {
    const { partitions: stored, format } = await this.backend.openPartitions(configured);
    this.format = format;
    if (configured < stored) {
      throw new SyncgateError(
        'SG_ERR_PARTITIONS_LOWERED',
        `partitions: ${configured} is lower than this log's ${stored}; the partition count can only be raised — set partitions (SYNCGATE_PARTITIONS) to ${stored} or more`,
        { configured, stored },
      );
    }
    // this.count is the configured count already: equal to the stored one, or raised to it now
    if (configured > stored) await this.raiseTo(configured);
    this.opened = true;
  }

  /**
   * Raises the partition count of the log (the admin command; a replica
   * started with a larger `partitions` does the same). Rooms keep their
   * partitions; new rooms spread over all of them. Lowering is refused.
   */
  async raisePartitions(count: number): Promise<number> {
    await this.ready;
    this.ensureOpen();
    if (!Number.isInteger(count) || count < 1 || count > MAX_PARTITIONS) throw new SyncgateError('SG_ERR_PARAM_INVALID', `partitions must be an integer in 1..${MAX_PARTITIONS}`);
    const stored = await this.backend.readPartitions();
    if (count < stored) {
      throw new SyncgateError('SG_ERR_PARTITIONS_LOWERED', `${count} is lower than this log's ${stored}; the partition count can only be raised`, { configured: count, stored });
    }
    if (count > stored) await this.raiseTo(count);
    else this.count = Math.max(this.count, stored);
    return this.count;
  }

  /**
   * Every consumer group of partition 0 is created on the new partitions at
   * their start before the count is stored: no room can be assigned to a new
   * partition before its groups exist, so delivery misses nothing there.
   */
  private async raiseTo(count: number): Promise<void> {
    const from = Math.max(1, await this.backend.readPartitions());
    const groups = await this.backend.groupNames(0);
    for (let p = from; p < count; p++) await Promise.all(groups.map((g) => this.backend.groupCreate(p, g, true)));
    const stored = await this.backend.raisePartitions(count);
    this.log.info({ from, to: stored, groups }, 'partition count raised');
    this.count = Math.max(this.count, stored);
  }

  /** The stored write format, read again (another replica may have raised it). */
  async writeFormat(): Promise<WriteFormat> {
    await this.ready;
    this.ensureOpen();
    await this.refresh();
    return this.format;
  }

  /**
   * Raises the log's write format (the admin command): from then on every
   * replica appends in it, so raise it only once no replica of a build that
   * cannot read it runs (format 1 alone, or 1 and 2). Lowering is refused.
   */
  async raiseWriteFormat(format: WriteFormat): Promise<WriteFormat> {
    await this.ready;
    this.ensureOpen();
    if (format !== 1 && format !== 2 && format !== 3) throw new SyncgateError('SG_ERR_PARAM_INVALID', 'format must be 1, 2 or 3');
    const stored = await this.backend.readWriteFormat();
    if (format < stored) {
      throw new SyncgateError('SG_ERR_LOG_FORMAT_LOWERED', `format ${format} is lower than this log's ${stored}; the write format can only be raised`, { wanted: format, stored });
    }
    this.format = await this.backend.raiseWriteFormat(format);
    if (this.format > stored) this.log.info({ from: stored, to: this.format }, 'log write format raised');
    return this.format;
  }

  async partitionCount(): Promise<number> {
    await this.ready;
    this.ensureOpen();
    await this.refresh();
    return this.count;
  }

  /** Another replica may have raised the count: follow it (rooms it created may live on partitions new to this process). */
  private refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const [stored, format] = await Promise.all([this.backend.readPartitions(), this.backend.readWriteFormat()]);
        if (format !== this.format) {
          this.log.info({ from: this.format, to: format }, 'the log write format was raised by another replica: following it');
          this.format = format;
        }
        if (stored > this.count) {
          this.log.warn({ from: this.count, to: stored }, 'the partition count was raised by another replica: following it (set partitions to it in this replica\'s configuration)');
          this.count = stored;
        }
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /** The room's partition from the directory (cached: rooms never move); undefined for a room that never existed. */
  async roomPartition(room: string): Promise<number | undefined> {
    const known = this.backend.knownRoomPartition(room);
    if (known !== undefined && known < this.count) return known;
    await this.whenReady();
    const partition = known ?? (await this.backend.roomPartition(room));
    if (partition !== undefined && partition >= this.count) await this.refresh();
    return partition;
  }

  private liveFeed(partition: number): LiveFeed {
    let feed = this.live[partition];
    if (!feed) {
      feed = new LiveFeed({ partition, backend: this.backend, blockMs: this.blockMs, log: this.log });
      if (this.closed) feed.stop();
      this.live[partition] = feed;
    }
    return feed;
  }

  /** The partitions a room filter covers, with its rooms in each (rooms that do not exist are left out). */
  async plan(rooms: RoomFilter): Promise<ReadPlan> {
    await this.whenReady();
    if (rooms === 'all') return { partitions: Array.from({ length: this.count }, (_, p) => p), rooms: undefined, match: matcher(rooms) };
    const byPartition = new Map<number, string[]>();
    const unknown: string[] = [];
    for (const room of rooms) {
      const known = this.backend.knownRoomPartition(room);
      if (known !== undefined && known < this.count) byPartition.set(known, [...(byPartition.get(known) ?? []), room]);
      else unknown.push(room);
    }
    const found = await Promise.all(unknown.map((room) => this.roomPartition(room)));
    unknown.forEach((room, i) => {
      const p = found[i];
      if (p !== undefined) byPartition.set(p, [...(byPartition.get(p) ?? []), room]);
    });
    return { partitions: [...byPartition.keys()].sort((a, b) => a - b), rooms: byPartition, match: matcher(rooms) };
  }

  /** A sync cursor's positions; a partition this log does not have is refused (after checking for a raise). */
  private async cursorOf(since: string | undefined): Promise<SyncCursor> {
    if (since === undefined) return startCursor();
    const cursor = decodeSyncCursor(since);
    await this.checkCursor(cursor);
    return cursor;
  }

  async checkCursor(cursor: SyncCursor): Promise<void> {
    await this.whenReady();
    const highest = Math.max(-1, ...cursor.keys());
    if (highest >= this.count) await this.refresh();
    if (highest >= this.count) {
      throw new SyncgateError('SG_ERR_CURSOR_INVALID', `the cursor names partition ${highest}, this log has ${this.count} partitions: it was made for another log; sync again without since`);
    }
  }

  get available(): boolean {
    return !this.closed && this.backend.available;
  }

  get state() {
    return this.backend.state;
  }

  private ensureOpen(): void {
    if (this.closed) throw new SyncgateError('SG_ERR_LOG_CLOSED');
  }

  /** A room-scoped lookup field: idempotency keys and aliases of different rooms never collide. */
  private idField(room: string, key: string): string {
    return `${room}\u0000${key}`;
  }

  /**
   * The LogEvent of a feed entry, built once per entry object: a live entry
   * fans out to every tail, which then share one (read-only) event object.
   */
  eventOfEntry(partition: number, entry: FeedEntry, draft: EventDraft): LogEvent {
    let event = this.entryEvents.get(entry);
    if (!event) {
      event = this.toLogEvent(partition, entry.pos, draft);
      this.entryEvents.set(entry, event);
    }
    return event;
  }

  /**
   * The sync cursor after `entry` for a tail whose cursor before it was `prev`
   * and whose positions are now `positions` (the entry's included). The same
   * `prev` and entry always give the same cursor, so tails in step (live
   * clients of the same rooms) share one encoding instead of one each.
   */
  cursorAfter(entry: FeedEntry, prev: string, positions: SyncCursor): string {
    let known = this.entryCursors.get(entry);
    const hit = known?.find((k) => k.prev === prev);
    if (hit) return hit.next;
    const next = encodeSyncCursor(positions);
    if (!known) this.entryCursors.set(entry, (known = []));
    if (known.length >= 4) known.shift();
    known.push({ prev, next });
    return next;
  }

  /** an event's position token (its `cursor`) */
  private eventCursor(partition: number, pos: StreamPos): string {
    return encodeEventPosition({ partitions: Math.max(this.count, partition + 1), partition, pos });
  }

  toLogEvent(partition: number, pos: StreamPos, draft: EventDraft): LogEvent {
    // Object.assign, not `{ ...draft, eventId, cursor }`: the same copy, but V8's spread
    // followed by more properties took ~2 µs an event, more than decoding it (issue 19).
    const event = Object.assign({}, draft) as EventDraft & { eventId: string; cursor: string };
    event.eventId = eventIdFor(partition, pos);
    event.cursor = this.eventCursor(partition, pos);
    return event;
  }

  async append(input: EventDraft, options: AppendOptions = {}): Promise<AppendResult> {
    this.ensureOpen();
    const draft = parseEventDraft(input);
    if (!isTimelineKind(draft.kind)) {
      throw new SyncgateError('SG_ERR_EVENT_INVALID', `kind ${draft.kind} is not kept in the room timeline`);
    }
    const known = this.backend.knownRoomPartition(draft.room);
    const partition = known !== undefined && known < this.count ? known : await this.roomPartition(draft.room);
    if (partition === undefined) throw new SyncgateError('SG_ERR_ROOM_UNKNOWN', draft.room);
    if (!this.opened) await this.ready;
    const outcome = await this.backend.append({
      partition,
      draft,
      idemField: this.idField(draft.room, draft.idem),
      aliasFields: (options.aliases ?? []).map((key) => this.idField(draft.room, key)),
    });
    if (outcome.status === 'room-unknown') throw new SyncgateError('SG_ERR_ROOM_UNKNOWN', draft.room);
    return new Appended(Math.max(this.count, partition + 1), partition, outcome.pos, outcome.status === 'duplicate');
  }

  /**
   * True when retention removed entries after `cursor` in a partition the
   * cursor names: from the feed, or from the rooms read directly. A partition
   * the cursor does not name is new to the device (a room granted since): it
   * is read from the oldest event kept, which is no gap for this device.
   */
  private async isLimited(cursor: SyncCursor, plan: ReadPlan): Promise<boolean> {
    const checks = plan.partitions.map(async (p) => {
      const pos = cursor.get(p);
      if (pos === undefined) return false;
      const direct = this.directRooms(plan, p);
      if (direct?.length === 0) return false;
      // an unavailable partition is not read either (see read): it is checked when it is back
      const marks = await skipUnavailable(direct ? this.backend.roomsTrimmedUpTo(p, direct) : this.backend.trimmedUpTo(p).then((t) => [t]));
      return (marks ?? []).some((t) => comparePos(t, pos) > 0);
    });
    return (await Promise.all(checks)).some(Boolean);
  }

  async read(since: string | undefined, options: ReadOptions): Promise<ReadResult> {
    const page = await this.readEntries(since, options);
    let limited = page.limited;
    const events: LogEvent[] = [];
    for (const { p, entry } of page.entries) {
      if (entry.toEvent) {
        const event = entry.toEvent(eventIdFor(p, entry.pos), this.eventCursor(p, entry.pos));
        if (event === undefined) limited = true;
        else events.push(event);
      } else if (entry.draft === undefined) limited = true;
      else events.push(this.toLogEvent(p, entry.pos, entry.draft));
    }
    return { events, next: page.next, limited };
  }

  async readJson(since: string | undefined, options: ReadOptions, view: DeviceView): Promise<JsonReadResult> {
    const page = await this.readEntries(since, options);
    let limited = page.limited;
    const events: string[] = [];
    for (const { p, entry } of page.entries) {
      const stored = entry.stored;
      const json =
        stored === undefined
          ? undefined
          : viewJsonOfStored(stored, entry.room, eventIdFor(p, entry.pos), this.eventCursor(p, entry.pos), view, entry.storedBase);
      if (json !== undefined) events.push(json);
      else if (entry.draft === undefined) limited = true;
      else events.push(viewJsonOfEvent(this.toLogEvent(p, entry.pos, entry.draft), view));
    }
    return { events, next: page.next, limited };
  }

  /** The entries of a read() page, in order, with its next cursor; `limited` as far as the cursor tells (a missing entry adds to it). */
  private async readEntries(since: string | undefined, options: ReadOptions): Promise<{ entries: Array<{ p: number; entry: FeedEntry }>; next: string; limited: boolean }> {
    this.ensureOpen();
    checkLimit(options.limit);
    const cursor = await this.cursorOf(since);
    const plan = await this.plan(options.rooms);
    // Asked alongside the reads, not before them: a round trip less per page (issue 19).
    const limitedCheck = since === undefined ? Promise.resolve(false) : this.isLimited(cursor, plan);
    limitedCheck.catch(() => undefined);

    // Partitions share the page: each round gives every partition that may have
    // more an equal quota of what is left, at least one entry each, so every
    // partition is looked at even when the limit is smaller than their number.
    // Only the partitions of the rooms read: the next cursor names those alone.
    const positions = new Map<number, StreamPos>(plan.partitions.map((p) => [p, cursor.get(p) ?? ZERO_POS]));
    const collected: Array<{ p: number; entry: FeedEntry }> = [];
    let active = [...plan.partitions];
    const unavailable: SyncgateError[] = [];
    let answered = 0;
    // A partition's share of a round is weighted by the rooms read there (traffic comes per
    // room): with equal shares, a partition of one room ran dry pages before one of four, and
    // pages came back part full (118 pages for a 100,000-event backlog of 32 rooms at
    // limit 1,000, issue 19). Reading all rooms of the filter, every partition weighs the same.
    const weight = (p: number) => Math.max(1, plan.rooms?.get(p)?.length ?? 1);
    for (let round = 0; round < 4 && active.length > 0; round++) {
      const remaining = options.limit - collected.length;
      // Another round costs a round trip (the partitions' reads go out together): only while
      // the page is less than nine tenths full.
      if (remaining <= 0 || (round > 0 && collected.length >= options.limit * 0.9)) break;
      const total = active.reduce((sum, p) => sum + weight(p), 0);
      const quotas = active.map((p) => Math.max(1, Math.ceil((remaining * weight(p)) / total)));
      const scans = await Promise.all(active.map((p, i) => skipUnavailable(this.scanPartition(plan, p, positions.get(p) ?? ZERO_POS, quotas[i] ?? 1), (err) => unavailable.push(err))));
      const stillActive: number[] = [];
      scans.forEach((scan, i) => {
        const p = active[i] ?? 0;
        // An unavailable partition (a lost cluster shard) keeps its position: its events come once it is back.
        if (!scan) return;
        if (round === 0) answered++;
        positions.set(p, scan.scannedTo);
        for (const entry of scan.entries) collected.push({ p, entry });
        if (scan.entries.length === quotas[i] && !scan.exhausted) stillActive.push(p);
      });
      active = stillActive;
    }
    // Only when none of the partitions holding the rooms answered: the read has nothing to give.
    const [first] = unavailable;
    if (first && answered === 0) throw first;
    // The page keeps the earliest `limit` entries; a partition whose later entries do
    // not fit resumes just before the first of them, so they come on the next page.
    collected.sort((a, b) => comparePos(a.entry.pos, b.entry.pos) || a.p - b.p);
    for (const { p, entry } of collected.splice(options.limit)) {
      const resume = justBefore(entry.pos);
      if (comparePos(resume, positions.get(p) ?? ZERO_POS) < 0) positions.set(p, resume);
    }
    return { entries: collected, next: encodeSyncCursor(positions), limited: await limitedCheck };
  }

  /**
   * One page of a partition after `after` for a room filter. A room's timeline
   * entries carry their feed ids, so for a known, small set of rooms reading
   * their timelines directly gives exactly the feed entries of those rooms —
   * without scanning other rooms' traffic; otherwise the feed is scanned.
   */
  readPartition(plan: ReadPlan, partition: number, after: StreamPos, count: number): Promise<FeedPage> {
    const direct = this.directRooms(plan, partition);
    if (!direct) return this.backend.readFeed(partition, after, count, plan.match);
    return this.readRoomsDirect(partition, direct, after, count);
  }

  private directRooms(plan: ReadPlan, partition: number): readonly string[] | undefined {
    if (plan.rooms === undefined) return undefined;
    const mine = plan.rooms.get(partition) ?? [];
    return mine.length <= DIRECT_ROOMS_MAX ? mine : undefined;
  }

  private async readRoomsDirect(partition: number, rooms: readonly string[], after: StreamPos, count: number): Promise<FeedPage> {
    if (rooms.length === 0) return { entries: [], scannedTo: after, scanned: 0 };
    if (rooms.length === 1) {
      const only = await this.backend.roomRange(partition, rooms[0] ?? '', after, 'f', count);
      // fewer than asked: the room has no more (no second read to learn it)
      return { entries: only, scannedTo: only.at(-1)?.pos ?? after, scanned: only.length, exhausted: only.length < count };
    }
    // A k-way merge page: each room gives a share; only entries up to the lowest last position
    // of a room that filled its share are certainly complete, the rest come next page.
    const share = Math.ceil(count / rooms.length) + 8;
    const lists = await Promise.all(rooms.map((room) => this.backend.roomRange(partition, room, after, 'f', share)));
    let bound: StreamPos | undefined;
    for (const list of lists) {
      const last = list.at(-1);
      if (list.length === share && last && (!bound || comparePos(last.pos, bound) < 0)) bound = last.pos;
    }
    const all = lists
      .flat()
      .filter((e) => !bound || comparePos(e.pos, bound) <= 0)
      .sort((a, b) => comparePos(a.pos, b.pos));
    const merged = all.slice(0, count);
    // no room filled its share and nothing was cut: every room has no more
    return { entries: merged, scannedTo: merged.at(-1)?.pos ?? after, scanned: merged.length, exhausted: bound === undefined && all.length <= count };
  }

  /** Up to `limit` matching entries of one partition after `from`, examining at most SCAN_BUDGET entries. */
  private async scanPartition(plan: ReadPlan, partition: number, from: StreamPos, limit: number) {
    const entries: FeedEntry[] = [];
    let scannedTo = from;
    let scanned = 0;
    let exhausted = false;
    while (entries.length < limit && scanned < SCAN_BUDGET) {
      const page = await this.readPartition(plan, partition, scannedTo, Math.min(SCAN_PAGE, Math.max(limit - entries.length, 16)));
      if (page.scanned === 0) {
        exhausted = true;
        break;
      }
      scanned += page.scanned;
      for (const entry of page.entries) {
        if (entries.length === limit) break;
        entries.push(entry);
      }
      // Stopped early inside the page: resume after the last entry kept.
      scannedTo = entries.length === limit ? (entries.at(-1)?.pos ?? page.scannedTo) : page.scannedTo;
      // A direct room read that came back short is the end: no read more just to find nothing (issue 24, point 4).
      if (page.exhausted && entries.length < limit) {
        exhausted = true;
        break;
      }
    }
    return { entries, scannedTo, exhausted };
  }

  async head(rooms: RoomFilter = 'all'): Promise<string> {
    this.ensureOpen();
    const plan = await this.plan(rooms);
    const bounds = await Promise.all(plan.partitions.map((p) => this.backend.feedBounds(p)));
    return encodeSyncCursor(new Map(plan.partitions.map((p, i) => [p, bounds[i]?.last ?? ZERO_POS])));
  }

  async latest(options: ReadOptions): Promise<ReadResult> {
    this.ensureOpen();
    checkLimit(options.limit);
    const plan = await this.plan(options.rooms);
    const match = plan.match;
    // The head first: every event read below is at or before it, so `next` misses nothing.
    const bounds = await Promise.all(plan.partitions.map((p) => this.backend.feedBounds(p)));
    const head = new Map(plan.partitions.map((p, i) => [p, bounds[i]?.last ?? ZERO_POS]));
    const pages = await Promise.all(
      [...head].map(async ([p, pos]) => {
        const end: StreamPos = { ms: pos.ms, seq: pos.seq + 1 };
        const direct = this.directRooms(plan, p);
        if (direct) {
          // a few rooms: their own newest entries, not a scan of the partition's other traffic
          const lists = await Promise.all(direct.map((room) => this.backend.roomRange(p, room, end, 'b', options.limit)));
          return lists.flat().map((entry) => ({ p, entry }));
        }
        const entries: FeedEntry[] = [];
        let before: StreamPos | undefined = end;
        let scanned = 0;
        while (entries.length < options.limit && scanned < SCAN_BUDGET && before) {
          const page = await this.backend.readFeedReverse(p, before, SCAN_PAGE, match);
          if (page.scanned === 0) break;
          scanned += page.scanned;
          entries.push(...page.entries);
          before = page.scannedTo;
        }
        return entries.map((entry) => ({ p, entry }));
      }),
    );
    const newest = pages
      .flat()
      .filter((x): x is { p: number; entry: FeedEntry & { draft: EventDraft } } => x.entry.draft !== undefined)
      .map((x) => this.toLogEvent(x.p, x.entry.pos, x.entry.draft))
      .sort((a, b) => (a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0))
      .slice(-options.limit);
    return { events: newest, next: encodeSyncCursor(head), limited: false };
  }

  tail(since: string | undefined, options: TailOptions): AsyncIterable<TailItem> {
    this.ensureOpen();
    // The token is checked here (a bad one throws at once); its partitions when the tail starts.
    const cursor = since === undefined ? startCursor() : decodeSyncCursor(since);
    const session = new TailSession({
      log: this,
      live: (p) => this.liveFeed(p),
      cursor,
      rooms: options.rooms,
      buffer: this.tailBuffer,
      checkLimited: since !== undefined,
      signal: options.signal,
      onClose: (s) => this.sessions.delete(s),
    });
    this.sessions.add(session);
    return session;
  }

  /** for TailSession: the cursor's partitions checked, the plan of its rooms */
  async prepareTail(cursor: SyncCursor, rooms: RoomFilter): Promise<ReadPlan> {
    await this.checkCursor(cursor);
    return this.plan(rooms);
  }

  /** for TailSession */
  limitedAt(cursor: SyncCursor, plan: ReadPlan): Promise<boolean> {
    return this.isLimited(cursor, plan);
  }

  private positionOf(partition: number, token: string): StreamPos {
    const position = decodeEventPosition(token);
    if (position.partition !== partition) {
      throw new SyncgateError('SG_ERR_CURSOR_INVALID', 'the position belongs to another room');
    }
    return position.pos;
  }

  async roomHistory(room: string, options: HistoryOptions): Promise<HistoryPage> {
    this.ensureOpen();
    checkLimit(options.limit);
    if (!(await this.rooms.get(room))) throw new SyncgateError('SG_ERR_ROOM_UNKNOWN', room);
    const p = await this.roomPartition(room);
    if (p === undefined) throw new SyncgateError('SG_ERR_ROOM_UNKNOWN', room);
    const from = options.from === undefined ? undefined : this.positionOf(p, options.from);
    const entries = await this.backend.roomRange(p, room, from, options.dir, options.limit + 1);
    const more = entries.length > options.limit;
    const page = entries.slice(0, options.limit);
    const events = page.flatMap((e) => (e.draft ? [this.toLogEvent(p, e.pos, e.draft)] : []));
    let limited = false;
    if (options.dir === 'b' && !more) {
      const bounds = await this.backend.roomBounds(p, room);
      limited = comparePos(bounds.maxDeleted, ZERO_POS) > 0;
    }
    const last = page.at(-1);
    const result: { events: LogEvent[]; limited: boolean; next?: string } = { events, limited };
    if (more && last) result.next = encodeEventPosition({ partitions: Math.max(this.count, p + 1), partition: p, pos: last.pos });
    return result;
  }

  async getEvent(room: string, eventId: string): Promise<LogEvent | undefined> {
    this.ensureOpen();
    const location = locateEventId(eventId);
    const p = await this.roomPartition(room);
    if (!location || p === undefined || location.partition !== p) return undefined;
    const [entry] = await this.backend.roomRange(p, room, justBefore(location.pos), 'f', 1);
    if (!entry?.draft || comparePos(entry.pos, location.pos) !== 0) return undefined;
    return this.toLogEvent(p, entry.pos, entry.draft);
  }

  async resolve(room: string, key: string): Promise<string | undefined> {
    this.ensureOpen();
    const p = await this.roomPartition(room);
    if (p === undefined) return undefined;
    const [pos] = await this.backend.lookup(p, [this.idField(room, key)]);
    return pos ? eventIdFor(p, pos) : undefined;
  }

  async alias(room: string, eventId: string, keys: readonly string[]): Promise<void> {
    this.ensureOpen();
    const p = await this.roomPartition(room);
    const location = locateEventId(eventId);
    if (!location || p === undefined || location.partition !== p) throw new SyncgateError('SG_ERR_EVENT_UNKNOWN', eventId);
    if (keys.length === 0) return;
    await this.backend.addAliases(
      p,
      location.pos,
      keys.map((k) => this.idField(room, k)),
    );
  }

  async appendTelemetry(input: DraftOf<'telemetry'>): Promise<{ id: string }> {
    this.ensureOpen();
    const draft = parseEventDraft(input);
    if (draft.kind !== 'telemetry') throw new SyncgateError('SG_ERR_EVENT_INVALID', 'expected a telemetry event');
    const p = await this.roomPartition(draft.room);
    if (p === undefined || !(await this.rooms.get(draft.room))) throw new SyncgateError('SG_ERR_ROOM_UNKNOWN', draft.room);
    return { id: await this.backend.appendTelemetry(p, draft) };
  }

  async telemetry(room: string, limit: number, page: TelemetryPage = {}): Promise<TelemetryEntry[]> {
    this.ensureOpen();
    checkLimit(limit);
    const entryPos = (id: string): StreamPos => {
      // A telemetry cursor is the id of an entry (`ms-seq`).
      if (!/^\d{1,16}-\d{1,16}$/.test(id)) throw new SyncgateError('SG_ERR_CURSOR_INVALID', 'not a telemetry entry id');
      return parseStreamId(id);
    };
    const p = await this.roomPartition(room);
    if (p === undefined) return [];
    const rows = await this.backend.telemetry(p, room, limit, {
      ...(page.before !== undefined ? { before: entryPos(page.before) } : {}),
      ...(page.after !== undefined ? { after: entryPos(page.after) } : {}),
    });
    return rows.map((r) => ({ id: r.id, event: r.draft }));
  }

  async trim(): Promise<void> {
    this.ensureOpen();
    if (this.retention.maxAgeMs <= 0) return;
    const cutoff = Date.now() - this.retention.maxAgeMs;
    const rooms = await this.rooms.list();
    const byPartition = new Map<number, string[]>();
    for (const r of rooms) {
      const p = await this.roomPartition(r.id);
      if (p !== undefined) byPartition.set(p, [...(byPartition.get(p) ?? []), r.id]);
    }
    await Promise.all(Array.from({ length: this.count }, (_, p) => this.backend.trimByAge(p, byPartition.get(p) ?? [], cutoff)));
  }

  ping(): Promise<void> {
    return this.backend.ping();
  }

  unavailablePartitions(): Promise<number[]> {
    this.ensureOpen();
    return this.backend.unavailablePartitions();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const s of [...this.sessions]) s.close();
    for (const feed of this.live) feed?.stop();
    await this.backend.close();
  }
}

/**
 * The result, or undefined when the partition is unavailable (a Redis Cluster
 * shard lost with no replica: SG_ERR_LOG_PARTITION_UNAVAILABLE); other errors
 * are thrown as they are.
 */
async function skipUnavailable<T>(work: Promise<T>, onUnavailable?: (err: SyncgateError) => void): Promise<T | undefined> {
  try {
    return await work;
  } catch (err) {
    if (!isSyncgateError(err, 'SG_ERR_LOG_PARTITION_UNAVAILABLE')) throw err;
    onUnavailable?.(err);
    return undefined;
  }
}

/** Resolves after pending I/O callbacks ran: a loop that awaits it cannot starve the process. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

interface TailSessionOptions {
  readonly log: PartitionedLog;
  readonly live: (partition: number) => LiveFeed;
  readonly cursor: SyncCursor;
  readonly rooms: RoomFilter;
  readonly buffer: number;
  readonly checkLimited: boolean;
  readonly signal: AbortSignal | undefined;
  readonly onClose: (session: TailSession) => void;
}

/**
 * One subscriber across the partitions of its rooms. Each partition runs a
 * pump that reads history into the session queue (waiting for space) and then
 * attaches to the live reader; a live push that finds the queue full detaches
 * the partition, which goes back to reading history from where it was.
 * Memory stays bounded and no event is dropped. Every item's `next` names the
 * partitions of the session's rooms only.
 */
class TailSession implements AsyncIterable<TailItem>, AsyncIterator<TailItem> {
  private readonly o: TailSessionOptions;
  private readonly positions = new Map<number, StreamPos>();
  private readonly queue: TailItem[] = [];
  private readonly sinks = new Map<number, LiveSink>();
  private readonly detached = new Map<number, () => void>();
  private reader: ((r: IteratorResult<TailItem>) => void) | undefined;
  private readonly spaceWaiters: Array<() => void> = [];
  /** waiting until the queue is at most half full */
  private readonly roomWaiters: Array<() => void> = [];
  /** partitions whose live follow was dropped because the queue was full */
  private readonly fellBehind = new Set<number>();
  private closed = false;
  private failure: unknown;
  private started = false;
  /** the sync cursor of `positions` when known (set by deliver, cleared by moveTo) */
  private token: string | undefined;

  constructor(options: TailSessionOptions) {
    this.o = options;
    options.signal?.addEventListener('abort', () => this.close(), { once: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<TailItem> {
    return this;
  }

  private start(): void {
    this.started = true;
    void this.run();
  }

  private async run(): Promise<void> {
    try {
      const plan = await this.o.log.prepareTail(this.o.cursor, this.o.rooms);
      for (const p of plan.partitions) this.positions.set(p, this.o.cursor.get(p) ?? ZERO_POS);
      if (this.o.checkLimited && (await this.o.log.limitedAt(this.o.cursor, plan))) {
        await this.push({ type: 'limited', next: encodeSyncCursor(this.positions) });
      }
      await Promise.all(plan.partitions.map((p) => this.pump(plan, p)));
    } catch (err) {
      if (!this.closed) {
        this.failure = err;
        this.wake();
      }
    }
  }

  private async pump(plan: ReadPlan, partition: number): Promise<void> {
    const feed = this.o.live(partition);
    let failures = 0;
    while (!this.closed) {
      if (this.fellBehind.has(partition)) {
        // Fell behind live (the queue was full). Once the stream took half the queue,
        // go back to the live reader's buffer while it still holds our position: its
        // entries are shared by every tail. Only what it no longer holds is read from
        // the store, by each tail for itself.
        this.fellBehind.delete(partition);
        await this.waitForRoom();
        if (this.closed) return;
        if (feed.holds(this.position(partition)) && (await this.followLive(plan, partition, feed))) continue;
      }
      // A tail whose queue is full holds no page of history: it reads once there is space.
      await this.waitForSpace();
      if (this.closed) return;
      // Taken before the read: every entry up to it exists already, so the read covers them.
      const covered = feed.coveredAfter();
      const page = await skipUnavailable(this.o.log.readPartition(plan, partition, this.position(partition), Math.min(SCAN_PAGE, Math.max(16, this.o.buffer))));
      if (this.closed) return;
      if (!page) {
        // The partition is unavailable (a lost cluster shard): the others go on; this one
        // tries again, backing off, and resumes from where it was once it is back.
        failures++;
        await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 100 * 2 ** Math.min(failures, 6))));
        continue;
      }
      failures = 0;
      if (page.scanned > 0) {
        for (const entry of page.entries) {
          await this.waitForSpace();
          if (this.closed) return;
          this.deliver(partition, entry, false);
        }
        if (comparePos(page.scannedTo, this.position(partition)) > 0) this.moveTo(partition, page.scannedTo);
        continue;
      }
      // History is exhausted. A read of the device's own rooms ends where their last
      // entry is, which can be long before the live reader's start; nothing of those
      // rooms lies in between, so move up to it rather than be refused forever.
      if (covered && comparePos(covered, this.position(partition)) > 0) this.moveTo(partition, covered);
      // Switch to live: `attach` replays what the live reader buffered after our
      // position, or refuses when its buffer starts later.
      if (!(await this.followLive(plan, partition, feed))) {
        // The reader moved on since `covered` was taken, or has not confirmed its start
        // yet: read again after other work had its turn, so a tail never holds the loop.
        await nextTurn();
      }
    }
  }

  /** Attaches to the partition's live reader and follows it until detached; false when it refused. */
  private async followLive(plan: ReadPlan, partition: number, feed: LiveFeed): Promise<boolean> {
    const detached = new Promise<void>((resolve) => this.detached.set(partition, resolve));
    const sink: LiveSink = {
      position: () => this.position(partition),
      push: (entry) => this.livePush(plan, partition, entry),
    };
    if (!feed.attach(sink)) {
      this.detached.delete(partition);
      return false;
    }
    this.sinks.set(partition, sink);
    await detached;
    this.sinks.delete(partition);
    return true;
  }

  private position(partition: number): StreamPos {
    return this.positions.get(partition) ?? ZERO_POS;
  }

  /** Called synchronously by the live reader. Returns false to be detached. */
  private livePush(plan: ReadPlan, partition: number, entry: FeedEntry): boolean {
    if (this.closed) return false;
    if (comparePos(entry.pos, this.position(partition)) <= 0) return true;
    if (!plan.match(entry.room)) {
      this.moveTo(partition, entry.pos);
      return true;
    }
    if (this.queue.length >= this.o.buffer) {
      // Too slow for live: fall back from the last queued position (pump).
      this.fellBehind.add(partition);
      this.detachPartition(partition);
      return false;
    }
    this.deliver(partition, entry, true);
    return true;
  }

  private detachPartition(partition: number): void {
    const resolve = this.detached.get(partition);
    this.detached.delete(partition);
    resolve?.();
  }

  /** Moves a partition's position without delivering anything. */
  private moveTo(partition: number, pos: StreamPos): void {
    this.positions.set(partition, pos);
    this.token = undefined;
  }

  /** `live`: the entry came from the shared live reader (every tail in step gets the same object). */
  private deliver(partition: number, entry: FeedEntry, live: boolean): void {
    const prev = this.token;
    this.positions.set(partition, entry.pos);
    // Live tails in the same place share their cursors: the next one is looked up, not encoded, when another tail made it.
    const next = prev === undefined || !live ? encodeSyncCursor(this.positions) : this.o.log.cursorAfter(entry, prev, this.positions);
    this.token = next;
    if (entry.draft === undefined) {
      this.enqueue({ type: 'limited', next });
    } else {
      this.enqueue({ type: 'event', event: this.o.log.eventOfEntry(partition, entry, entry.draft), next });
    }
  }

  private async push(item: TailItem): Promise<void> {
    await this.waitForSpace();
    if (!this.closed) this.enqueue(item);
  }

  private enqueue(item: TailItem): void {
    const reader = this.reader;
    if (reader) {
      this.reader = undefined;
      reader({ value: item, done: false });
    } else {
      this.queue.push(item);
    }
  }

  private waitForSpace(): Promise<void> {
    if (this.queue.length < this.o.buffer || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.spaceWaiters.push(resolve));
  }

  private waitForRoom(): Promise<void> {
    if (this.queue.length <= this.o.buffer / 2 || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  private wake(): void {
    const reader = this.reader;
    if (!reader) return;
    this.reader = undefined;
    reader({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<TailItem>> {
    if (!this.started) this.start();
    const item = this.queue.shift();
    if (item) {
      if (this.queue.length < this.o.buffer) this.spaceWaiters.splice(0).forEach((w) => w());
      if (this.queue.length <= this.o.buffer / 2 && this.roomWaiters.length > 0) this.roomWaiters.splice(0).forEach((w) => w());
      return Promise.resolve({ value: item, done: false });
    }
    if (this.failure !== undefined) {
      const err = this.failure;
      this.failure = undefined;
      this.close();
      return Promise.reject(err);
    }
    if (this.closed) return Promise.resolve({ value: undefined, done: true });
    this.spaceWaiters.splice(0).forEach((w) => w());
    this.roomWaiters.splice(0).forEach((w) => w());
    return new Promise((resolve) => (this.reader = resolve));
  }

  return(): Promise<IteratorResult<TailItem>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [p, sink] of this.sinks) this.o.live(p).detach(sink);
    for (const p of [...this.detached.keys()]) this.detachPartition(p);
    this.queue.length = 0;
    this.spaceWaiters.splice(0).forEach((w) => w());
    this.roomWaiters.splice(0).forEach((w) => w());
    this.wake();
    this.o.onClose(this);
  }
}
