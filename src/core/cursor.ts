/**
 * Cursor tokens, opaque to clients and url-safe (base64url).
 *
 * - A sync cursor holds a feed position for each partition the device reads
 *   (the partitions of its rooms): everything at or before it has been
 *   delivered. A partition it does not name is read from its start. So its
 *   size follows the rooms a device reads, not the partition count. It is
 *   what `since`, `next`, SSE ids and `tail` use.
 * - An event position names one event's place (partition + feed position);
 *   it is the `cursor` field of an event and of a send response, and is the
 *   same wherever the event is seen. O(1) at any partition count.
 *
 * Layout: kind byte, payload varints, then a 32-bit FNV-1a checksum so that
 * garbage and truncation are rejected. Sync cursors (kind 3) list
 * `(partition, position)` pairs by ascending partition: the partition as the
 * gap from the previous one, the position's milliseconds as the distance
 * below the largest of them (written once), its sequence only when not 0;
 * a partition named at 0-0 is read from its start and counts as covered
 * (retention there is reported as `limited`), one not named is new to the
 * cursor (a room granted since) and is read from its start without that.
 * Kind 1, the full vector of every partition of the log (before issue 24),
 * is still read: it names every partition up to the count it was made for;
 * partitions added since are new and read from their start.
 */
import { SyncgateError } from './errors.js';
import { MAX_PARTITIONS, comparePos, fnv1a32, type StreamPos } from './position.js';

const KIND_VECTOR = 1;
const KIND_EVENT = 2;
const KIND_SPARSE = 3;

/** partition → the last position delivered there; a partition not named is read from its start */
export type SyncCursor = ReadonlyMap<number, StreamPos>;

export interface EventPosition {
  /** the partition count when the token was made (informational: partitions are only ever added) */
  readonly partitions: number;
  readonly partition: number;
  readonly pos: StreamPos;
}

/** scratch space of every Writer (they never overlap: each is written and finished synchronously) */
let scratch = Buffer.alloc(256);

class Writer {
  private n = 0;
  constructor() {
    if (scratch.length > 4096) scratch = Buffer.alloc(256);
  }
  private put(value: number): void {
    if (this.n + 4 >= scratch.length) {
      const grown = Buffer.alloc(scratch.length * 2);
      scratch.copy(grown, 0, 0, this.n);
      scratch = grown;
    }
    scratch[this.n++] = value;
  }
  varint(value: number): void {
    let v = value;
    while (v >= 0x80) {
      this.put((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.put(v);
  }
  byte(value: number): void {
    this.put(value & 0xff);
  }
  finish(): string {
    // Body, then its checksum: written in place, encoded from there (a token per event read: no array, no copy).
    const n = this.n;
    let h = 0x811c9dc5;
    for (let i = 0; i < n; i++) h = Math.imul(h ^ (scratch[i] as number), 0x01000193) >>> 0;
    scratch.writeUInt32BE(h, n);
    return scratch.toString('base64url', 0, n + 4);
  }
}

class Reader {
  private offset = 0;
  constructor(private readonly bytes: Uint8Array) {}
  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.bytes[this.offset++];
      if (b === undefined) throw invalid('truncated');
      value += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return value;
      scale *= 0x80;
    }
    throw invalid('varint too long');
  }
  byte(): number {
    const b = this.bytes[this.offset++];
    if (b === undefined) throw invalid('truncated');
    return b;
  }
  end(): void {
    if (this.offset !== this.bytes.length) throw invalid('trailing bytes');
  }
}

function invalid(why: string): SyncgateError {
  return new SyncgateError('SG_ERR_CURSOR_INVALID', why);
}

const TOKEN = /^[A-Za-z0-9_-]{8,4096}$/;

function open(token: string, ...kinds: number[]): Reader & { kind: number } {
  if (!TOKEN.test(token)) throw invalid('not a cursor token');
  const raw = new Uint8Array(Buffer.from(token, 'base64url'));
  if (raw.length < 6) throw invalid('too short');
  const body = raw.subarray(0, raw.length - 4);
  const sum = new DataView(raw.buffer, raw.byteOffset + raw.length - 4, 4).getUint32(0);
  if (fnv1a32(body) !== sum) throw invalid('checksum mismatch');
  const reader = new Reader(body);
  const found = reader.byte();
  if (!kinds.includes(found)) {
    throw invalid(found === KIND_EVENT ? 'this is an event position, not a sync cursor' : 'this is a sync cursor, not an event position');
  }
  return Object.assign(reader, { kind: found });
}

function checkPartition(partition: number): void {
  if (partition >= MAX_PARTITIONS) throw invalid('partition out of range');
}

/**
 * The sync cursor of these positions. A partition at 0-0 (covered, nothing
 * delivered yet) is kept: retention there is a gap for this device.
 */
export function encodeSyncCursor(cursor: SyncCursor): string {
  const entries = [...cursor].sort((a, b) => a[0] - b[0]);
  const w = new Writer();
  w.byte(KIND_SPARSE);
  w.varint(entries.length);
  const base = entries.reduce((max, [, pos]) => Math.max(max, pos.ms), 0);
  w.varint(base);
  let previous = -1;
  for (const [partition, pos] of entries) {
    w.varint(partition - previous - 1);
    previous = partition;
    // 0: the partition's start; else the distance below the base, and one bit for
    // whether a sequence follows (it is mostly 0)
    if (pos.ms === 0 && pos.seq === 0) w.varint(0);
    else w.varint((base - pos.ms) * 2 + (pos.seq > 0 ? 1 : 0) + 1);
    if (pos.seq > 0) w.varint(pos.seq);
  }
  return w.finish();
}

/**
 * The positions of a sync cursor, in either format. Partitions are checked
 * against the largest count a log may have; the log checks them against its own.
 */
export function decodeSyncCursor(token: string): SyncCursor {
  const r = open(token, KIND_VECTOR, KIND_SPARSE);
  const out = new Map<number, StreamPos>();
  if (r.kind === KIND_VECTOR) {
    const found = r.varint();
    if (found < 1 || found > MAX_PARTITIONS) throw invalid('bad partition count');
    for (let p = 0; p < found; p++) out.set(p, { ms: r.varint(), seq: r.varint() });
    r.end();
    return out;
  }
  const n = r.varint();
  if (n > MAX_PARTITIONS) throw invalid('too many partitions');
  const base = r.varint();
  let partition = -1;
  for (let i = 0; i < n; i++) {
    partition += r.varint() + 1;
    checkPartition(partition);
    const code = r.varint();
    if (code === 0) {
      out.set(partition, { ms: 0, seq: 0 });
      continue;
    }
    const ms = base - Math.floor((code - 1) / 2);
    if (ms < 0) throw invalid('position out of range');
    out.set(partition, { ms, seq: (code - 1) % 2 === 1 ? r.varint() : 0 });
  }
  r.end();
  return out;
}

/** The cursor before everything: every partition from its start. */
export function startCursor(): SyncCursor {
  return new Map();
}

/** The later of two cursors, partition by partition. */
export function maxCursor(a: SyncCursor, b: SyncCursor): SyncCursor {
  const out = new Map(a);
  for (const [p, pos] of b) {
    const mine = out.get(p);
    if (!mine || comparePos(pos, mine) > 0) out.set(p, pos);
  }
  return out;
}

export function encodeEventPosition(position: EventPosition): string {
  const w = new Writer();
  w.byte(KIND_EVENT);
  w.varint(position.partitions);
  w.varint(position.partition);
  w.varint(position.pos.ms);
  w.varint(position.pos.seq);
  return w.finish();
}

/** An event position; its partition is checked against the largest count a log may have (the log checks its own). */
export function decodeEventPosition(token: string): EventPosition {
  const r = open(token, KIND_EVENT);
  const partitions = r.varint();
  if (partitions < 1 || partitions > MAX_PARTITIONS) throw invalid('bad partition count');
  const partition = r.varint();
  if (partition >= partitions) throw invalid('partition out of range');
  const pos = { ms: r.varint(), seq: r.varint() };
  r.end();
  return { partitions, partition, pos };
}

/**
 * The sync cursor that resumes just after the event at `position` (an
 * event's `cursor`), computed from the token alone: the event's partition at
 * the event, every other partition at its start. `since=` it gives exactly
 * the events after this one in its partition — all later events of the
 * event's room — and skips nothing anywhere else (other partitions are read
 * from the oldest event retention kept). Events of other rooms in the same
 * partition that come before it are skipped: it is a cursor for the event's
 * room, not for a device's whole timeline. One partition: O(1) in size.
 */
export function syncCursorAfter(position: string): string {
  const { partition, pos } = decodeEventPosition(position);
  return encodeSyncCursor(new Map([[partition, pos]]));
}
