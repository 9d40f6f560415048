/**
 * The log on Redis Sentinel (redis.sentinel): the EventLog contract suite,
 * and a whole gateway across a failover — the master is killed (-9), the
 * sentinels promote the replica, the killed server comes back as its
 * replica. With waitReplicas 1 every send the gateway acknowledged is in the
 * log once, in its room's order, and delivered. One master + replica + 3
 * sentinels for the whole file, started by the harness.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isSyncgateError } from '../../src/core/errors.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { waitFor } from '../harness/free-port.js';
import { startGateway } from '../harness/gateway.js';
import { testPrefix } from '../harness/redis.js';
import { sentinelFailover, startRedisSentinel, type TestRedisSentinel } from '../harness/redis-sentinel.js';
import { TestAdapter, memoryRecorder } from '../harness/test-adapter.js';
import { eventLogContract } from './eventlog.contract.js';

let sentinel: TestRedisSentinel | undefined;
beforeAll(async () => {
  sentinel = await startRedisSentinel();
}, 120_000);
afterAll(async () => {
  await sentinel?.stop();
});

function started(): TestRedisSentinel {
  if (!sentinel) throw new Error('the test sentinels did not start');
  return sentinel;
}

eventLogContract({
  name: 'redis sentinel',
  create: async (options = {}) =>
    createEventLog({
      partitions: options.partitions ?? 4,
      log: silentLogger(),
      redis: { sentinel: { nodes: started().sentinels, name: started().name }, prefix: testPrefix('contract-sentinel') },
      ...(options.retention ? { retention: options.retention } : {}),
      ...(options.tailBuffer ? { tailBuffer: options.tailBuffer } : {}),
    }),
});

describe('Redis Sentinel with passwords', () => {
  it('uses redis.password for the master and redis.sentinel.password for the sentinels; a wrong one is a coded startup error', async () => {
    const secured = await startRedisSentinel({ dataPassword: 'data-secret-1', sentinelPassword: 'sentinel-secret-2' });
    const prefix = testPrefix('sentinel-auth');
    const open = (password: string, sentinelPassword: string) =>
      createEventLog({ partitions: 2, log: silentLogger(), redis: { sentinel: { nodes: secured.sentinels, name: secured.name, password: sentinelPassword }, password, prefix } });
    const log = open('data-secret-1', 'sentinel-secret-2');
    const wrong = open('data-secret-1', 'not-the-sentinel-password');
    try {
      await log.ping();
      await log.rooms.put({ id: 'auth', links: [] });
      const appended = await log.append(message('auth', 'through the sentinels, with passwords'));
      const read = await log.read(undefined, { rooms: 'all', limit: 10 });
      expect(read.events.map((e) => e.eventId)).toEqual([appended.eventId]);
      // the gateway's startup check: which setting points where, and that it is not reachable
      const refused = await wrong.ping().then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(isSyncgateError(refused, 'SG_ERR_LOG_UNAVAILABLE')).toBe(true);
      expect(String(refused)).toMatch(/Redis Sentinel master sgmaster/);
    } finally {
      await Promise.all([log.close(), wrong.close()]);
      await secured.stop();
    }
  }, 120_000);
});

describe('a gateway on Redis Sentinel', () => {
  it('kill -9 of the master with waitReplicas 1: every acknowledged send once, in room order, delivered; the gateway follows the new master', async () => {
    const s = started();
    const rooms = ['s-0', 's-1', 's-2', 's-3'];
    const perRoom = 40;
    const recorder = memoryRecorder();
    const gw = await startGateway({
      config: { partitions: 4, redis: { sentinel: { nodes: s.sentinels, name: s.name }, prefix: testPrefix('sentinel-gw'), waitReplicas: 1, waitTimeoutMs: 5_000 } },
      delivery: { leaseMs: 1500 },
      extraAdapters: ({ sink }) => [new TestAdapter('remote', sink, recorder)],
    });
    try {
      for (const room of rooms) expect((await gw.admin('PUT', `/v1/admin/rooms/${room}`, { links: [{ endpoint: 'remote', target: `t-${room}` }] })).status).toBe(200);
      const token = await gw.deviceToken('alice', rooms);
      const acked = new Map<string, string[]>(rooms.map((r) => [r, []]));
      const refusals = new Map<string, number>();
      const writing = Promise.all(
        rooms.map(async (room) => {
          for (let i = 0; i < perRoom; i++) {
            let eventId = '';
            await waitFor(
              async () => {
                const res = await gw
                  .device<{ eventId: string; code?: string }>(token, 'PUT', `/v1/rooms/${room}/send/m${i}`, { kind: 'message', content: { body: `${room}:${i}` } })
                  .catch((err: unknown) => ({ status: 0, body: { eventId: '', code: String(err) } }));
                if (res.status !== 200) refusals.set(`${res.status} ${res.body.code ?? ''}`, (refusals.get(`${res.status} ${res.body.code ?? ''}`) ?? 0) + 1);
                eventId = res.body.eventId;
                return res.status === 200;
              },
              // with waitReplicas 1 a send is acknowledged only once the killed server is back as a replica (sentinelFailover waits up to 180 s for it)
              { timeoutMs: 240_000, intervalMs: 100, what: `the send of ${room}:${i} to be acknowledged` },
            );
            acked.get(room)?.push(eventId);
          }
        }),
      );
      await waitFor(() => (acked.get('s-0')?.length ?? 0) >= 10, { timeoutMs: 60_000, what: '10 acknowledged sends' });
      const failoverStarted = Date.now();
      const killed = await sentinelFailover(s);
      const failoverSec = (Date.now() - failoverStarted) / 1000;
      await writing.catch((err: unknown) => {
        throw new Error(`${String(err)}; answers while failing over: ${JSON.stringify([...refusals])}`);
      });
      expect(await s.masterPort()).not.toBe(killed);

      // every acknowledged send once, in its room's order
      const byRoom = new Map<string, string[]>(rooms.map((r) => [r, []]));
      let cursor: string | undefined;
      for (let page = 0; page < 50; page++) {
        const read = await gw.gateway.log.read(cursor, { rooms: 'all', limit: 200 });
        for (const e of read.events) byRoom.get(e.room)?.push(e.eventId);
        cursor = read.next;
        if (read.events.length === 0) break;
      }
      for (const room of rooms) expect(byRoom.get(room)).toEqual(acked.get(room));
      // and delivered, in order
      await waitFor(async () => (await recorder.all()).length === rooms.length * perRoom, { timeoutMs: 60_000, what: 'every send delivered' });
      const delivered = await recorder.all();
      for (const room of rooms) expect(delivered.filter((d) => d.room === room).map((d) => d.eventId)).toEqual(acked.get(room));
      // while the master was away a send was refused only with a coded 503 (never a 500)
      for (const what of refusals.keys()) expect(what).toMatch(/^503 SG_ERR_LOG_(UNAVAILABLE|NOT_REPLICATED)$/);
      process.stdout.write(`sentinel failover, waitReplicas 1: kill, promotion and rejoin in ${failoverSec.toFixed(1)} s; ${rooms.length * perRoom} sends, ${await recorder.duplicates()} duplicate deliveries absorbed; refusals ${JSON.stringify([...refusals])}\n`);
      const ready = await fetch(`${gw.url}/readyz`);
      expect(ready.status).toBe(200);
    } finally {
      await gw.stop();
    }
  }, 600_000);
});
