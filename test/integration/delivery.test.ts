/**
 * The delivery engine against real Redis (and the memory log), with a test
 * adapter that implements the port honestly.
 */
import { afterEach, describe, expect, inject, it } from 'vitest';
import { ECHO_ID_KEY } from '../../src/core/adapter.js';
import type { EventLog } from '../../src/core/ports.js';
import { partitionOf } from '../../src/core/position.js';
import { createDeliveryManager, type DeliveryManager, type DeliveryObserver } from '../../src/bridge/delivery.js';
import { createIngestSink } from '../../src/bridge/ingest.js';
import { createRoomLinks, type RoomLinks } from '../../src/bridge/links.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { waitFor } from '../harness/free-port.js';
import { testPrefix } from '../harness/redis.js';
import { TestAdapter } from '../harness/test-adapter.js';

const PARTITIONS = 4;

/** Two room ids that hash to the same partition, so isolation is tested within one worker. */
function roomsInOnePartition(count: number): string[] {
  const byPartition = new Map<number, string[]>();
  for (let i = 0; ; i++) {
    const room = `r${i}`;
    const p = partitionOf(room, PARTITIONS);
    const list = [...(byPartition.get(p) ?? []), room];
    if (list.length === count) return list;
    byPartition.set(p, list);
  }
}

interface Rig {
  log: EventLog;
  links: RoomLinks;
  adapter: TestAdapter;
  manager: DeliveryManager;
  dead: string[];
}

const rigs: Rig[] = [];
afterEach(async () => {
  for (const rig of rigs.splice(0)) {
    await rig.manager.stop(1000);
    rig.links.close();
    await rig.log.close();
  }
});

for (const backend of ['redis', 'memory'] as const) {
  describe(`delivery (${backend})`, () => {
    async function rig(rooms: string[], options: { maxAttempts?: number; leaseMs?: number; owner?: string } = {}): Promise<Rig> {
      const log = createEventLog({
        partitions: PARTITIONS,
        log: silentLogger(),
        ...(backend === 'redis' ? { redis: { url: inject('redisUrl'), prefix: testPrefix('delivery') } } : {}),
      });
      for (const id of rooms) await log.rooms.put({ id, links: [{ endpoint: 'remote', target: `remote-${id}` }] });
      const links = await createRoomLinks({ rooms: log.rooms, logger: silentLogger() });
      const sink = createIngestSink({ log, logger: silentLogger() });
      const adapter = new TestAdapter('remote', sink);
      await adapter.start();
      const dead: string[] = [];
      const observer: DeliveryObserver = { delivered() {}, retried() {}, deadLettered: (_a, _r, eventId) => dead.push(eventId), leaseChanged() {} };
      const manager = createDeliveryManager({
        log,
        adapters: [adapter],
        links,
        logger: silentLogger(),
        observer,
        ...(options.owner !== undefined ? { owner: options.owner } : {}),
        options: { leaseMs: options.leaseMs ?? 3000, backoffBaseMs: 20, backoffMaxMs: 200, maxAttempts: options.maxAttempts ?? 4 },
      });
      const r = { log, links, adapter, manager, dead };
      rigs.push(r);
      await manager.start();
      // the groups are created when a worker takes its lease: wait until every partition is held
      await waitFor(() => (manager.leases()['remote'] ?? []).length === PARTITIONS, { timeoutMs: 10_000, what: 'all delivery leases' });
      return r;
    }

    const delivered = async (r: Rig, room?: string) => (await r.adapter.recorder.all()).filter((d) => room === undefined || d.room === room).map((d) => d.eventId);

    it('delivers API events to the linked adapter and ingests the adapter’s events, with no echo either way', async () => {
      const r = await rig(['ops']);
      const sent = await r.log.append(message('ops', 'from the API'));
      await waitFor(async () => (await delivered(r)).includes(sent.eventId), { timeoutMs: 10_000, what: 'delivery to the adapter' });

      const inbound = await r.adapter.receive({ ...message('ops', 'from the remote side'), origin: { proto: 'xmpp', via: 'remote', ids: { 'test.id': 'native-1' } } });
      expect(inbound.status).toBe('appended');
      // the reflection of our own delivery comes back carrying our event id: it is an echo, not a new event
      const echo = await r.adapter.receive({ ...message('ops', 'from the API'), origin: { proto: 'xmpp', via: 'remote', ids: { [ECHO_ID_KEY]: sent.eventId, 'test.stanza': 'sid-9' } } });
      expect(echo).toEqual({ status: 'echo', eventId: sent.eventId });
      expect(await r.log.resolve('ops', 'xmpp:test.stanza:sid-9')).toBe(sent.eventId);
      expect(await r.log.resolve('ops', `xmpp:test.id:remote-${sent.eventId}`)).toBe(sent.eventId);

      const { events } = await r.log.read(undefined, { rooms: 'all', limit: 100 });
      expect(events.map((e) => e.eventId)).toEqual([sent.eventId, inbound.status === 'appended' ? inbound.eventId : '']);
      // give the worker a chance to (wrongly) send the inbound event back, then check it did not
      const marker = await r.log.append(message('ops', 'after'));
      await waitFor(async () => (await delivered(r)).includes(marker.eventId), { timeoutMs: 10_000, what: 'the marker delivery' });
      expect(await delivered(r)).toEqual([sent.eventId, marker.eventId]);
    });

    it('queues while the adapter is down and delivers in log order, each once, when it returns', async () => {
      const [a = 'x', b = 'y'] = roomsInOnePartition(2);
      const r = await rig([a, b]);
      r.adapter.controls.down = true;
      const ids: Record<string, string[]> = { [a]: [], [b]: [] };
      for (let i = 0; i < 40; i++) {
        const room = i % 2 ? a : b;
        ids[room]?.push((await r.log.append(message(room, `m${i}`))).eventId);
      }
      // more failed tries than maxAttempts: a disconnected adapter spends no attempts, so nothing is dead-lettered
      await waitFor(() => r.adapter.controls.attempts >= 10, { timeoutMs: 20_000, what: 'failed attempts while down' });
      expect(await delivered(r)).toEqual([]);
      expect(await r.log.delivery.deadCount()).toBe(0);
      r.adapter.controls.down = false;
      await waitFor(async () => (await delivered(r)).length === 40, { timeoutMs: 20_000, what: 'the backlog' });
      expect(await delivered(r, a)).toEqual(ids[a]);
      expect(await delivered(r, b)).toEqual(ids[b]);
      expect(await r.adapter.recorder.duplicates()).toBe(0);
    });

    it('dead-letters a failing room after N attempts while another room of the same partition flows; replay delivers them', async () => {
      const [bad = 'x', good = 'y'] = roomsInOnePartition(2);
      const r = await rig([bad, good], { maxAttempts: 3 });
      r.adapter.controls.failRooms.add(bad);
      const badIds = [];
      const goodIds = [];
      for (let i = 0; i < 5; i++) {
        badIds.push((await r.log.append(message(bad, `bad${i}`))).eventId);
        goodIds.push((await r.log.append(message(good, `good${i}`))).eventId);
      }
      await waitFor(async () => (await delivered(r, good)).length === 5, { timeoutMs: 10_000, what: 'the healthy room' });
      expect(await delivered(r, good)).toEqual(goodIds);
      // the observer hears of a dead letter once it is written: under load the fifth call can come after the count shows it
      await waitFor(async () => (await r.log.delivery.deadCount('out:remote')) === 5 && r.dead.length === 5, { timeoutMs: 20_000, what: 'five dead letters, stored and reported' });
      expect(r.dead.sort()).toEqual([...badIds].sort());
      const dead = await r.log.delivery.listDead(100, 'out:remote');
      expect(dead.map((d) => d.eventId).sort()).toEqual([...badIds].sort());
      expect(dead.every((d) => d.attempts === 3 && d.reason.includes('failing'))).toBe(true);

      r.adapter.controls.failRooms.clear();
      expect(await r.log.delivery.replayDead(dead.map((d) => d.id))).toBe(5);
      await waitFor(async () => (await delivered(r, bad)).length === 5, { timeoutMs: 10_000, what: 'the replayed room' });
      expect((await delivered(r, bad)).sort()).toEqual([...badIds].sort());
      expect(await r.log.delivery.deadCount()).toBe(0);
    });

    it('claims entries left in the pending list of a consumer that no longer holds the lease', async () => {
      const r = await rig(['ops']);
      const p = partitionOf('ops', PARTITIONS);
      // A stale holder (paused, then gone) reads an entry into its own pending list while the
      // worker holds the lease; the worker takes it over once it has been idle for a lease time.
      let stranded: string | undefined;
      for (let attempt = 0; attempt < 20 && !stranded; attempt++) {
        const appended = await r.log.append(message('ops', `stranded ${attempt}`));
        const read = await r.log.delivery.readNew(p, 'out:remote', 'ghost-consumer', 10, 0);
        if (read.some((e) => e.event?.eventId === appended.eventId)) stranded = appended.eventId;
      }
      if (!stranded) throw new Error('the ghost consumer never got an entry before the worker');
      const id = stranded;
      await waitFor(async () => (await delivered(r)).includes(id), { timeoutMs: 20_000, what: 'the stranded entry to be claimed and delivered' });
      expect(await r.adapter.recorder.duplicates()).toBe(0);
    });

    it('after losing and retaking its lease mid-delivery, a worker does not go on with the old queue beside the new one', async () => {
      const owner = `worker-${backend}`;
      const r = await rig(['ops'], { leaseMs: 900, owner });
      const p = partitionOf('ops', PARTITIONS);
      const group = 'out:remote';
      const held = () => (r.manager.leases()['remote'] ?? []).includes(p);
      // The first delivery hangs for 2.5 s; the lease is taken away and given back meanwhile.
      r.adapter.controls.slowMs = 2500;
      const ids: string[] = [];
      for (let i = 0; i < 10; i++) ids.push((await r.log.append(message('ops', `m${i}`))).eventId);
      await waitFor(() => r.adapter.controls.attempts >= 1, { timeoutMs: 5_000, what: 'the first delivery under way' });
      r.adapter.controls.slowMs = 10;
      // Take the lease away: the worker renews it every 300 ms and may win it back between the
      // release and the thief's acquire, so try again until the thief holds it.
      await waitFor(
        async () => {
          await r.log.delivery.releaseLease(p, group, owner);
          return r.log.delivery.acquireLease(p, group, 'thief', 10_000);
        },
        { timeoutMs: 10_000, what: 'the thief to take the lease' },
      );
      await waitFor(() => !held(), { timeoutMs: 5_000, what: 'the worker to notice the lost lease' });
      await r.log.delivery.releaseLease(p, group, 'thief');
      await waitFor(held, { timeoutMs: 5_000, what: 'the worker to take the lease again' });
      await waitFor(async () => new Set(await delivered(r, 'ops')).size === ids.length, { timeoutMs: 15_000, what: 'every event delivered' });
      // The hung delivery returns (the remote absorbs it as a repeat). Its worker must stop there:
      // the retaken lease has its own queue, which already delivered the rest.
      await waitFor(async () => (await r.adapter.recorder.duplicates()) >= 1, { timeoutMs: 10_000, what: 'the hung delivery to return' });
      const last = (await r.log.append(message('ops', 'after'))).eventId;
      await waitFor(async () => (await delivered(r, 'ops')).includes(last), { timeoutMs: 10_000, what: 'a later event' });
      expect([...new Set(await delivered(r, 'ops'))]).toEqual([...ids, last]);
      // 10 events, the one in flight when the lease went, and the later one: nothing sent again.
      expect(r.adapter.controls.attempts).toBe(12);
      expect(await r.adapter.recorder.duplicates()).toBe(1);
    });

    it('honours retry-after and gives references in the adapter’s native ids', async () => {
      const r = await rig(['ops']);
      const original = await r.log.append(message('ops', 'original'));
      await waitFor(async () => (await delivered(r)).length === 1, { timeoutMs: 10_000, what: 'the original' });
      r.adapter.controls.down = true;
      r.adapter.controls.retryAfterMs = 400;
      const editDraft = { ...message('ops', 'edited'), kind: 'edit' as const, rel: { replaces: original.eventId } };
      const edit = await r.log.append(editDraft);
      await waitFor(() => r.adapter.controls.attempts >= 2, { timeoutMs: 10_000, what: 'a failed attempt' });
      const failedAt = Date.now();
      r.adapter.controls.down = false;
      await waitFor(async () => (await delivered(r)).includes(edit.eventId), { timeoutMs: 10_000, what: 'the edit' });
      expect(Date.now() - failedAt).toBeGreaterThanOrEqual(300);
      const rec = (await r.adapter.recorder.all()).find((d) => d.eventId === edit.eventId);
      expect(rec?.references.replaces).toEqual({ 'test.id': `remote-${original.eventId}` });
    });
  });
}
