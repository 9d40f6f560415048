import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ReconnectLoop, type Reconnectable } from '../../src/core/reconnect.js';

/** A connection whose state the test sets; records what the loop asked of it. */
class FakeTarget implements Reconnectable {
  state: 'down' | 'connecting' | 'online' = 'down';
  reconnects = 0;
  disconnects = 0;
  failNext: Error | undefined;
  isDown(): boolean {
    return this.state === 'down';
  }
  isOnline(): boolean {
    return this.state === 'online';
  }
  reconnect(): Promise<unknown> {
    this.reconnects++;
    const err = this.failNext;
    this.failNext = undefined;
    return err ? Promise.reject(err) : Promise.resolve();
  }
  disconnect(): Promise<unknown> {
    this.disconnects++;
    this.state = 'down';
    return Promise.resolve();
  }
}

function setup(target: FakeTarget) {
  const waits: Array<[number, number]> = [];
  const failures: Array<[string, string]> = [];
  const loop = new ReconnectLoop({
    target,
    minMs: 100,
    maxMs: 1_000,
    onWait: (delayMs, attempt) => waits.push([delayMs, attempt]),
    onFailure: (message, phase) => failures.push([message, phase]),
  });
  return { loop, waits, failures };
}

describe('ReconnectLoop', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('waits within the backoff bounds, counts attempts, and starts again from zero after a session', async () => {
    const target = new FakeTarget();
    const { loop, waits } = setup(target);
    loop.schedule();
    expect(waits).toHaveLength(1);
    const [first] = waits;
    expect(first?.[1]).toBe(0);
    expect(first?.[0]).toBeGreaterThanOrEqual(100);
    expect(first?.[0]).toBeLessThanOrEqual(100);
    await vi.advanceTimersByTimeAsync(first?.[0] ?? 0);
    expect(target.reconnects).toBe(1);
    expect(loop.attempt).toBe(1);

    loop.schedule();
    const second = waits[1];
    expect(second?.[1]).toBe(1);
    expect(second?.[0]).toBeGreaterThanOrEqual(100);
    expect(second?.[0]).toBeLessThanOrEqual(200);

    loop.succeeded();
    expect(loop.attempt).toBe(0);
  });

  it('does not reconnect a stream that is not down when the timer fires', async () => {
    const target = new FakeTarget();
    const { loop } = setup(target);
    loop.schedule();
    target.state = 'online';
    await vi.advanceTimersByTimeAsync(1_000);
    expect(target.reconnects).toBe(0);
  });

  it('a failed reconnect is noted and another one is scheduled', async () => {
    const target = new FakeTarget();
    const { loop, waits, failures } = setup(target);
    target.failNext = new Error('refused');
    loop.schedule();
    await vi.advanceTimersByTimeAsync(100);
    expect(failures).toEqual([['refused', 'reconnect']]);
    expect(loop.lastError).toBe('refused');
    expect(waits).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(target.reconnects).toBe(2);
  });

  it('a failed first connect that left the stream half-open closes it (its disconnect schedules the next try)', () => {
    const target = new FakeTarget();
    const { loop, failures } = setup(target);
    target.state = 'connecting';
    loop.failed(new Error('auth'), 'connect');
    expect(failures).toEqual([['auth', 'connect']]);
    expect(target.disconnects).toBe(1);
  });

  it('after stop nothing is scheduled or attempted', async () => {
    const target = new FakeTarget();
    const { loop, waits, failures } = setup(target);
    loop.schedule();
    loop.stop();
    await vi.advanceTimersByTimeAsync(2_000);
    expect(target.reconnects).toBe(0);
    loop.schedule();
    loop.failed(new Error('late'), 'reconnect');
    expect(waits).toHaveLength(1);
    expect(failures).toEqual([]);
    expect(loop.lastError).toBe('late');
    expect(loop.stopping).toBe(true);
  });
});
