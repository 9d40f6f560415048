/**
 * The live stream over real sockets: WebSocket and SSE clients that connect
 * with a cursor while another device sends 1,000 messages get every message
 * after the cursor exactly once and in order, and resume exactly from their
 * last cursor; heartbeats; slow clients are closed with their cursor; access
 * changes and shutdown close streams with a cursor too.
 */
import { afterEach, describe, expect, it, inject } from 'vitest';
import { Registry } from 'prom-client';
import {
  ADMIN_TOKEN,
  HttpRefused,
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
import { message } from '../fixtures/events.js';

const open: TestApp[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((a) => a.close()));
});

interface Setup {
  readonly t: TestApp;
  readonly base: string;
  readonly sender: TestDevice;
  readonly bob: TestDevice[];
}

async function setup(options: Parameters<typeof startApp>[0] = {}, bobDevices = 4): Promise<Setup> {
  const t = await startApp({ listen: true, ...options });
  open.push(t);
  await adminRoom(t.client, 'ops');
  await adminRoom(t.client, 'other');
  await adminUser(t.client, 'alice', ['ops', 'other']);
  await adminUser(t.client, 'bob', ['ops']);
  const sender = await adminDevice(t.client, 'alice');
  const bob = [];
  for (let i = 0; i < bobDevices; i++) bob.push(await adminDevice(t.client, 'bob'));
  return { t, base: t.url ?? '', sender, bob };
}

function ids(frames: Array<{ event?: { eventId: string } | undefined }>): string[] {
  return frames.map((f) => f.event?.eventId ?? '?');
}

async function liveClosed(registry: Registry, reason: string): Promise<number> {
  const values = (await registry.getSingleMetric('syncgate_http_live_closed_total')?.get())?.values ?? [];
  return values.filter((v) => v.labels['reason'] === reason).reduce((sum, v) => sum + v.value, 0);
}

describe('live stream', () => {
  it('WebSocket and SSE clients that join mid-way get every later message once, in order, and resume exactly', async () => {
    const { t, base, sender, bob } = await setup({ log: makeLog({ redisUrl: inject('redisUrl') }) });
    const [wFull, wResume, eFull, eResume] = bob as [TestDevice, TestDevice, TestDevice, TestDevice];
    const TOTAL = 1000;
    let sentCount = 0;
    const sending = (async () => {
      for (let i = 0; i < TOTAL; i++) {
        await send(t.client, sender, 'ops', `m${i}`);
        // traffic in a room bob may not see
        if (i % 10 === 0) await send(t.client, sender, 'other', `noise ${i}`);
        sentCount++;
      }
    })();
    await waitFor(() => sentCount >= 100, 'the first 100 sends');
    const cursor = expectStatus(await t.client.request('GET', '/v1/sync?limit=1', { token: wFull.token }), 200).body.next;

    const ws = await WsClient.connect(base, { since: cursor }, { authorization: `Bearer ${wFull.token}` });
    const sse = await SseClient.connect(base, { token: eFull.token, since: cursor });
    // these two drop out after 300 events and come back with their last cursor
    const ws1 = await WsClient.connect(base, { since: cursor, access_token: wResume.token });
    const sse1 = await SseClient.connect(base, { token: eResume.token, since: cursor });
    await waitFor(() => ws1.events().length >= 300 && sse1.events().length >= 300, 'the resuming clients to get 300 events');
    await ws1.close();
    sse1.close();
    const wsCursor = ws1.lastNext() ?? '';
    const sseLastId = sse1.lastEventId ?? '';
    const ws2 = await WsClient.connect(base, { since: wsCursor, access_token: wResume.token });
    // EventSource sends Last-Event-ID on reconnect, with the original URL (whose `since` it overrides)
    const sse2 = await SseClient.connect(base, { token: eResume.token, since: cursor, lastEventId: sseLastId });

    await sending;
    const expected = (await syncAll(t.client, wFull, cursor)).events;
    expect(expected.length).toBeGreaterThan(0);
    expect(expected.length).toBeLessThanOrEqual(TOTAL - 100 + 1);
    expect(expected.every((e) => e.room === 'ops')).toBe(true);
    const expectedIds = expected.map((e) => e.eventId);
    // the tail of the send order, in order
    expect(expected.map((e) => Number(e.content?.body.slice(1)))).toEqual(Array.from({ length: expected.length }, (_, i) => TOTAL - expected.length + i));

    await waitFor(() => ws.events().length >= expectedIds.length && sse.events().length >= expectedIds.length, 'the full clients to get everything');
    await waitFor(() => ws1.events().length + ws2.events().length >= expectedIds.length, 'the resumed WebSocket to catch up');
    await waitFor(() => sse1.events().length + sse2.events().length >= expectedIds.length, 'the resumed SSE stream to catch up');
    expect(ids(ws.events())).toEqual(expectedIds);
    expect(sse.events().map((m) => m.event.eventId)).toEqual(expectedIds);
    expect([...ids(ws1.events()), ...ids(ws2.events())]).toEqual(expectedIds);
    expect([...sse1.events(), ...sse2.events()].map((m) => m.event.eventId)).toEqual(expectedIds);
    // every SSE id and WebSocket `next` is a cursor that resumes right after its event
    const sseIds = sse.events().map((m) => m.id);
    expect(sseIds.at(-1)).toBe(ws.events().at(-1)?.next);
    const probe = expectStatus(await t.client.request('GET', `/v1/sync?since=${sse.events()[41]?.id}&limit=1`, { token: eFull.token }), 200).body;
    expect(probe.events.map((e) => e.eventId)).toEqual([expectedIds[42]]);
    await Promise.all([ws.close(), ws2.close()]);
    sse.close();
    sse2.close();
  });

  it('sends heartbeats, and refuses bad stream requests with coded HTTP errors', async () => {
    const { base, bob } = await setup({ config: { heartbeatMs: 150 } }, 1);
    const d = bob[0] as TestDevice;
    const ws = await WsClient.connect(base, { access_token: d.token });
    const sse = await SseClient.connect(base, { token: d.token });
    await waitFor(() => ws.frames.filter((f) => f.type === 'heartbeat').length >= 2, 'WebSocket heartbeats');
    await waitFor(() => sse.messages.filter((m) => m.event === 'heartbeat').length >= 2, 'SSE heartbeats');
    expect(ws.closed).toBeUndefined();
    await ws.close();
    sse.close();
    // a peer that stops answering pings is dropped after two heartbeats
    const mute = await WsClient.connect(base, { access_token: d.token }, {}, { autoPong: false });
    await waitFor(() => mute.closed !== undefined, 'the silent peer to be dropped');
    expect(mute.closed?.code).toBe(1006);
    expect(mute.frames.filter((f) => f.type === 'heartbeat').length).toBeGreaterThanOrEqual(2);

    const refused = async (query: Record<string, string>, headers: Record<string, string> = {}) => {
      try {
        await WsClient.connect(base, query, headers);
      } catch (err) {
        if (err instanceof HttpRefused) return err.status;
        throw err;
      }
      return 101;
    };
    expect(await refused({})).toBe(401);
    expect(await refused({ access_token: 'sgd_forged' })).toBe(401);
    expect(await refused({ access_token: d.token, since: 'not-a-cursor-at-all' })).toBe(400);
    const plain = await fetch(`${base}/v1/stream`, { headers: { authorization: `Bearer ${d.token}` } });
    expect(plain.status).toBe(400);
    expect(((await plain.json()) as { code: string }).code).toBe('SG_ERR_REQUEST_INVALID');
    const badSse = await fetch(`${base}/v1/stream`, { headers: { accept: 'text/event-stream', 'last-event-id': 'garbage-cursor' , authorization: `Bearer ${d.token}` } });
    expect(badSse.status).toBe(400);
    expect(((await badSse.json()) as { code: string }).code).toBe('SG_ERR_CURSOR_INVALID');
  });

  it('pauses a client that reads slowly, closes one that stalls with its last cursor; it resumes from there with nothing lost', async () => {
    const registry = new Registry();
    const { t, base, bob } = await setup({ deps: { registry, stream: { stallMs: 1500 } } }, 1);
    const d = bob[0] as TestDevice;
    const start = expectStatus(await t.client.request('GET', '/v1/sync?limit=1', { token: d.token }), 200).body.next;
    const ws = await WsClient.connect(base, { since: start, access_token: d.token });
    ws.ws.pause();
    const N = 1500;
    const body = 'x'.repeat(8 * 1024);
    const appended: string[] = [];
    for (let i = 0; i < N; i++) appended.push((await t.log.append(message('ops', `${i} ${body}`))).eventId);
    await waitFor(async () => (await liveClosed(registry, 'slow')) === 1, 'the server to close the slow client');
    ws.ws.resume();
    await waitFor(() => ws.closed !== undefined, 'the close to reach the client');
    expect(ws.closed?.code).toBe(4029);
    const last = ws.frames.at(-1);
    expect(last?.type).toBe('close');
    expect(last?.code).toBe('SG_ERR_STREAM_SLOW');
    const got = ids(ws.events());
    expect(got.length).toBeLessThan(N);
    expect(last?.next).toBe(ws.events().at(-1)?.next);
    // The resumed client reads in fits and starts, slower than the server could write: it is paused, not closed.
    const again = await WsClient.connect(base, { since: last?.next ?? '', access_token: d.token });
    let paused = false;
    const toggle = setInterval(() => {
      paused = !paused;
      if (paused) again.ws.pause();
      else again.ws.resume();
    }, 100);
    try {
      await waitFor(() => got.length + again.events().length >= N, 'the resumed client to get the rest');
    } finally {
      clearInterval(toggle);
      again.ws.resume();
    }
    expect([...got, ...ids(again.events())]).toEqual(appended);
    expect(again.closed).toBeUndefined();
    expect(await liveClosed(registry, 'slow')).toBe(1);
    await again.close();
  });

  it('closes streams with a cursor when the device is deleted, its grants change or the server shuts down', async () => {
    const { t, base, bob } = await setup({ config: { heartbeatMs: 100 } }, 3);
    const [revoked, regranted, steady] = bob as [TestDevice, TestDevice, TestDevice];
    const wsRevoked = await WsClient.connect(base, { access_token: revoked.token });
    const sseRevoked = await SseClient.connect(base, { token: revoked.token });
    expectStatus(await t.client.request('DELETE', `/v1/admin/devices/${revoked.deviceId}`, { token: ADMIN_TOKEN }), 204);
    await waitFor(() => wsRevoked.closed !== undefined, 'the revoked WebSocket to close');
    expect(wsRevoked.closed?.code).toBe(4001);
    expect(wsRevoked.frames.at(-1)).toMatchObject({ type: 'close', code: 'SG_ERR_AUTH_INVALID' });
    await waitFor(() => sseRevoked.messages.some((m) => m.event === 'close'), 'the revoked SSE stream to close');
    expect(JSON.parse(sseRevoked.messages.at(-1)?.data ?? '{}')).toMatchObject({ code: 'SG_ERR_AUTH_INVALID' });
    await waitFor(() => sseRevoked.ended, 'the SSE response to end');

    const wsRegranted = await WsClient.connect(base, { access_token: regranted.token });
    const wsSteady = await WsClient.connect(base, { access_token: steady.token });
    const m = await send(t.client, steady, 'ops', 'before the change');
    await waitFor(() => wsRegranted.events().length === 1, 'the event before the change');
    expectStatus(await t.client.request('PUT', '/v1/admin/users/bob/rooms/other', { token: ADMIN_TOKEN }), 204);
    await waitFor(() => wsRegranted.closed !== undefined, 'the stream to close after the grant');
    expect(wsRegranted.closed?.code).toBe(4003);
    const closing = wsRegranted.frames.at(-1);
    expect(closing).toMatchObject({ type: 'close', code: 'SG_ERR_STREAM_RESET', next: wsRegranted.events()[0]?.next });
    expect(ids(wsRegranted.events())).toEqual([m.eventId]);
    // the steady device was closed too (same user), and a reconnect sees the new room
    await waitFor(() => wsSteady.closed !== undefined, 'the other stream of the user to close');
    const back = await WsClient.connect(base, { since: wsSteady.lastNext() ?? '', access_token: steady.token });
    const inOther = await send(t.client, steady, 'other', 'now visible');
    await waitFor(() => back.events().length === 1, 'the event in the newly granted room');
    expect(ids(back.events())).toEqual([inOther.eventId]);

    await t.app.close();
    await waitFor(() => back.closed !== undefined, 'the shutdown to close the stream');
    expect(back.closed?.code).toBe(1001);
    expect(back.frames.at(-1)).toMatchObject({ type: 'close', code: 'SG_ERR_LOG_CLOSED', next: back.events()[0]?.next });
  });
});
