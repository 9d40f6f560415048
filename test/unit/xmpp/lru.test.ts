import { describe, expect, it } from 'vitest';
import { Lru } from '../../../adapters/xmpp/track.js';

describe('Lru', () => {
  it('evicts the least recently used entry: a get refreshes recency', () => {
    const lru = new Lru<string, number>(2);
    lru.set('a', 1);
    lru.set('b', 2);
    expect(lru.get('a')).toBe(1); // a is now the most recent
    lru.set('c', 3); // evicts b, not a
    expect(lru.has('a')).toBe(true);
    expect(lru.has('b')).toBe(false);
    expect(lru.get('c')).toBe(3);
    expect(lru.get('missing')).toBeUndefined();
    expect(lru.size).toBe(2);
  });
});
