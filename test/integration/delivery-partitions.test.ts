/**
 * Delivery when the partition count is raised while a replica runs (issue
 * 24): the replica holding the adapter's connection keeps its count until it
 * reads the stored one again (once a lease period), then delivers the new
 * partitions too — from their start, so an event appended there before it
 * noticed is not missed.
 */
import { afterEach, describe, expect, inject, it } from 'vitest';
import { createDeliveryManager, type DeliveryManager } from '../../src/bridge/delivery.js';
import { createIngestSink } from '../../src/bridge/ingest.js';
import { createRoomLinks, type RoomLinks } from '../../src/bridge/links.js';
import type { EventLog } from '../../src/core/ports.js';
import { locateEventId, partitionOf } from '../../src/core/position.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { waitFor } from '../harness/free-port.js';
import { testPrefix } from '../harness/redis.js';
import { TestAdapter } from '../harness/test-adapter.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

describe('delivery across a partition-count raise (redis)', () => {
  it('a running replica at 4 partitions takes up partitions 4..7 once another raised the count to 8, and delivers what was appended there', async () => {
    const prefix = testPrefix('delivery-raise');
    const open = (partitions: number): EventLog => createEventLog({ partitions, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    const at4 = open(4);
    cleanup.push(() => at4.close());
    const link = (id: string) => ({ id, links: [{ endpoint: 'remote', target: `remote-${id}` }] });
    await at4.rooms.put(link('before'));
    const links: RoomLinks = await createRoomLinks({ rooms: at4.rooms, logger: silentLogger() });
    cleanup.push(async () => links.close());
    const adapter = new TestAdapter('remote', createIngestSink({ log: at4, logger: silentLogger() }));
    await adapter.start();
    const manager: DeliveryManager = createDeliveryManager({ log: at4, adapters: [adapter], links, logger: silentLogger(), options: { leaseMs: 1000, backoffBaseMs: 20, backoffMaxMs: 200 } });
    await manager.start();
    cleanup.push(() => manager.stop(1000));
    await waitFor(() => (manager.leases()['remote'] ?? []).length === 4, { timeoutMs: 20_000, what: 'the 4 delivery leases' });

    // another replica restarts at 8 and creates a room on a new partition, and sends to it at once
    const at8 = open(8);
    cleanup.push(() => at8.close());
    await at8.open();
    let room = '';
    for (let i = 0; room === ''; i++) if (partitionOf(`after${i}`, 8) >= 4) room = `after${i}`;
    await at8.rooms.put(link(room));
    const sent = await at8.append(message(room, 'on a new partition'));
    expect(locateEventId(sent.eventId)?.partition).toBeGreaterThanOrEqual(4);
    const old = await at8.append(message('before', 'on an old partition'));

    const delivered = async () => (await adapter.recorder.all()).map((d) => d.eventId);
    await waitFor(async () => (await delivered()).includes(sent.eventId), { timeoutMs: 30_000, what: 'the event on the new partition delivered' });
    expect(await delivered()).toContain(old.eventId);
    expect(at4.info.partitions).toBe(8);
    await waitFor(() => (manager.leases()['remote'] ?? []).length === 8, { timeoutMs: 20_000, what: 'the 8 delivery leases' });
  }, 90_000);
});
