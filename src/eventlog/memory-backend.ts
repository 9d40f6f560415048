/**
 * In-process backend: the embedded default for `npm start` without Redis and
 * for fast tests. Same semantics as the Redis backend (ids, retention,
 * idempotency), nothing survives a restart.
 */
import { EventEmitter } from 'node:events';
import type { DraftOf, EventDraft } from '../core/event.js';
import { SyncgateError } from '../core/errors.js';
import type { RoomSpec, RoomStore, StateStore } from '../core/ports.js';
import { ZERO_POS, comparePos, justBefore, posToString, type StreamPos } from '../core/position.js';
import type { AppendOutcome, AppendRequest, FeedEntry, FeedPage, LogBackend, RetentionPolicy, RoomFilterFn, StreamBounds } from './backend.js';

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

interface Partition {
  readonly feed: MemoryStream<{ pos: StreamPos; room: string }>;
  readonly rooms: Map<string, MemoryStream<Stored>>;
  readonly telemetry: Map<string, Array<{ id: string; draft: DraftOf<'telemetry'> }>>;
  /** idempotency keys and aliases in time buckets, like the Redis layout */
  readonly ids: Map<number, Map<string, StreamPos>>;
  last: StreamPos;
  telemetrySeq: number;
}

class MemoryRoomStore implements RoomStore {
  private readonly specs = new Map<string, RoomSpec>();
  private readonly events = new EventEmitter();

  put(spec: RoomSpec): Promise<void> {
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
}

export interface MemoryBackendOptions {
  readonly partitions: number;
  readonly retention: RetentionPolicy;
  /** for tests: the clock used for stream ids and id buckets */
  readonly now?: () => number;
}

export class MemoryBackend implements LogBackend {
  readonly backend = 'memory' as const;
  readonly durable = false;
  readonly partitions: number;
  readonly rooms: MemoryRoomStore;
  readonly state: StateStore = new MemoryStateStore();
  private readonly parts: Partition[];
  private readonly retention: RetentionPolicy;
  private readonly now: () => number;
  private readonly waiters: Array<Set<() => void>>;
  private closed = false;

  constructor(options: MemoryBackendOptions) {
    this.partitions = options.partitions;
    this.retention = options.retention;
    this.now = options.now ?? Date.now;
    this.rooms = new MemoryRoomStore();
    this.parts = Array.from({ length: options.partitions }, () => ({
      feed: new MemoryStream(),
      rooms: new Map(),
      telemetry: new Map(),
      ids: new Map(),
      last: ZERO_POS,
      telemetrySeq: 0,
    }));
    this.waiters = this.parts.map(() => new Set());
  }

  private part(p: number): Partition {
    const part = this.parts[p];
    if (!part) throw new SyncgateError('SG_ERR_INTERNAL', `no partition ${p}`);
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
    if (!this.rooms.has(draft.room)) return Promise.resolve({ status: 'room-unknown' });
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

  telemetry(partition: number, room: string, limit: number): Promise<Array<{ id: string; draft: DraftOf<'telemetry'> }>> {
    const rows = this.part(partition).telemetry.get(room) ?? [];
    return Promise.resolve(rows.slice(-limit).reverse());
  }

  trimByAge(partition: number, rooms: readonly string[], cutoffMs: number): Promise<void> {
    const part = this.part(partition);
    part.feed.trimBefore(cutoffMs);
    for (const room of rooms) part.rooms.get(room)?.trimBefore(cutoffMs);
    return Promise.resolve();
  }

  ping(): Promise<void> {
    this.closedCheck();
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.closed = true;
    for (const set of this.waiters) {
      for (const wake of set) wake();
      set.clear();
    }
    return Promise.resolve();
  }
}
