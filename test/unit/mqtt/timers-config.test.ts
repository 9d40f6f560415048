import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { backoffDelay } from '../../../src/core/backoff.js';
import { PendingCommands, type PendingCommand } from '../../../adapters/mqtt/commands.js';
import { parseMqttConfig } from '../../../adapters/mqtt/config.js';
import { MqttConfigError } from '../../../adapters/mqtt/errors.js';
import { Throttle, type ThrottleSummary } from '../../../adapters/mqtt/throttle.js';

describe('throttle', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('posts the first item, folds the rest of the interval into one summary, and reopens', () => {
    const summaries: Array<ThrottleSummary<number>> = [];
    const t = new Throttle<number>({ maxKeys: 10, onSummary: (s) => summaries.push(s) });
    const decisions = Array.from({ length: 100 }, (_, i) => t.offer('k', 1000, i));
    expect(decisions.filter((d) => d === 'post')).toHaveLength(1);
    expect(decisions[0]).toBe('post');
    vi.advanceTimersByTime(999);
    expect(summaries).toHaveLength(0);
    vi.advanceTimersByTime(1);
    expect(summaries).toEqual([expect.objectContaining({ key: 'k', count: 99, last: 99 })]);
    // The summary opened a new interval.
    expect(t.offer('k', 1000, 100)).toBe('suppress');
    vi.advanceTimersByTime(1000);
    expect(summaries[1]).toMatchObject({ count: 1, last: 100 });
    // A quiet interval closes the window.
    vi.advanceTimersByTime(1000);
    expect(t.size).toBe(0);
    expect(t.offer('k', 1000, 101)).toBe('post');
  });

  it('keeps topics apart, passes everything with interval 0, and bounds the keys', () => {
    const t = new Throttle<number>({ maxKeys: 2, onSummary: () => undefined });
    expect(t.offer('a', 1000, 1)).toBe('post');
    expect(t.offer('b', 1000, 1)).toBe('post');
    expect(t.offer('c', 1000, 1)).toBe('overflow');
    expect(t.offer('d', 0, 1)).toBe('post');
    expect(t.offer('a', 1000, 2)).toBe('suppress');
  });

  it('flushes pending summaries and stops its timers; cancel drops them', () => {
    const summaries: Array<ThrottleSummary<number>> = [];
    const t = new Throttle<number>({ maxKeys: 10, onSummary: (s) => summaries.push(s) });
    t.offer('a', 1000, 1);
    t.offer('a', 1000, 2);
    t.offer('b', 1000, 1);
    t.flush();
    expect(summaries).toEqual([expect.objectContaining({ key: 'a', count: 1 })]);
    expect(vi.getTimerCount()).toBe(0);
    const c = new Throttle<number>({ maxKeys: 10, onSummary: (s) => summaries.push(s) });
    c.offer('a', 1000, 1);
    c.offer('a', 1000, 2);
    c.cancel();
    expect(vi.getTimerCount()).toBe(0);
    expect(summaries).toHaveLength(1);
  });
});

describe('pending commands', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());
  const cmd = (eventId: string, timeoutMs = 1000): PendingCommand => ({ eventId, room: 'r', commandName: 'c', responseTopic: `d/${eventId}/resp`, vars: {}, timeoutMs });

  it('times out unanswered commands, not answered ones; binds each to its response topic', () => {
    const timedOut: string[] = [];
    const p = new PendingCommands({ onTimeout: (c) => timedOut.push(c.eventId) });
    p.add(cmd('e1'));
    p.add(cmd('e2'));
    // Another device's topic is not the answer, and does not stop the timer.
    expect(p.answer('e2', 'd/e1/resp')).toEqual({ status: 'wrong-topic', expected: 'd/e2/resp' });
    expect(p.answer('e2', 'd/e2/resp')).toMatchObject({ status: 'pending', command: { eventId: 'e2', room: 'r' } });
    expect(p.answer('e2', 'd/e2/resp')).toEqual({ status: 'answered', room: 'r' });
    vi.advanceTimersByTime(1000);
    expect(timedOut).toEqual(['e1']);
    expect(p.size).toBe(0);
    expect(p.answer('e1', 'd/e1/resp')).toEqual({ status: 'timed-out', room: 'r' });
    expect(p.answer('nope', 'd/nope/resp')).toEqual({ status: 'unknown' });
  });

  it('clears every timer on close', () => {
    const timedOut: string[] = [];
    const p = new PendingCommands({ onTimeout: (c) => timedOut.push(c.eventId) });
    p.add(cmd('e1'));
    p.add(cmd('e2'));
    p.close();
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(5000);
    expect(timedOut).toEqual([]);
  });

  it('remembers a bounded number of finished commands', () => {
    const p = new PendingCommands({ onTimeout: () => undefined, recentMax: 2 });
    for (const id of ['a', 'b', 'c']) {
      p.add(cmd(id));
      p.answer(id, `d/${id}/resp`);
    }
    expect(p.answer('a', 'd/a/resp')).toEqual({ status: 'unknown' });
    expect(p.answer('c', 'd/c/resp')).toEqual({ status: 'answered', room: 'r' });
  });
});

describe('config', () => {
  it('applies defaults', () => {
    const c = parseMqttConfig({ url: 'mqtt://127.0.0.1:1883', clientId: 'gw' });
    expect(c).toMatchObject({ sessionExpirySec: 604_800, keepaliveSec: 30, outTopicTemplate: 'sg/v1/rooms/{{room}}/out', maxPayloadBytes: 262_144, commands: [], throttle: { intervalMs: 0 } });
  });

  it('reports every violation at once', () => {
    let err: unknown;
    try {
      parseMqttConfig({ url: 'http://x', clientId: '', keepaliveSec: 1, extra: true, commands: [{ pattern: 'x' }] });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MqttConfigError);
    const problems = (err as MqttConfigError).problems.join('\n');
    for (const path of ['/url', '/clientId', '/keepaliveSec', '/commands/0/topic']) expect(problems).toContain(path);
    expect(() => parseMqttConfig({ url: 'mqtt://h', clientId: 'c', reconnect: { minMs: 5000, maxMs: 1000 } })).toThrow('maxMs');
  });
});

describe('reconnect backoff', () => {
  it('grows exponentially with full jitter and stays within bounds', () => {
    expect(backoffDelay(0, 500, 30_000, () => 0)).toBe(500);
    expect(backoffDelay(0, 500, 30_000, () => 1)).toBe(500);
    expect(backoffDelay(3, 500, 30_000, () => 1)).toBe(4000);
    expect(backoffDelay(3, 500, 30_000, () => 0.5)).toBe(2250);
    expect(backoffDelay(50, 500, 30_000, () => 1)).toBe(30_000);
    const seen = new Set(Array.from({ length: 50 }, () => backoffDelay(4, 500, 30_000)));
    expect(seen.size).toBeGreaterThan(10);
  });
});
