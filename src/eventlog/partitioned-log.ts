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
  EventLog,
  EventLogInfo,
  HistoryOptions,
  HistoryPage,
  ReadOptions,
  ReadResult,
  RoomFilter,
  TailItem,
  TailOptions,
  TelemetryEntry,
  TelemetryPage,
} from '../core/ports.js';
import { ZERO_POS, comparePos, eventIdFor, justBefore, locateEventId, parseStreamId, partitionOf, type StreamPos } from '../core/position.js';
import type { FeedEntry, FeedPage, LogBackend, RetentionPolicy, RoomFilterFn } from './backend.js';
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
  readonly info: EventLogInfo;
  private readonly backend: LogBackend;
  private readonly retention: RetentionPolicy;
  private readonly log: Logger;
  private readonly live: LiveFeed[];
  private readonly tailBuffer: number;
  private closed = false;
  private readonly sessions = new Set<TailSession>();
  private readonly entryEvents = new WeakMap<FeedEntry, LogEvent>();
  readonly delivery: DeliveryQueue;

  constructor(options: PartitionedLogOptions) {
    this.backend = options.backend;
    this.retention = options.retention;
    this.log = options.log;
    this.tailBuffer = options.tailBuffer ?? 1024;
    this.info = Object.freeze({ backend: this.backend.backend, durable: this.backend.durable, partitions: this.backend.partitions });
    this.live = Array.from(
      { length: this.backend.partitions },
      (_, p) => new LiveFeed({ partition: p, backend: this.backend, blockMs: options.blockMs ?? 5000, log: this.log }),
    );
    this.delivery = createDeliveryQueue({
      backend: this.backend,
      live: this.live,
      toLogEvent: (p, pos, draft) => this.toLogEvent(p, pos, draft),
      partitionOfRoom: (room) => this.roomPartition(room),
    });
  }

  get rooms() {
    return this.backend.rooms;
  }

  get available(): boolean {
    return !this.closed && this.backend.available;
  }

  get state() {
    return this.backend.state;
  }

  private get partitions(): number {
    return this.backend.partitions;
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

  toLogEvent(partition: number, pos: StreamPos, draft: EventDraft): LogEvent {
    return {
      ...draft,
      eventId: eventIdFor(partition, pos),
      cursor: encodeEventPosition({ partitions: this.partitions, partition, pos }),
    };
  }

  async append(input: EventDraft, options: AppendOptions = {}): Promise<AppendResult> {
    this.ensureOpen();
    const draft = parseEventDraft(input);
    if (!isTimelineKind(draft.kind)) {
      throw new SyncgateError('SG_ERR_EVENT_INVALID', `kind ${draft.kind} is not kept in the room timeline`);
    }
    const partition = partitionOf(draft.room, this.partitions);
    const outcome = await this.backend.append({
      partition,
      draft,
      idemField: this.idField(draft.room, draft.idem),
      aliasFields: (options.aliases ?? []).map((key) => this.idField(draft.room, key)),
    });
    if (outcome.status === 'room-unknown') throw new SyncgateError('SG_ERR_ROOM_UNKNOWN', draft.room);
    return new Appended(this.partitions, partition, outcome.pos, outcome.status === 'duplicate');
  }

  decodeCursor(since: string | undefined): SyncCursor {
    return since === undefined ? startCursor(this.partitions) : decodeSyncCursor(since, this.partitions);
  }

  /** True when retention removed entries after `cursor`: from a partition feed, or from a room read directly. */
  private async isLimited(cursor: SyncCursor, rooms: RoomFilter): Promise<boolean> {
    const checks = cursor.map(async (pos, p) => {
      const direct = this.directRooms(p, rooms);
      if (direct?.length === 0) return false;
      // an unavailable partition is not read either (see read): it is checked when it is back
      const marks = await skipUnavailable(direct ? this.backend.roomsTrimmedUpTo(p, direct) : this.backend.trimmedUpTo(p).then((t) => [t]));
      return (marks ?? []).some((t) => comparePos(t, pos) > 0);
    });
    return (await Promise.all(checks)).some(Boolean);
  }

  async read(since: string | undefined, options: ReadOptions): Promise<ReadResult> {
    this.ensureOpen();
    checkLimit(options.limit);
    const cursor = this.decodeCursor(since);
    let limited = since !== undefined && (await this.isLimited(cursor, options.rooms));

    // Partitions share the page: each round gives every partition that may have
    // more an equal quota of what is left, at least one entry each, so every
    // partition is looked at even when the limit is smaller than their number.
    const positions = [...cursor];
    const collected: Array<{ p: number; entry: FeedEntry }> = [];
    let active = positions.map((_, p) => p).filter((p) => this.directRooms(p, options.rooms)?.length !== 0);
    const unavailable: SyncgateError[] = [];
    let answered = 0;
    for (let round = 0; round < 4 && active.length > 0; round++) {
      const remaining = options.limit - collected.length;
      // Another round costs a round trip per partition: only when the page is less than half full.
      if (remaining <= 0 || (round > 0 && collected.length >= options.limit / 2)) break;
      const quota = Math.max(1, Math.ceil(remaining / active.length));
      const scans = await Promise.all(active.map((p) => skipUnavailable(this.scanPartition(p, positions[p] ?? ZERO_POS, quota, options.rooms), (err) => unavailable.push(err))));
      const stillActive: number[] = [];
      scans.forEach((scan, i) => {
        const p = active[i] ?? 0;
        // An unavailable partition (a lost cluster shard) keeps its position: its events come once it is back.
        if (!scan) return;
        if (round === 0) answered++;
        positions[p] = scan.scannedTo;
        for (const entry of scan.entries) collected.push({ p, entry });
        if (scan.entries.length === quota && !scan.exhausted) stillActive.push(p);
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
      if (comparePos(resume, positions[p] ?? ZERO_POS) < 0) positions[p] = resume;
    }
    const events: LogEvent[] = [];
    for (const { p, entry } of collected) {
      if (entry.draft === undefined) limited = true;
      else events.push(this.toLogEvent(p, entry.pos, entry.draft));
    }
    return { events, next: encodeSyncCursor(positions), limited };
  }

  /**
   * One page of a partition after `after` for a room filter. A room's timeline
   * entries carry their feed ids, so for a known, small set of rooms reading
   * their timelines directly gives exactly the feed entries of those rooms —
   * without scanning other rooms' traffic; otherwise the feed is scanned.
   */
  readPartition(partition: number, after: StreamPos, count: number, rooms: RoomFilter): Promise<FeedPage> {
    const direct = this.directRooms(partition, rooms);
    if (!direct) return this.backend.readFeed(partition, after, count, matcher(rooms));
    return this.readRoomsDirect(partition, direct, after, count);
  }

  private directRooms(partition: number, rooms: RoomFilter): string[] | undefined {
    if (rooms === 'all') return undefined;
    const mine = [...rooms].filter((room) => this.roomPartition(room) === partition);
    return mine.length <= DIRECT_ROOMS_MAX ? mine : undefined;
  }

  private async readRoomsDirect(partition: number, rooms: readonly string[], after: StreamPos, count: number): Promise<FeedPage> {
    if (rooms.length === 0) return { entries: [], scannedTo: after, scanned: 0 };
    if (rooms.length === 1) {
      const only = await this.backend.roomRange(partition, rooms[0] ?? '', after, 'f', count);
      return { entries: only, scannedTo: only.at(-1)?.pos ?? after, scanned: only.length };
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
    const merged = lists
      .flat()
      .filter((e) => !bound || comparePos(e.pos, bound) <= 0)
      .sort((a, b) => comparePos(a.pos, b.pos))
      .slice(0, count);
    return { entries: merged, scannedTo: merged.at(-1)?.pos ?? after, scanned: merged.length };
  }

  /** Up to `limit` matching entries of one partition after `from`, examining at most SCAN_BUDGET entries. */
  private async scanPartition(partition: number, from: StreamPos, limit: number, rooms: RoomFilter) {
    const entries: FeedEntry[] = [];
    let scannedTo = from;
    let scanned = 0;
    let exhausted = false;
    while (entries.length < limit && scanned < SCAN_BUDGET) {
      const page = await this.readPartition(partition, scannedTo, Math.min(SCAN_PAGE, Math.max(limit - entries.length, 16)), rooms);
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
    }
    return { entries, scannedTo, exhausted };
  }

  async head(): Promise<string> {
    this.ensureOpen();
    const bounds = await Promise.all(Array.from({ length: this.partitions }, (_, p) => this.backend.feedBounds(p)));
    return encodeSyncCursor(bounds.map((b) => b.last ?? ZERO_POS));
  }

  async latest(options: ReadOptions): Promise<ReadResult> {
    this.ensureOpen();
    checkLimit(options.limit);
    const match = matcher(options.rooms);
    // The head first: every event read below is at or before it, so `next` misses nothing.
    const bounds = await Promise.all(Array.from({ length: this.partitions }, (_, p) => this.backend.feedBounds(p)));
    const head = bounds.map((b) => b.last ?? ZERO_POS);
    const pages = await Promise.all(
      head.map(async (pos, p) => {
        const entries: FeedEntry[] = [];
        let before: StreamPos | undefined = { ms: pos.ms, seq: pos.seq + 1 };
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
    const cursor = this.decodeCursor(since);
    const session = new TailSession({
      log: this,
      backend: this.backend,
      live: this.live,
      cursor,
      rooms: options.rooms,
      match: matcher(options.rooms),
      buffer: this.tailBuffer,
      checkLimited: since !== undefined,
      signal: options.signal,
      onClose: (s) => this.sessions.delete(s),
    });
    this.sessions.add(session);
    return session;
  }

  /** for TailSession */
  limitedAt(cursor: SyncCursor, rooms: RoomFilter): Promise<boolean> {
    return this.isLimited(cursor, rooms);
  }

  private roomPartition(room: string): number {
    return partitionOf(room, this.partitions);
  }

  private positionOf(room: string, token: string): StreamPos {
    const position = decodeEventPosition(token, this.partitions);
    if (position.partition !== this.roomPartition(room)) {
      throw new SyncgateError('SG_ERR_CURSOR_INVALID', 'the position belongs to another room');
    }
    return position.pos;
  }

  async roomHistory(room: string, options: HistoryOptions): Promise<HistoryPage> {
    this.ensureOpen();
    checkLimit(options.limit);
    if (!(await this.rooms.get(room))) throw new SyncgateError('SG_ERR_ROOM_UNKNOWN', room);
    const p = this.roomPartition(room);
    const from = options.from === undefined ? undefined : this.positionOf(room, options.from);
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
    if (more && last) result.next = encodeEventPosition({ partitions: this.partitions, partition: p, pos: last.pos });
    return result;
  }

  async getEvent(room: string, eventId: string): Promise<LogEvent | undefined> {
    this.ensureOpen();
    const location = locateEventId(eventId);
    const p = this.roomPartition(room);
    if (!location || location.partition !== p) return undefined;
    const [entry] = await this.backend.roomRange(p, room, justBefore(location.pos), 'f', 1);
    if (!entry?.draft || comparePos(entry.pos, location.pos) !== 0) return undefined;
    return this.toLogEvent(p, entry.pos, entry.draft);
  }

  async resolve(room: string, key: string): Promise<string | undefined> {
    this.ensureOpen();
    const p = this.roomPartition(room);
    const [pos] = await this.backend.lookup(p, [this.idField(room, key)]);
    return pos ? eventIdFor(p, pos) : undefined;
  }

  async alias(room: string, eventId: string, keys: readonly string[]): Promise<void> {
    this.ensureOpen();
    const p = this.roomPartition(room);
    const location = locateEventId(eventId);
    if (!location || location.partition !== p) throw new SyncgateError('SG_ERR_EVENT_UNKNOWN', eventId);
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
    if (!(await this.rooms.get(draft.room))) throw new SyncgateError('SG_ERR_ROOM_UNKNOWN', draft.room);
    return { id: await this.backend.appendTelemetry(this.roomPartition(draft.room), draft) };
  }

  async telemetry(room: string, limit: number, page: TelemetryPage = {}): Promise<TelemetryEntry[]> {
    this.ensureOpen();
    checkLimit(limit);
    const entryPos = (id: string): StreamPos => {
      // A telemetry cursor is the id of an entry (`ms-seq`).
      if (!/^\d{1,16}-\d{1,16}$/.test(id)) throw new SyncgateError('SG_ERR_CURSOR_INVALID', 'not a telemetry entry id');
      return parseStreamId(id);
    };
    const rows = await this.backend.telemetry(this.roomPartition(room), room, limit, {
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
      const p = this.roomPartition(r.id);
      byPartition.set(p, [...(byPartition.get(p) ?? []), r.id]);
    }
    await Promise.all(Array.from({ length: this.partitions }, (_, p) => this.backend.trimByAge(p, byPartition.get(p) ?? [], cutoff)));
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
    for (const feed of this.live) feed.stop();
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
  readonly backend: LogBackend;
  readonly live: readonly LiveFeed[];
  readonly cursor: SyncCursor;
  readonly rooms: RoomFilter;
  readonly match: RoomFilterFn;
  readonly buffer: number;
  readonly checkLimited: boolean;
  readonly signal: AbortSignal | undefined;
  readonly onClose: (session: TailSession) => void;
}

/**
 * One subscriber across all partitions. Each partition runs a pump that reads
 * history into the session queue (waiting for space) and then attaches to the
 * live reader; a live push that finds the queue full detaches the partition,
 * which goes back to reading history from where it was. Memory stays bounded
 * and no event is dropped.
 */
class TailSession implements AsyncIterable<TailItem>, AsyncIterator<TailItem> {
  private readonly o: TailSessionOptions;
  private readonly positions: StreamPos[];
  private readonly queue: TailItem[] = [];
  private readonly sinks: Array<LiveSink | undefined>;
  private readonly detached: Array<(() => void) | undefined>;
  private reader: ((r: IteratorResult<TailItem>) => void) | undefined;
  private readonly spaceWaiters: Array<() => void> = [];
  private closed = false;
  private failure: unknown;
  private started = false;

  constructor(options: TailSessionOptions) {
    this.o = options;
    this.positions = [...options.cursor];
    this.sinks = options.cursor.map(() => undefined);
    this.detached = options.cursor.map(() => undefined);
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
      if (this.o.checkLimited && (await this.o.log.limitedAt(this.positions, this.o.rooms))) {
        await this.push({ type: 'limited', next: encodeSyncCursor(this.positions) });
      }
      await Promise.all(this.positions.map((_, p) => this.pump(p)));
    } catch (err) {
      if (!this.closed) {
        this.failure = err;
        this.wake();
      }
    }
  }

  private async pump(partition: number): Promise<void> {
    const feed = this.o.live[partition];
    if (!feed) return;
    let failures = 0;
    while (!this.closed) {
      // Taken before the read: every entry up to it exists already, so the read covers them.
      const covered = feed.coveredAfter();
      const page = await skipUnavailable(this.o.log.readPartition(partition, this.position(partition), SCAN_PAGE, this.o.rooms));
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
          this.deliver(partition, entry);
        }
        if (comparePos(page.scannedTo, this.position(partition)) > 0) this.positions[partition] = page.scannedTo;
        continue;
      }
      // History is exhausted. A read of the device's own rooms ends where their last
      // entry is, which can be long before the live reader's start; nothing of those
      // rooms lies in between, so move up to it rather than be refused forever.
      if (covered && comparePos(covered, this.position(partition)) > 0) this.positions[partition] = covered;
      // Switch to live: `attach` replays what the live reader buffered after our
      // position, or refuses when its buffer starts later.
      const detached = new Promise<void>((resolve) => (this.detached[partition] = resolve));
      const sink: LiveSink = {
        position: () => this.position(partition),
        push: (entry) => this.livePush(partition, entry),
      };
      if (!feed.attach(sink)) {
        this.detached[partition] = undefined;
        // The reader moved on since `covered` was taken, or has not confirmed its start
        // yet: read again after other work had its turn, so a tail never holds the loop.
        await nextTurn();
        continue;
      }
      this.sinks[partition] = sink;
      await detached;
      this.sinks[partition] = undefined;
    }
  }

  private position(partition: number): StreamPos {
    return this.positions[partition] ?? ZERO_POS;
  }

  /** Called synchronously by the live reader. Returns false to be detached. */
  private livePush(partition: number, entry: FeedEntry): boolean {
    if (this.closed) return false;
    if (comparePos(entry.pos, this.position(partition)) <= 0) return true;
    if (!this.o.match(entry.room)) {
      this.positions[partition] = entry.pos;
      return true;
    }
    if (this.queue.length >= this.o.buffer) {
      // Too slow for live: fall back to history from the last queued position.
      this.detachPartition(partition);
      return false;
    }
    this.deliver(partition, entry);
    return true;
  }

  private detachPartition(partition: number): void {
    const resolve = this.detached[partition];
    this.detached[partition] = undefined;
    resolve?.();
  }

  private deliver(partition: number, entry: FeedEntry): void {
    this.positions[partition] = entry.pos;
    const next = encodeSyncCursor(this.positions);
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
    return new Promise((resolve) => (this.reader = resolve));
  }

  return(): Promise<IteratorResult<TailItem>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sinks.forEach((sink, p) => {
      if (sink) this.o.live[p]?.detach(sink);
      this.detachPartition(p);
    });
    this.queue.length = 0;
    this.spaceWaiters.splice(0).forEach((w) => w());
    this.wake();
    this.o.onClose(this);
  }
}
