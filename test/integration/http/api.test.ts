/**
 * The HTTP API over `inject` on the memory log: admin, send and its
 * idempotency, relations, sync, history, markers, errors, rate limit and
 * operations. Real sockets and Redis are in test/e2e/http-*.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { ERROR_TABLE } from '../../../src/core/errors.js';
import {
  ADMIN_TOKEN,
  adminDevice,
  adminRoom,
  adminUser,
  expectStatus,
  nextTxn,
  send,
  startApp,
  waitFor,
  type ApiClient,
  type ApiResponse,
  type TestApp,
  type TestDevice,
} from './helpers.js';

const open: TestApp[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((a) => a.close()));
});

async function app(options: Parameters<typeof startApp>[0] = {}): Promise<TestApp> {
  const a = await startApp(options);
  open.push(a);
  return a;
}

interface World {
  readonly t: TestApp;
  readonly c: ApiClient;
  readonly a1: TestDevice;
  readonly a2: TestDevice;
  readonly b1: TestDevice;
}

/** alice (two devices) and bob (one) share `ops`; only bob has `lobby`. */
async function world(options: Parameters<typeof startApp>[0] = {}): Promise<World> {
  const t = await app(options);
  const c = t.client;
  await adminRoom(c, 'ops', 'Operations');
  await adminRoom(c, 'lobby');
  await adminUser(c, 'alice', ['ops']);
  await adminUser(c, 'bob', ['ops', 'lobby']);
  return { t, c, a1: await adminDevice(c, 'alice'), a2: await adminDevice(c, 'alice'), b1: await adminDevice(c, 'bob') };
}

function expectError(r: ApiResponse, code: keyof typeof ERROR_TABLE): void {
  expect({ status: r.status, code: r.body.code }).toEqual({ status: ERROR_TABLE[code].status, code });
  expect(typeof r.body.message).toBe('string');
}

async function countEvents(t: TestApp): Promise<number> {
  return (await t.log.read(undefined, { rooms: 'all', limit: 1000 })).events.length;
}

describe('admin API', () => {
  it('needs the admin token, and is off without one', async () => {
    const { c, a1 } = await world();
    expectError(await c.request('GET', '/v1/admin/users'), 'SG_ERR_AUTH_MISSING');
    expectError(await c.request('GET', '/v1/admin/users', { token: 'x'.repeat(32) }), 'SG_ERR_AUTH_INVALID');
    expectError(await c.request('GET', '/v1/admin/users', { token: a1.token }), 'SG_ERR_AUTH_INVALID');
    expectError(await c.request('GET', '/v1/admin/users', { headers: { authorization: 'Basic abc' } }), 'SG_ERR_AUTH_INVALID');
    const off = await app({ config: { adminToken: undefined } });
    expectError(await off.client.request('GET', '/v1/admin/users', { token: ADMIN_TOKEN }), 'SG_ERR_FORBIDDEN');
  });

  it('creates users and devices; the token is shown once and stored only as a hash', async () => {
    const { t, c, a1 } = await world();
    expect(a1.token).toMatch(/^sgd_d[0-9a-f]{20}_[A-Za-z0-9_-]{43}$/);
    expectError(await c.request('POST', '/v1/admin/users', { token: ADMIN_TOKEN, body: { id: 'alice' } }), 'SG_ERR_CONFLICT');
    expectError(await c.request('POST', '/v1/admin/devices', { token: ADMIN_TOKEN, body: { user: 'nobody' } }), 'SG_ERR_USER_UNKNOWN');
    const listed = expectStatus(await c.request('GET', '/v1/admin/devices?user=alice', { token: ADMIN_TOKEN }), 200);
    expect(listed.text).not.toContain('token');
    expect((listed.body['devices'] as unknown[]).length).toBe(2);
    const secret = a1.token.split('_').slice(2).join('_');
    const stored = JSON.stringify(await t.log.state.entries('http:devices'));
    expect(stored).toContain(a1.deviceId);
    expect(stored).not.toContain(secret);
    const detail = expectStatus(await c.request('GET', '/v1/admin/users/alice', { token: ADMIN_TOKEN }), 200);
    expect(detail.body['rooms']).toEqual(['ops']);
  });

  it('a deleted device or user loses access at once', async () => {
    const { c, a1, a2 } = await world();
    expectStatus(await c.request('GET', '/v1/rooms', { token: a1.token }), 200);
    expectStatus(await c.request('DELETE', `/v1/admin/devices/${a1.deviceId}`, { token: ADMIN_TOKEN }), 204);
    expectError(await c.request('GET', '/v1/rooms', { token: a1.token }), 'SG_ERR_AUTH_INVALID');
    expectError(await c.request('DELETE', `/v1/admin/devices/${a1.deviceId}`, { token: ADMIN_TOKEN }), 'SG_ERR_NOT_FOUND');
    expectStatus(await c.request('GET', '/v1/rooms', { token: a2.token }), 200);
    expectStatus(await c.request('DELETE', '/v1/admin/users/alice', { token: ADMIN_TOKEN }), 204);
    expectError(await c.request('GET', '/v1/rooms', { token: a2.token }), 'SG_ERR_AUTH_INVALID');
    // a forged token for an existing device id fails too
    const forged = `sgd_${a2.deviceId}_${'A'.repeat(43)}`;
    expectError(await c.request('GET', '/v1/rooms', { token: forged }), 'SG_ERR_AUTH_INVALID');
  });

  it('manages rooms with links and grants; a device lists only its rooms', async () => {
    const { c, a1, b1 } = await world();
    const spec = { name: 'Ops', links: [{ endpoint: 'xmpp', target: 'ops@conference.example.org' }, { endpoint: 'mqtt', target: 'sensors/+/alert', options: { qos: 1 } }] };
    expectStatus(await c.request('PUT', '/v1/admin/rooms/ops', { token: ADMIN_TOKEN, body: spec }), 200);
    const got = expectStatus(await c.request('GET', '/v1/admin/rooms/ops', { token: ADMIN_TOKEN }), 200);
    expect(got.body).toEqual({ id: 'ops', ...spec });
    expectError(await c.request('PUT', '/v1/admin/rooms/bad', { token: ADMIN_TOKEN, body: { links: [{ endpoint: 'X!', target: '' }] } }), 'SG_ERR_REQUEST_INVALID');
    expectError(await c.request('GET', '/v1/admin/rooms/ghost', { token: ADMIN_TOKEN }), 'SG_ERR_ROOM_UNKNOWN');
    expect(expectStatus(await c.request('GET', '/v1/rooms', { token: a1.token }), 200).body['rooms']).toEqual([{ id: 'ops', name: 'Ops' }]);
    expect(expectStatus(await c.request('GET', '/v1/rooms', { token: b1.token }), 200).body['rooms']).toEqual([{ id: 'lobby' }, { id: 'ops', name: 'Ops' }]);
    expectError(await c.request('PUT', '/v1/admin/users/alice/rooms/ghost', { token: ADMIN_TOKEN }), 'SG_ERR_ROOM_UNKNOWN');
    expectStatus(await c.request('PUT', '/v1/admin/users/alice/rooms/lobby', { token: ADMIN_TOKEN }), 204);
    expect((expectStatus(await c.request('GET', '/v1/rooms', { token: a1.token }), 200).body['rooms'] as unknown[]).length).toBe(2);
    expectStatus(await c.request('DELETE', '/v1/admin/users/alice/rooms/lobby', { token: ADMIN_TOKEN }), 204);
    expectError(await c.request('PUT', '/v1/rooms/lobby/send/x1', { token: a1.token, body: { kind: 'message', content: { body: 'no' } } }), 'SG_ERR_FORBIDDEN');
    expectStatus(await c.request('DELETE', '/v1/admin/rooms/lobby', { token: ADMIN_TOKEN }), 204);
    expect(expectStatus(await c.request('GET', '/v1/rooms', { token: b1.token }), 200).body['rooms']).toEqual([{ id: 'ops', name: 'Ops' }]);
    expectError(await c.request('PUT', '/v1/rooms/lobby/send/x2', { token: b1.token, body: { kind: 'message', content: { body: 'gone' } } }), 'SG_ERR_ROOM_UNKNOWN');
  });
});

describe('send', () => {
  it('returns {eventId, cursor}; a retried txnId returns the same answer and appends nothing, also 20 at once', async () => {
    const { t, c, a1, a2 } = await world();
    const body = { kind: 'message', content: { body: 'hello', format: 'html', formatted: '<b>hello</b>' } };
    const first = expectStatus(await c.request('PUT', '/v1/rooms/ops/send/t-1', { token: a1.token, body }), 200);
    expect(Object.keys(first.body).sort()).toEqual(['cursor', 'eventId']);
    const again = expectStatus(await c.request('PUT', '/v1/rooms/ops/send/t-1', { token: a1.token, body }), 200);
    expect(again.text).toBe(first.text);
    const concurrentBody = { kind: 'message', content: { body: 'at once' } };
    const burst = await Promise.all(Array.from({ length: 20 }, () => c.request('PUT', '/v1/rooms/ops/send/t-2', { token: a1.token, body: concurrentBody })));
    expect(new Set(burst.map((r) => `${r.status} ${r.text}`)).size).toBe(1);
    expect(burst[0]?.status).toBe(200);
    // the same txnId from another device is another send
    const other = expectStatus(await c.request('PUT', '/v1/rooms/ops/send/t-1', { token: a2.token, body }), 200);
    expect(other.body.eventId).not.toBe(first.body.eventId);
    expect(await countEvents(t)).toBe(3);
    const stored = await t.log.getEvent('ops', first.body.eventId);
    expect(stored).toMatchObject({ kind: 'message', cursor: first.body.cursor, content: { body: 'hello', format: 'html', formatted: '<b>hello</b>' }, sender: { uid: 'alice', display: 'ALICE', auth: 'api-token' } });
  });

  it('edits, reactions and retractions point at the original event of the same room', async () => {
    const { t, c, a1, b1 } = await world();
    const m = await send(c, a1, 'ops', 'orginal');
    const put = (device: TestDevice, body: unknown, room = 'ops') => c.request('PUT', `/v1/rooms/${room}/send/${nextTxn()}`, { token: device.token, body });
    const e1 = expectStatus(await put(a1, { kind: 'edit', content: { body: 'original' }, rel: { replaces: m.eventId } }), 200).body;
    // an edit of the edit is stored as an edit of the original
    const e2 = expectStatus(await put(a1, { kind: 'edit', content: { body: 'original!' }, rel: { replaces: e1.eventId } }), 200).body;
    expect(await t.log.getEvent('ops', e2.eventId)).toMatchObject({ rel: { replaces: m.eventId } });
    const r = expectStatus(await put(b1, { kind: 'reaction', rel: { reactsTo: e1.eventId }, reaction: { keys: ['👍'] } }), 200).body;
    expect(await t.log.getEvent('ops', r.eventId)).toMatchObject({ rel: { reactsTo: m.eventId }, reaction: { keys: ['👍'] } });
    const reply = expectStatus(await put(b1, { kind: 'message', content: { body: 'agreed' }, rel: { replyTo: e2.eventId } }), 200).body;
    expect(await t.log.getEvent('ops', reply.eventId)).toMatchObject({ rel: { replyTo: m.eventId } });

    // someone else's message cannot be edited or retracted
    expectError(await put(b1, { kind: 'edit', content: { body: 'hijack' }, rel: { replaces: m.eventId } }), 'SG_ERR_FORBIDDEN');
    expectError(await put(b1, { kind: 'retraction', rel: { redacts: m.eventId } }), 'SG_ERR_FORBIDDEN');
    // unknown targets, targets in another room, wrong kinds
    expectError(await put(a1, { kind: 'edit', content: { body: 'x' }, rel: { replaces: '01M80G7TVM030000009' } }), 'SG_ERR_EVENT_UNKNOWN');
    expectError(await put(a1, { kind: 'edit', content: { body: 'x' }, rel: { replaces: 'not-an-event-id' } }), 'SG_ERR_EVENT_UNKNOWN');
    const elsewhere = await send(c, b1, 'lobby', 'in the lobby');
    expectError(await put(b1, { kind: 'reaction', rel: { reactsTo: elsewhere.eventId }, reaction: { keys: ['x'] } }), 'SG_ERR_EVENT_UNKNOWN');
    expectError(await put(b1, { kind: 'reaction', rel: { reactsTo: r.eventId }, reaction: { keys: ['x'] } }), 'SG_ERR_RELATION_INVALID');
    const before = await countEvents(t);
    expectError(await put(a1, { kind: 'message', content: { body: 'x', formatted: '<i>x</i>' } }), 'SG_ERR_REQUEST_INVALID');
    expect(await countEvents(t)).toBe(before);

    // the sender retracts its own message (via the edit's id: it is the original that goes)
    const gone = expectStatus(await put(a1, { kind: 'retraction', rel: { redacts: e2.eventId } }), 200).body;
    expect(await t.log.getEvent('ops', gone.eventId)).toMatchObject({ rel: { redacts: m.eventId } });
  });
});

describe('sync', () => {
  it('without since gives the latest events and a cursor; the sender device alone sees its txnId', async () => {
    const { c, a1, a2, b1 } = await world();
    const sent = [];
    for (let i = 0; i < 5; i++) sent.push(await send(c, a1, 'ops', `m${i}`));
    await send(c, b1, 'lobby', 'not for alice');
    const latest = expectStatus(await c.request('GET', '/v1/sync?limit=3', { token: a1.token }), 200).body;
    expect(latest.events.map((e) => e.content?.body)).toEqual(['m2', 'm3', 'm4']);
    expect(latest.events.map((e) => e.unsigned?.txnId)).toEqual(sent.slice(2).map((s) => s.txnId));
    expect(latest.limited).toBe(false);
    for (const device of [a2, b1]) {
      const seen = expectStatus(await c.request('GET', '/v1/sync?limit=100', { token: device.token }), 200);
      const mine = seen.body.events.filter((e) => e.room === 'ops');
      expect(mine).toHaveLength(5);
      for (const e of mine) {
        expect(e.unsigned).toBeUndefined();
        expect(e.idem).toBeUndefined();
        expect(e.origin.ids).toEqual({});
      }
      for (const s of sent) expect(seen.text).not.toContain(s.txnId);
    }
    // the cursor of "latest" is now: nothing more until something is sent
    const after = expectStatus(await c.request('GET', `/v1/sync?since=${latest.next}`, { token: a1.token }), 200).body;
    expect(after.events).toEqual([]);
    const more = await send(c, a1, 'ops', 'later');
    const next = expectStatus(await c.request('GET', `/v1/sync?since=${after.next}`, { token: a2.token }), 200).body;
    expect(next.events.map((e) => [e.eventId, e.cursor])).toEqual([[more.eventId, more.cursor]]);
  });

  it('long-polls: answers empty at the timeout, which the server caps', async () => {
    const { c, a2 } = await world({ config: { syncTimeoutMaxMs: 300 } });
    const head = expectStatus(await c.request('GET', '/v1/sync?limit=1', { token: a2.token }), 200).body.next;
    const started = Date.now();
    const idle = expectStatus(await c.request('GET', `/v1/sync?since=${head}&timeout=60000`, { token: a2.token }), 200).body;
    const waited = Date.now() - started;
    expect(idle.events).toEqual([]);
    expect(idle.next).toBe(head);
    expect(waited).toBeGreaterThanOrEqual(250);
    expect(waited).toBeLessThan(10_000);
  });

  it('long-polls: wakes on the first event in a granted room, not on others', async () => {
    const registry = new Registry();
    const { c, a1, a2, b1 } = await world({ deps: { registry } });
    const from = expectStatus(await c.request('GET', '/v1/sync?limit=1', { token: a2.token }), 200).body.next;
    const polling = c.request('GET', `/v1/sync?since=${from}&timeout=20000`, { token: a2.token });
    await waitForPolls(registry, 1);
    await send(c, b1, 'lobby', 'alice does not see this');
    const sent = await send(c, a1, 'ops', 'wake up');
    const woke = expectStatus(await polling, 200).body;
    expect(woke.events.map((e) => e.eventId)).toEqual([sent.eventId]);
    await waitForPolls(registry, 0);
  });

  it('rejects bad cursors and limits with coded errors', async () => {
    const { c, a1 } = await world();
    const sent = await send(c, a1, 'ops', 'x');
    expectError(await c.request('GET', '/v1/sync?since=garbage-garbage', { token: a1.token }), 'SG_ERR_CURSOR_INVALID');
    // an event position is not a sync cursor
    expectError(await c.request('GET', `/v1/sync?since=${sent.cursor}`, { token: a1.token }), 'SG_ERR_CURSOR_INVALID');
    expectError(await c.request('GET', '/v1/sync?limit=0', { token: a1.token }), 'SG_ERR_REQUEST_INVALID');
    expectError(await c.request('GET', '/v1/sync?limit=1001', { token: a1.token }), 'SG_ERR_REQUEST_INVALID');
    expectError(await c.request('GET', '/v1/sync?timeout=soon', { token: a1.token }), 'SG_ERR_REQUEST_INVALID');
  });
});

describe('history', () => {
  it('pages backwards and forwards with `next`', async () => {
    const { c, a1, b1 } = await world();
    const sent = [];
    for (let i = 0; i < 7; i++) sent.push(await send(c, a1, 'ops', `h${i}`));
    const back: string[] = [];
    let from: string | undefined;
    for (let page = 0; page < 10; page++) {
      const r = expectStatus(await c.request('GET', `/v1/rooms/ops/messages?dir=b&limit=3${from ? `&from=${from}` : ''}`, { token: b1.token }), 200).body;
      back.push(...r.events.map((e) => e.content?.body ?? ''));
      if (!r.next) break;
      from = r.next;
    }
    expect(back).toEqual(['h6', 'h5', 'h4', 'h3', 'h2', 'h1', 'h0']);
    const fwd = expectStatus(await c.request('GET', `/v1/rooms/ops/messages?dir=f&limit=2&from=${sent[4]?.cursor}`, { token: a1.token }), 200).body;
    expect(fwd.events.map((e) => [e.content?.body, e.cursor, e.unsigned?.txnId])).toEqual([
      ['h5', sent[5]?.cursor, sent[5]?.txnId],
      ['h6', sent[6]?.cursor, sent[6]?.txnId],
    ]);
    expectError(await c.request('GET', '/v1/rooms/ops/messages?dir=x', { token: a1.token }), 'SG_ERR_REQUEST_INVALID');
    expectError(await c.request('GET', '/v1/rooms/ops/messages?from=nonsense-token', { token: a1.token }), 'SG_ERR_CURSOR_INVALID');
    expectError(await c.request('GET', '/v1/rooms/lobby/messages', { token: a1.token }), 'SG_ERR_FORBIDDEN');
    expectError(await c.request('GET', '/v1/rooms/ghost/messages', { token: a1.token }), 'SG_ERR_ROOM_UNKNOWN');
  });
});

describe('read markers', () => {
  it('a marker set on one device shows up for the other; an older one does not move it back', async () => {
    const { t, c, a1, a2, b1 } = await world();
    const m1 = await send(c, b1, 'ops', 'one');
    const m2 = await send(c, b1, 'ops', 'two');
    const since = expectStatus(await c.request('GET', '/v1/sync?limit=1', { token: a2.token }), 200).body.next;

    const set = expectStatus(await c.request('PUT', '/v1/rooms/ops/markers', { token: a1.token, body: { upTo: m2.eventId } }), 200).body;
    expect(set.upTo).toBe(m2.eventId);
    const seen = expectStatus(await c.request('GET', `/v1/sync?since=${since}`, { token: a2.token }), 200).body;
    expect(seen.events.map((e) => [e.kind, e.sender.uid, e.rel?.['upTo']])).toEqual([['marker', 'alice', m2.eventId]]);
    expect(expectStatus(await c.request('GET', '/v1/rooms/ops/markers', { token: a2.token }), 200).body.upTo).toBe(m2.eventId);

    const count = await countEvents(t);
    const older = expectStatus(await c.request('PUT', '/v1/rooms/ops/markers', { token: a2.token, body: { upTo: m1.eventId } }), 200).body;
    expect(older.upTo).toBe(m2.eventId);
    // the same marker again appends nothing either
    expectStatus(await c.request('PUT', '/v1/rooms/ops/markers', { token: a2.token, body: { upTo: m2.eventId } }), 200);
    expect(await countEvents(t)).toBe(count);
    expect(expectStatus(await c.request('GET', `/v1/sync?since=${seen.next}`, { token: a1.token }), 200).body.events).toEqual([]);
    expect(expectStatus(await c.request('GET', '/v1/rooms/ops/markers', { token: a1.token }), 200).body.upTo).toBe(m2.eventId);
    // markers are per user
    expect(expectStatus(await c.request('GET', '/v1/rooms/ops/markers', { token: b1.token }), 200).body.upTo).toBeNull();
    expectError(await c.request('PUT', '/v1/rooms/ops/markers', { token: a1.token, body: { upTo: '01M80G7TVM030000009' } }), 'SG_ERR_EVENT_UNKNOWN');
  });
});

describe('errors', () => {
  it('answers bad input with its code and appends nothing', async () => {
    const { t, c, a1 } = await world();
    const msg = { kind: 'message', content: { body: 'x' } };
    const before = await countEvents(t);
    expectError(await c.request('PUT', '/v1/rooms/ops/send/e1', { body: msg }), 'SG_ERR_AUTH_MISSING');
    expectError(await c.request('PUT', '/v1/rooms/ops/send/e1', { token: 'sgd_nope', body: msg }), 'SG_ERR_AUTH_INVALID');
    expectError(await c.request('PUT', '/v1/rooms/lobby/send/e1', { token: a1.token, body: msg }), 'SG_ERR_FORBIDDEN');
    expectError(await c.request('PUT', '/v1/rooms/ghost/send/e1', { token: a1.token, body: msg }), 'SG_ERR_ROOM_UNKNOWN');
    expectError(await c.request('PUT', '/v1/rooms/ops/send/e1', { token: a1.token, body: { kind: 'message', content: { body: 'x'.repeat(70_000) } } }), 'SG_ERR_BODY_TOO_LARGE');
    expectError(await c.request('PUT', '/v1/rooms/ops/send/e1', { token: a1.token, body: { kind: 'message', content: { body: 42 } } }), 'SG_ERR_REQUEST_INVALID');
    expectError(await c.request('PUT', '/v1/rooms/ops/send/e1', { token: a1.token, body: { ...msg, extra: true } }), 'SG_ERR_REQUEST_INVALID');
    expectError(await c.request('PUT', '/v1/rooms/ops/send/e1', { token: a1.token, body: { kind: 'typing' } }), 'SG_ERR_REQUEST_INVALID');
    expectError(await c.request('PUT', '/v1/rooms/ops/send/e1', { token: a1.token, raw: '{"kind":' }), 'SG_ERR_REQUEST_INVALID');
    expectError(await c.request('PUT', '/v1/rooms/ops/send/bad%20txn', { token: a1.token, body: msg }), 'SG_ERR_REQUEST_INVALID');
    expectError(await c.request('PUT', '/v1/rooms/ops/send/e1', { token: a1.token, raw: 'x', headers: { 'content-type': 'text/plain' } }), 'SG_ERR_REQUEST_INVALID');
    expectError(await c.request('GET', '/v1/no/such/route', { token: a1.token }), 'SG_ERR_NOT_FOUND');
    const bad = await c.request('PUT', '/v1/rooms/ops/send/e1', { token: a1.token, body: { kind: 'edit', content: { body: 'x' } } });
    expectError(bad, 'SG_ERR_REQUEST_INVALID');
    expect(bad.body.details.problems?.join(' ')).toContain('/rel');
    expect(await countEvents(t)).toBe(before);
  });

  it('rate-limits per device with 429 and Retry-After', async () => {
    const { c, a1, a2 } = await world({ config: { rateLimit: { perSecond: 0.5, burst: 3 } } });
    // world() used no device requests; each device has its full burst
    for (let i = 0; i < 3; i++) expectStatus(await c.request('GET', '/v1/rooms', { token: a1.token }), 200);
    const limited = await c.request('GET', '/v1/rooms', { token: a1.token });
    expectError(limited, 'SG_ERR_RATE_LIMITED');
    expect(Number(limited.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    // the window is burst / perSecond = 6 s
    expect(Number(limited.headers['retry-after'])).toBeLessThanOrEqual(6);
    // another device of the same user has its own bucket
    expectStatus(await c.request('GET', '/v1/rooms', { token: a2.token }), 200);
  });
});

describe('operations', () => {
  it('serves health, readiness (the log alone), the status report, metrics and the OpenAPI document', async () => {
    const registry = new Registry();
    const adapters = { xmpp: { state: 'failed', connected: false, lastError: { message: 'connect ECONNREFUSED', at: '2026-01-01T00:00:00.000Z' } } };
    const { c, a1 } = await world({ deps: { registry, status: async () => ({ log: { backend: 'memory', durable: false, available: true }, adapters }) } });
    expect(expectStatus(await c.request('GET', '/healthz'), 200).body.status).toBe('ok');
    // a remote server being down does not make the replica unready: it can serve the API
    const ready = expectStatus(await c.request('GET', '/readyz'), 200).body;
    expect(ready['checks']).toEqual({ log: { ok: true, detail: 'memory' } });
    expectStatus(await c.request('GET', '/v1/admin/status'), 401);
    expectStatus(await c.request('GET', '/v1/admin/status', { token: a1.token }), 401);
    const status = expectStatus(await c.request('GET', '/v1/admin/status', { token: ADMIN_TOKEN }), 200).body;
    expect(status['adapters']).toEqual(adapters);

    await send(c, a1, 'ops', 'count me');
    await c.request('GET', '/v1/sync?since=bad-cursor-x', { token: a1.token });
    const metrics = expectStatus(await c.request('GET', '/metrics'), 200);
    expect(metrics.headers['content-type']).toContain('text/plain');
    expect(metrics.text).toContain('syncgate_http_requests_total{method="PUT",route="/v1/rooms/:room/send/:txnId",status="200"} 1');
    expect(metrics.text).toContain('syncgate_http_requests_total{method="GET",route="/v1/sync",status="400"} 1');
    expect(metrics.text).toContain('syncgate_http_appends_total{kind="message",result="appended"} 1');
    expect(metrics.text).toContain('syncgate_http_live_clients');
    expect(metrics.text).toContain('syncgate_http_sync_wait_seconds');
    expect(await registry.getSingleMetric('syncgate_http_requests_total')?.get()).toBeDefined();

    const doc = expectStatus(await c.request('GET', '/docs/json'), 200).body;
    const paths = Object.keys(doc['paths'] as object);
    for (const p of ['/v1/rooms/{room}/send/{txnId}', '/v1/sync', '/v1/stream', '/v1/rooms/{room}/messages', '/v1/rooms/{room}/markers', '/v1/admin/devices', '/v1/admin/rooms/{room}']) {
      expect(paths).toContain(p);
    }
    const ui = await c.request('GET', '/docs/');
    expect(ui.status).toBe(200);
    expect(ui.text.toLowerCase()).toContain('swagger');
  });

  it('answers a pending long-poll when the app closes', async () => {
    const registry = new Registry();
    const t = await startApp({ deps: { registry } });
    await adminRoom(t.client, 'ops');
    await adminUser(t.client, 'alice', ['ops']);
    const d = await adminDevice(t.client, 'alice');
    const since = expectStatus(await t.client.request('GET', '/v1/sync', { token: d.token }), 200).body.next;
    const polling = t.client.request('GET', `/v1/sync?since=${since}&timeout=25000`, { token: d.token });
    await waitForPolls(registry, 1);
    const started = Date.now();
    await t.close();
    const r = await polling;
    expect(r.status).toBe(200);
    expect(r.body.events).toEqual([]);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

async function waitForPolls(registry: Registry, n: number): Promise<void> {
  await waitFor(async () => (await registry.getSingleMetric('syncgate_http_sync_waiting')?.get())?.values[0]?.value === n, `${n} waiting long-polls`);
}
