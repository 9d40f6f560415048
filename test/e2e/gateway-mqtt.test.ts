/**
 * MQTT through the whole gateway, run as an operator runs it (`syncgate serve`
 * with a config file, Redis and Mosquitto): a QoS 1 alert reaches HTTP sync
 * once; the gateway process is SIGKILLed while holding a message whose
 * PUBACK it has not sent; the broker redelivers after the restart and the
 * log holds every message exactly once; an HTTP message is published on the
 * room topic once and not ingested back.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { connectAsync, type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { cliRunner, serveConfig } from '../harness/cli.js';
import { getFreePort, readFileFrom, waitFor, waitForExit } from '../harness/free-port.js';
import { startMosquitto, type MosquittoBroker } from '../harness/mosquitto.js';
import { testPrefix } from '../harness/redis.js';
import { writeMqttGatewayConfig } from './mqtt-gateway.js';

const ADMIN = 'mqtt-e2e-admin-token-0123456789';
let broker: MosquittoBroker;
const clients: MqttClient[] = [];

beforeAll(async () => {
  broker = await startMosquitto({ useEnv: false, verboseLog: true });
});
afterAll(async () => {
  for (const c of clients) await c.endAsync(true).catch(() => undefined);
  await broker?.stop();
});
// Registered after the broker's afterAll, so it runs first (after hooks run in reverse): the gateway stops before the broker.
const run = cliRunner();

const serve = (configFile: string) => serveConfig(run, configFile, 'the gateway to listen');

/** The MQTT adapter's entry in GET /v1/admin/status, or undefined while the API does not answer. */
async function adapterStatus(api: string): Promise<Record<string, unknown> | undefined> {
  const res = await fetch(`${api}/v1/admin/status`, { headers: { authorization: `Bearer ${ADMIN}` } }).catch(() => undefined);
  if (res?.status !== 200) return undefined;
  return ((await res.json()) as { adapters: Record<string, Record<string, unknown> | undefined> }).adapters['mqtt'];
}

describe('MQTT through the gateway process', () => {
  it('ingests once, survives SIGKILL before a PUBACK without loss or duplicates, and publishes HTTP messages once', async () => {
    const prefix = testPrefix('mqtte2e');
    const port = await getFreePort();
    const clientId = `sg-e2e-${process.pid}-${Date.now()}`;
    const dir = await mkdtemp(join(tmpdir(), 'sg-mqtt-e2e-'));
    const configFile = join(dir, 'config.yaml');
    // the SIGKILLed process holds its delivery leases until they expire
    await writeMqttGatewayConfig(configFile, { partitions: 4, prefix, port, adminToken: ADMIN, brokerUrl: broker.url, clientId, leaseMs: 1500 });
    const api = `http://127.0.0.1:${port}`;
    const redis = new Redis(inject('redisUrl'));
    const log = createEventLog({ partitions: 4, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    const bodies = async () => (await log.read(undefined, { rooms: new Set(['plant']), limit: 1000 })).events.map((e) => ('content' in e ? e.content.body : e.kind));

    let gw = await serve(configFile);
    // 'syncgate listening' comes before the adapters connect (they start in the background, on the replica
    // holding the lease); the gateway's session is new, so an alert published before it subscribed would never reach it.
    await waitFor(async () => (await adapterStatus(api))?.['ready'] === true, { timeoutMs: 30_000, what: 'the MQTT adapter to connect and subscribe' });
    const device = await connectAsync(broker.url, { protocolVersion: 5, clientId: `dev-${process.pid}` });
    clients.push(device);
    const room = await connectAsync(broker.url, { protocolVersion: 5, clientId: `roomwatch-${process.pid}` });
    clients.push(room);
    const published: Array<{ body: string; eid: string | undefined }> = [];
    room.on('message', (_topic, payload, packet) => {
      const eid = packet.properties?.userProperties?.['sg-eid'];
      published.push({ body: (JSON.parse(payload.toString()) as { content?: { body?: string }; body?: string }).content?.body ?? payload.toString(), eid: Array.isArray(eid) ? eid[0] : eid });
    });
    await room.subscribeAsync('sg/v1/rooms/plant/out', { qos: 1 });

    // 1. a QoS 1 alert reaches the log (and so HTTP sync) once, rendered
    await device.publishAsync('sensors/pump-7/alert', JSON.stringify({ level: 'high' }), { qos: 1 });
    await waitFor(async () => (await bodies()).length === 1, { timeoutMs: 15_000, what: 'the first alert' });
    expect(await bodies()).toEqual(['pump-7: high']);

    // 2. the log stops taking writes; the next alert reaches the gateway, which cannot append it and so holds its PUBACK
    const logPath = broker.logPath ?? '';
    const sentBefore = (await readFileFrom(logPath)).split('\n').filter((l) => l.includes(`Sending PUBLISH to ${clientId} `)).length;
    await redis.call('CLIENT', 'PAUSE', '20000', 'WRITE');
    try {
      await device.publishAsync('sensors/pump-7/alert', JSON.stringify({ level: 'critical' }), { qos: 1 });
      await waitFor(async () => (await readFileFrom(logPath)).split('\n').filter((l) => l.includes(`Sending PUBLISH to ${clientId} `)).length > sentBefore, {
        timeoutMs: 15_000,
        what: 'the broker to hand the alert to the gateway',
      });
      gw.proc.kill('SIGKILL');
      await waitForExit(gw.proc);
    } finally {
      await redis.call('CLIENT', 'UNPAUSE');
    }
    // a message published while the gateway is down is queued in its persistent session
    await device.publishAsync('sensors/pump-7/alert', JSON.stringify({ level: 'recovering' }), { qos: 1 });

    gw = await serve(configFile);
    await waitFor(async () => (await bodies()).length >= 3, { timeoutMs: 20_000, what: 'the redelivered and the queued alerts' });
    expect(await bodies()).toEqual(['pump-7: high', 'pump-7: critical', 'pump-7: recovering']);

    // 3. an HTTP message is published on the room topic once, with sg-eid, and not ingested back
    const call = async (method: string, path: string, token: string, body?: unknown) => {
      const res = await fetch(`${api}${path}`, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
      const text = await res.text();
      return (text ? JSON.parse(text) : {}) as Record<string, string>;
    };
    await call('POST', '/v1/admin/users', ADMIN, { id: 'op' });
    await call('PUT', '/v1/admin/users/op/rooms/plant', ADMIN);
    const { token } = await call('POST', '/v1/admin/devices', ADMIN, { user: 'op' });
    const sent = await call('PUT', '/v1/rooms/plant/send/m1', token ?? '', { kind: 'message', content: { body: 'on my way' } });
    await waitFor(() => published.some((p) => p.body.includes('on my way')), { timeoutMs: 15_000, what: 'the publication on the room topic' });
    expect(published.filter((p) => p.body.includes('on my way'))).toEqual([{ body: expect.stringContaining('on my way') as string, eid: sent['eventId'] }]);
    const afterSend = await bodies();
    expect(afterSend.filter((b) => b === 'on my way')).toHaveLength(1);
    expect(afterSend).toHaveLength(4);

    // 4. an invalid MQTT rule is refused by the admin API with its problems, and nothing is stored
    const invalid = await fetch(`${api}/v1/admin/rooms/plant2`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ links: [{ endpoint: 'mqtt', target: 'sensors/+device/alert', options: { decode: 'yaml', bogus: 1 } }] }),
    });
    expect(invalid.status).toBe(400);
    const problem = (await invalid.json()) as { code: string; details: { problems: string[] } };
    expect(problem.code).toBe('SG_ERR_ROOM_INVALID');
    expect(problem.details.problems.join('\n')).toMatch(/bogus/);
    expect((await fetch(`${api}/v1/admin/rooms/plant2`, { headers: { authorization: `Bearer ${ADMIN}` } })).status).toBe(404);

    gw.proc.kill('SIGTERM');
    await waitForExit(gw.proc);
    expect(gw.proc.exitCode).toBe(0);
    await log.close();
    await redis.quit();
  });
});
