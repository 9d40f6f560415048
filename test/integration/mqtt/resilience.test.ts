// The MQTT adapter over the Redis log: QoS 1 ingest, a Mosquitto restart
// under load with nothing lost and nothing doubled, and the same adapter
// started again after a stop (as when its replica wins its lease back).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RoomLink } from '../../../src/core/ports.js';
import type { MqttAdapter } from '../../../adapters/mqtt/index.js';
import { message } from '../../fixtures/events.js';
import { startMosquitto, type MosquittoBroker } from '../../harness/mosquitto.js';
import { allEvents, counters, createGateway, device, makeAdapter, recorder, stopAfterEach, uniqueClientId, until, type Gateway } from './helpers.js';

const ROOM = 'line-1';
const RULE: RoomLink = { endpoint: 'mqtt', target: 'plant/+device/event', options: { decode: 'json', template: '{{device}} #{{n}}' } };

const { adapters, gateways } = stopAfterEach();

describe('MQTT adapter over Redis', () => {
  let broker: MosquittoBroker;

  beforeAll(async () => {
    broker = await startMosquitto({ useEnv: false });
  });
  afterAll(async () => broker?.stop());

  async function setup(rule: RoomLink = RULE): Promise<{ gw: Gateway; adapter: MqttAdapter }> {
    const gw = await createGateway({ backend: 'redis', rooms: [{ id: ROOM, links: [rule] }] });
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

  it('starts again after a stop: what was published meanwhile and after comes in, throttling still works, and room events go out', async () => {
    const rule: RoomLink = { ...RULE, options: { ...RULE.options, throttleMs: 600_000 } };
    const { gw, adapter } = await setup(rule);
    const pub = await device(broker.url);
    await pub.publishAsync('plant/press-4/event', JSON.stringify({ n: 1 }), { qos: 1 });
    await until(() => counters(adapter).appended === 1, 'the first append');
    await adapter.stop();
    expect(adapter.status().ready).toBe(false);

    // Queued by the broker in the adapter's persistent session while it is away.
    await pub.publishAsync('plant/press-5/event', JSON.stringify({ n: 2 }), { qos: 1 });
    await adapter.start();
    await until(() => adapter.status().ready, 'ready again after the restart');
    await pub.publishAsync('plant/press-6/event', JSON.stringify({ n: 3 }), { qos: 1 });
    await until(async () => (await allEvents(gw.log)).length === 3, 'the messages of and after the stop in the log');
    // A second reading of press-6 inside its window is folded into the summary, as before the stop.
    await pub.publishAsync('plant/press-6/event', JSON.stringify({ n: 4 }), { qos: 1 });
    await until(() => counters(adapter).throttled === 1, 'the second press-6 reading throttled');
    expect((await allEvents(gw.log)).map((e) => ('content' in e ? e.content.body : e.kind))).toEqual(['press-4 #1', 'press-5 #2', 'press-6 #3']);

    const observer = await recorder(broker.url);
    await observer.client.subscribeAsync(`sg/v1/rooms/${ROOM}/out`, { qos: 1 });
    const { eventId } = await gw.log.append(message(ROOM, 'to the devices after the restart'));
    const event = await gw.log.getEvent(ROOM, eventId);
    if (!event) throw new Error('appended event not found');
    expect(await adapter.deliver(event, { room: ROOM, link: rule }, { attempt: 0, references: {} })).toMatchObject({ status: 'delivered' });
    await until(() => observer.received.some((p) => JSON.parse(String(p.payload)).eventId === eventId), 'the publication on the room topic');
  });
});
