// The MQTT adapter over the Redis log: QoS 1 ingest, and a Mosquitto restart
// under load with nothing lost and nothing doubled.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RoomLink } from '../../../src/core/ports.js';
import type { MqttAdapter } from '../../../adapters/mqtt/index.js';
import { startMosquitto, type MosquittoBroker } from '../../harness/mosquitto.js';
import { allEvents, counters, createGateway, device, makeAdapter, stopAfterEach, uniqueClientId, until, type Gateway } from './helpers.js';

const ROOM = 'line-1';
const RULE: RoomLink = { endpoint: 'mqtt', target: 'plant/+device/event', options: { decode: 'json', template: '{{device}} #{{n}}' } };

const { adapters, gateways } = stopAfterEach();

describe('MQTT adapter over Redis', () => {
  let broker: MosquittoBroker;

  beforeAll(async () => {
    broker = await startMosquitto({ useEnv: false });
  });
  afterAll(async () => broker?.stop());

  async function setup(): Promise<{ gw: Gateway; adapter: MqttAdapter }> {
    const gw = await createGateway({ backend: 'redis', rooms: [{ id: ROOM, links: [RULE] }] });
    gateways.push(gw);
    const adapter = makeAdapter(gw, { url: broker.url, clientId: uniqueClientId() });
    adapters.push(adapter);
    await adapter.start();
    return { gw, adapter };
  }

  it('appends a QoS 1 message once', async () => {
    const { gw, adapter } = await setup();
    const pub = await device(broker.url);
    await pub.publishAsync('plant/press-2/event', JSON.stringify({ n: 1 }), { qos: 1 });
    await until(() => counters(adapter).appended === 1, 'the append');
    const events = await allEvents(gw.log);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ content: { body: 'press-2 #1' }, sender: { uid: 'mqtt:press-2' }, origin: { ids: { 'mqtt.topic': 'plant/press-2/event' } } });
    expect(gw.log.info.backend).toBe('redis');
  });

  it('keeps arrival order in the log with several appends in flight', async () => {
    const { gw, adapter } = await setup();
    const pub = await device(broker.url);
    const total = 300;
    // One QoS level: the broker orders per topic and QoS, not across QoS levels (MQTT 5 §4.6).
    await Promise.all(Array.from({ length: total }, (_, n) => pub.publishAsync('plant/press-3/event', JSON.stringify({ n }), { qos: 1 })));
    await until(() => counters(adapter).appended === total, `${total} appended`);
    const bodies = (await allEvents(gw.log)).map((e) => ('content' in e ? e.content.body : ''));
    expect(bodies).toEqual(Array.from({ length: total }, (_, n) => `press-3 #${n}`));
  });

  it('reconnects after a broker restart under load and loses nothing', async () => {
    const { gw, adapter } = await setup();
    const total = 400;
    // The publisher keeps a session too, so what it sent before the restart is not lost on its side either.
    const pub = await device(broker.url, { clientId: uniqueClientId('sg-pub'), clean: false, properties: { sessionExpiryInterval: 600 } });
    let acked = 0;
    const publishing = (async () => {
      for (let i = 0; i < total; i++) {
        // Windows of 20 in flight: the load keeps coming while the broker is down.
        const p = pub.publishAsync('plant/press-1/event', JSON.stringify({ n: i }), { qos: 1, properties: { userProperties: { 'sg-msgid': `m-${i}` } } });
        if (i % 20 === 19) {
          await p;
          acked = i + 1;
        }
      }
    })();
    await until(() => counters(adapter).appended >= 100, 'the first 100 appended');
    const appendedAtRestart = counters(adapter).appended;
    const ackedAtRestart = acked;
    await broker.restart();
    await publishing;
    // The restart really happened under load: neither side had finished.
    expect(appendedAtRestart).toBeLessThan(total);
    expect(ackedAtRestart).toBeLessThan(total);
    await until(async () => (await allEvents(gw.log)).length >= total, `all ${total} messages in the log`, 60_000);

    const events = await allEvents(gw.log);
    const ids = events.map((e) => e.origin.ids['mqtt.msgId']);
    expect(new Set(ids).size).toBe(total);
    expect(events).toHaveLength(total);
    expect(adapter.status().detail?.['connects']).toBeGreaterThanOrEqual(2);
    expect(adapter.status()).toMatchObject({ connected: true, ready: true });
  });
});
