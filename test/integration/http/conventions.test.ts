/**
 * HTTP conventions a browser or a client library expects: CORS for the
 * configured origins only, 429 with Retry-After and RateLimit headers, and
 * one rate limit shared by every replica on the same Redis.
 */
import { afterEach, describe, expect, inject, it } from 'vitest';
import { createSharedCounterStore } from '../../../src/eventlog/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { testPrefix } from '../../harness/redis.js';
import { adminDevice, adminRoom, adminUser, expectStatus, makeLog, startApp, type TestApp } from './helpers.js';

const open: TestApp[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((a) => a.close()));
});

async function app(options: Parameters<typeof startApp>[0] = {}): Promise<TestApp> {
  const t = await startApp(options);
  open.push(t);
  return t;
}

const preflight = (origin: string) => ({ headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } });

describe('CORS', () => {
  it('answers the preflight of an allowed origin; other origins, and every origin by default, get no CORS headers', async () => {
    const t = await app({ config: { cors: { origins: ['https://app.example.test'] } } });
    const ok = await t.client.request('OPTIONS', '/v1/sync', preflight('https://app.example.test'));
    expect(ok.status).toBe(204);
    expect(ok.headers['access-control-allow-origin']).toBe('https://app.example.test');
    expect(ok.headers['access-control-allow-methods']).toMatch(/GET/);
    expect(ok.headers['access-control-allow-headers']).toMatch(/authorization/i);
    const other = await t.client.request('OPTIONS', '/v1/sync', preflight('https://evil.example.test'));
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
    // a simple request from the allowed origin carries the header too, and exposes the rate-limit headers
    const health = await t.client.request('GET', '/healthz', { headers: { origin: 'https://app.example.test' } });
    expect(health.headers['access-control-allow-origin']).toBe('https://app.example.test');
    expect(health.headers['access-control-expose-headers']).toMatch(/retry-after/i);
    // without the setting no origin is allowed
    const closed = await app();
    expect((await closed.client.request('OPTIONS', '/v1/sync', preflight('https://app.example.test'))).headers['access-control-allow-origin']).toBeUndefined();
  });

});

describe('rate limit', () => {
  it('429 carries Retry-After and the RateLimit headers', async () => {
    const t = await app({ config: { rateLimit: { perSecond: 0.05, burst: 3 } } });
    const c = t.client;
    await adminRoom(c, 'ops');
    await adminUser(c, 'alice', ['ops']);
    const d = await adminDevice(c, 'alice');
    const first = expectStatus(await c.request('GET', '/v1/rooms', { token: d.token }), 200);
    expect(first.headers['ratelimit-limit']).toBe('3');
    expect(first.headers['ratelimit-remaining']).toBe('2');
    for (let i = 0; i < 2; i++) expectStatus(await c.request('GET', '/v1/rooms', { token: d.token }), 200);
    const limited = await c.request('GET', '/v1/rooms', { token: d.token });
    expect(limited.status).toBe(429);
    expect(limited.body.code).toBe('SG_ERR_RATE_LIMITED');
    const retry = Number(limited.headers['retry-after']);
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    expect(limited.headers['ratelimit-limit']).toBe('3');
    expect(limited.headers['ratelimit-remaining']).toBe('0');
    expect(Number(limited.headers['ratelimit-reset'])).toBeGreaterThanOrEqual(1);
  });

  it('is shared by two app instances (replicas) on one Redis', async () => {
    const prefix = testPrefix('ratelimit');
    const redisUrl = inject('redisUrl');
    const config = { rateLimit: { perSecond: 0.05, burst: 4 } };
    const store = () => createSharedCounterStore({ url: redisUrl, prefix, log: silentLogger() });
    const a = await app({ log: makeLog({ redisUrl, prefix }), config, deps: { rateLimitStore: store() } });
    const b = await app({ log: makeLog({ redisUrl, prefix }), config, deps: { rateLimitStore: store() } });
    await adminRoom(a.client, 'ops');
    await adminUser(a.client, 'alice', ['ops']);
    const d = await adminDevice(a.client, 'alice');
    // four requests spread over both replicas use up the one limit
    for (const t of [a, b, a, b]) expectStatus(await t.client.request('GET', '/v1/rooms', { token: d.token }), 200);
    const onA = await a.client.request('GET', '/v1/rooms', { token: d.token });
    const onB = await b.client.request('GET', '/v1/rooms', { token: d.token });
    expect(onA.status).toBe(429);
    expect(onB.status).toBe(429);
    // another device has its own limit
    const other = await adminDevice(a.client, 'alice');
    expectStatus(await b.client.request('GET', '/v1/rooms', { token: other.token }), 200);
  });
});
