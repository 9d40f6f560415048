// Throttling with aggregation and telemetry rules, against a real Mosquitto.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RoomLink } from '../../../src/core/ports.js';
import type { MqttAdapter } from '../../../adapters/mqtt/index.js';
import { startMosquitto, type MosquittoBroker } from '../../harness/mosquitto.js';
import { allEvents, counters, createGateway, device, makeAdapter, stopAfterEach, uniqueClientId, until, type Gateway } from './helpers.js';

const { adapters, gateways } = stopAfterEach();

async function setup(url: string, room: string, links: RoomLink[]): Promise<{ gw: Gateway; adapter: MqttAdapter }> {
  const gw = await createGateway({ rooms: [{ id: room, links }] });
  gateways.push(gw);
  const adapter = makeAdapter(gw, { url, clientId: uniqueClientId() });
  adapters.push(adapter);
  await adapter.start();
  return { gw, adapter };
}

const bodies = async (gw: Gateway) => (await allEvents(gw.log)).map((e) => ('content' in e ? e.content.body : ''));

describe('MQTT throttling and telemetry', () => {
  let broker: MosquittoBroker;

  beforeAll(async () => {
    broker = await startMosquitto({ useEnv: false });
  });
  afterAll(async () => broker?.stop());

  it('turns 100 readings in under 2 s into one chat line and one "+99 more" summary per interval', async () => {
    const intervalMs = 2500;
    const { gw, adapter } = await setup(broker.url, 'plant', [
      { endpoint: 'mqtt', target: 'sensors/+device/temp', options: { decode: 'json', template: '{{device}} {{temp}} °C', throttleMs: intervalMs } },
    ]);
    const pub = await device(broker.url);
    const started = Date.now();
    await Promise.all(Array.from({ length: 100 }, (_, i) => pub.publishAsync('sensors/boiler-1/temp', JSON.stringify({ temp: 60 + i / 10 }), { qos: 1 })));
    await until(() => counters(adapter).received === 100, 'all 100 readings handled');
    const burstMs = Date.now() - started;
    expect(burstMs).toBeLessThan(2000);
    // The first reading is posted at once; the rest wait for the end of the interval.
    expect(await bodies(gw)).toEqual(['boiler-1 60 °C']);
    expect(counters(adapter).throttled).toBe(99);

    await until(async () => (await allEvents(gw.log)).length === 2, 'the summary', intervalMs + 10_000);
    expect(await bodies(gw)).toEqual(['boiler-1 60 °C', '+99 more (latest: boiler-1 69.9 °C)']);
    const summary = (await allEvents(gw.log))[1];
    expect(summary?.sender.uid).toBe('mqtt:boiler-1');
    // The suppressed readings themselves are kept in the telemetry stream.
    const kept = await gw.log.telemetry('plant', 500);
    expect(kept).toHaveLength(99);
    expect(kept.map((t) => t.event.telemetry.topic)).toEqual(Array(99).fill('sensors/boiler-1/temp'));

    // The summary opened a new interval: one more reading in it is folded into the next summary.
    await pub.publishAsync('sensors/boiler-1/temp', JSON.stringify({ temp: 70 }), { qos: 1 });
    await until(async () => (await allEvents(gw.log)).length === 3, 'the next summary', intervalMs + 10_000);
    expect((await bodies(gw))[2]).toBe('+1 more (latest: boiler-1 70 °C)');
    // Another device on its own topic is not held back by the first one's window.
    await pub.publishAsync('sensors/boiler-2/temp', JSON.stringify({ temp: 50 }), { qos: 1 });
    await until(async () => (await bodies(gw)).includes('boiler-2 50 °C'), 'the other device');
  });

  it('posts pending summaries on stop instead of losing them', async () => {
    const { gw, adapter } = await setup(broker.url, 'plant2', [
      { endpoint: 'mqtt', target: 'sensors/+device/hum', options: { decode: 'text', throttleMs: 600_000 } },
    ]);
    const pub = await device(broker.url);
    for (let i = 0; i < 5; i++) await pub.publishAsync('sensors/h-1/hum', `${40 + i}%`, { qos: 1 });
    await until(() => counters(adapter).throttled === 4, 'four readings folded');
    await adapter.stop();
    expect(await bodies(gw)).toEqual(['40%', '+4 more (latest: 44%)']);
    expect(adapter.status().detail?.['throttledTopics']).toBe(0);
  });

  it('sends telemetry rules to the telemetry stream, not the timeline', async () => {
    const { gw, adapter } = await setup(broker.url, 'fleet', [{ endpoint: 'mqtt', target: 'devices/+device/telemetry/#metric', options: { kind: 'telemetry', decode: 'json' } }]);
    const pub = await device(broker.url);
    await pub.publishAsync('devices/truck-3/telemetry/engine/rpm', JSON.stringify({ rpm: 2100 }), { qos: 1 });
    await pub.publishAsync('devices/truck-3/telemetry/fuel', JSON.stringify({ pct: 61 }), { qos: 0 });
    await until(() => counters(adapter).telemetry === 2, 'two telemetry entries');
    const rows = (await gw.log.telemetry('fleet', 10)).map((r) => r.event);
    expect(rows.map((r) => r.telemetry.topic).sort()).toEqual(['devices/truck-3/telemetry/engine/rpm', 'devices/truck-3/telemetry/fuel']);
    expect(rows.find((r) => r.telemetry.topic?.endsWith('rpm'))).toMatchObject({
      kind: 'telemetry',
      sender: { uid: 'mqtt:truck-3', auth: 'broker-acl' },
      telemetry: { contentType: 'application/json', payload: '{"rpm":2100}' },
    });
    expect(await allEvents(gw.log)).toHaveLength(0);
  });

  it('keeps throttled JSON readings as JSON, and refuses throttleMs on a telemetry rule instead of ignoring it', async () => {
    const { gw, adapter } = await setup(broker.url, 'boilers', [
      { endpoint: 'mqtt', target: 'sensors/+device/pressure', options: { decode: 'json', template: '{{device}} {{bar}} bar', throttleMs: 600_000 } },
      { endpoint: 'mqtt', target: 'devices/+device/telemetry', options: { kind: 'telemetry', decode: 'json', throttleMs: 1000 } },
    ]);
    const invalid = adapter.status().detail?.['invalidRules'] as Array<{ target: string; problems: string[] }>;
    expect(invalid.map((r) => r.target)).toEqual(['devices/+device/telemetry']);
    expect(invalid[0]?.problems.join(' ')).toContain('throttleMs does not apply to kind telemetry');
    const pub = await device(broker.url);
    for (let i = 0; i < 3; i++) await pub.publishAsync('sensors/b-1/pressure', JSON.stringify({ bar: 2 + i }), { qos: 1 });
    await until(() => counters(adapter).throttled === 2, 'two readings folded');
    const kept = await gw.log.telemetry('boilers', 10);
    expect(kept.map((k) => k.event.telemetry)).toEqual([
      { contentType: 'application/json', payload: '{"bar":4}', topic: 'sensors/b-1/pressure' },
      { contentType: 'application/json', payload: '{"bar":3}', topic: 'sensors/b-1/pressure' },
    ]);
  });
});
