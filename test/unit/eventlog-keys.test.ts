/**
 * Key layout 2 (keys.ts): the 18 key groups' hash tags land on evenly spaced
 * hash slots, interleaved so that the first n groups split over any even
 * division of the slot space into 2, 3, 4, 6 or 8 ranges differ by at most
 * one group per range; partitions of one group share a slot; layout 1 keeps
 * the names logs created before it use.
 */
import { describe, expect, it } from 'vitest';
import { GROUP_ORDER, GROUP_TAGS, KEY_GROUPS, MAX_KEY_GROUPS, groupTags, hashSlot, keyGroupOf, keySpace, toKeyGroups, toKeyLayout } from '../../src/eventlog/keys.js';

describe('key layout', () => {
  it('hashSlot agrees with Redis on known keys', () => {
    // CLUSTER KEYSLOT answers, from Redis' own documentation and tests
    expect(hashSlot('foo')).toBe(12182);
    expect(hashSlot('{user1000}.following')).toBe(hashSlot('{user1000}.followers'));
    expect(hashSlot('123456789')).toBe(0x31c3 % 16384);
    // the documented corner cases: an empty tag hashes the whole key; the first `{` up to the next `}`
    expect(hashSlot('foo{}{bar}')).not.toBe(hashSlot('bar'));
    expect(hashSlot('foo{{bar}}zap')).toBe(hashSlot('{bar'));
  });

  it('puts the 18 groups on evenly spaced slots', () => {
    expect(GROUP_TAGS).toHaveLength(KEY_GROUPS);
    expect([...GROUP_ORDER].sort((a, b) => a - b)).toEqual(Array.from({ length: KEY_GROUPS }, (_, k) => k));
    GROUP_TAGS.forEach((tag, g) => {
      expect(hashSlot(`x{${tag}}:p00:feed`)).toBe(Math.floor((((GROUP_ORDER[g] ?? -1) + 0.5) * 16384) / KEY_GROUPS));
    });
  });

  it('spreads the first n groups within one of even over 2, 3, 4, 6 and 9 equal slot ranges', () => {
    for (const masters of [2, 3, 4, 6, 9]) {
      for (let n = 1; n <= KEY_GROUPS; n++) {
        const counts = Array.from({ length: masters }, () => 0);
        for (let g = 0; g < n; g++) {
          const slot = hashSlot(`{${GROUP_TAGS[g] ?? ''}}`);
          const m = Math.floor(slot / (16384 / masters));
          counts[m] = (counts[m] ?? 0) + 1;
        }
        expect(Math.max(...counts) - Math.min(...counts), `${n} groups on ${masters} ranges: ${counts.join('/')}`).toBeLessThanOrEqual(1);
      }
    }
  });

  it('layout 2: a partition\'s keys and its group\'s lease share one slot; groups are p mod 18', () => {
    const keys = keySpace('t:', 2);
    for (const p of [0, 5, 18, 23, 1023]) {
      const slot = hashSlot(keys.feed(p));
      expect(keyGroupOf(2, p)).toBe(p % 18);
      for (const key of [keys.room(p, 'r'), keys.roomMeta(p, 'r'), keys.ids(p, 7), keys.trimMarks(p), keys.lease(p, 'out:a'), keys.dead(p), keys.replay(p), keys.delivered(p, 3), keys.telemetry(p, 'r')]) {
        expect(hashSlot(key), key).toBe(slot);
      }
    }
    expect(hashSlot(keys.feed(5))).toBe(hashSlot(keys.feed(23)));
    expect(keys.feed(5)).not.toBe(keys.feed(23));
    expect(keys.lease(5, 'out:a')).toBe(keys.lease(23, 'out:a'));
    expect(keys.feed(23)).toBe('t:{bj5}:p23:feed');
  });

  it('layout 1 keeps the names of before: one tag, one slot, one lease per partition', () => {
    const keys = keySpace('t:');
    expect(keys.layout).toBe(1);
    expect(keys.feed(5)).toBe('t:{p:05}:feed');
    expect(keys.lease(5, 'out:a')).toBe('t:{p:05}:lease:out:a');
    expect(keyGroupOf(1, 29)).toBe(29);
    keys.setLayout(2);
    expect(keys.feed(5)).toBe('t:{bj5}:p05:feed');
  });

  it('other group counts (redis.keyGroups) get tags on evenly spaced slots, stable names, an even split over every divisor', () => {
    expect(groupTags(18)).toBe(GROUP_TAGS);
    // stored logs depend on these names: the derivation must never change
    expect(groupTags(24).slice(0, 6)).toEqual(['g6a7', 'g4cq', 'g6p5', 'g4rs', 'gggj', 'g280']);
    expect(groupTags(256).slice(0, 3)).toEqual(['g5x9', 'gjy7', 'ghjs']);
    for (const n of [1, 2, 5, 24, 36, 64, 256]) {
      const slots = groupTags(n).map((tag) => hashSlot(`{${tag}}`));
      expect([...slots].sort((a, b) => a - b), `${n} groups`).toEqual(Array.from({ length: n }, (_, k) => Math.floor(((k + 0.5) * 16384) / n)));
      for (let masters = 2; masters <= n; masters++) {
        if (n % masters !== 0) continue;
        const counts = Array.from({ length: masters }, () => 0);
        for (const slot of slots) counts[Math.floor(slot / (16384 / masters))]! += 1;
        expect(new Set(counts).size, `${n} groups on ${masters} masters: ${counts.join('/')}`).toBe(1);
      }
    }
    // the first groups of a log with fewer partitions than groups spread too: 24 groups, first 8 on 4 ranges
    const first = groupTags(24).slice(0, 8).map((tag) => Math.floor(hashSlot(`{${tag}}`) / 4096));
    expect([0, 1, 2, 3].map((m) => first.filter((x) => x === m).length)).toEqual([2, 2, 2, 2]);
    const keys = keySpace('t:', 2);
    keys.setLayout(2, 24);
    expect(keys.groupOf(30)).toBe(6);
    expect(keys.feed(30)).toBe(`t:{${groupTags(24)[6] ?? ''}}:p30:feed`);
    expect(keys.partitionMeta()).toBe('t:{log}:meta');
    keys.setLayout(1);
    expect(keys.partitionMeta()).toBe('t:{log}:partitions');
  });

  it('a stored layout or group count this build does not know is refused', () => {
    expect(toKeyLayout(null)).toBe(1);
    expect(toKeyLayout('2')).toBe(2);
    expect(() => toKeyLayout('3')).toThrow(expect.objectContaining({ code: 'SG_ERR_LOG_TOO_NEW' }));
    expect(toKeyGroups(null)).toBe(KEY_GROUPS);
    expect(() => toKeyGroups(String(MAX_KEY_GROUPS + 1))).toThrow(expect.objectContaining({ code: 'SG_ERR_LOG_TOO_NEW' }));
  });
});
