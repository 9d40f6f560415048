/**
 * Where a new room goes (`redis.roomPlacement: balanced`, the default on a
 * Redis Cluster; issue 24, point 5).
 *
 * The room directory stores each room's partition for good, so the partition
 * of a *new* room is free to choose. By hash (`fnv1a32(room) mod count`, the
 * default on one Redis or Sentinel) the rooms, and with them the traffic, fall on the masters of a
 * cluster as chance has it: a few hundred rooms differ by ~10 % per master,
 * and a few very busy rooms (room popularity is Zipf-like) by more. Balanced
 * placement puts a new room on the master whose partitions carry the least
 * traffic now (the entries their feeds keep), ties broken by the fewest rooms,
 * and there in the partition with the least of the same: a room's own
 * traffic is not known when it is created, but what the rooms placed before
 * it carry is, so later rooms fill the lighter masters. The scale bench
 * simulates it over 100,000 Zipf-popular rooms: traffic per master max/min
 * 1.00 / 1.07 / 1.00 at 16 / 256 / 1,024 partitions on 3 masters (by hash
 * 1.20 / 1.16 / 1.30) — a room, not a partition, is the unit, so 16
 * partitions balance too.
 */

export interface PartitionLoad {
  /** the master (node) holding the partition's slot; one Redis: the same for all */
  readonly master: string;
  /** its traffic: the entries its feed keeps */
  readonly entries: number;
  /** the rooms placed in it */
  readonly rooms: number;
}

/** lexicographic: less traffic first, then fewer rooms */
function lighter(a: { entries: number; rooms: number }, b: { entries: number; rooms: number }): boolean {
  return a.entries < b.entries || (a.entries === b.entries && a.rooms < b.rooms);
}

/** The partition for a new room: the lightest partition of the lightest master (see above). */
export function choosePartition(loads: readonly PartitionLoad[]): number {
  const masters = new Map<string, { entries: number; rooms: number }>();
  for (const { master, entries, rooms } of loads) {
    const m = masters.get(master) ?? { entries: 0, rooms: 0 };
    m.entries += entries;
    m.rooms += rooms;
    masters.set(master, m);
  }
  let best: string | undefined;
  for (const [name, m] of [...masters].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const current = best === undefined ? undefined : masters.get(best);
    if (!current || lighter(m, current)) best = name;
  }
  let chosen = -1;
  loads.forEach((load, p) => {
    if (load.master !== best) return;
    const current = loads[chosen];
    if (!current || lighter(load, current)) chosen = p;
  });
  return Math.max(0, chosen);
}
