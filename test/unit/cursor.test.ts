import { describe, expect, it } from 'vitest';
import { decodeEventPosition, decodeSyncCursor, encodeEventPosition, encodeSyncCursor, maxCursor, startCursor, syncCursorAfter } from '../../src/core/cursor.js';
import { isSyncgateError } from '../../src/core/errors.js';
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
    const c = [{ ms: 1_795_000_000_000, seq: 0 }, { ms: 0, seq: 0 }, { ms: 1_795_000_000_123, seq: 42 }];
    const token = encodeSyncCursor(c);
    expect(token).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(decodeSyncCursor(token, 3)).toEqual(c);
  });

  it('rejects garbage, truncation, bit flips, the wrong kind and a foreign partition count', () => {
    const token = encodeSyncCursor(startCursor(16));
    expect(code(() => decodeSyncCursor('hello', 16))).toBe('SG_ERR_CURSOR_INVALID');
    expect(code(() => decodeSyncCursor('!!!!!!!!!!!!', 16))).toBe('SG_ERR_CURSOR_INVALID');
    expect(code(() => decodeSyncCursor(token.slice(0, -3), 16))).toBe('SG_ERR_CURSOR_INVALID');
    const flipped = (token[5] === 'A' ? 'B' : 'A');
    expect(code(() => decodeSyncCursor(token.slice(0, 5) + flipped + token.slice(6), 16))).toBe('SG_ERR_CURSOR_INVALID');
    expect(code(() => decodeSyncCursor(token, 8))).toBe('SG_ERR_CURSOR_INVALID');
    const position = encodeEventPosition({ partitions: 16, partition: 3, pos: { ms: 5, seq: 1 } });
    expect(code(() => decodeSyncCursor(position, 16))).toBe('SG_ERR_CURSOR_INVALID');
    expect(code(() => decodeEventPosition(token, 16))).toBe('SG_ERR_CURSOR_INVALID');
    expect(decodeEventPosition(position, 16)).toEqual({ partitions: 16, partition: 3, pos: { ms: 5, seq: 1 } });
    expect(code(() => decodeEventPosition(encodeEventPosition({ partitions: 4, partition: 9, pos: { ms: 1, seq: 0 } }), 4))).toBe('SG_ERR_CURSOR_INVALID');
  });

  it('maxCursor takes the later position per partition', () => {
    expect(maxCursor([{ ms: 1, seq: 5 }, { ms: 3, seq: 0 }], [{ ms: 2, seq: 0 }, { ms: 2, seq: 9 }])).toEqual([{ ms: 2, seq: 0 }, { ms: 3, seq: 0 }]);
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
  it('puts the event partition at the event and the others at their start; refuses anything but a position', () => {
    const pos = { ms: 1_700_000_000_000, seq: 5 };
    const token = encodeEventPosition({ partitions: 4, partition: 2, pos });
    expect(decodeSyncCursor(syncCursorAfter(token), 4)).toEqual([ZERO_POS, ZERO_POS, pos, ZERO_POS]);
    expect(code(() => syncCursorAfter(encodeSyncCursor(startCursor(4))))).toBe('SG_ERR_CURSOR_INVALID');
    expect(code(() => syncCursorAfter('garbage!'))).toBe('SG_ERR_CURSOR_INVALID');
  });
});
