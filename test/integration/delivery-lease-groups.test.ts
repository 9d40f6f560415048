/**
 * Delivery leases are held per key group (issue 24): the partitions sharing
 * a hash slot (keys.ts, layout 2: p mod 18) share one lease per adapter, and
 * a process's workers of one group share each renewal, so the lease calls a
 * process makes grow with the groups, not the partitions. On Redis: one
 * lease key per group; a second process takes whole groups; every event is
 * still delivered once the holder stops.
 */
import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { createDeliveryManager, type DeliveryManager } from '../../src/bridge/delivery.js';
import { createIngestSink } from '../../src/bridge/ingest.js';
import { createRoomLinks, type RoomLinks } from '../../src/bridge/links.js';
import type { EventLog } from '../../src/core/ports.js';
import { createEventLog, createMemoryStore } from '../../src/eventlog/index.js';
import { KEY_GROUPS, LATEST_KEY_LAYOUT, keySpace } from '../../src/eventlog/keys.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { waitFor } from '../harness/free-port.js';
import { testPrefix } from '../harness/redis.js';
import { TestAdapter } from '../harness/test-adapter.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

async function deliveringReplica(log: EventLog, owner: string, leaseMs: number): Promise<{ manager: DeliveryManager; adapter: TestAdapter }> {
  const links: RoomLinks = await createRoomLinks({ rooms: log.rooms, logger: silentLogger() });
  cleanup.push(async () => links.close());
  const adapter = new TestAdapter('remote', createIngestSink({ log, logger: silentLogger() }));
  await adapter.start();
  const manager = createDeliveryManager({ log, adapters: [adapter], links, logger: silentLogger(), owner, options: { leaseMs, backoffBaseMs: 20, backoffMaxMs: 200 } });
  await manager.start();
  cleanup.push(() => manager.stop(1000));
  return { manager, adapter };
}

describe('delivery leases per key group', () => {
  it('memory: at 72 partitions a process renews one lease per group, not per partition', async () => {
    const PARTITIONS = 72;
    const LEASE_MS = 600;
    const store = createMemoryStore({ partitions: PARTITIONS });
    const calls: number[] = [];
    const acquire = store.backend.leaseAcquire.bind(store.backend);
    store.backend.leaseAcquire = (partition, ...rest) => {
      calls.push(partition);
      return acquire(partition, ...rest);
    };
    const log = createEventLog({ partitions: PARTITIONS, log: silentLogger(), memoryStore: store });
    cleanup.push(() => log.close());
    const started = Date.now();
    const { manager } = await deliveringReplica(log, 'one', LEASE_MS);
    await waitFor(() => (manager.leases()['remote'] ?? []).length === PARTITIONS, { timeoutMs: 20_000, what: 'every partition held' });
    // let the workers renew for a few lease periods
    const windows = 5 * 6;
    await waitFor(() => Date.now() - started >= (windows * LEASE_MS) / 6, { timeoutMs: 60_000, intervalMs: 50, what: 'a few lease periods' });
    const elapsed = Date.now() - started;
    const count = calls.length;
    // one renewal per group per sixth of the lease time at most (workers loop every third);
    // per partition it would be 72 per third, four times as many
    const bound = KEY_GROUPS * (Math.ceil(elapsed / (LEASE_MS / 6)) + 1);
    process.stdout.write(`lease calls at ${PARTITIONS} partitions in ${elapsed} ms: ${count} (bound ${bound}; per partition a worker alone makes ${Math.floor(elapsed / (LEASE_MS / 3))})\n`);
    expect(count).toBeGreaterThan(0);
    expect(count).toBeLessThanOrEqual(bound);
    // each group's calls name one partition of it at a time: no more distinct callers than needed
    expect(new Set(calls.map((p) => p % KEY_GROUPS)).size).toBe(KEY_GROUPS);
  }, 90_000);

  it('memory: an idle partition costs one group read per wait, no head lookup, and an append still wakes it at once', async () => {
    const LEASE_MS = 600;
    const store = createMemoryStore({ partitions: 1 });
    const counts = { reads: 0, heads: 0 };
    const groupRead = store.backend.groupRead.bind(store.backend);
    store.backend.groupRead = (partition, group, consumer, mode, count) => {
      if (mode === 'new') counts.reads++;
      return groupRead(partition, group, consumer, mode, count);
    };
    const feedBounds = store.backend.feedBounds.bind(store.backend);
    store.backend.feedBounds = (partition) => {
      counts.heads++;
      return feedBounds(partition);
    };
    const log = createEventLog({ partitions: 1, log: silentLogger(), memoryStore: store });
    cleanup.push(() => log.close());
    await log.rooms.put({ id: 'idle', links: [{ endpoint: 'remote', target: 't-idle' }] });
    const { manager, adapter } = await deliveringReplica(log, 'one', LEASE_MS);
    await waitFor(() => (manager.leases()['remote'] ?? []).length === 1, { timeoutMs: 10_000, what: 'the lease' });
    // let the live reader start, then count over idle waits (a worker waits a third of the lease time)
    const first = await log.append(message('idle', 'wake up'));
    await waitFor(async () => (await adapter.recorder.all()).some((d) => d.eventId === first.eventId), { timeoutMs: 10_000, what: 'the first delivery' });
    const start = { ...counts, at: Date.now() };
    await waitFor(() => Date.now() - start.at >= 10 * (LEASE_MS / 3), { timeoutMs: 60_000, intervalMs: 50, what: 'ten idle waits' });
    const waits = (Date.now() - start.at) / (LEASE_MS / 3);
    const reads = counts.reads - start.reads;
    const heads = counts.heads - start.heads;
    process.stdout.write(`idle partition over ${waits.toFixed(1)} waits: ${reads} group reads, ${heads} head lookups\n`);
    // before: a head lookup and two reads per wait
    expect(heads).toBeLessThanOrEqual(1);
    expect(reads).toBeLessThanOrEqual(Math.ceil(waits) + 2);
    // and an append during a wait still wakes the worker (a wait ends with nothing only when nothing came)
    const sent = await log.append(message('idle', 'during a wait'));
    await waitFor(async () => (await adapter.recorder.all()).some((d) => d.eventId === sent.eventId), { timeoutMs: 10_000, what: 'the delivery after idle waits' });
  }, 90_000);

  it('redis: one lease key per group; a second process takes whole groups, and every event is delivered once after the first stops', async () => {
    const PARTITIONS = 36;
    const prefix = testPrefix('leasegroups');
    const redis = new Redis(inject('redisUrl'));
    cleanup.push(async () => void (await redis.quit()));
    const open = () => createEventLog({ partitions: PARTITIONS, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    const logA = open();
    cleanup.push(() => logA.close());
    const rooms = Array.from({ length: 24 }, (_, i) => `lg-${i}`);
    for (const id of rooms) await logA.rooms.put({ id, links: [{ endpoint: 'remote', target: `t-${id}` }] });
    const a = await deliveringReplica(logA, 'A', 1500);
    await waitFor(() => (a.manager.leases()['remote'] ?? []).length === PARTITIONS, { timeoutMs: 20_000, what: 'A to hold every partition' });
    const keys = keySpace(prefix, LATEST_KEY_LAYOUT);
    const leaseKeys = (await redis.keys(`${prefix}*:lease:out:remote`)).sort();
    expect(leaseKeys).toEqual(Array.from({ length: KEY_GROUPS }, (_, g) => keys.lease(g, 'out:remote')).sort());
    for (let p = 0; p < PARTITIONS; p++) expect(await redis.get(keys.lease(p, 'out:remote'))).toBe('A');

    const logB = open();
    cleanup.push(() => logB.close());
    const b = await deliveringReplica(logB, 'B', 1500);
    const sent: Array<{ room: string; eventId: string }> = [];
    for (let i = 0; i < 96; i++) {
      const room = rooms[i % rooms.length] ?? 'lg-0';
      sent.push({ room, eventId: (await logA.append(message(room, `m${i}`))).eventId });
    }
    await a.manager.stop(2000);
    // B takes every group once A's leases are released; whole groups, never part of one
    await waitFor(() => (b.manager.leases()['remote'] ?? []).length === PARTITIONS, { timeoutMs: 30_000, what: 'B to hold every partition' });
    const all = async () => [...(await a.adapter.recorder.all()), ...(await b.adapter.recorder.all())];
    await waitFor(async () => new Set((await all()).map((d) => d.eventId)).size === sent.length, { timeoutMs: 30_000, what: 'every event delivered' });
    const records = await all();
    for (const room of rooms) {
      const order = sent.filter((s) => s.room === room).map((s) => s.eventId);
      const got = records.filter((d) => d.room === room).map((d) => d.eventId);
      expect([...new Set(got)]).toEqual(order);
    }
  }, 120_000);
});
