/**
 * Shared pieces of the MQTT adapter integration tests: a log (memory or
 * Redis) with the real ingest sink and room links, adapters built on them,
 * MQTT test devices, a sink whose appends can be held, and condition waits.
 */
import { connect, connectAsync } from 'mqtt';
import type { IClientOptions, IPublishPacket, MqttClient } from 'mqtt';
import { afterEach } from 'vitest';
import type { IngestSink } from '../../../src/core/adapter.js';
import { createMqttAdapter, parseMqttConfig, type MqttAdapter, type MqttCounters } from '../../../adapters/mqtt/index.js';
import { DEADLINE_MS, createAdapterGateway, type Gateway, type GatewayOptions } from '../../harness/adapter-gateway.js';

export { DEADLINE_MS, allEvents, until, type Gateway, type GatewayOptions } from '../../harness/adapter-gateway.js';

/** A log with the real sink and links; `backend: 'redis'` uses the test Redis with a fresh prefix. */
export function createGateway(options: GatewayOptions = {}): Promise<Gateway> {
  return createAdapterGateway(options, 'mqtt');
}

export function makeAdapter(gw: Gateway, config: Record<string, unknown>, sink: IngestSink = gw.sink, name = 'mqtt'): MqttAdapter {
  return createMqttAdapter({ name, config: parseMqttConfig({ reconnect: { minMs: 100, maxMs: 1000 }, ...config }), log: gw.logger, sink, links: gw.links, reader: gw.log });
}

export function counters(adapter: MqttAdapter): MqttCounters {
  return (adapter.status().detail?.['counters'] ?? {}) as MqttCounters;
}

export function dropped(adapter: MqttAdapter): Record<string, number> {
  return (adapter.status().detail?.['dropped'] ?? {}) as Record<string, number>;
}

const devices: MqttClient[] = [];

/** An MQTT 5 client for the test side (publisher, device, observer); ended by `endDevices()`. */
export async function device(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  const client = await connectAsync(url, { protocolVersion: 5, reconnectPeriod: 200, connectTimeout: DEADLINE_MS, ...options });
  devices.push(client);
  return client;
}

/** A client that records messages from the first packet on (a resumed session delivers right after CONNACK). */
export async function recorder(url: string, options: IClientOptions = {}): Promise<{ client: MqttClient; received: IPublishPacket[] }> {
  const client = connect(url, { protocolVersion: 5, reconnectPeriod: 200, connectTimeout: DEADLINE_MS, ...options });
  devices.push(client);
  const received: IPublishPacket[] = [];
  client.on('message', (_t, _p, packet) => received.push(packet));
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  return { client, received };
}

export async function endDevices(): Promise<void> {
  await Promise.all(devices.splice(0).map((c) => c.endAsync(true).catch(() => undefined)));
}

/**
 * A sink whose `ingest` can be held: while held, calls wait (and are counted
 * in `waiting`); `release()` lets them through to the real sink, `discard()`
 * drops them (they never reach the log, as if the process died first).
 */
export function gatedSink(inner: IngestSink): { sink: IngestSink; hold(): void; release(): void; discard(): void; readonly waiting: number; readonly calls: number } {
  let held = false;
  let calls = 0;
  let gate: Array<{ go: () => void; drop: () => void }> = [];
  const sink: IngestSink = {
    async ingest(draft, options) {
      calls++;
      if (held) {
        const pass = await new Promise<boolean>((resolve) => gate.push({ go: () => resolve(true), drop: () => resolve(false) }));
        if (!pass) return new Promise(() => undefined); // never settles: the "process" is gone
      }
      return inner.ingest(draft, options);
    },
    ingestTelemetry: (d) => inner.ingestTelemetry(d),
    resolve: (r, k) => inner.resolve(r, k),
    getEvent: (r, e) => inner.getEvent(r, e),
  };
  return {
    sink,
    hold: () => (held = true),
    release() {
      held = false;
      const g = gate;
      gate = [];
      for (const w of g) w.go();
    },
    discard() {
      held = false;
      const g = gate;
      gate = [];
      for (const w of g) w.drop();
    },
    get waiting() {
      return gate.length;
    },
    get calls() {
      return calls;
    },
  };
}

let seq = 0;
/** A client id unique to this test run (persistent sessions must not collide between tests). */
export function uniqueClientId(prefix = 'sg-gw'): string {
  seq++;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${seq}`;
}

/**
 * The adapters and gateways a test of the calling file made: after each test
 * the adapters are stopped, the test devices disconnected and the gateways
 * closed.
 */
export function stopAfterEach(): { adapters: MqttAdapter[]; gateways: Gateway[] } {
  const adapters: MqttAdapter[] = [];
  const gateways: Gateway[] = [];
  afterEach(async () => {
    await Promise.all(adapters.splice(0).map((a) => a.stop().catch(() => undefined)));
    await endDevices();
    await Promise.all(gateways.splice(0).map((g) => g.close()));
  });
  return { adapters, gateways };
}
