// Checks the Mosquitto harness against the broker behaviour the MQTT adapter
// relies on: persistent MQTT 5 sessions that queue QoS 1 while a client is
// away (also across a broker restart), and identity enforced by the ACL.
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect, connectAsync, ErrorWithReasonCode } from 'mqtt';
import type { IClientOptions, IConnackPacket, MqttClient } from 'mqtt';
import { startMosquitto } from '../harness/mosquitto.js';
import type { MosquittoBroker } from '../harness/mosquitto.js';

const DEADLINE_MS = 10_000;

interface Received {
  topic: string;
  payload: string;
}

/** A client whose inbound messages are recorded from the first packet on. */
interface RecordingClient {
  client: MqttClient;
  received: Received[];
  connack: IConnackPacket;
}

const clients: MqttClient[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.endAsync(true).catch(() => undefined)));
});

/**
 * Connects and records messages before CONNACK is handled: a resumed session
 * delivers its queued messages right after CONNACK, before connectAsync() would
 * let us attach a listener.
 */
async function connectRecording(url: string, options: IClientOptions): Promise<RecordingClient> {
  const client = connect(url, { protocolVersion: 5, reconnectPeriod: 0, connectTimeout: DEADLINE_MS, ...options });
  clients.push(client);
  const received: Received[] = [];
  client.on('message', (topic, payload) => received.push({ topic, payload: payload.toString('utf8') }));
  const connack = await new Promise<IConnackPacket>((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
  });
  return { client, received, connack };
}

async function connectPlain(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  const client = await connectAsync(url, { protocolVersion: 5, reconnectPeriod: 0, connectTimeout: DEADLINE_MS, ...options });
  clients.push(client);
  return client;
}

/** Waits (with a deadline) until a message on `topic` has been recorded. */
async function waitForMessage(received: Received[], topic: string): Promise<Received> {
  const deadline = Date.now() + DEADLINE_MS;
  for (;;) {
    const hit = received.find((m) => m.topic === topic);
    if (hit) return hit;
    if (Date.now() > deadline) throw new Error(`no message on ${topic} within ${DEADLINE_MS} ms`);
    await new Promise<void>((resolve) => setTimeout(resolve, 20));
  }
}

function persistentOptions(clientId: string): IClientOptions {
  return { clientId, clean: false, properties: { sessionExpiryInterval: 300 } };
}

describe('mosquitto harness', () => {
  it('starts its own broker on a free loopback port when told to ignore MQTT_URL', async () => {
    const saved = process.env['MQTT_URL'];
    // Points nowhere: if the harness used it, the connect below would fail.
    process.env['MQTT_URL'] = 'mqtt://127.0.0.1:1';
    let own: MosquittoBroker | undefined;
    try {
      const fromEnv = await startMosquitto();
      expect(fromEnv.external).toBe(true);
      expect(fromEnv.port).toBe(1);
      await expect(fromEnv.restart()).rejects.toThrow(/MQTT_URL/);
      await fromEnv.stop();

      own = await startMosquitto({ useEnv: false });
      expect(own.external).toBe(false);
      expect(own.url).toBe(`mqtt://127.0.0.1:${own.port}`);
      expect(own.port).not.toBe(1883);
      expect(own.configPath).not.toBeNull();
      const config = await readFile(own.configPath ?? '', 'utf8');
      expect(config).toContain(`listener ${own.port} 127.0.0.1`);
      expect(config).toContain('persistence true');

      const topic = `sg-test/${randomUUID()}/ping`;
      const sub = await connectRecording(own.url, {});
      await sub.client.subscribeAsync(topic, { qos: 1 });
      const pub = await connectPlain(own.url);
      await pub.publishAsync(topic, 'pong', { qos: 1 });
      expect((await waitForMessage(sub.received, topic)).payload).toBe('pong');
    } finally {
      if (saved === undefined) delete process.env['MQTT_URL'];
      else process.env['MQTT_URL'] = saved;
      await own?.stop();
    }
  });

  describe('persistent sessions', () => {
    let broker: MosquittoBroker;

    beforeAll(async () => {
      broker = await startMosquitto({ useEnv: false });
    });

    afterAll(async () => {
      await broker?.stop();
    });

    it('queues QoS 1 messages for an offline persistent session and delivers them on reconnect', async () => {
      const clientId = `sg-test-${randomUUID()}`;
      const topic = `sg-test/${randomUUID()}/out`;

      const first = await connectRecording(broker.url, persistentOptions(clientId));
      expect(first.connack.sessionPresent).toBe(false);
      await first.client.subscribeAsync(topic, { qos: 1 });
      await first.client.endAsync();

      const pub = await connectPlain(broker.url);
      // Resolves on PUBACK: the broker has taken ownership of the message.
      await pub.publishAsync(topic, 'while-away', { qos: 1 });

      const again = await connectRecording(broker.url, persistentOptions(clientId));
      expect(again.connack.sessionPresent).toBe(true);
      const msg = await waitForMessage(again.received, topic);
      expect(msg.payload).toBe('while-away');
    });

    it('keeps the session and its queued message across a broker restart', async () => {
      const clientId = `sg-test-${randomUUID()}`;
      const topic = `sg-test/${randomUUID()}/out`;
      const portBefore = broker.port;

      const first = await connectRecording(broker.url, persistentOptions(clientId));
      await first.client.subscribeAsync(topic, { qos: 1 });
      await first.client.endAsync();

      const pub = await connectPlain(broker.url);
      await pub.publishAsync(topic, 'before-restart', { qos: 1 });
      await pub.endAsync();

      await broker.restart();
      expect(broker.port).toBe(portBefore);

      const again = await connectRecording(broker.url, persistentOptions(clientId));
      // Without persistence the broker would have forgotten the session.
      expect(again.connack.sessionPresent).toBe(true);
      const msg = await waitForMessage(again.received, topic);
      expect(msg.payload).toBe('before-restart');
    });
  });

  describe('ACL-enforced identity', () => {
    let broker: MosquittoBroker;
    const users = { gw: 'gw-secret', dev1: 'dev1-secret', dev2: 'dev2-secret' };

    beforeAll(async () => {
      broker = await startMosquitto({
        useEnv: false,
        users,
        // Each device may publish only under its own username; the gateway reads all.
        acl: ['user gw', 'topic read devices/#', '', 'pattern write devices/%u/#'].join('\n'),
      });
    });

    afterAll(async () => {
      await broker?.stop();
    });

    it('rejects bad credentials', async () => {
      await expect(
        connectPlain(broker.url, { username: 'dev1', password: 'wrong', reconnectOnConnackError: false }),
      ).rejects.toThrow(/Bad User Name or Password|Not authorized/i);
    });

    it('delivers a device publish only on its own topic segment', async () => {
      const gw = await connectRecording(broker.url, { username: 'gw', password: users.gw });
      await gw.client.subscribeAsync('devices/#', { qos: 1 });
      const dev1 = await connectPlain(broker.url, { username: 'dev1', password: users.dev1 });

      await dev1.publishAsync('devices/dev1/alert', 'own', { qos: 1 });
      const own = await waitForMessage(gw.received, 'devices/dev1/alert');
      expect(own.payload).toBe('own');

      // Mosquitto 2.0 answers a denied QoS 1 publish from an MQTT 5 client with
      // PUBACK reason 0x87 (Not authorized); mqtt.js turns that into a rejection.
      // (Older brokers and MQTT 3.1.1 clients get a plain PUBACK and a silent drop.)
      const denied = await dev1.publishAsync('devices/dev2/alert', 'spoofed', { qos: 1 }).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(denied).toBeInstanceOf(ErrorWithReasonCode);
      expect((denied as ErrorWithReasonCode).code).toBe(0x87);

      // The broker handles one client's packets in order, so once this later
      // message has reached the gateway, the spoofed one would have too.
      await dev1.publishAsync('devices/dev1/after', 'marker', { qos: 1 });
      await waitForMessage(gw.received, 'devices/dev1/after');
      expect(gw.received.map((m) => m.topic)).not.toContain('devices/dev2/alert');
      expect(gw.received.map((m) => m.payload)).not.toContain('spoofed');
    });
  });
});
