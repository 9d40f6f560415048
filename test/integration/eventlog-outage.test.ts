/**
 * A Redis outage longer than the client's own retries (~10 s): appends of one
 * room keep their order. The harness kills its own redis-server, keeps it
 * down for 12 s, and starts it again on the same port.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { EventLog } from '../../src/core/ports.js';
import { isSyncgateError } from '../../src/core/errors.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { waitFor } from '../harness/free-port.js';
import { startOwnedRedis, testPrefix, type OwnedRedis } from '../harness/redis.js';

const OUTAGE_MS = 12_000;
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

/** Appends until it succeeds, as an adapter that must not lose the message does. */
async function appendUntilIn(log: EventLog, body: string): Promise<void> {
  await waitFor(
    async () => {
      try {
        await log.append(message('r', body));
        return true;
      } catch {
        return false;
      }
    },
    { timeoutMs: 60_000, intervalMs: 200, what: `the append of ${body} to get in` },
  );
}

describe('event log across a Redis outage', () => {
  it('an append that met a 12 s outage lands before appends made after it; nothing is lost or doubled', async () => {
    const redis: OwnedRedis = await startOwnedRedis();
    cleanup.push(() => redis.stop());
    const log = createEventLog({ partitions: 4, log: silentLogger(), redis: { url: redis.url, prefix: testPrefix('outage') } });
    cleanup.push(() => log.close());
    await log.rooms.put({ id: 'r', links: [] });
    await log.append(message('r', 'before'));

    await redis.kill();
    const killedAt = Date.now();
    let aFailed: unknown;
    let aSettled = false;
    const a = log.append(message('r', 'A')).then(
      () => (aSettled = true),
      (err: unknown) => {
        aSettled = true;
        aFailed = err;
      },
    );
    // Redis stays away for the outage, or until the first append gave up
    await waitFor(() => aSettled || Date.now() - killedAt >= OUTAGE_MS, { timeoutMs: 60_000, what: 'the outage to last' });
    if (aFailed !== undefined && isSyncgateError(aFailed)) expect(aFailed.code).toBe('SG_ERR_LOG_UNAVAILABLE');
    // a later append of the same room, made during the outage
    const b = log.append(message('r', 'B'));
    while (Date.now() - killedAt < OUTAGE_MS) await new Promise((resolve) => setTimeout(resolve, 100));
    await redis.restart();
    await b;
    await a;
    if (aFailed !== undefined) await appendUntilIn(log, 'A');

    const history = await log.roomHistory('r', { dir: 'f', limit: 10 });
    expect(history.events.map((e) => (e.kind === 'message' ? e.content.body : e.kind))).toEqual(['before', 'A', 'B']);
  });
});
