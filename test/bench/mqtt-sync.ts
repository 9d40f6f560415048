/**
 * MQTT sync (issue 13): a device catching up a backlog over MQTT
 * request/response on the sync topic (pages of 1,000), against the same
 * device paging `GET /v1/sync?limit=1000` over HTTP, in the same run, on the
 * same Redis log. Both read the same 10,000 events of 4 rooms.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { connectAsync } from 'mqtt';
import { createIngestSink } from '../../src/bridge/ingest.js';
import { createRoomLinks } from '../../src/bridge/links.js';
import { silentLogger } from '../../src/log/index.js';
import { createMqttAdapter, parseMqttConfig } from '../../adapters/mqtt/index.js';
import { startMosquitto } from '../harness/mosquitto.js';
import { draft, startGateway } from './http.js';
import type { Bench, BenchRow } from './report.js';

export const benchMqttSync: Bench = async ({ redisUrl, quick }) => {
  const rows: BenchRow[] = [];
  const backlog = quick ? 2_000 : 10_000;
  const rooms = ['s0', 's1', 's2', 's3'];
  const broker = await startMosquitto();
  const gw = await startGateway(redisUrl);
  const links = await createRoomLinks({ rooms: gw.log.rooms, logger: silentLogger() });
  const clientId = `bench-sync-${process.pid}`;
  const adapter = createMqttAdapter({
    name: 'mqtt',
    config: parseMqttConfig({ url: broker.url, clientId, sync: { grants: [{ pattern: '^meter-', rooms }] } }),
    log: silentLogger(),
    sink: createIngestSink({ log: gw.log, logger: silentLogger() }),
    links,
    reader: gw.log,
  });
  const device = await connectAsync(broker.url, { protocolVersion: 5, clientId: `meter-1-${process.pid}` });
  try {
    const token = await gw.token('meter-reader', rooms);
    await adapter.start();
    const since = await gw.log.head();
    const body = 'The pump in building 7 reported a pressure drop; maintenance is on the way, ETA 20 minutes.';
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < backlog) {
          const i = next++;
          await gw.log.append(draft(rooms[i % rooms.length] ?? 's0', i, body));
        }
      }),
    );

    // MQTT: one request per page, answered on the device's response topic.
    const responseTopic = `meters/meter-1/sync-answer`;
    await device.subscribeAsync(responseTopic, { qos: 1 });
    const waiting = new Map<string, (page: { events: unknown[]; next: string; error?: unknown }) => void>();
    device.on('message', (_t, payload, packet) => {
      const id = packet.properties?.correlationData?.toString();
      if (id) waiting.get(id)?.(JSON.parse(payload.toString()) as { events: unknown[]; next: string });
    });
    const ask = async (cursor: string) => {
      const id = randomUUID();
      const answer = new Promise<{ events: unknown[]; next: string; error?: unknown }>((resolve) => waiting.set(id, resolve));
      await device.publishAsync('sg/v1/sync/meter-1', JSON.stringify({ since: cursor, limit: 1000 }), { qos: 1, properties: { responseTopic, correlationData: Buffer.from(id) } });
      const page = await answer;
      waiting.delete(id);
      if (page.error) throw new Error(`sync over MQTT: ${JSON.stringify(page.error)}`);
      return page;
    };
    const overMqtt = async () => {
      let events = 0;
      let pages = 0;
      let cursor = since;
      const t0 = performance.now();
      for (;;) {
        const page = await ask(cursor);
        pages++;
        events += page.events.length;
        cursor = page.next;
        if (page.events.length === 0) break;
      }
      return { events, pages, rate: events / ((performance.now() - t0) / 1000) };
    };
    // Baseline: the same device paging /v1/sync over HTTP.
    const overHttp = async () => {
      let events = 0;
      let cursor = since;
      const t1 = performance.now();
      for (;;) {
        const r = await fetch(`${gw.url}/v1/sync?since=${cursor}&limit=1000`, { headers: { authorization: `Bearer ${token}` } });
        const page = (await r.json()) as { events: unknown[]; next: string };
        if (r.status !== 200) throw new Error(`sync: ${r.status} ${JSON.stringify(page)}`);
        events += page.events.length;
        cursor = page.next;
        if (page.events.length === 0) break;
      }
      return { events, rate: events / ((performance.now() - t1) / 1000) };
    };
    // One unmeasured pass of each first, so neither is measured before the JIT has seen its code.
    await overMqtt();
    await overHttp();
    const mqtt = await overMqtt();
    const http = await overHttp();
    const { events: mqttEvents, pages: mqttPages, rate: mqttRate } = mqtt;
    const { events: httpEvents, rate: httpRate } = http;
    if (mqttEvents !== backlog || httpEvents !== backlog) throw new Error(`catch-up read ${mqttEvents} over MQTT, ${httpEvents} over HTTP, of ${backlog} events`);
    rows.push({
      name: `MQTT sync: ${backlog.toLocaleString('en-US')} events, limit=1000, over MQTT`,
      value: mqttRate,
      unit: 'events/s',
      baseline: httpRate,
      ratio: mqttRate / httpRate,
      note: `${mqttPages} request/response pages, 4 rooms, after one unmeasured pass of each; baseline: GET /v1/sync paging in the same run`,
    });
  } finally {
    await device.endAsync(true).catch(() => undefined);
    await adapter.stop();
    links.close();
    await gw.close();
    await broker.stop();
  }
  return { title: 'MQTT sync (catch-up over MQTT vs /v1/sync)', rows };
};
