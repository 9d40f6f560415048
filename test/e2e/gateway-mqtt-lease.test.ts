/**
 * Two `syncgate serve` processes share one Redis and one MQTT client id.
 * Replica A holds the MQTT connection lease; it is paused (SIGSTOP) past the
 * lease, so replica B takes the connection over; B is killed (SIGKILL) and A
 * resumed (SIGCONT) while B's lease still runs. A finds its lease gone, stops
 * its connection, wins the lease back once B's expires — and must then
 * really connect again: MQTT ingest and delivery work, and /readyz says so.
 * On a loaded machine A may run again only after B's lease ran out too; it
 * then gets the lease at its first check but sees that it lapsed, and stops
 * its connection all the same before starting a new session.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectAsync, type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { cliRunner, serveConfig } from '../harness/cli.js';
import { getFreePort, waitFor } from '../harness/free-port.js';
import { startMosquitto, type MosquittoBroker } from '../harness/mosquitto.js';
import { testPrefix } from '../harness/redis.js';
import { writeMqttGatewayConfig } from './mqtt-gateway.js';

const ADMIN = 'mqtt-lease-admin-token-0123456789';
const LEASE_MS = 4000;
const STARTED = 'adapter started (this replica holds its connection)';
const LOST = 'adapter lease lost to another replica';
const LAPSED = 'adapter lease lapsed since its last renewal';
let broker: MosquittoBroker;
const clients: MqttClient[] = [];

beforeAll(async () => {
  broker = await startMosquitto({ useEnv: false });
});
afterAll(async () => {
  for (const c of clients) await c.endAsync(true).catch(() => undefined);
  await broker?.stop();
});
// Registered after the broker's afterAll, so it runs first (after hooks run in reverse): the replicas stop before the broker.
const run = cliRunner();

interface Replica {
  readonly proc: ChildProcess;
  readonly url: string;
  /** how many times a line with this message was logged */
  count(msg: string): number;
}

async function serve(dir: string, name: string, prefix: string, clientId: string): Promise<Replica> {
  const port = await getFreePort();
  const configFile = join(dir, `${name}.yaml`);
  // the connection lease and the delivery leases: short, so the test is quick
  await writeMqttGatewayConfig(configFile, { partitions: 2, prefix, port, adminToken: ADMIN, brokerUrl: broker.url, clientId, leaseMs: LEASE_MS, shutdownGraceMs: 1000 });
  const { proc, out } = await serveConfig(run, configFile, `replica ${name} to listen`);
  const count = (msg: string) => out.stdout.split('\n').filter((l) => l.includes(`"msg":"${msg}`)).length;
  return { proc, url: `http://127.0.0.1:${port}`, count };
}

const ready = async (r: Replica) => (await fetch(`${r.url}/readyz`).catch(() => undefined))?.status === 200;

describe('MQTT connection lease between two gateway processes', () => {
  it('a replica paused past its lease, whose successor then dies, takes the lease back and ingests and delivers again', async () => {
    const prefix = testPrefix('mqttlease');
    const clientId = `sg-lease-${process.pid}-${Date.now()}`;
    const dir = await mkdtemp(join(tmpdir(), 'sg-mqtt-lease-'));
    const log = createEventLog({ partitions: 2, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    const bodies = async () => (await log.read(undefined, { rooms: new Set(['plant']), limit: 1000 })).events.map((e) => ('content' in e ? e.content.body : e.kind));
    const deadline = { timeoutMs: 30_000 };

    const device = await connectAsync(broker.url, { protocolVersion: 5, clientId: `dev-${clientId}` });
    clients.push(device);
    const watcher = await connectAsync(broker.url, { protocolVersion: 5, clientId: `watch-${clientId}` });
    clients.push(watcher);
    const published: string[] = [];
    watcher.on('message', (_topic, payload) => published.push((JSON.parse(payload.toString()) as { content?: { body?: string } }).content?.body ?? ''));
    await watcher.subscribeAsync('sg/v1/rooms/plant/out', { qos: 1 });
    const alert = (device: string, level: string) => ({ device, level });
    const publish = (a: { device: string; level: string }) => device.publishAsync(`sensors/${a.device}/alert`, JSON.stringify({ level: a.level }), { qos: 1 });

    const a = await serve(dir, 'a', prefix, clientId);
    await waitFor(() => a.count(STARTED) === 1 && ready(a), { ...deadline, what: 'replica A to hold the MQTT connection' });
    const b = await serve(dir, 'b', prefix, clientId);
    expect(b.count(STARTED)).toBe(0);
    await publish(alert('pump-1', 'one'));
    await waitFor(async () => (await bodies()).includes('pump-1: one'), { ...deadline, what: 'the first alert through A' });

    // A is paused past its lease: B takes the connection over and ingests.
    a.proc.kill('SIGSTOP');
    await waitFor(() => b.count(STARTED) === 1 && ready(b), { timeoutMs: LEASE_MS * 3 + 30_000, what: 'replica B to take the MQTT connection' });
    await publish(alert('pump-2', 'two'));
    await waitFor(async () => (await bodies()).includes('pump-2: two'), { ...deadline, what: 'the second alert through B' });

    // B dies while its lease still runs; A wakes up, finds the lease gone and stops its connection ...
    b.proc.kill('SIGKILL');
    a.proc.kill('SIGCONT');
    // (lost to B's lease, or lapsed when A ran again only after B's lease ran out: under load)
    await waitFor(() => a.count(LOST) + a.count(LAPSED) === 1, { ...deadline, what: 'replica A to notice it lost the lease' });
    // ... then wins it back once B's has expired, and must really be connected again.
    await waitFor(() => a.count(STARTED) === 2, { timeoutMs: LEASE_MS * 3 + 30_000, what: 'replica A to take the lease back' });
    await publish(alert('pump-3', 'three'));
    await waitFor(async () => (await bodies()).includes('pump-3: three'), { ...deadline, what: 'an alert ingested by A after it took the lease back' });
    await waitFor(() => ready(a), { ...deadline, what: 'replica A ready' });

    // Delivery from the log goes out through A's connection again.
    const call = async (method: string, path: string, token: string, body?: unknown) => {
      const res = await fetch(`${a.url}${path}`, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
      const text = await res.text();
      return (text ? JSON.parse(text) : {}) as Record<string, string>;
    };
    await call('POST', '/v1/admin/users', ADMIN, { id: 'op' });
    await call('PUT', '/v1/admin/users/op/rooms/plant', ADMIN);
    const { token } = await call('POST', '/v1/admin/devices', ADMIN, { user: 'op' });
    await call('PUT', '/v1/rooms/plant/send/m1', token ?? '', { kind: 'message', content: { body: 'after the lease came back' } });
    await waitFor(() => published.includes('after the lease came back'), { ...deadline, what: 'the HTTP message published through A' });

    expect((await bodies()).filter((x) => x.startsWith('pump-'))).toEqual(['pump-1: one', 'pump-2: two', 'pump-3: three']);
    await log.close();
  });
});
