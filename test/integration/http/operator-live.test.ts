/**
 * The live room timeline for the console (issue 25): `GET
 * /v1/admin/rooms/:room/live` with the admin or a viewer token, against a
 * real Redis and a real Mosquitto. A snapshot first, then each new event as
 * an `entry`, then its delivery state changing (`deliveries`) without the
 * client asking again; device tokens, a missing Accept and an unknown room
 * are refused. And the lag per link (`GET /v1/admin/lag` `links`): the events
 * a link has not delivered yet and the age of the oldest.
 */
import { connectAsync, type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startGateway, type TestGateway } from '../../harness/gateway.js';
import { waitFor } from '../../harness/free-port.js';
import { startMosquitto, type MosquittoBroker } from '../../harness/mosquitto.js';
import { testPrefix } from '../../harness/redis.js';
import { openLiveTimeline } from './helpers.js';

const VIEWER = 'viewer-token-live-0123456789abcdef';

interface Delivery {
  endpoint: string;
  state: string;
}
interface Entry {
  event: { eventId: string; content?: { body?: string } };
  deliveries: Delivery[];
}
let broker: MosquittoBroker;
let gw: TestGateway;
let watcher: MqttClient;

beforeAll(async () => {
  broker = await startMosquitto({ useEnv: false, acl: 'topic readwrite #' });
  gw = await startGateway({
    redisUrl: inject('redisUrl'),
    prefix: testPrefix('operator-live'),
    config: {
      http: { port: 0, adminToken: 'gateway-admin-token-0123456789', viewerTokens: [VIEWER], rateLimit: { perSecond: 10_000, burst: 10_000 } },
      rooms: [{ id: 'plant', name: 'Plant', links: [{ endpoint: 'mqtt', target: 'plant/+device/alert', options: { decode: 'text' } }] }],
      adapters: { mqtt: { type: 'mqtt', url: broker.url, clientId: `sg-operator-live-${process.pid}`, reconnect: { minMs: 100, maxMs: 500 } } },
    },
  });
  await waitFor(async () => ((await gw.gateway.status()).adapters['mqtt']?.ready ?? false) === true, { timeoutMs: 30_000, what: 'the MQTT adapter to connect' });
  watcher = await connectAsync(broker.url, { protocolVersion: 5, clientId: `watch-live-${process.pid}`, reconnectPeriod: 200 });
});

afterAll(async () => {
  await watcher?.endAsync(true).catch(() => undefined);
  await gw?.stop();
  await broker?.stop();
});

describe('live room timeline', () => {
  it('sends a snapshot, then each new event, then its delivery state as it changes, to a viewer token', async () => {
    const device = await gw.deviceToken('op', ['plant']);
    await gw.device(device, 'PUT', '/v1/rooms/plant/send/old', { kind: 'message', content: { body: 'before the stream' } });
    const live = await openLiveTimeline(gw.url, 'plant', { token: VIEWER, limit: 10 });
    try {
      await waitFor(() => live.frames.some((f) => f.name === 'snapshot'), { timeoutMs: 20_000, what: 'the snapshot' });
      const snapshot = live.frames.find((f) => f.name === 'snapshot')?.data as { events: Entry[] };
      expect(snapshot.events.map((e) => e.event.content?.body)).toContain('before the stream');

      // the broker is away: the new event arrives pending, and turns delivered on the same stream once it is back
      await broker.pause();
      await waitFor(async () => ((await gw.gateway.status()).adapters['mqtt']?.connected ?? true) === false, { timeoutMs: 20_000, what: 'the adapter to see the broker gone' });
      const sent = (await gw.device<{ eventId: string }>(device, 'PUT', '/v1/rooms/plant/send/live1', { kind: 'message', content: { body: 'sent while watching' } })).body.eventId;
      await waitFor(() => live.frames.some((f) => f.name === 'entry' && (f.data as Entry).event.eventId === sent), { timeoutMs: 20_000, what: 'the new event on the stream' });
      const entry = live.frames.find((f) => f.name === 'entry' && (f.data as Entry).event.eventId === sent)?.data as Entry;
      expect(entry.event.content?.body).toBe('sent while watching');
      expect(entry.deliveries.find((d) => d.endpoint === 'mqtt')?.state).toBe('pending');

      await broker.resume();
      await waitFor(
        () => live.frames.some((f) => f.name === 'deliveries' && (f.data as { eventId: string; deliveries: Delivery[] }).eventId === sent && (f.data as { deliveries: Delivery[] }).deliveries.some((d) => d.endpoint === 'mqtt' && d.state === 'delivered')),
        { timeoutMs: 30_000, what: 'the delivery state change on the stream' },
      );
    } finally {
      live.close();
    }
  });

  it('ends with a close frame when the gateway shuts down, rather than holding the shutdown', async () => {
    const own = await startGateway({
      redisUrl: inject('redisUrl'),
      prefix: testPrefix('operator-live-stop'),
      config: { http: { port: 0, adminToken: 'gateway-admin-token-0123456789', viewerTokens: [VIEWER] }, rooms: [{ id: 'quiet', links: [] }] },
    });
    const res = await fetch(`${own.url}/v1/admin/rooms/quiet/live`, { headers: { authorization: `Bearer ${VIEWER}`, accept: 'text/event-stream' } });
    expect(res.status).toBe(200);
    const text = res.text();
    await own.stop();
    const body = await text;
    expect(body).toMatch(/^event: snapshot\ndata: \{"events":\[\]/);
    expect(body).toMatch(/event: close\ndata: \{"code":"SG_ERR_LOG_CLOSED"/);
  });

  it('refuses device tokens, a request without Accept: text/event-stream, and an unknown room', async () => {
    const device = await gw.deviceToken('op2', ['plant']);
    const asDevice = await fetch(`${gw.url}/v1/admin/rooms/plant/live`, { headers: { authorization: `Bearer ${device}`, accept: 'text/event-stream' } });
    expect(asDevice.status).toBe(401);
    expect(((await asDevice.json()) as { code: string }).code).toBe('SG_ERR_AUTH_INVALID');
    const plain = await fetch(`${gw.url}/v1/admin/rooms/plant/live`, { headers: { authorization: `Bearer ${VIEWER}` } });
    expect(plain.status).toBe(400);
    expect(((await plain.json()) as { code: string }).code).toBe('SG_ERR_REQUEST_INVALID');
    const unknown = await fetch(`${gw.url}/v1/admin/rooms/nowhere/live`, { headers: { authorization: `Bearer ${VIEWER}`, accept: 'text/event-stream' } });
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { code: string }).code).toBe('SG_ERR_ROOM_UNKNOWN');
  });
});

interface LinkLag {
  room: string;
  endpoint: string;
  target: string;
  events: number;
  seconds: number;
  retrying: boolean;
  deadLetters: number;
}

describe('lag per link', () => {
  it('counts the events a link has not delivered yet and the age of the oldest, back to 0 once delivered', async () => {
    const device = await gw.deviceToken('lagger', ['plant']);
    const plantLag = async () => (await gw.admin<{ links: LinkLag[] }>('GET', '/v1/admin/lag')).body.links?.find((l) => l.room === 'plant' && l.endpoint === 'mqtt');
    await waitFor(async () => (await plantLag())?.events === 0, { timeoutMs: 30_000, what: 'the link caught up' });
    await broker.pause();
    await waitFor(async () => ((await gw.gateway.status()).adapters['mqtt']?.connected ?? true) === false, { timeoutMs: 20_000, what: 'the adapter to see the broker gone' });
    const before = Date.now();
    await gw.device(device, 'PUT', '/v1/rooms/plant/send/lag1', { kind: 'message', content: { body: 'lag one' } });
    await gw.device(device, 'PUT', '/v1/rooms/plant/send/lag2', { kind: 'message', content: { body: 'lag two' } });
    // seconds grow while the broker is away
    await waitFor(async () => ((await plantLag())?.seconds ?? 0) >= 0.5, { timeoutMs: 20_000, what: 'the link lag to age' });
    const behind = await plantLag();
    expect(behind).toMatchObject({ room: 'plant', endpoint: 'mqtt', target: 'plant/+device/alert', events: 2, retrying: false, deadLetters: 0 });
    expect(behind?.seconds).toBeLessThanOrEqual((Date.now() - before) / 1000 + 1);
    // the viewer reads it too, and the CLI's source is the same document
    const asViewer = await fetch(`${gw.url}/v1/admin/lag`, { headers: { authorization: `Bearer ${VIEWER}` } });
    expect(((await asViewer.json()) as { links: LinkLag[] }).links.find((l) => l.room === 'plant')?.events).toBe(2);
    await broker.resume();
    await waitFor(async () => (await plantLag())?.events === 0, { timeoutMs: 30_000, what: 'the link lag back to 0' });
    expect((await plantLag())?.seconds).toBe(0);
  });
});

