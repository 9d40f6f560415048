/**
 * The HTTP API while Redis is away: every request that needs the log answers
 * 503 SG_ERR_LOG_UNAVAILABLE with Retry-After (never 500), nothing accepted
 * is lost, and the API works again once Redis is back.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../harness/free-port.js';
import { startOwnedRedis, testPrefix } from '../../harness/redis.js';
import { adminDevice, adminRoom, adminUser, expectStatus, makeLog, nextTxn, send, startApp } from './helpers.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

function expectUnavailable(r: { status: number; headers: Record<string, string | undefined>; text: string }, what: string): void {
  expect(r.status, `${what}: ${r.text}`).toBe(503);
  expect(JSON.parse(r.text)).toMatchObject({ code: 'SG_ERR_LOG_UNAVAILABLE' });
  expect(Number(r.headers['retry-after']), `${what}: Retry-After`).toBeGreaterThan(0);
}

describe('HTTP API during a Redis outage', () => {
  it('answers 503 SG_ERR_LOG_UNAVAILABLE with Retry-After, then works again', async () => {
    const redis = await startOwnedRedis();
    cleanup.push(() => redis.stop());
    const t = await startApp({ log: makeLog({ redisUrl: redis.url, prefix: testPrefix('http-outage') }) });
    cleanup.push(() => t.close());
    await adminRoom(t.client, 'ops');
    await adminUser(t.client, 'ann', ['ops']);
    const ann = await adminDevice(t.client, 'ann');
    const first = await send(t.client, ann, 'ops', 'before');
    const since = expectStatus(await t.client.request('GET', '/v1/sync?limit=1', { token: ann.token }), 200).body.next as string;

    await redis.kill();
    // the log notices the connection is gone
    await waitFor(async () => (await t.client.request('GET', '/readyz')).status === 503, { timeoutMs: 30_000, what: '/readyz to see the outage' });
    const txn = nextTxn();
    expectUnavailable(await t.client.request('PUT', `/v1/rooms/ops/send/${txn}`, { token: ann.token, body: { kind: 'message', content: { body: 'during' } } }), 'send');
    expectUnavailable(await t.client.request('GET', `/v1/sync?since=${since}`, { token: ann.token }), 'sync');
    expectUnavailable(await t.client.request('GET', '/v1/rooms/ops/messages?dir=b', { token: ann.token }), 'history');

    await redis.restart();
    await waitFor(async () => (await t.client.request('GET', '/readyz')).status === 200, { timeoutMs: 60_000, what: '/readyz after the outage' });
    // the client retries with the same txnId: one event, whether or not the first attempt got in
    const retried = expectStatus(await t.client.request('PUT', `/v1/rooms/ops/send/${txn}`, { token: ann.token, body: { kind: 'message', content: { body: 'during' } } }), 200);
    const page = expectStatus(await t.client.request('GET', `/v1/sync?since=${since}&limit=100`, { token: ann.token }), 200);
    const events = page.body.events as Array<{ eventId: string; content: { body: string } }>;
    expect(events.map((e) => e.content.body)).toEqual(['during']);
    expect(events[0]?.eventId).toBe(retried.body.eventId);
    expect(first.eventId).not.toBe(retried.body.eventId);
  });
});
