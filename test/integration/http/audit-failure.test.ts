/**
 * A replay or discard that happened is answered as done even when its audit
 * entry cannot be written (issue 25): the answer says the audit failed, the
 * failure is logged and counted, and the entry is written by a retry once
 * the store takes it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { EventLog, StateStore } from '../../../src/core/ports.js';
import { AUDIT_NS, readAudit } from '../../../src/http/routes/audit.js';
import { message } from '../../fixtures/events.js';
import { waitFor } from '../../harness/free-port.js';
import { ADMIN_TOKEN, adminRoom, expectStatus, makeLog, startApp, type TestApp } from './helpers.js';

/** The log with a state store whose audit writes fail while `failing` > 0 (each failure counts it down; Infinity: until healed). */
function flakyAudit(log: EventLog): { log: EventLog; fail(times: number): void; attempts(): number } {
  let failing = 0;
  let attempts = 0;
  const state: StateStore = {
    get: (ns, key) => log.state.get(ns, key),
    async set(ns, key, value) {
      if (ns === AUDIT_NS) {
        attempts++;
        if (failing > 0) {
          failing--;
          throw new Error('audit store refused the write (test)');
        }
      }
      return log.state.set(ns, key, value);
    },
    setIfAbsent: (ns, key, value) => log.state.setIfAbsent(ns, key, value),
    delete: (ns, key) => log.state.delete(ns, key),
    entries: (ns) => log.state.entries(ns),
    advance: (ns, key, value) => log.state.advance(ns, key, value),
    update: (ns, set, del) => log.state.update(ns, set, del),
    fencedUpdate: (ns, token, set, del) => log.state.fencedUpdate(ns, token, set, del),
  };
  const wrapped = new Proxy(log, {
    get(target, prop) {
      if (prop === 'state') return state;
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { log: wrapped, fail: (times) => void (failing = times), attempts: () => attempts };
}

/** Appends `n` events to `room` and dead-letters them on `out:x`; returns the dead-letter ids. */
async function deadLetters(log: EventLog, room: string, n: number): Promise<string[]> {
  // the groups exist before the appends, as the delivery engine makes them
  for (let p = 0; p < log.info.partitions; p++) await log.delivery.ensureGroup(p, 'out:x');
  for (let i = 0; i < n; i++) await log.append(message(room, `dead ${i}`));
  for (let p = 0; p < log.info.partitions; p++) {
    expect(await log.delivery.acquireLease(p, 'out:x', 'me', 60_000)).toBe(true);
    for (const entry of await log.delivery.readNew(p, 'out:x', 'me', 100, 0)) {
      await log.delivery.deadLetter(p, 'out:x', 'me', { id: entry.id, room: entry.room, eventId: entry.event?.eventId ?? '' }, 'refused (test)', 3);
    }
  }
  const ids = (await log.delivery.listDead(100, 'out:x')).map((d) => d.id);
  expect(ids).toHaveLength(n);
  return ids;
}

let t: TestApp | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

describe('audit write failure after a replay or discard', () => {
  it('answers the replay as done, says the audit failed, counts it, and writes the entry once the store takes it', async () => {
    const flaky = flakyAudit(makeLog());
    t = await startApp({ log: flaky.log });
    await adminRoom(t.client, 'plant');
    const [first, second] = await deadLetters(flaky.log, 'plant', 2);

    flaky.fail(Number.POSITIVE_INFINITY);
    const replay = expectStatus(await t.client.request('POST', '/v1/admin/dead-letters/replay', { token: ADMIN_TOKEN, body: { ids: [first] } }), 200);
    expect(replay.body).toMatchObject({ replayed: 1, requested: 1, audit: { recorded: false, retrying: true } });
    expect(String((replay.body['audit'] as { error?: string }).error)).toContain('audit store refused the write');
    // the replay did happen
    expect((await flaky.log.delivery.listDead(100, 'out:x')).map((d) => d.id)).toEqual([second]);
    const metrics = await t.client.request('GET', '/metrics');
    expect(metrics.text).toMatch(/syncgate_audit_write_failures_total\{action="dead-letters.replay"\} [1-9]/);

    // the store heals: the retry writes the entry
    flaky.fail(0);
    await waitFor(async () => (await readAudit(flaky.log.state)).some((e) => e.action === 'dead-letters.replay' && e.ids[0] === first), { timeoutMs: 30_000, what: 'the audit entry written by the retry' });
  });

  it('answers a discard as done when the first audit writes fail, and records it by retrying at once', async () => {
    const flaky = flakyAudit(makeLog());
    t = await startApp({ log: flaky.log });
    await adminRoom(t.client, 'plant');
    const [one] = await deadLetters(flaky.log, 'plant', 1);

    flaky.fail(1);
    const drop = expectStatus(await t.client.request('POST', '/v1/admin/dead-letters/drop', { token: ADMIN_TOKEN, body: { ids: [one] } }), 200);
    expect(drop.body).toMatchObject({ dropped: 1, requested: 1, audit: { recorded: true } });
    expect(flaky.attempts()).toBe(2);
    expect(await flaky.log.delivery.deadCount('out:x')).toBe(0);
    expect((await readAudit(flaky.log.state)).map((e) => e.action)).toEqual(['dead-letters.drop']);
  });
});
