/**
 * In-process backend: the embedded default for `npm start` without Redis and
 * for fast tests. Same semantics as the Redis backend (ids, retention,
 * idempotency), nothing survives a restart.
 */
import { EventEmitter } from 'node:events';
import type { DraftOf, EventDraft } from '../core/event.js';
import { SyncgateError } from '../core/errors.js';
import { FENCE_FIELD, type RoomSpec, type RoomStore, type StateStore } from '../core/ports.js';
import { MAX_PARTITIONS, ZERO_POS, fnv1a32, comparePos, justBefore, parseStreamId, posToString, type StreamPos } from '../core/position.js';
import type { AppendOutcome, AppendRequest, DeadRecord, FeedEntry, FeedPage, GroupEntry, GroupLag, LogBackend, PartitionMeta, ReplayEntry, RetentionPolicy, RoomFilterFn, StreamBounds } from './backend.js';
import { LATEST_WRITE_FORMAT, fencedWrite, type WriteFormat } from './backend.js';
import { LATEST_KEY_LAYOUT, keyGroupOf } from './keys.js';

interface Stored {
  readonly pos: StreamPos;
  readonly draft: EventDraft;
}

class MemoryStream<T extends { pos: StreamPos }> {
  entries: T[] = [];
  maxDeleted: StreamPos = ZERO_POS;

  /** index of the first entry with pos > after */
  private upperBound(after: StreamPos): number {
    let lo = 0;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const e = this.entries[mid];
      if (e && comparePos(e.pos, after) <= 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  after(after: StreamPos, count: number): T[] {
    const i = this.upperBound(after);
    return this.entries.slice(i, i + count);
  }

  before(before: StreamPos | undefined, count: number): T[] {
    const end = before === undefined ? this.entries.length : this.upperBound(justBefore(before));
    return this.entries.slice(Math.max(0, end - count), end).reverse();
  }

  get(pos: StreamPos): T | undefined {
    const e = this.entries[this.upperBound(justBefore(pos))];
    return e && comparePos(e.pos, pos) === 0 ? e : undefined;
  }

  trimTo(maxLen: number): void {
    if (maxLen <= 0 || this.entries.length <= maxLen) return;
    const removed = this.entries.splice(0, this.entries.length - maxLen);
    const last = removed.at(-1);
    if (last) this.maxDeleted = last.pos;
  }

  trimBefore(cutoffMs: number): void {
    const i = this.upperBound({ ms: cutoffMs - 1, seq: Number.MAX_SAFE_INTEGER });
    if (i === 0) return;
    const removed = this.entries.splice(0, i);
    const last = removed.at(-1);
    if (last) this.maxDeleted = last.pos;
  }

  bounds(): StreamBounds {
    return { first: this.entries[0]?.pos, last: this.entries.at(-1)?.pos, maxDeleted: this.maxDeleted };
  }
}

interface ConsumerGroup {
  last: StreamPos;
  /** stream id text → owner and position, like a Redis pending-entries list */
  readonly pending: Map<string, { pos: StreamPos; consumer: string; deliveredAt: number }>;
}

interface Partition {
  readonly feed: MemoryStream<{ pos: StreamPos; room: string }>;
  readonly rooms: Map<string, MemoryStream<Stored>>;
  readonly telemetry: Map<string, Array<{ id: string; draft: DraftOf<'telemetry'> }>>;
  /** idempotency keys and aliases in time buckets, like the Redis layout */
  readonly ids: Map<number, Map<string, StreamPos>>;
  last: StreamPos;
  telemetrySeq: number;
  readonly groups: Map<string, ConsumerGroup>;
  readonly leases: Map<string, { owner: string; expiresAt: number }>;
  /** each lease's fencing token: kept when the lease lapses, so it only grows */
  readonly leaseTokens: Map<string, number>;
  readonly dead: Array<DeadRecord>;
  readonly replay: Array<DeadRecord>;
  readonly delivered: Map<string, string>;
  deadSeq: number;
}

class MemoryRoomStore implements RoomStore {
  private readonly specs = new Map<string, RoomSpec>();
  private readonly events = new EventEmitter();

  /** `assign` gives a new room its partition (the directory) */
  constructor(private readonly assign: (room: string) => void) {}

  put(spec: RoomSpec): Promise<void> {
    this.assign(spec.id);
    this.specs.set(spec.id, structuredClone(spec));
    this.events.emit('change', spec.id);
    return Promise.resolve();
  }
  get(room: string): Promise<RoomSpec | undefined> {
    const spec = this.specs.get(room);
    return Promise.resolve(spec ? structuredClone(spec) : undefined);
  }
  has(room: string): boolean {
    return this.specs.has(room);
  }
  list(): Promise<RoomSpec[]> {
    return Promise.resolve([...this.specs.values()].map((s) => structuredClone(s)).sort((a, b) => a.id.localeCompare(b.id)));
  }
  delete(room: string): Promise<boolean> {
    const had = this.specs.delete(room);
    if (had) this.events.emit('change', room);
    return Promise.resolve(had);
  }
  watch(listener: (room: string) => void): Promise<() => void> {
    this.events.on('change', listener);
    return Promise.resolve(() => this.events.off('change', listener));
  }
}

class MemoryStateStore implements StateStore {
  private readonly maps = new Map<string, Map<string, string>>();
  private ns(ns: string): Map<string, string> {
    let m = this.maps.get(ns);
    if (!m) this.maps.set(ns, (m = new Map()));
    return m;
  }
  get(ns: string, key: string): Promise<string | undefined> {
    return Promise.resolve(this.ns(ns).get(key));
  }
  set(ns: string, key: string, value: string): Promise<void> {
    this.ns(ns).set(key, value);
    return Promise.resolve();
  }
  setIfAbsent(ns: string, key: string, value: string): Promise<boolean> {
    const m = this.ns(ns);
    if (m.has(key)) return Promise.resolve(false);
    m.set(key, value);
    return Promise.resolve(true);
  }
  delete(ns: string, key: string): Promise<boolean> {
    return Promise.resolve(this.ns(ns).delete(key));
  }
  entries(ns: string): Promise<Array<[string, string]>> {
    return Promise.resolve([...this.ns(ns).entries()]);
  }
  advance(ns: string, key: string, value: string): Promise<string> {
    const m = this.ns(ns);
    const current = m.get(key);
    if (current === undefined || value > current) {
      m.set(key, value);
      return Promise.resolve(value);
    }
    return Promise.resolve(current);
  }
  update(ns: string, set: ReadonlyArray<readonly [string, string]>, del: readonly string[]): Promise<void> {
    const m = this.ns(ns);
    for (const k of del) m.delete(k);
    for (const [k, v] of set) m.set(k, v);
    return Promise.resolve();
  }
  fencedUpdate(ns: string, token: number, set: ReadonlyArray<readonly [string, string]>, del: readonly string[]): Promise<number> {
    const m = this.ns(ns);
    const stored = Number(m.get(FENCE_FIELD) ?? '0');
    if (token < stored) return Promise.reject(fencedWrite(ns, token, stored));
    let deleted = 0;
    const keep = new Set(set.map(([k]) => k));
    for (const k of del) if (!keep.has(k) && m.delete(k)) deleted += 1;
    m.set(FENCE_FIELD, String(token));
    for (const [k, v] of set) m.set(k, v);
    return Promise.resolve(deleted);
  }
}

export interface MemoryBackendOptions {
  readonly partitions: number;
  readonly retention: RetentionPolicy;
  /** for tests: the clock used for stream ids and id buckets */
  readonly now?: () => number;
  /**
   * for tests: the store as a build before the format gate left it — the
   * partition count stored, no write format (so the log writes format 1)
   */
  readonly beforeFormatGate?: boolean;
}

export class MemoryBackend implements LogBackend {
  readonly backend = 'memory' as const;
  readonly durable = false;
  readonly available = true;
  readonly rooms: MemoryRoomStore;
  readonly state: StateStore = new MemoryStateStore();
  private readonly parts: Partition[] = [];
  private readonly retention: RetentionPolicy;
  private readonly now: () => number;
  private readonly waiters: Array<Set<() => void>> = [];
  private closed = false;
  /** the stored partition count (0 until a log opened this backend) */
  private storedPartitions = 0;
  /** the stored write format; undefined: none stored (a new log stores the latest at open) */
  private storedFormat: WriteFormat | undefined;
  private readonly configured: number;
  /** room → partition: an entry is never removed, so a room never moves */
  private readonly roomParts = new Map<string, number>();
  /** logs sharing this backend (replicas in one process, in tests); the last to close closes it */
  private users = 0;

  constructor(options: MemoryBackendOptions) {
    this.configured = options.partitions;
    this.retention = options.retention;
    this.now = options.now ?? Date.now;
    if (options.beforeFormatGate) this.storedPartitions = options.partitions;
    this.rooms = new MemoryRoomStore((room) => void this.assignRoomPartition(room, fnv1a32(room)));
  }

  /** Another log over the same store: close() closes it only after every user closed. */
  attach(): this {
    // a log opened again over a store whose logs all closed: a restart, the data kept
    if (this.users === 0) this.closed = false;
    this.users++;
    return this;
  }

  openPartitions(configured: number): Promise<PartitionMeta> {
    this.closedCheck();
    if (this.storedPartitions === 0) this.storedFormat ??= LATEST_WRITE_FORMAT;
    if (this.storedPartitions === 0) this.storedPartitions = configured;
    return Promise.resolve({ partitions: this.storedPartitions, format: this.storedFormat ?? 1 });
  }

  readWriteFormat(): Promise<WriteFormat> {
    this.closedCheck();
    return Promise.resolve(this.storedFormat ?? 1);
  }

  raiseWriteFormat(format: WriteFormat): Promise<WriteFormat> {
    this.closedCheck();
    if (format > (this.storedFormat ?? 1)) this.storedFormat = format;
    return Promise.resolve(this.storedFormat ?? 1);
  }

  readPartitions(): Promise<number> {
    this.closedCheck();
    return Promise.resolve(this.storedPartitions);
  }

  raisePartitions(count: number): Promise<number> {
    this.closedCheck();
    this.storedPartitions = Math.max(this.storedPartitions, count);
    return Promise.resolve(this.storedPartitions);
  }

  knownRoomPartition(room: string): number | undefined {
    return this.roomParts.get(room);
  }

  roomPartition(room: string): Promise<number | undefined> {
    return Promise.resolve(this.roomParts.get(room));
  }

  assignRoomPartition(room: string, hash: number): Promise<number> {
    let partition = this.roomParts.get(room);
    if (partition === undefined) {
      partition = hash % (this.storedPartitions || this.configured);
      this.roomParts.set(room, partition);
    }
    return Promise.resolve(partition);
  }

  groupNames(partition: number): Promise<string[]> {
    this.closedCheck();
    return Promise.resolve([...this.part(partition).groups.keys()]);
  }

  private newPartition(): Partition {
    return {
      feed: new MemoryStream(),
      rooms: new Map(),
      telemetry: new Map(),
      ids: new Map(),
      last: ZERO_POS,
      telemetrySeq: 0,
      groups: new Map(),
      leases: new Map(),
      leaseTokens: new Map(),
      dead: [],
      replay: [],
      delivered: new Map(),
      deadSeq: 0,
    };
  }

  /** partitions come into being when first used: the count is the log's business */
  private part(p: number): Partition {
    if (!Number.isInteger(p) || p < 0 || p >= MAX_PARTITIONS) throw new SyncgateError('SG_ERR_INTERNAL', `no partition ${p}`);
    let part = this.parts[p];
    if (!part) {
      part = this.newPartition();
      this.parts[p] = part;
      this.waiters[p] = new Set();
    }
    return part;
  }

  private closedCheck(): void {
    if (this.closed) throw new SyncgateError('SG_ERR_LOG_CLOSED');
  }

  private bucket(): number {
    return Math.floor(this.now() / this.retention.idTtlMs);
  }

  private lookupOne(part: Partition, field: string): StreamPos | undefined {
    const b = this.bucket();
    for (const key of [...part.ids.keys()]) if (key < b - 1) part.ids.delete(key);
    return part.ids.get(b)?.get(field) ?? part.ids.get(b - 1)?.get(field);
  }

  private idsBucket(part: Partition): Map<string, StreamPos> {
    const b = this.bucket();
    let m = part.ids.get(b);
    if (!m) part.ids.set(b, (m = new Map()));
    return m;
  }

  /** Redis stream id rules: the clock, but never backwards. */
  private nextPos(part: Partition): StreamPos {
    const ms = this.now();
    const pos = ms > part.last.ms ? { ms, seq: 0 } : { ms: part.last.ms, seq: part.last.seq + 1 };
    part.last = pos;
    return pos;
  }

  append(request: AppendRequest): Promise<AppendOutcome> {
    this.closedCheck();
    const { draft } = request;
    if (!this.rooms.has(draft.room) || this.roomParts.get(draft.room) !== request.partition) return Promise.resolve({ status: 'room-unknown' });
    const part = this.part(request.partition);
    const existing = this.lookupOne(part, request.idemField);
    if (existing) return Promise.resolve({ status: 'duplicate', pos: existing });
    const pos = this.nextPos(part);
    part.feed.entries.push({ pos, room: draft.room });
    part.feed.trimTo(this.retention.feedMaxLen);
    let room = part.rooms.get(draft.room);
    if (!room) part.rooms.set(draft.room, (room = new MemoryStream()));
    room.entries.push({ pos, draft: structuredClone(draft) });
    room.trimTo(this.retention.roomMaxLen);
    const ids = this.idsBucket(part);
    ids.set(request.idemField, pos);
    for (const alias of request.aliasFields) if (!ids.has(alias)) ids.set(alias, pos);
    const waiters = this.waiters[request.partition];
    if (waiters) {
      for (const wake of waiters) wake();
      waiters.clear();
    }
    return Promise.resolve({ status: 'appended', pos });
  }

  private withDrafts(part: Partition, entries: Array<{ pos: StreamPos; room: string }>): FeedEntry[] {
    return entries.map((e) => ({ pos: e.pos, room: e.room, draft: part.rooms.get(e.room)?.get(e.pos)?.draft }));
  }

  private page(part: Partition, raw: Array<{ pos: StreamPos; room: string }>, from: StreamPos, match: RoomFilterFn): FeedPage {
    const matching = raw.filter((e) => match(e.room));
    return { entries: this.withDrafts(part, matching), scannedTo: raw.at(-1)?.pos ?? from, scanned: raw.length };
  }

  readFeed(partition: number, after: StreamPos, count: number, match: RoomFilterFn): Promise<FeedPage> {
    this.closedCheck();
    const part = this.part(partition);
    return Promise.resolve(this.page(part, part.feed.after(after, count), after, match));
  }

  readFeedReverse(partition: number, before: StreamPos | undefined, count: number, match: RoomFilterFn): Promise<FeedPage> {
    this.closedCheck();
    const part = this.part(partition);
    return Promise.resolve(this.page(part, part.feed.before(before, count), before ?? ZERO_POS, match));
  }

  async waitFeed(partition: number, after: StreamPos, timeoutMs: number, count: number): Promise<FeedEntry[]> {
    this.closedCheck();
    const part = this.part(partition);
    const ready = () => part.feed.after(after, count);
    let found = ready();
    if (found.length === 0) {
      const waiters = this.waiters[partition];
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, timeoutMs);
        function done(): void {
          clearTimeout(timer);
          waiters?.delete(done);
          resolve();
        }
        waiters?.add(done);
      });
      this.closedCheck();
      found = ready();
    }
    return this.withDrafts(part, found);
  }

  feedBounds(partition: number): Promise<StreamBounds> {
    return Promise.resolve(this.part(partition).feed.bounds());
  }

  trimmedUpTo(partition: number): Promise<StreamPos> {
    return Promise.resolve(this.part(partition).feed.maxDeleted);
  }

  roomsTrimmedUpTo(partition: number, rooms: readonly string[]): Promise<StreamPos[]> {
    const part = this.part(partition);
    return Promise.resolve(rooms.map((room) => part.rooms.get(room)?.maxDeleted ?? ZERO_POS));
  }

  roomBounds(partition: number, room: string): Promise<StreamBounds> {
    const stream = this.part(partition).rooms.get(room);
    return Promise.resolve(stream ? stream.bounds() : { first: undefined, last: undefined, maxDeleted: ZERO_POS });
  }

  roomRange(partition: number, room: string, from: StreamPos | undefined, dir: 'f' | 'b', count: number): Promise<FeedEntry[]> {
    this.closedCheck();
    const stream = this.part(partition).rooms.get(room);
    if (!stream) return Promise.resolve([]);
    const rows = dir === 'f' ? stream.after(from ?? ZERO_POS, count) : stream.before(from, count);
    return Promise.resolve(rows.map((r) => ({ pos: r.pos, room, draft: r.draft })));
  }

  lookup(partition: number, fields: readonly string[]): Promise<Array<StreamPos | undefined>> {
    this.closedCheck();
    const part = this.part(partition);
    return Promise.resolve(fields.map((f) => this.lookupOne(part, f)));
  }

  addAliases(partition: number, pos: StreamPos, fields: readonly string[]): Promise<void> {
    this.closedCheck();
    const ids = this.idsBucket(this.part(partition));
    for (const f of fields) if (!ids.has(f)) ids.set(f, pos);
    return Promise.resolve();
  }

  appendTelemetry(partition: number, draft: DraftOf<'telemetry'>): Promise<string> {
    this.closedCheck();
    const part = this.part(partition);
    let rows = part.telemetry.get(draft.room);
    if (!rows) part.telemetry.set(draft.room, (rows = []));
    const id = posToString({ ms: this.now(), seq: part.telemetrySeq++ });
    rows.push({ id, draft: structuredClone(draft) });
    const excess = rows.length - this.retention.telemetryMaxLen;
    if (this.retention.telemetryMaxLen > 0 && excess > 0) rows.splice(0, excess);
    return Promise.resolve(id);
  }

  telemetry(partition: number, room: string, limit: number, page: { readonly before?: StreamPos; readonly after?: StreamPos } = {}): Promise<Array<{ id: string; draft: DraftOf<'telemetry'> }>> {
    const rows = this.part(partition).telemetry.get(room) ?? [];
    const { before, after } = page;
    if (after !== undefined) return Promise.resolve(rows.filter((r) => comparePos(parseStreamId(r.id), after) > 0).slice(0, limit));
    const older = before === undefined ? rows : rows.filter((r) => comparePos(parseStreamId(r.id), before) < 0);
    return Promise.resolve(older.slice(-limit).reverse());
  }

  trimByAge(partition: number, rooms: readonly string[], cutoffMs: number): Promise<void> {
    const part = this.part(partition);
    part.feed.trimBefore(cutoffMs);
    for (const room of rooms) part.rooms.get(room)?.trimBefore(cutoffMs);
    return Promise.resolve();
  }

  // --- outbound delivery, with Redis consumer-group semantics

  private group(partition: number, group: string): ConsumerGroup {
    const g = this.part(partition).groups.get(group);
    if (!g) throw new SyncgateError('SG_ERR_INTERNAL', `no consumer group ${group} on partition ${partition}`);
    return g;
  }

  private groupEntry(part: Partition, id: string, pos: StreamPos): GroupEntry {
    const room = part.feed.get(pos)?.room ?? '';
    return { id, pos, room, draft: room ? part.rooms.get(room)?.get(pos)?.draft : undefined };
  }

  groupCreate(partition: number, group: string, fromStart = false): Promise<void> {
    this.closedCheck();
    const part = this.part(partition);
    if (!part.groups.has(group)) part.groups.set(group, { last: fromStart ? ZERO_POS : part.last, pending: new Map() });
    return Promise.resolve();
  }

  groupRead(partition: number, group: string, consumer: string, mode: 'new' | 'pending', count: number): Promise<GroupEntry[]> {
    this.closedCheck();
    const part = this.part(partition);
    const g = this.group(partition, group);
    if (mode === 'pending') {
      const mine = [...g.pending.entries()].filter(([, p]) => p.consumer === consumer).sort((a, b) => comparePos(a[1].pos, b[1].pos));
      return Promise.resolve(mine.slice(0, count).map(([id, p]) => this.groupEntry(part, id, p.pos)));
    }
    const fresh = part.feed.after(g.last, count);
    const out = fresh.map((e) => {
      const id = posToString(e.pos);
      g.pending.set(id, { pos: e.pos, consumer, deliveredAt: Date.now() });
      return this.groupEntry(part, id, e.pos);
    });
    const last = fresh.at(-1);
    if (last) g.last = last.pos;
    return Promise.resolve(out);
  }

  groupClaim(partition: number, group: string, consumer: string, count: number, minIdleMs: number): Promise<GroupEntry[]> {
    this.closedCheck();
    const part = this.part(partition);
    const g = this.group(partition, group);
    const now = Date.now();
    const others = [...g.pending.entries()]
      .filter(([, p]) => p.consumer !== consumer && now - p.deliveredAt >= minIdleMs)
      .sort((a, b) => comparePos(a[1].pos, b[1].pos))
      .slice(0, count);
    return Promise.resolve(
      others.map(([id, p]) => {
        p.consumer = consumer;
        p.deliveredAt = now;
        return this.groupEntry(part, id, p.pos);
      }),
    );
  }

  /** A partition's delivery leases are its key group's (keys.ts, layout 2): they live on the group's first partition. */
  private leases(partition: number): Map<string, { owner: string; expiresAt: number }> {
    return this.part(keyGroupOf(LATEST_KEY_LAYOUT, partition)).leases;
  }

  leaseGroupOf(partition: number): number {
    return keyGroupOf(LATEST_KEY_LAYOUT, partition);
  }

  private holds(partition: number, group: string, owner: string): boolean {
    const lease = this.leases(partition).get(group);
    return lease !== undefined && lease.owner === owner && lease.expiresAt > Date.now();
  }

  leaseAcquire(partition: number, group: string, owner: string, ttlMs: number, replace?: string): Promise<boolean> {
    this.closedCheck();
    const leases = this.leases(partition);
    const lease = leases.get(group);
    const live = lease !== undefined && lease.expiresAt > Date.now();
    if (live && lease.owner !== owner && lease.owner !== replace) return Promise.resolve(false);
    leases.set(group, { owner, expiresAt: Date.now() + ttlMs });
    // taken (not renewed): a new fencing token, as lease-2.lua
    if (!live || lease.owner !== owner) {
      const tokens = this.part(keyGroupOf(LATEST_KEY_LAYOUT, partition)).leaseTokens;
      tokens.set(group, Math.max((tokens.get(group) ?? 0) + 1, Date.now()));
    }
    return Promise.resolve(true);
  }

  leaseToken(partition: number, group: string, owner: string): Promise<number | undefined> {
    this.closedCheck();
    if (!this.holds(partition, group, owner)) return Promise.resolve(undefined);
    return Promise.resolve(this.part(keyGroupOf(LATEST_KEY_LAYOUT, partition)).leaseTokens.get(group) ?? 0);
  }

  leaseHolder(partition: number, group: string): Promise<string | undefined> {
    this.closedCheck();
    const lease = this.leases(partition).get(group);
    return Promise.resolve(lease && lease.expiresAt > Date.now() ? lease.owner : undefined);
  }

  leaseRelease(partition: number, group: string, owner: string): Promise<void> {
    const leases = this.leases(partition);
    if (leases.get(group)?.owner === owner) leases.delete(group);
    return Promise.resolve();
  }

  groupAck(partition: number, group: string, owner: string, ids: readonly string[]): Promise<boolean> {
    this.closedCheck();
    if (!this.holds(partition, group, owner)) return Promise.resolve(false);
    const g = this.group(partition, group);
    for (const id of ids) g.pending.delete(id);
    return Promise.resolve(true);
  }

  deadLetter(partition: number, group: string, owner: string, entry: { id: string; room: string; eventId: string }, reason: string, attempts: number): Promise<boolean> {
    this.closedCheck();
    const part = this.part(partition);
    if (!this.holds(partition, group, owner)) return Promise.resolve(false);
    part.dead.push({ streamId: posToString({ ms: Date.now(), seq: part.deadSeq++ }), group, room: entry.room, feedId: entry.id, eventId: entry.eventId, reason: reason.slice(0, 1000), attempts, ts: Date.now() });
    this.group(partition, group).pending.delete(entry.id);
    return Promise.resolve(true);
  }

  replays(partition: number, group: string, count: number): Promise<ReplayEntry[]> {
    this.closedCheck();
    const part = this.part(partition);
    return Promise.resolve(
      part.replay
        .filter((d) => d.group === group)
        .slice(0, count)
        .map((d) => ({ ...this.groupEntry(part, d.feedId, parseStreamId(d.feedId)), replayId: d.streamId })),
    );
  }

  replayDone(partition: number, group: string, owner: string, replayId: string): Promise<boolean> {
    this.closedCheck();
    const part = this.part(partition);
    if (!this.holds(partition, group, owner)) return Promise.resolve(false);
    const i = part.replay.findIndex((d) => d.streamId === replayId);
    if (i >= 0) part.replay.splice(i, 1);
    return Promise.resolve(true);
  }

  deadList(partition: number, limit: number): Promise<DeadRecord[]> {
    this.closedCheck();
    return Promise.resolve(this.part(partition).dead.slice(0, limit));
  }

  deadMove(partition: number, streamIds: readonly string[], mode: 'replay' | 'drop'): Promise<number> {
    this.closedCheck();
    const part = this.part(partition);
    let moved = 0;
    for (const id of streamIds) {
      const i = part.dead.findIndex((d) => d.streamId === id);
      if (i < 0) continue;
      const [record] = part.dead.splice(i, 1);
      if (record && mode === 'replay') part.replay.push({ ...record, streamId: posToString({ ms: Date.now(), seq: part.deadSeq++ }) });
      moved++;
    }
    return Promise.resolve(moved);
  }

  pendingCount(partition: number, group: string): Promise<number> {
    return Promise.resolve(this.part(partition).groups.get(group)?.pending.size ?? 0);
  }

  groupLag(partition: number, group: string): Promise<GroupLag> {
    const part = this.part(partition);
    const g = part.groups.get(group);
    if (!g) return Promise.resolve({ events: 0, oldestMs: undefined });
    const unread = part.feed.after(g.last, Number.MAX_SAFE_INTEGER);
    let oldestMs = unread[0]?.pos.ms;
    for (const p of g.pending.values()) if (oldestMs === undefined || p.pos.ms < oldestMs) oldestMs = p.pos.ms;
    return Promise.resolve({ events: unread.length + g.pending.size, oldestMs });
  }

  deadCount(partition: number): Promise<number> {
    return Promise.resolve(this.part(partition).dead.length);
  }

  deliverySet(partition: number, field: string, value: string): Promise<void> {
    this.closedCheck();
    this.part(partition).delivered.set(field, value);
    return Promise.resolve();
  }

  deliveryGet(partition: number, field: string): Promise<string | undefined> {
    this.closedCheck();
    return Promise.resolve(this.part(partition).delivered.get(field));
  }

  deliveryGetMany(partition: number, fields: readonly string[]): Promise<Array<string | undefined>> {
    this.closedCheck();
    const delivered = this.part(partition).delivered;
    return Promise.resolve(fields.map((f) => delivered.get(f)));
  }

  unavailablePartitions(): Promise<number[]> {
    return Promise.resolve([]);
  }

  ping(): Promise<void> {
    this.closedCheck();
    return Promise.resolve();
  }

  close(): Promise<void> {
    if (--this.users > 0) return Promise.resolve();
    this.closed = true;
    for (const set of this.waiters) {
      if (!set) continue;
      for (const wake of set) wake();
      set.clear();
    }
    return Promise.resolve();
  }
}
