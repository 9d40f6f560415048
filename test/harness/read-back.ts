/**
 * The writers' loop of the failover tests, reading a whole log back after a
 * failover, and the two verdicts they give on what the writers had acknowledged.
 */
import { expect } from 'vitest';
import type { EventLog } from '../../src/core/ports.js';
import { message } from '../fixtures/events.js';
import { waitFor } from './free-port.js';

/** One acknowledged send: its body and the event id it was acknowledged with. */
export interface Acked {
  readonly body: string;
  readonly eventId: string;
}

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

/**
 * With waitReplicas ≥ 1: nothing is doubled, every writer got its `perRoom`
 * sends acknowledged, and each is in the log with the id it was
 * acknowledged with, in its room's order.
 */
export async function expectEveryAckedOnce(log: EventLog, rooms: readonly string[], acked: ReadonlyMap<string, readonly Acked[]>, perRoom: number): Promise<void> {
  const { seen, bodies } = await readBack(log, rooms);
  expect(new Set(seen).size).toBe(seen.length);
  for (const room of rooms) {
    const got = bodies.get(room) ?? [];
    expect(new Set(got).size).toBe(got.length);
    const mine = acked.get(room) ?? [];
    expect(mine).toHaveLength(perRoom);
    for (const { eventId } of mine) expect(seen).toContain(eventId);
    expect(got).toEqual(mine.map((a) => a.body));
  }
}

/**
 * With waitReplicas 0: nothing is doubled, every writer recovered (got its
 * `perRoom` sends acknowledged), and what is in the log is in its room's
 * order and was acknowledged. Returns how many acknowledged sends are
 * missing (the documented trade-off: reported, not asserted to be zero).
 */
export async function countAckedLost(log: EventLog, rooms: readonly string[], acked: ReadonlyMap<string, readonly Acked[]>, perRoom: number): Promise<number> {
  const { seen, bodies } = await readBack(log, rooms);
  expect(new Set(seen).size).toBe(seen.length);
  let lost = 0;
  for (const room of rooms) {
    const got = bodies.get(room) ?? [];
    expect(new Set(got).size).toBe(got.length);
    const mine = acked.get(room) ?? [];
    expect(mine).toHaveLength(perRoom);
    const present = new Set(got);
    lost += mine.filter((a) => !present.has(a.body)).length;
    expect(got).toEqual(mine.map((a) => a.body).filter((b) => present.has(b)));
  }
  return lost;
}

/**
 * The sender's loop: the same draft again until it is acknowledged (the
 * idempotency key makes that safe); `onAttempt` counts every append call.
 */
export async function appendUntilAcked(log: EventLog, room: string, body: string, onAttempt?: () => void): Promise<string> {
  const draft = message(room, body);
  let eventId = '';
  await waitFor(
    async () => {
      onAttempt?.();
      try {
        eventId = (await log.append(draft)).eventId;
        return true;
      } catch {
        return false;
      }
    },
    { timeoutMs: 90_000, intervalMs: 100, what: `the append of ${body} to be acknowledged` },
  );
  return eventId;
}
