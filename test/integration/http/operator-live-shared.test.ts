/**
 * The live room page's delivery-state checks are shared (issue 25): however
 * many consoles follow one room, the room's unsettled events are re-derived
 * once per tick (one delivery-record read per link), counted in
 * `syncgate_console_live_checks_total`, and every page still gets each
 * change.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { DeliveryQueue, EventLog } from '../../../src/core/ports.js';
import { message } from '../../fixtures/events.js';
import { waitFor } from '../../harness/free-port.js';
import { ADMIN_TOKEN, expectStatus, makeLog, openLiveTimeline, startApp, type LiveFrame, type TestApp } from './helpers.js';

const PAGES = 6;
const UNSETTLED = 40;

/** The log, counting the delivery-record reads and the event ids they ask for. */
function countingLog(log: EventLog): { log: EventLog; reads: () => number; ids: () => number } {
  let reads = 0;
  let ids = 0;
  const delivery = new Proxy(log.delivery, {
    get(target, prop) {
      if (prop === 'deliveryRecords') {
        const read: DeliveryQueue['deliveryRecords'] = (room, eventIds, endpoint) => {
          reads++;
          ids += eventIds.length;
          return target.deliveryRecords(room, eventIds, endpoint);
        };
        return read;
      }
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  const wrapped = new Proxy(log, {
    get(target, prop) {
      if (prop === 'delivery') return delivery;
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { log: wrapped, reads: () => reads, ids: () => ids };
}

async function checks(t: TestApp): Promise<number> {
  const text = (await t.client.request('GET', '/metrics')).text;
  const m = /^syncgate_console_live_checks_total (\d+)/m.exec(text);
  return m ? Number(m[1]) : 0;
}

let t: TestApp | undefined;
const pages: Array<{ close: () => void }> = [];
afterEach(async () => {
  for (const p of pages.splice(0)) p.close();
  await t?.close();
  t = undefined;
});

describe('live room pages share one delivery-state checker per room', () => {
  it(`re-derives ${UNSETTLED} unsettled events once per tick with ${PAGES} pages open, and every page gets the change`, async () => {
    const counting = countingLog(makeLog());
    t = await startApp({ log: counting.log, listen: true });
    const url = t.url ?? '';
    expectStatus(await t.client.request('PUT', '/v1/admin/rooms/plant', { token: ADMIN_TOKEN, body: { links: [{ endpoint: 'mqtt', target: 'plant/+device/alert' }] } }), 200);
    const appended: string[] = [];
    // no MQTT adapter here: every event stays `pending` on the link
    for (let i = 0; i < UNSETTLED; i++) appended.push((await counting.log.append(message('plant', `m${i}`))).eventId);

    for (let i = 0; i < PAGES; i++) pages.push(await openLiveTimeline(url, 'plant', { token: ADMIN_TOKEN, limit: UNSETTLED }));
    const all = pages as Array<{ frames: LiveFrame[]; close: () => void }>;
    await waitFor(() => all.every((p) => p.frames.some((f) => f.name === 'snapshot')), { timeoutMs: 30_000, what: 'every page\'s snapshot' });

    const before = { checks: await checks(t), reads: counting.reads(), ids: counting.ids() };
    await waitFor(async () => (await checks(t as TestApp)) >= before.checks + 3, { timeoutMs: 30_000, what: 'three ticks of the shared checker' });
    const after = { checks: await checks(t), reads: counting.reads(), ids: counting.ids() };
    const ticks = after.checks - before.checks;
    // one read per tick for the one link, whatever the number of pages (a tick may be in flight at either end)
    expect(after.reads - before.reads).toBeLessThanOrEqual(ticks + 1);
    expect(after.ids - before.ids).toBeLessThanOrEqual((ticks + 1) * UNSETTLED);

    // a delivery is seen by every page
    const target = appended[5] ?? '';
    await counting.log.delivery.recordDelivery('plant', target, 'mqtt', {});
    await waitFor(
      () =>
        all.every((p) =>
          p.frames.some((f) => f.name === 'deliveries' && (f.data as { eventId: string }).eventId === target && (f.data as { deliveries: Array<{ state: string }> }).deliveries[0]?.state === 'delivered'),
        ),
      { timeoutMs: 30_000, what: 'the delivery on every page' },
    );
  }, 120_000);
});
