/**
 * Two replicas of the API on one Redis log, over real sockets: two devices of
 * one user and a device of another. Device A sends while device B is offline;
 * B catches up from its old cursor on the other replica; A's send cursor is
 * the event's cursor everywhere; the third device never sees a room it was
 * not granted.
 */
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { Registry } from 'prom-client';
import {
  ADMIN_TOKEN,
  SseClient,
  WsClient,
  adminDevice,
  adminRoom,
  adminUser,
  expectStatus,
  makeLog,
  send,
  startApp,
  syncAll,
  waitFor,
  type TestApp,
  type TestDevice,
} from '../integration/http/helpers.js';
import { testPrefix } from '../harness/redis.js';

describe('HTTP API on Redis, two replicas: several devices', () => {
  let r1: TestApp;
  let r2: TestApp;
  let a: TestDevice;
  let b: TestDevice;
  let c: TestDevice;
  const registry2 = new Registry();

  beforeAll(async () => {
    // Two replicas: each its own log (own connections and live readers) on one Redis key prefix.
    const redisUrl = inject('redisUrl');
    const prefix = testPrefix('http-replicas');
    r1 = await startApp({ log: makeLog({ redisUrl, prefix }), listen: true });
    r2 = await startApp({ log: makeLog({ redisUrl, prefix }), listen: true, deps: { registry: registry2 } });
    await adminRoom(r1.client, 'ops');
    await adminRoom(r1.client, 'secret');
    await adminRoom(r1.client, 'lobby');
    await adminUser(r1.client, 'alice', ['ops', 'secret']);
    await adminUser(r1.client, 'carol', ['lobby']);
    // devices made on one replica work on the other
    a = await adminDevice(r1.client, 'alice');
    b = await adminDevice(r2.client, 'alice');
    c = await adminDevice(r1.client, 'carol');
  });

  afterAll(async () => {
    await Promise.all([r1.close(), r2.close()]);
  });

  it('B catches up from its old cursor with exactly the missed events; the send cursor is the event cursor everywhere', async () => {
    const before = expectStatus(await r2.client.request('GET', '/v1/sync?limit=10', { token: b.token }), 200).body.next;
    // B goes offline; live clients of A's own (WebSocket) and of C stay connected meanwhile
    const wsA = await WsClient.connect(r1.url ?? '', { since: before, access_token: a.token });
    const sseC = await SseClient.connect(r2.url ?? '', { token: c.token });
    const sent = [];
    for (let i = 0; i < 10; i++) sent.push(await send(r1.client, a, i % 2 === 0 ? 'ops' : 'secret', `missed ${i}`));

    // B comes back on the other replica
    const caught = await syncAll(r2.client, b, before);
    expect(caught.events.map((e) => e.eventId)).toEqual(sent.map((s) => s.eventId));
    expect(caught.events.map((e) => e.cursor)).toEqual(sent.map((s) => s.cursor));
    expect(caught.events.every((e) => e.unsigned === undefined)).toBe(true);
    // A sees its own txnIds
    const own = await syncAll(r1.client, a, before);
    expect(own.events.map((e) => e.unsigned?.txnId)).toEqual(sent.map((s) => s.txnId));

    // the same cursors on A's WebSocket, on a fresh SSE stream of B and in history
    await waitFor(() => wsA.events().length >= sent.length, 'the WebSocket to receive every event');
    const wsSeen = wsA.events().map((f) => [f.event?.eventId, f.event?.cursor, f.event?.unsigned?.txnId]);
    expect(new Set(wsSeen.map((x) => JSON.stringify(x)))).toEqual(new Set(sent.map((s) => JSON.stringify([s.eventId, s.cursor, s.txnId]))));
    expect(wsSeen).toHaveLength(sent.length);
    // A stream keeps the order within each room; rooms on different partitions may interleave differently.
    const sseB = await SseClient.connect(r2.url ?? '', { token: b.token, since: before });
    await waitFor(() => sseB.events().length >= sent.length, 'the SSE stream to receive every event');
    for (const room of ['ops', 'secret']) {
      const expected = sent.filter((_, i) => (i % 2 === 0 ? 'ops' : 'secret') === room).map((s) => [s.eventId, s.cursor]);
      expect(sseB.events().filter((m) => m.event.room === room).map((m) => [m.event.eventId, m.event.cursor])).toEqual(expected);
    }
    expect(sseB.events()).toHaveLength(sent.length);
    const history = expectStatus(await r2.client.request('GET', '/v1/rooms/ops/messages?dir=f&limit=100', { token: b.token }), 200).body;
    const opsSent = sent.filter((_, i) => i % 2 === 0);
    expect(history.events.filter((e) => opsSent.some((s) => s.eventId === e.eventId)).map((e) => e.cursor)).toEqual(opsSent.map((s) => s.cursor));

    // C saw none of it: only its own sentinel in its own room arrives
    const sentinel = await send(r1.client, c, 'lobby', 'sentinel');
    await waitFor(() => sseC.events().length >= 1, 'the sentinel on C');
    expect(sseC.events().map((m) => m.event.eventId)).toEqual([sentinel.eventId]);
    await wsA.close();
    sseB.close();
    sseC.close();
  });

  it('a long-poll on one replica wakes up for a send on the other', async () => {
    const from = expectStatus(await r2.client.request('GET', '/v1/sync?limit=1', { token: b.token }), 200).body.next;
    const polling = r2.client.request('GET', `/v1/sync?since=${from}&timeout=20000`, { token: b.token });
    await waitFor(async () => (await registry2.getSingleMetric('syncgate_http_sync_waiting')?.get())?.values[0]?.value === 1, 'the long-poll to wait');
    const sent = await send(r1.client, a, 'ops', 'across replicas');
    const woke = expectStatus(await polling, 200).body;
    expect(woke.events.map((e) => [e.eventId, e.cursor])).toEqual([[sent.eventId, sent.cursor]]);
  });

  it('the third device never sees rooms it was not granted (403/404)', async () => {
    await send(r1.client, c, 'lobby', 'carol was here');
    await send(r1.client, a, 'ops', 'not for carol');
    const rooms = expectStatus(await r2.client.request('GET', '/v1/rooms', { token: c.token }), 200).body['rooms'];
    expect(rooms).toEqual([{ id: 'lobby' }]);
    const everything = await syncAll(r2.client, c, expectStatus(await r2.client.request('GET', '/v1/sync?limit=1', { token: c.token }), 200).body.next);
    expect(everything.events.every((e) => e.room === 'lobby')).toBe(true);
    const latest = expectStatus(await r1.client.request('GET', '/v1/sync?limit=1000', { token: c.token }), 200).body;
    expect(latest.events.length).toBeGreaterThan(0);
    expect(latest.events.every((e) => e.room === 'lobby')).toBe(true);
    const opsEvent = (await r1.log.roomHistory('ops', { dir: 'b', limit: 1 })).events[0];
    expect(opsEvent).toBeDefined();
    const msg = { kind: 'message', content: { body: 'let me in' } };
    for (const room of ['ops', 'secret']) {
      expect(expectStatus(await r1.client.request('PUT', `/v1/rooms/${room}/send/c1`, { token: c.token, body: msg }), 403).body.code).toBe('SG_ERR_FORBIDDEN');
      expect(expectStatus(await r1.client.request('GET', `/v1/rooms/${room}/messages`, { token: c.token }), 403).body.code).toBe('SG_ERR_FORBIDDEN');
      expect(expectStatus(await r2.client.request('PUT', `/v1/rooms/${room}/markers`, { token: c.token, body: { upTo: opsEvent?.eventId } }), 403).body.code).toBe('SG_ERR_FORBIDDEN');
    }
    expect(expectStatus(await r2.client.request('GET', '/v1/rooms/nowhere/messages', { token: c.token }), 404).body.code).toBe('SG_ERR_ROOM_UNKNOWN');
    // an admin grant on one replica opens the room on the other at once
    expectStatus(await r1.client.request('PUT', '/v1/admin/users/carol/rooms/ops', { token: ADMIN_TOKEN }), 204);
    expectStatus(await r2.client.request('GET', '/v1/rooms/ops/messages', { token: c.token }), 200);
    expectStatus(await r1.client.request('DELETE', '/v1/admin/users/carol/rooms/ops', { token: ADMIN_TOKEN }), 204);
    expectStatus(await r2.client.request('GET', '/v1/rooms/ops/messages', { token: c.token }), 403);
  });

  it('a marker set on device A reaches device B on the other replica; an older one does not move it back', async () => {
    const m1 = await send(r1.client, c, 'lobby', 'ignore');
    expect(m1.eventId).toBeDefined();
    const first = await send(r1.client, a, 'ops', 'read me');
    const second = await send(r1.client, a, 'ops', 'and me');
    const since = expectStatus(await r2.client.request('GET', '/v1/sync?limit=1', { token: b.token }), 200).body.next;
    const ws = await WsClient.connect(r2.url ?? '', { since, access_token: b.token });
    expect(expectStatus(await r1.client.request('PUT', '/v1/rooms/ops/markers', { token: a.token, body: { upTo: second.eventId } }), 200).body.upTo).toBe(second.eventId);
    await waitFor(() => ws.events().some((f) => f.event?.kind === 'marker'), 'the marker on B');
    expect(ws.events().map((f) => [f.event?.kind, f.event?.rel?.['upTo']])).toEqual([['marker', second.eventId]]);
    expect(expectStatus(await r1.client.request('PUT', '/v1/rooms/ops/markers', { token: b.token, body: { upTo: first.eventId } }), 200).body.upTo).toBe(second.eventId);
    const after = await syncAll(r2.client, b, since);
    expect(after.events.filter((e) => e.kind === 'marker').map((e) => e.rel?.['upTo'])).toEqual([second.eventId]);
    expect(expectStatus(await r2.client.request('GET', '/v1/rooms/ops/markers', { token: b.token }), 200).body.upTo).toBe(second.eventId);
    await ws.close();
  });
});
