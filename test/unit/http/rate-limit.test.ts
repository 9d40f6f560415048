import { describe, expect, it } from 'vitest';
import { RateLimiter } from '../../../src/http/rate-limit.js';

describe('RateLimiter', () => {
  it('allows a burst, then refuses with the time until the next token', () => {
    let now = 1_000_000;
    const limiter = new RateLimiter({ perSecond: 2, burst: 3, now: () => now });
    for (let i = 0; i < 3; i++) expect(limiter.take('d1').ok).toBe(true);
    const refused = limiter.take('d1');
    expect(refused).toEqual({ ok: false, retryAfterMs: 500 });
    now += 250;
    expect(limiter.take('d1')).toEqual({ ok: false, retryAfterMs: 250 });
    now += 250;
    expect(limiter.take('d1').ok).toBe(true);
    expect(limiter.take('d1').ok).toBe(false);
  });

  it('refills at the configured rate, never above the burst', () => {
    let now = 0;
    const limiter = new RateLimiter({ perSecond: 10, burst: 5, now: () => now });
    for (let i = 0; i < 5; i++) limiter.take('d');
    now += 60_000;
    let granted = 0;
    while (limiter.take('d').ok) granted++;
    expect(granted).toBe(5);
  });

  it('keeps one bucket per key and forgets full ones', () => {
    let now = 0;
    const limiter = new RateLimiter({ perSecond: 1000, burst: 1, now: () => now });
    expect(limiter.take('a').ok).toBe(true);
    expect(limiter.take('a').ok).toBe(false);
    expect(limiter.take('b').ok).toBe(true);
    for (let i = 0; i < 2000; i++) {
      now += 10;
      limiter.take(`k${i}`);
    }
    // every bucket older than a few ms is full again and swept
    expect(limiter.size).toBeLessThan(1100);
  });
});
