/**
 * Cursor tokens, opaque to clients and url-safe (base64url).
 *
 * - A sync cursor is the vector of the partitions' feed positions: everything
 *   at or before it has been delivered. It is what `since`, `next`, SSE ids and
 *   `tail` use.
 * - An event position names one event's place (partition + feed position);
 *   it is the `cursor` field of an event and of a send response, and is the
 *   same wherever the event is seen.
 *
 * Layout: kind byte, varint partition count, payload varints, then a 32-bit
 * FNV-1a checksum so that garbage and truncation are rejected.
 */
import { SyncgateError } from './errors.js';
import { MAX_PARTITIONS, ZERO_POS, comparePos, fnv1a32, type StreamPos } from './position.js';

const KIND_VECTOR = 1;
const KIND_EVENT = 2;

export type SyncCursor = readonly StreamPos[];

export interface EventPosition {
  readonly partitions: number;
  readonly partition: number;
  readonly pos: StreamPos;
}

class Writer {
  private readonly bytes: number[] = [];
  varint(value: number): void {
    let v = value;
    while (v >= 0x80) {
      this.bytes.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.bytes.push(v);
  }
  byte(value: number): void {
    this.bytes.push(value & 0xff);
  }
  finish(): string {
    const n = this.bytes.length;
    // One small (pooled) buffer: body, then its checksum.
    const out = Buffer.allocUnsafe(n + 4);
    for (let i = 0; i < n; i++) out[i] = this.bytes[i] as number;
    out.writeUInt32BE(fnv1a32(out.subarray(0, n)), n);
    return out.toString('base64url');
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

function open(token: string, kind: number): Reader {
  if (!TOKEN.test(token)) throw invalid('not a cursor token');
  const raw = new Uint8Array(Buffer.from(token, 'base64url'));
  if (raw.length < 6) throw invalid('too short');
  const body = raw.subarray(0, raw.length - 4);
  const sum = new DataView(raw.buffer, raw.byteOffset + raw.length - 4, 4).getUint32(0);
  if (fnv1a32(body) !== sum) throw invalid('checksum mismatch');
  const reader = new Reader(body);
  const found = reader.byte();
  if (found !== kind) {
    throw invalid(found === KIND_EVENT ? 'this is an event position, not a sync cursor' : 'this is a sync cursor, not an event position');
  }
  return reader;
}

function checkPartitions(found: number, expected: number): void {
  if (found < 1 || found > MAX_PARTITIONS) throw invalid('bad partition count');
  if (found !== expected) throw invalid(`made for ${found} partitions, this log has ${expected}`);
}

export function encodeSyncCursor(cursor: SyncCursor): string {
  const w = new Writer();
  w.byte(KIND_VECTOR);
  w.varint(cursor.length);
  for (const pos of cursor) {
    w.varint(pos.ms);
    w.varint(pos.seq);
  }
  return w.finish();
}

export function decodeSyncCursor(token: string, partitions: number): SyncCursor {
  const r = open(token, KIND_VECTOR);
  checkPartitions(r.varint(), partitions);
  const out: StreamPos[] = [];
  for (let p = 0; p < partitions; p++) out.push({ ms: r.varint(), seq: r.varint() });
  r.end();
  return out;
}

export function startCursor(partitions: number): SyncCursor {
  return Array.from({ length: partitions }, () => ZERO_POS);
}

/** The later of two cursors, partition by partition. */
export function maxCursor(a: SyncCursor, b: SyncCursor): SyncCursor {
  return a.map((pos, p) => {
    const other = b[p];
    return other && comparePos(other, pos) > 0 ? other : pos;
  });
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

export function decodeEventPosition(token: string, partitions: number): EventPosition {
  const r = open(token, KIND_EVENT);
  const found = r.varint();
  checkPartitions(found, partitions);
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
 * room, not for a device's whole timeline.
 */
export function syncCursorAfter(position: string): string {
  const r = open(position, KIND_EVENT);
  const partitions = r.varint();
  if (partitions < 1 || partitions > MAX_PARTITIONS) throw invalid('bad partition count');
  const partition = r.varint();
  if (partition >= partitions) throw invalid('partition out of range');
  const pos = { ms: r.varint(), seq: r.varint() };
  r.end();
  return encodeSyncCursor(startCursor(partitions).map((start, p) => (p === partition ? pos : start)));
}
