// The per-archive queue: serial order, failures isolated, positions persisted coalesced and flushed.
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/log/index.js';
import type { CatchupPosition, CatchupStore } from '../../../adapters/xmpp/catchup.js';
import { ArchiveTrack, Lru } from '../../../adapters/xmpp/track.js';

function slowStore(): CatchupStore & { writes: CatchupPosition[]; release(): void } {
  const writes: CatchupPosition[] = [];
  let gate: (() => void) | undefined;
  let stored: CatchupPosition | undefined;
  return {
    writes,
    release: () => gate?.(),
    get: () => Promise.resolve(stored),
    set: (_archive, position) =>
      new Promise<void>((resolve) => {
        gate = () => {
          gate = undefined;
          writes.push(position);
          stored = position;
          resolve();
        };
      }),
  };
}

describe('ArchiveTrack', () => {
  it('runs tasks one at a time in order; a failing task does not stop the queue', async () => {
    const t = new ArchiveTrack('room@muc', slowStore(), silentLogger());
    const order: string[] = [];
    const errors: unknown[] = [];
    t.enqueue(async () => {
      await new Promise((r) => setTimeout(r, 10));
      order.push('a');
    }, (e) => errors.push(e));
    t.enqueue(async () => {
      order.push('b');
      throw new Error('boom');
    }, (e) => errors.push(e));
    t.enqueue(async () => {
      order.push('c');
    }, (e) => errors.push(e));
    expect(t.pending).toBe(3);
    await t.idle();
    expect(order).toEqual(['a', 'b', 'c']);
    expect(errors).toHaveLength(1);
    expect(t.pending).toBe(0);
  });

  it('writes positions in the background, coalescing while a write is in flight, and flush waits for the newest', async () => {
    const store = slowStore();
    const t = new ArchiveTrack('room@muc', store, silentLogger());
    t.advance({ id: '1', ts: 1 });
    t.advance({ id: '2', ts: 2 });
    t.advance({ id: '3', ts: 3 });
    const flushed = t.flush();
    store.release(); // the first write ("1" was in flight)
    await new Promise((r) => setTimeout(r, 0));
    store.release(); // the coalesced newest
    await flushed;
    expect(store.writes.map((w) => w.id)).toEqual(['1', '3']);
    expect(await t.load()).toEqual({ id: '3', ts: 3 });
  });
});

describe('Lru', () => {
  it('keeps the newest entries up to its bound', () => {
    const lru = new Lru<string, number>(2);
    lru.set('a', 1);
    lru.set('b', 2);
    lru.set('a', 3);
    lru.set('c', 4);
    expect(lru.has('b')).toBe(false);
    expect(lru.get('a')).toBe(3);
    expect(lru.size).toBe(2);
  });
});
