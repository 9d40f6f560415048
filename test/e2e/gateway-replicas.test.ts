/**
 * Two replicas against one Redis: each adapter's connection (and its
 * deliveries) runs on exactly one of them; when that replica stops, the other
 * takes the connection over and delivery goes on. An adapter that fails to
 * start is reported as failed (not as a standby) in GET /v1/admin/status,
 * while /readyz stays 200: the replica can serve the API.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { waitFor } from '../harness/free-port.js';
import { startGateway, type TestGateway } from '../harness/gateway.js';
import { testPrefix } from '../harness/redis.js';
import { TestAdapter, redisRecorder } from '../harness/test-adapter.js';

const running: TestGateway[] = [];
const redis = new Redis(inject('redisUrl'));
afterAll(() => redis.quit());
afterEach(async () => {
  for (const g of running.splice(0)) await g.stop();
});

describe('replicas', () => {
  it('one replica holds an adapter connection; the other takes over when it stops', async () => {
    const prefix = testPrefix('replicas');
    const recorder = redisRecorder(redis, prefix);
    const adapters: TestAdapter[] = [];
    const replica = () =>
      startGateway({
        redisUrl: inject('redisUrl'),
        prefix,
        delivery: { leaseMs: 1000 },
        extraAdapters: ({ sink }) => {
          const a = new TestAdapter('remote', sink, recorder);
          adapters.push(a);
          return [a];
        },
      });
    const one = await replica();
    running.push(one);
    const two = await replica();
    running.push(two);
    const [a1, a2] = adapters;
    if (!a1 || !a2) throw new Error('adapters missing');
    expect(a1.status().connected).toBe(true);
    expect(a2.status().connected).toBe(false);
    expect(one.gateway.supervisors[0]?.current).toBe('active');
    expect(two.gateway.supervisors[0]?.current).toBe('standby');
    // the standby replica is ready all the same
    expect((await fetch(`${two.url}/readyz`)).status).toBe(200);

    await one.admin('PUT', '/v1/admin/rooms/ops', { links: [{ endpoint: 'remote', target: 'ops@remote' }] });
    const token = await one.deviceToken('alice', ['ops']);
    const first = await two.device<{ eventId: string }>(token, 'PUT', '/v1/rooms/ops/send/r1', { kind: 'message', content: { body: 'via replica two' } });
    await waitFor(async () => (await recorder.all()).some((d) => d.eventId === first.body.eventId), { timeoutMs: 15_000, what: 'delivery through the connection holder' });
    expect(a2.controls.attempts).toBe(0);

    // the holder goes away: the other replica takes the connection and the deliveries
    running.splice(running.indexOf(one), 1);
    await one.stop();
    await waitFor(() => a2.status().connected, { timeoutMs: 10_000, what: 'replica two to take the connection' });
    const second = await two.device<{ eventId: string }>(token, 'PUT', '/v1/rooms/ops/send/r2', { kind: 'message', content: { body: 'after the failover' } });
    await waitFor(async () => (await recorder.all()).some((d) => d.eventId === second.body.eventId), { timeoutMs: 15_000, what: 'delivery by replica two' });
    expect((await recorder.all()).map((d) => d.eventId)).toEqual([first.body.eventId, second.body.eventId]);
    expect(two.gateway.supervisors[0]?.current).toBe('active');
  });

  it('reports an adapter that failed to start in the status (not as standby) while the replica stays ready, and active once a retry starts it', async () => {
    const prefix = testPrefix('replicas-failed');
    let adapter: TestAdapter | undefined;
    const one = await startGateway({
      redisUrl: inject('redisUrl'),
      prefix,
      delivery: { leaseMs: 1000 },
      extraAdapters: ({ sink }) => {
        adapter = new TestAdapter('remote', sink);
        adapter.controls.failStart = true;
        return [adapter];
      },
    });
    running.push(one);
    type Report = { state: string; connected: boolean; lastError?: { message: string; at: string } };
    const status = async () => (await one.admin<{ adapters: Record<string, Report> }>('GET', '/v1/admin/status')).body.adapters['remote'];
    // It keeps failing: this replica is not a standby, and nobody else holds the connection.
    await waitFor(
      async () => {
        const s = await status();
        return s?.state === 'failed' && s.lastError?.message.includes('the remote refuses the connection') === true;
      },
      { timeoutMs: 10_000, what: 'the status to report the failed start' },
    );
    expect(Number.isNaN(Date.parse((await status())?.lastError?.at ?? ''))).toBe(false);
    // the replica serves the API all the same
    expect((await fetch(`${one.url}/readyz`)).status).toBe(200);
    expect(one.gateway.supervisors[0]?.current).not.toBe('active');

    if (!adapter) throw new Error('adapter missing');
    adapter.controls.failStart = false;
    await waitFor(async () => (await status())?.state === 'active', { timeoutMs: 10_000, what: 'the status once a retry started the adapter' });
    expect((await status())?.connected).toBe(true);
    expect(one.gateway.supervisors[0]?.current).toBe('active');
  });
});
