import { describe, expect, it } from 'vitest';
import { decodeEventPosition, decodeSyncCursor, encodeEventPosition, encodeSyncCursor, maxCursor, startCursor, syncCursorAfter } from '../../src/core/cursor.js';
import { isSyncgateError } from '../../src/core/errors.js';
import { legacyVectorCursor } from '../fixtures/legacy-cursor.js';
import { EVENT_ID_LENGTH, ZERO_POS, eventIdFor, fnv1a32, justBefore, locateEventId, partitionOf } from '../../src/core/position.js';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return isSyncgateError(err) ? err.code : String(err);
  }
  return 'no error';
}

describe('cursor tokens', () => {
  it('round-trips a sync cursor and is url-safe', () => {
    const c = new Map([
      [0, { ms: 1_795_000_000_000, seq: 0 }],
      [1, { ms: 0, seq: 0 }],
      [900, { ms: 1_795_000_000_123, seq: 42 }],
    ]);
    const token = encodeSyncCursor(c);
    expect(token).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(decodeSyncCursor(token)).toEqual(c);
    expect(decodeSyncCursor(encodeSyncCursor(startCursor()))).toEqual(new Map());
  });

  it('still reads the full-vector cursors of before: every partition it was made for', () => {
    const positions = [{ ms: 1_795_000_000_000, seq: 0 }, { ms: 0, seq: 0 }, { ms: 1_795_000_000_123, seq: 42 }];
    expect(decodeSyncCursor(legacyVectorCursor(positions))).toEqual(new Map(positions.map((pos, p) => [p, pos])));
    expect(decodeSyncCursor(legacyVectorCursor(Array.from({ length: 16 }, () => ZERO_POS))).size).toBe(16);
  });

  it('rejects garbage, truncation, bit flips and the wrong kind', () => {
    const token = encodeSyncCursor(new Map([[3, { ms: 1_795_000_000_000, seq: 7 }]]));
    expect(code(() => decodeSyncCursor('hello'))).toBe('SG_ERR_CURSOR_INVALID');
    expect(code(() => decodeSyncCursor('!!!!!!!!!!!!'))).toBe('SG_ERR_CURSOR_INVALID');
    expect(code(() => decodeSyncCursor(token.slice(0, -3)))).toBe('SG_ERR_CURSOR_INVALID');
    const flipped = token[5] === 'A' ? 'B' : 'A';
    expect(code(() => decodeSyncCursor(token.slice(0, 5) + flipped + token.slice(6)))).toBe('SG_ERR_CURSOR_INVALID');
    const position = encodeEventPosition({ partitions: 16, partition: 3, pos: { ms: 5, seq: 1 } });
    expect(code(() => decodeSyncCursor(position))).toBe('SG_ERR_CURSOR_INVALID');
    expect(code(() => decodeEventPosition(token))).toBe('SG_ERR_CURSOR_INVALID');
    expect(decodeEventPosition(position)).toEqual({ partitions: 16, partition: 3, pos: { ms: 5, seq: 1 } });
    expect(code(() => decodeEventPosition(encodeEventPosition({ partitions: 4, partition: 9, pos: { ms: 1, seq: 0 } })))).toBe('SG_ERR_CURSOR_INVALID');
    expect(code(() => decodeSyncCursor(encodeSyncCursor(new Map([[1024, { ms: 1, seq: 0 }]]))))).toBe('SG_ERR_CURSOR_INVALID');
  });

  it('maxCursor takes the later position per partition', () => {
    const a = new Map([
      [0, { ms: 1, seq: 5 }],
      [1, { ms: 3, seq: 0 }],
    ]);
    const b = new Map([
      [0, { ms: 2, seq: 0 }],
      [1, { ms: 2, seq: 9 }],
      [5, { ms: 1, seq: 1 }],
    ]);
    expect(maxCursor(a, b)).toEqual(new Map([
      [0, { ms: 2, seq: 0 }],
      [1, { ms: 3, seq: 0 }],
      [5, { ms: 1, seq: 1 }],
    ]));
  });

  it('an event position is O(1): the same size at 16 and at 1,024 partitions', () => {
    const pos = { ms: 1_795_000_000_000, seq: 3 };
    const small = encodeEventPosition({ partitions: 16, partition: 9, pos });
    const large = encodeEventPosition({ partitions: 1024, partition: 1000, pos });
    expect(large.length - small.length).toBeLessThanOrEqual(4);
    expect(large.length).toBeLessThanOrEqual(32);
  });

  it('a sync cursor grows with the partitions it names, not with the count: 1 partition ≤ 64 characters, 100 of 1,024 ≤ 1,024 with positions a month apart', () => {
    const now = 1_795_000_000_000;
    let seed = 7;
    const random = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
    expect(encodeSyncCursor(new Map([[1023, { ms: now, seq: 99 }]])).length).toBeLessThanOrEqual(64);
    expect(encodeSyncCursor(new Map([[0, { ms: 0, seq: 0 }]])).length).toBeLessThanOrEqual(64);
    const partitions = new Set<number>();
    while (partitions.size < 100) partitions.add(Math.floor(random() * 1024));
    const spread = new Map([...partitions].map((p) => [p, { ms: now - Math.floor(random() * 30 * 86_400_000), seq: Math.floor(random() * 200) }]));
    const token = encodeSyncCursor(spread);
    expect(token.length).toBeLessThanOrEqual(1024);
    expect(decodeSyncCursor(token)).toEqual(spread);
    // positions close together (a busy log) cost a few bytes each
    const busy = new Map([...partitions].map((p) => [p, { ms: now - Math.floor(random() * 10_000), seq: 0 }]));
    expect(encodeSyncCursor(busy).length).toBeLessThanOrEqual(600);
  });
});

describe('event ids', () => {
  it('are fixed-width, sort by position within a partition and map back to it', () => {
    const a = eventIdFor(7, { ms: 1_795_000_000_000, seq: 9 });
    const b = eventIdFor(7, { ms: 1_795_000_000_000, seq: 10 });
    const c = eventIdFor(7, { ms: 1_795_000_000_001, seq: 0 });
    expect(a).toHaveLength(EVENT_ID_LENGTH);
    expect([c, b, a].sort()).toEqual([a, b, c]);
    expect(locateEventId(b)).toEqual({ partition: 7, pos: { ms: 1_795_000_000_000, seq: 10 } });
    expect(locateEventId('short')).toBeUndefined();
    expect(locateEventId('!'.repeat(EVENT_ID_LENGTH))).toBeUndefined();
  });

  it('are the digits of ms, partition and seq in Crockford base32, at any partition and sequence (issue 19: cut from digit tables)', () => {
    const alphabet = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    const digits = (value: number, width: number) => {
      let out = '';
      let v = value;
      for (let i = 0; i < width; i++) {
        out = alphabet[v % 32] + out;
        v = Math.floor(v / 32);
      }
      return out;
    };
    const seqs = [0, 1, 31, 32, 1023, 1024, 2 ** 20 - 1, 2 ** 20, 2 ** 30 - 1, 2 ** 30, 2 ** 31, 2 ** 32 + 7, 32 ** 7 - 1];
    for (const partition of [0, 1, 31, 32, 511, 1023]) {
      for (const seq of seqs) {
        for (const ms of [0, 1_795_000_000_000, 32 ** 10 - 1]) {
          const id = eventIdFor(partition, { ms, seq });
          expect(id).toBe(digits(ms, 10) + digits(partition, 2) + digits(seq, 7));
          expect(locateEventId(id)).toEqual({ partition, pos: { ms, seq } });
        }
      }
    }
    expect(() => eventIdFor(0, { ms: 1, seq: 32 ** 7 })).toThrow();
    expect(() => eventIdFor(1024, { ms: 1, seq: 0 })).toThrow();
  });

  it('justBefore gives the predecessor position, also across a millisecond', () => {
    expect(justBefore({ ms: 10, seq: 3 })).toEqual({ ms: 10, seq: 2 });
    expect(justBefore({ ms: 10, seq: 0 })).toEqual({ ms: 9, seq: Number.MAX_SAFE_INTEGER });
  });

  it('rooms hash onto partitions stably and spread out', () => {
    expect(partitionOf('ops', 16)).toBe(partitionOf('ops', 16));
    const used = new Set(Array.from({ length: 200 }, (_, i) => partitionOf(`room-${i}`, 16)));
    expect(used.size).toBe(16);
  });

  it('hashes with FNV-1a over UTF-8 bytes, from a string or its bytes alike (the partition layout depends on it)', () => {
    // Published FNV-1a 32-bit test vectors.
    expect(fnv1a32('')).toBe(0x811c9dc5);
    expect(fnv1a32('a')).toBe(0xe40c292c);
    expect(fnv1a32('foobar')).toBe(0xbf9cf968);
    for (const text of ['ops', 'room-42', 'é', 'mixed ascii then 🚀']) {
      expect(fnv1a32(text)).toBe(fnv1a32(new TextEncoder().encode(text)));
    }
  });
});

describe('syncCursorAfter', () => {
  it("names the event's partition at the event only (the others from their start); refuses anything but a position", () => {
    const pos = { ms: 1_700_000_000_000, seq: 5 };
    const token = encodeEventPosition({ partitions: 4, partition: 2, pos });
    expect(decodeSyncCursor(syncCursorAfter(token))).toEqual(new Map([[2, pos]]));
    expect(code(() => syncCursorAfter(encodeSyncCursor(new Map([[1, pos]]))))).toBe('SG_ERR_CURSOR_INVALID');
    expect(code(() => syncCursorAfter('garbage!'))).toBe('SG_ERR_CURSOR_INVALID');
  });
});
