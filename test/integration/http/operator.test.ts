/**
 * The operator API the console reads (issue 25), against a real Redis and a
 * real Mosquitto with an ACL file: each link's delivery state per event
 * (delivered with its time, pending while the broker is down, retrying with
 * the broker's refusal, dead-lettered), trace, dead letters listed with
 * their payload and filters, replayed once in log order, the lag per
 * adapter, an MQTT rule tried on a sample, and viewer tokens that read
 * everything and change nothing.
 */
import { connectAsync, type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { requestJson } from '../../../src/cli/client.js';
import { startGateway, type TestGateway } from '../../harness/gateway.js';
import { waitFor } from '../../harness/free-port.js';
import { startMosquitto, type MosquittoBroker } from '../../harness/mosquitto.js';
import { testPrefix } from '../../harness/redis.js';

const VIEWER = 'viewer-token-0123456789abcdef';
const OPEN_ACL = 'topic readwrite #';
/** the gateway may read everything and publish only under plant/: the room's out topic is refused */
const DENY_OUT_ACL = 'topic read #\ntopic readwrite plant/#';

interface Delivery {
  endpoint: string;
  target: string;
  state: string;
  nativeIds?: Record<string, string>;
  at?: number;
  attempt?: number;
  nextAt?: number;
  error?: string;
  deadLetter?: string;
}
interface TimelineEntry {
  event: { eventId: string; idem: string; content?: { body?: string } };
  deliveries: Delivery[];
}
interface DeadLetterView {
  id: string;
  group: string;
  room: string;
  eventId: string;
  reason: string;
  event?: { content?: { body?: string } };
}

let broker: MosquittoBroker;
let gw: TestGateway;
let watcher: MqttClient;
const received: string[] = [];

async function call<T>(token: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const { status, body: answer } = await requestJson<T>(gw.url, token, method, path, body);
  return { status, body: answer };
}

async function mqttState(body: string): Promise<Delivery | undefined> {
  const page = await gw.admin<{ events: TimelineEntry[] }>('GET', '/v1/admin/rooms/plant/timeline?limit=50');
  return page.body.events.find((e) => e.event.content?.body === body)?.deliveries.find((d) => d.endpoint === 'mqtt');
}

beforeAll(async () => {
  broker = await startMosquitto({ useEnv: false, acl: OPEN_ACL });
  gw = await startGateway({
    redisUrl: inject('redisUrl'),
    prefix: testPrefix('operator'),
    config: {
      http: { port: 0, adminToken: 'gateway-admin-token-0123456789', viewerTokens: [VIEWER], rateLimit: { perSecond: 10_000, burst: 10_000 } },
      rooms: [{ id: 'plant', name: 'Plant', links: [{ endpoint: 'mqtt', target: 'plant/+device/alert', options: { decode: 'text' } }] }],
      adapters: { mqtt: { type: 'mqtt', url: broker.url, clientId: `sg-operator-${process.pid}`, reconnect: { minMs: 100, maxMs: 500 } } },
    },
    // attempts spaced widely enough to see `retrying` before the dead letter
    delivery: { maxAttempts: 3, backoffBaseMs: 700, backoffMaxMs: 1500 },
  });
  await waitFor(async () => ((await gw.gateway.status()).adapters['mqtt']?.ready ?? false) === true, { timeoutMs: 30_000, what: 'the MQTT adapter to connect' });
  watcher = await connectAsync(broker.url, { protocolVersion: 5, clientId: `watch-${process.pid}`, reconnectPeriod: 200 });
  watcher.on('message', (_topic, payload) => received.push(payload.toString()));
  await watcher.subscribeAsync('sg/v1/rooms/plant/out', { qos: 1 });
});

afterAll(async () => {
  await watcher?.endAsync(true).catch(() => undefined);
  await gw?.stop();
  await broker?.stop();
});

describe('operator API', () => {
  it('status names the replica holding each adapter and lists the replicas with version and configuration hash', async () => {
    const status = await call<{ adapters: Record<string, { holder?: string }>; replicas: Array<{ replicaId: string; version: string; configHash: string; drift: boolean }> }>(VIEWER, 'GET', '/v1/admin/status');
    expect(status.status).toBe(200);
    expect(status.body.replicas).toHaveLength(1);
    const [me] = status.body.replicas;
    expect(me).toMatchObject({ replicaId: expect.stringMatching(/^test-/) as string, version: expect.stringMatching(/^\d+\.\d+\.\d+/) as string, configHash: expect.stringMatching(/^[0-9a-f]{12}$/) as string, drift: false });
    expect(status.body.adapters['mqtt']?.holder).toBe(me?.replicaId);
  });

  it('a viewer token reads the admin API and is refused every change with SG_ERR_FORBIDDEN', async () => {
    expect((await call(VIEWER, 'GET', '/v1/admin/rooms')).status).toBe(200);
    expect((await call(VIEWER, 'GET', '/v1/admin/dead-letters')).status).toBe(200);
    for (const [method, path, body] of [
      ['POST', '/v1/admin/dead-letters/replay', { all: true }],
      ['POST', '/v1/admin/dead-letters/drop', { all: true }],
      ['PUT', '/v1/admin/rooms/other', { links: [] }],
      ['POST', '/v1/admin/users', { id: 'mallory' }],
    ] as const) {
      const res = await call<{ code: string }>(VIEWER, method, path, body);
      expect(res.status, `${method} ${path}`).toBe(403);
      expect(res.body.code).toBe('SG_ERR_FORBIDDEN');
    }
    expect((await call<{ code: string }>('not-a-token-of-this-gateway', 'GET', '/v1/admin/rooms')).body.code).toBe('SG_ERR_AUTH_INVALID');
    // nothing was changed by the refused calls
    expect((await gw.admin('GET', '/v1/admin/users/mallory')).status).toBe(404);
  });

  it('follows one message per state: delivered, pending while the broker is down, retrying then dead-lettered when refused, replayed once', async () => {
    const device = await gw.deviceToken('op', ['plant']);
    const send = async (txn: string, body: string) => (await gw.device<{ eventId: string }>(device, 'PUT', `/v1/rooms/plant/send/${txn}`, { kind: 'message', content: { body } })).body.eventId;

    // delivered, with the time it was confirmed
    const first = await send('t1', 'pump seven pressure low');
    await waitFor(async () => (await mqttState('pump seven pressure low'))?.state === 'delivered', { timeoutMs: 20_000, what: 'the first message delivered' });
    const delivered = await mqttState('pump seven pressure low');
    expect(delivered).toMatchObject({ endpoint: 'mqtt', target: 'plant/+device/alert', state: 'delivered', nativeIds: {} });
    expect(delivered?.at).toBeGreaterThan(0);

    // pending while the broker is away, never dead-lettered for it; delivered once it is back
    await broker.pause();
    await waitFor(async () => ((await gw.gateway.status()).adapters['mqtt']?.connected ?? true) === false, { timeoutMs: 20_000, what: 'the adapter to see the broker gone' });
    await send('t2', 'boiler two offline');
    await waitFor(async () => (await mqttState('boiler two offline'))?.state === 'pending', { timeoutMs: 10_000, what: 'the second message pending' });
    await broker.resume();
    await waitFor(async () => (await mqttState('boiler two offline'))?.state === 'delivered', { timeoutMs: 30_000, what: 'the second message delivered after the broker came back' });
    expect((await gw.admin<{ total: number }>('GET', '/v1/admin/dead-letters')).body.total).toBe(0);

    // the broker refuses the out topic: retrying with its error, then a dead letter
    await waitFor(async () => (await gw.gateway.status()).adapters['mqtt']?.ready === true, { timeoutMs: 20_000, what: 'the adapter to reconnect' });
    await broker.setAcl(DENY_OUT_ACL);
    const refused = await send('t3', 'valve four stuck');
    let retrying: Delivery | undefined;
    await waitFor(
      async () => {
        const state = await mqttState('valve four stuck');
        if (state?.state === 'retrying') retrying = state;
        return state?.state === 'dead-lettered';
      },
      { timeoutMs: 40_000, intervalMs: 100, what: 'the refused message to be dead-lettered' },
    );
    expect(retrying?.attempt).toBeGreaterThanOrEqual(1);
    expect(retrying?.error).toBeTruthy();
    expect(retrying?.nextAt).toBeGreaterThan(0);
    const dead = await mqttState('valve four stuck');
    expect(dead?.deadLetter).toMatch(/^\d+:\d+-\d+$/);

    // listed without being consumed, with its payload, filtered by link and reason
    const list = async (query: string) => (await gw.admin<{ deadLetters: DeadLetterView[]; total: number }>('GET', `/v1/admin/dead-letters?${query}`)).body;
    const all = await list('events=true');
    expect(all.total).toBe(1);
    expect(all.deadLetters[0]).toMatchObject({ id: dead?.deadLetter, group: 'out:mqtt', room: 'plant', eventId: refused, event: { content: { body: 'valve four stuck' } } });
    expect((await list('group=out:mqtt&room=plant')).total).toBe(1);
    expect((await list('room=elsewhere')).total).toBe(0);
    expect((await list('reason=no-such-reason-text')).total).toBe(0);
    expect((await list(`reason=${encodeURIComponent((all.deadLetters[0]?.reason ?? '').slice(0, 12).toUpperCase())}`)).total).toBe(1);
    expect((await list('')).total).toBe(1);

    // two more refused after it, and one to discard
    for (const [txn, body] of [['t5', 'valve five stuck'], ['t6', 'valve six stuck'], ['t7', 'valve seven stuck']] as const) await send(txn, body);
    for (const body of ['valve five stuck', 'valve six stuck', 'valve seven stuck']) {
      await waitFor(async () => (await mqttState(body))?.state === 'dead-lettered', { timeoutMs: 60_000, intervalMs: 200, what: `"${body}" dead-lettered` });
    }
    const idOf = async (body: string) => (await mqttState(body))?.deadLetter ?? '';
    const [four, five, six, seven] = await Promise.all(['valve four stuck', 'valve five stuck', 'valve six stuck', 'valve seven stuck'].map(idOf));
    expect((await call(VIEWER, 'POST', '/v1/admin/dead-letters/drop', { ids: [seven] })).status).toBe(403);
    expect((await gw.admin<{ dropped: number }>('POST', '/v1/admin/dead-letters/drop', { ids: [seven] })).body.dropped).toBe(1);
    expect((await list('')).total).toBe(3);

    // a viewer cannot replay; the admin can, once the ACL allows it: a selection given in any order
    // goes out in log order, each received exactly once
    expect((await call(VIEWER, 'POST', '/v1/admin/dead-letters/replay', { ids: [four] })).status).toBe(403);
    await broker.setAcl(OPEN_ACL);
    const replay = await gw.admin<{ replayed: number; requested: number }>('POST', '/v1/admin/dead-letters/replay', { ids: [six, four, five] });
    expect(replay.body).toEqual({ replayed: 3, requested: 3, audit: { recorded: true } });
    const again = await gw.admin<{ replayed: number }>('POST', '/v1/admin/dead-letters/replay', { ids: [four] });
    expect(again.body.replayed).toBe(0);
    for (const body of ['valve four stuck', 'valve five stuck', 'valve six stuck']) {
      await waitFor(async () => (await mqttState(body))?.state === 'delivered', { timeoutMs: 30_000, what: `"${body}" delivered after the replay` });
    }
    // one more message after them: once it is through, any duplicate of the replay would have arrived before it
    await send('t4', 'all clear');
    await waitFor(() => received.some((p) => p.includes('all clear')), { timeoutMs: 20_000, what: 'the message after the replay' });
    const replayed = received.filter((p) => /valve (four|five|six|seven) stuck/.test(p)).map((p) => /valve (\w+) stuck/.exec(p)?.[1]);
    expect(replayed).toEqual(['four', 'five', 'six']);
    expect(await mqttState('valve seven stuck')).toMatchObject({ state: 'discarded', error: 'discarded by admin' });
    expect((await list('')).total).toBe(0);

    // the audit trail: who did what, kept in the log's state, readable by a viewer; refused calls are not in it
    const audit = await call<{ entries: Array<{ id: string; at: number; by: string; role: string; action: string; ids: string[]; count: number; done: number }> }>(VIEWER, 'GET', '/v1/admin/audit');
    expect(audit.status).toBe(200);
    expect(audit.body.entries.map((e) => [e.action, e.by, e.role, e.ids, e.done])).toEqual([
      ['dead-letters.replay', 'admin', 'admin', [four], 0],
      ['dead-letters.replay', 'admin', 'admin', [six, four, five], 3],
      ['dead-letters.drop', 'admin', 'admin', [seven], 1],
    ]);
    for (const e of audit.body.entries) expect(e.at).toBeGreaterThan(Date.now() - 600_000);
    const page = await call<{ entries: Array<{ id: string }>; next?: string }>(VIEWER, 'GET', '/v1/admin/audit?limit=2');
    expect(page.body.entries).toHaveLength(2);
    const rest = await call<{ entries: Array<{ action: string }> }>(VIEWER, 'GET', `/v1/admin/audit?before=${page.body.next ?? ''}`);
    expect(rest.body.entries.map((e) => e.action)).toEqual(['dead-letters.drop']);
    expect((await call<{ entries: unknown[] }>(VIEWER, 'GET', '/v1/admin/audit?action=dead-letters.drop')).body.entries).toHaveLength(1);

    // trace: by event id and by idempotency key, with the delivery and its time
    const trace = await gw.admin<{ room: string; eventId: string; idempotencyKey: string; deliveries: Delivery[] }>('GET', `/v1/admin/trace/${first}`);
    expect(trace.status).toBe(200);
    expect(trace.body).toMatchObject({ room: 'plant', eventId: first });
    expect(trace.body.deliveries).toEqual([expect.objectContaining({ endpoint: 'mqtt', state: 'delivered', at: expect.any(Number) as number })]);
    const byKey = await call<{ eventId: string }>(VIEWER, 'GET', `/v1/admin/trace/${encodeURIComponent(trace.body.idempotencyKey)}?room=plant`);
    expect(byKey.body.eventId).toBe(first);
    const missing = await gw.admin<{ code: string }>('GET', '/v1/admin/trace/no-such-id');
    expect(missing.status).toBe(404);
    expect(missing.body.code).toBe('SG_ERR_EVENT_UNKNOWN');

    // lag: in events and seconds, caught up now
    await waitFor(async () => (await gw.admin<{ adapters: Record<string, { events: number }> }>('GET', '/v1/admin/lag')).body.adapters['mqtt']?.events === 0, {
      timeoutMs: 20_000,
      what: 'the MQTT lag to reach 0',
    });
    const lag = await call<{ adapters: Record<string, { events: number; seconds: number; retrying: number; deadLetters: number }> }>(VIEWER, 'GET', '/v1/admin/lag');
    expect(lag.body.adapters['mqtt']).toEqual({ events: 0, seconds: 0, retrying: 0, deadLetters: 0 });

    // events out per second through this replica: the deliveries above
    const status = await gw.admin<{ adapters: Record<string, { rates?: { inPerSecond: number; outPerSecond: number } }> }>('GET', '/v1/admin/status');
    expect(status.body.adapters['mqtt']?.rates?.outPerSecond).toBeGreaterThan(0);
    expect(status.body.adapters['mqtt']?.rates?.inPerSecond).toBe(0);
  });

  it('lag counts what the adapter has not delivered, and how old the oldest is', async () => {
    await broker.pause();
    try {
      await waitFor(async () => ((await gw.gateway.status()).adapters['mqtt']?.connected ?? true) === false, { timeoutMs: 20_000, what: 'the adapter to see the broker gone' });
      const device = await gw.deviceToken('op2', ['plant']);
      for (const txn of ['l1', 'l2']) await gw.device(device, 'PUT', `/v1/rooms/plant/send/${txn}`, { kind: 'message', content: { body: `lag ${txn}` } });
      await waitFor(
        async () => {
          const lag = (await gw.admin<{ adapters: Record<string, { events: number; seconds: number }> }>('GET', '/v1/admin/lag')).body.adapters['mqtt'];
          return (lag?.events ?? 0) >= 2 && (lag?.seconds ?? 0) > 0;
        },
        { timeoutMs: 10_000, what: 'the lag to count the two waiting messages' },
      );
    } finally {
      await broker.resume();
    }
  });

  it('places each HTTP device by its last sync: the events after it and the age of the oldest', async () => {
    const reader = await gw.deviceToken('reader', ['plant']);
    const idle = await gw.deviceToken('idle', ['plant']);
    const writer = await gw.deviceToken('writer', ['plant']);
    const first = await gw.device<{ next: string }>(reader, 'GET', '/v1/sync?limit=1');
    expect((await gw.device(reader, 'GET', `/v1/sync?since=${encodeURIComponent(first.body.next)}&timeout=0`)).status).toBe(200);
    const before = Date.now();
    for (const txn of ['d1', 'd2']) await gw.device(writer, 'PUT', `/v1/rooms/plant/send/${txn}`, { kind: 'message', content: { body: `device lag ${txn}` } });
    type Row = { deviceId: string; user: string; lastSyncAt?: number; events?: number; seconds?: number };
    const rows = async () => (await call<{ devices: Row[] }>(VIEWER, 'GET', '/v1/admin/devices/lag')).body.devices;
    await waitFor(async () => (await rows()).find((d) => d.user === 'reader')?.lastSyncAt !== undefined, { timeoutMs: 10_000, what: 'the reader to be placed' });
    const row = (await rows()).find((d) => d.user === 'reader');
    expect(row?.events).toBe(2);
    expect(row?.seconds).toBeGreaterThanOrEqual(0);
    expect(row?.seconds).toBeLessThanOrEqual((Date.now() - before) / 1000 + 1);
    expect((await rows()).find((d) => d.user === 'idle')).not.toHaveProperty('lastSyncAt');
    expect(idle).toBeTruthy();
  });

  it('tries an MQTT rule on a sample: the message it would ingest, or why not (viewers too)', async () => {
    const rule = { filter: 'sensors/+device/alert', options: { decode: 'json', template: '{{device}}: {{level}}' } };
    const ok = await call<{ matched: boolean; message: { kind: string; content: { body: string }; sender: { native: string } } }>(VIEWER, 'POST', '/v1/admin/rules/test', {
      ...rule,
      topic: 'sensors/pump-7/alert',
      payload: '{"level":"high"}',
    });
    expect(ok.status).toBe(200);
    expect(ok.body.matched).toBe(true);
    expect(ok.body.message).toMatchObject({ kind: 'message', content: { body: 'pump-7: high' } });

    const other = await gw.admin<{ matched: boolean; error: string }>('POST', '/v1/admin/rules/test', { ...rule, topic: 'other/pump-7', payload: '{}' });
    expect(other.body).toMatchObject({ matched: false });
    expect(other.body.error).toMatch(/does not match/);

    const broken = await gw.admin<{ matched: boolean; error: string }>('POST', '/v1/admin/rules/test', { ...rule, topic: 'sensors/pump-7/alert', payload: '{"temp":3}' });
    expect(broken.body).toMatchObject({ matched: true });
    expect(broken.body.error).toMatch(/level/);

    const badJson = await gw.admin<{ error: string }>('POST', '/v1/admin/rules/test', { ...rule, topic: 'sensors/pump-7/alert', payload: 'not json' });
    expect(badJson.body.error).toBeTruthy();
  });

  it('documents the operator routes in the OpenAPI document', async () => {
    const doc = await fetch(`${gw.url}/docs/json`).then(async (r) => (await r.json()) as { paths: Record<string, unknown> });
    for (const path of ['/v1/admin/rooms/{room}/timeline', '/v1/admin/trace/{id}', '/v1/admin/lag', '/v1/admin/devices/lag', '/v1/admin/whoami', '/v1/admin/rules/test', '/v1/admin/dead-letters']) expect(doc.paths, path).toHaveProperty([path]);
  });
});
