/**
 * Balanced room placement (room-placement.ts): a new room goes to the master
 * whose partitions carry the least traffic, ties broken by the fewest rooms,
 * and there to its lightest partition — so rooms, not partitions, are the
 * unit, and 16 partitions on 3 masters (6 / 5 / 5) still get even rooms.
 */
import { describe, expect, it } from 'vitest';
import { choosePartition, type PartitionLoad } from '../../src/eventlog/room-placement.js';

const place = (loads: PartitionLoad[], rooms: number): PartitionLoad[] => {
  const out = [...loads];
  for (let i = 0; i < rooms; i++) {
    const p = choosePartition(out);
    const load = out[p];
    if (load) out[p] = { ...load, rooms: load.rooms + 1 };
  }
  return out;
};

const perMaster = (loads: readonly PartitionLoad[], field: 'rooms' | 'entries') => {
  const m = new Map<string, number>();
  for (const l of loads) m.set(l.master, (m.get(l.master) ?? 0) + l[field]);
  return [...m.values()];
};

describe('balanced room placement', () => {
  it('with no traffic yet, spreads rooms evenly over masters, not partitions (16 partitions: 6 / 5 / 5)', () => {
    const masters = ['a', 'a', 'b', 'c', 'a', 'b', 'c', 'a', 'b', 'c', 'a', 'b', 'c', 'a', 'b', 'c'];
    expect(masters.filter((m) => m === 'a')).toHaveLength(6);
    const placed = place(masters.map((master) => ({ master, entries: 0, rooms: 0 })), 300);
    expect(perMaster(placed, 'rooms')).toEqual([100, 100, 100]);
    // within a master, its partitions take turns
    const ofA = placed.filter((l) => l.master === 'a').map((l) => l.rooms);
    expect(Math.max(...ofA) - Math.min(...ofA)).toBeLessThanOrEqual(1);
  });

  it('a master carrying more traffic gets no new room until the others carry as much', () => {
    const loads: PartitionLoad[] = [
      { master: 'a', entries: 900, rooms: 1 },
      { master: 'b', entries: 100, rooms: 5 },
      { master: 'b', entries: 100, rooms: 5 },
      { master: 'c', entries: 150, rooms: 2 },
    ];
    expect(choosePartition(loads)).toBe(3);
    expect(choosePartition([...loads.slice(0, 3), { master: 'c', entries: 250, rooms: 0 }])).toBe(1);
    const placed = place(loads, 20);
    expect(placed[0]?.rooms).toBe(1);
  });

  it('one Redis: the lightest partition', () => {
    expect(choosePartition([5, 3, 3, 9].map((entries, p) => ({ master: '', entries, rooms: p === 1 ? 2 : 0 })))).toBe(2);
    expect(choosePartition([])).toBe(0);
  });
});
