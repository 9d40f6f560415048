import { afterEach, describe, expect, it } from 'vitest';
import { ZERO_POS, type StreamPos } from '../../src/core/position.js';
import type { FeedEntry } from '../../src/eventlog/backend.js';
import { LiveFeed, type LiveSink } from '../../src/eventlog/live-feed.js';
import { MemoryBackend } from '../../src/eventlog/memory-backend.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';

const retention = { roomMaxLen: 0, feedMaxLen: 0, maxAgeMs: 0, idTtlMs: 60_000, telemetryMaxLen: 100 };

/** A sink that records what it gets; it refuses (asks to be detached) after `take` entries. */
function recorder(from: StreamPos, take = Number.POSITIVE_INFINITY): { got: FeedEntry[]; sink: LiveSink } {
  const got: FeedEntry[] = [];
  let at = from;
  return {
    got,
    sink: {
      position: () => at,
      push: (entry) => {
        if (got.length >= take) return false;
        got.push(entry);
        at = entry.pos;
        return true;
      },
    },
  };
}

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const feeds: LiveFeed[] = [];
afterEach(() => feeds.splice(0).forEach((f) => f.stop()));

describe('live reader ring', () => {
  it('replays exactly the entries after a position it holds, refuses one it no longer holds, and drops a sink that refuses an entry', async () => {
    const backend = new MemoryBackend({ partitions: 1, retention });
    await backend.rooms.put({ id: 'ops', links: [] });
    const feed = new LiveFeed({ partition: 0, backend, blockMs: 200, log: silentLogger(), bufferSize: 4 });
    feeds.push(feed);
    const append = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const draft = message('ops', `m${i}`);
        await backend.append({ partition: 0, draft, idemField: `ops\u0000${draft.idem}`, aliasFields: [] });
      }
    };

    const a = recorder(ZERO_POS);
    expect(feed.attach(a.sink)).toBe(true);
    await append(10);
    await waitFor(() => a.got.length === 10, 'the first sink to get 10 entries');

    // The ring keeps the last 4 (entries 6..9): a position before them is refused.
    const at3 = a.got[3]?.pos ?? ZERO_POS;
    expect(feed.holds(at3)).toBe(false);
    expect(feed.attach(recorder(at3).sink)).toBe(false);

    // From a position inside the ring: the rest of it, in order, nothing before.
    const at6 = a.got[6]?.pos ?? ZERO_POS;
    expect(feed.holds(at6)).toBe(true);
    const b = recorder(at6);
    expect(feed.attach(b.sink)).toBe(true);
    expect(b.got).toEqual(a.got.slice(7));

    // From the last entry: nothing to replay, then live.
    const at9 = a.got[9]?.pos ?? ZERO_POS;
    const c = recorder(at9);
    expect(feed.attach(c.sink)).toBe(true);
    expect(c.got).toEqual([]);

    // A sink that refuses during the replay is not kept.
    const d = recorder(a.got[5]?.pos ?? ZERO_POS, 1);
    expect(feed.holds(a.got[5]?.pos ?? ZERO_POS)).toBe(true);
    expect(feed.attach(d.sink)).toBe(true);
    expect(d.got).toEqual(a.got.slice(6, 7));

    await append(1);
    await waitFor(() => a.got.length === 11 && b.got.length === 4 && c.got.length === 1, 'the attached sinks to get the next entry');
    expect(b.got.at(-1)).toBe(a.got[10]);
    expect(c.got[0]).toBe(a.got[10]);
    expect(d.got).toHaveLength(1);
    expect(feed.listeners).toBe(3);
  });
});
