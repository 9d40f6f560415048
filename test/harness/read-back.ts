import type { EventLog } from '../../src/core/ports.js';

/** Every event id in the log, and each room's message bodies in log order (pages of 200, at most 100 pages). */
export async function readBack(log: EventLog, rooms: readonly string[]): Promise<{ seen: string[]; bodies: Map<string, string[]> }> {
  const seen: string[] = [];
  const bodies = new Map<string, string[]>(rooms.map((r) => [r, []]));
  let cursor: string | undefined;
  for (let page = 0; page < 100; page++) {
    const read = await log.read(cursor, { rooms: 'all', limit: 200 });
    for (const e of read.events) {
      seen.push(e.eventId);
      if (e.kind === 'message') bodies.get(e.room)?.push(e.content.body);
    }
    cursor = read.next;
    if (read.events.length === 0) break;
  }
  return { seen, bodies };
}
