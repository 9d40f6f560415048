/**
 * A room's partition as the room directory stores it. Where a new room goes
 * depends on the placement (`redis.roomPlacement`: by hash, or balanced —
 * the default on a cluster), so tests read it, as a client would, rather
 * than recompute a hash.
 */
import type { EventLog } from '../../src/core/ports.js';
import { PartitionedLog } from '../../src/eventlog/partitioned-log.js';

export async function partitionOfRoom(log: EventLog, room: string): Promise<number> {
  if (!(log instanceof PartitionedLog)) throw new Error('partitionOfRoom reads the directory of a PartitionedLog');
  const p = await log.roomPartition(room);
  if (p === undefined) throw new Error(`room ${room} has no partition`);
  return p;
}

/**
 * Creates rooms `${tag}0`, `${tag}1`, … (with `create`, default a room
 * without links) until `enough` says the placed rooms (room → partition, in
 * creation order) do, and returns them.
 */
export async function placeRooms(
  log: EventLog,
  tag: string,
  enough: (placed: Map<string, number>) => boolean,
  create: (room: string) => Promise<void> = (id) => log.rooms.put({ id, links: [] }),
): Promise<Map<string, number>> {
  const placed = new Map<string, number>();
  for (let i = 0; !enough(placed); i++) {
    if (i >= 1_000) throw new Error(`no placement of ${tag}* rooms satisfied the test`);
    await create(`${tag}${i}`);
    placed.set(`${tag}${i}`, await partitionOfRoom(log, `${tag}${i}`));
  }
  return placed;
}

/** the first room placed in each partition */
export function firstPerPartition(placed: Map<string, number>): Map<number, string> {
  const byPartition = new Map<number, string>();
  for (const [room, p] of placed) if (!byPartition.has(p)) byPartition.set(p, room);
  return byPartition;
}
