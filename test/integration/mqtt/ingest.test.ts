// MQTT adapter ingest against a real Mosquitto: QoS 1 once with rendered text,
// sender from the ACL-enforced topic segment, PUBACK only after the append,
// DUP redelivery after a crash, offline delivery, bad input.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileFrom } from '../../harness/free-port.js';
import { startMosquitto, type MosquittoBroker } from '../../harness/mosquitto.js';
import { allEvents, counters, createGateway, device, dropped, gatedSink, makeAdapter, recorder, stopAfterEach, uniqueClientId, until, type Gateway } from './helpers.js';
import type { MqttAdapter } from '../../../adapters/mqtt/index.js';
import type { RoomLink } from '../../../src/core/ports.js';
import { nativeKey, type IngestSink } from '../../../src/core/adapter.js';

const ROOM = 'alerts';
const RULE: RoomLink = { endpoint: 'mqtt', target: 'sensors/+device/alert', options: { decode: 'json', template: '{{device}}: {{level}} at {{temp}} °C' } };

const { adapters, gateways } = stopAfterEach();

async function gateway(rooms: Array<{ id: string; links: RoomLink[] }> = [{ id: ROOM, links: [RULE] }]): Promise<Gateway> {
  const gw = await createGateway({ rooms });
  gateways.push(gw);
  return gw;
}

function track(a: MqttAdapter): MqttAdapter {
  adapters.push(a);
  return a;
}

describe('MQTT ingest with broker ACL identity', () => {
  let broker: MosquittoBroker;
  const users = { gw: 'gw-secret', 'pump-7': 'p7-secret' };

  beforeAll(async () => {
    broker = await startMosquitto({
      useEnv: false,
      users,
      // The gateway reads everything; a device may publish only under its own name.
      acl: ['user gw', 'topic readwrite #', '', 'pattern write sensors/%u/#'].join('\n'),
    });
  });
  afterAll(async () => broker?.stop());

  it('appends a QoS 1 message once, with the rendered text, the device as sender and the topic among its native ids', async () => {
    const gw = await gateway();
    const adapter = track(makeAdapter(gw, { url: broker.url, clientId: uniqueClientId(), username: 'gw', password: users.gw }));
    await adapter.start();
    expect(adapter.status()).toMatchObject({ connected: true, ready: true });

    const pump = await device(broker.url, { username: 'pump-7', password: users['pump-7'] });
    // The payload claims another device: identity comes from the topic, never from the payload.
    await pump.publishAsync('sensors/pump-7/alert', JSON.stringify({ level: 'high', temp: 81.5, device: 'pump-9' }), { qos: 1 });

    await until(async () => (await allEvents(gw.log)).length === 1, 'the alert in the log');
    const [event] = await allEvents(gw.log);
    expect(event?.kind).toBe('message');
    expect(event && 'content' in event ? event.content.body : undefined).toBe('pump-7: high at 81.5 °C');
    expect(event?.sender).toMatchObject({ uid: 'mqtt:pump-7', proto: 'mqtt', native: 'pump-7', auth: 'broker-acl' });
    expect(event?.origin).toMatchObject({ proto: 'mqtt', via: 'mqtt', ids: { 'mqtt.topic': 'sensors/pump-7/alert' } });
    expect(event?.room).toBe(ROOM);

    // A device cannot publish as another one: the broker refuses (0x87) and nothing reaches the room.
    await expect(pump.publishAsync('sensors/pump-9/alert', JSON.stringify({ level: 'x', temp: 1 }), { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
    await pump.publishAsync('sensors/pump-7/alert', JSON.stringify({ level: 'low', temp: 20 }), { qos: 1 });
    await until(async () => (await allEvents(gw.log)).length === 2, 'the second alert');
    const senders = (await allEvents(gw.log)).map((e) => e.sender.uid);
    expect(senders).toEqual(['mqtt:pump-7', 'mqtt:pump-7']);
    expect(counters(adapter).appended).toBe(2);
  });
});

describe('MQTT ingest', () => {
  let broker: MosquittoBroker;

  beforeAll(async () => {
    // Debug logging: the broker's log shows the PUBACKs the adapter sends.
    broker = await startMosquitto({ useEnv: false, verboseLog: true });
  });
  afterAll(async () => broker?.stop());

  it('sends the PUBACK only after the event was appended', async () => {
    const gw = await gateway();
    const gate = gatedSink(gw.sink);
    const clientId = uniqueClientId();
    const adapter = track(makeAdapter(gw, { url: broker.url, clientId }, gate.sink));
    await adapter.start();
    const logPath = broker.logPath ?? '';
    const pubacks = async () => (await readFileFrom(logPath)).split('\n').filter((l) => l.includes(`Received PUBACK from ${clientId} `)).length;
    const before = await pubacks();

    gate.hold();
    const pub = await device(broker.url);
    await pub.publishAsync('sensors/dev-1/alert', JSON.stringify({ level: 'high', temp: 90 }), { qos: 1 });
    await until(() => gate.waiting === 1, 'the append to be attempted');
    // The broker sent the message (it is waiting on our sink) …
    expect((await readFileFrom(logPath)).includes(`Sending PUBLISH to ${clientId} `)).toBe(true);
    // … and has had every chance to see a PUBACK had we sent one: a later message on
    // the same connection is only handled after the held one.
    await pub.publishAsync('sensors/dev-1/alert', JSON.stringify({ level: 'low', temp: 10 }), { qos: 1 });
    await until(async () => (await readFileFrom(logPath)).split('\n').filter((l) => l.includes(`Sending PUBLISH to ${clientId} `)).length >= 2, 'the second publish sent');
    expect(await pubacks()).toBe(before);
    expect(await allEvents(gw.log)).toHaveLength(0);

    gate.release();
    await until(async () => (await allEvents(gw.log)).length === 2, 'both appended');
    await until(async () => (await pubacks()) === before + 2, 'both PUBACKs at the broker');
  });

  it('acknowledges in arrival order: a later message appended first waits for the earlier one', async () => {
    const gw = await gateway();
    // Holds only the first message's append; the second goes straight through.
    let releaseFirst: () => void = () => undefined;
    const firstHeld = new Promise<void>((resolve) => (releaseFirst = resolve));
    const sink: IngestSink = {
      ...gw.sink,
      ingest: async (draft, options) => {
        if ('content' in draft && draft.content.body.includes('first')) await firstHeld;
        return gw.sink.ingest(draft, options);
      },
      ingestTelemetry: (d) => gw.sink.ingestTelemetry(d),
      resolve: (r, k) => gw.sink.resolve(r, k),
      getEvent: (r, e) => gw.sink.getEvent(r, e),
    };
    const clientId = uniqueClientId();
    const adapter = track(makeAdapter(gw, { url: broker.url, clientId }, sink));
    await adapter.start();
    const logPath = broker.logPath ?? '';
    const pubackMids = async () =>
      (await readFileFrom(logPath))
        .split('\n')
        .map((l) => new RegExp(`Received PUBACK from ${clientId} \\(Mid: (\\d+)`).exec(l)?.[1])
        .filter((m): m is string => m !== undefined)
        .map(Number);

    const pub = await device(broker.url);
    await pub.publishAsync('sensors/dev-8/alert', JSON.stringify({ level: 'first', temp: 1 }), { qos: 1 });
    await pub.publishAsync('sensors/dev-8/alert', JSON.stringify({ level: 'second', temp: 2 }), { qos: 1 });
    await until(() => counters(adapter).appended === 1, 'the second message appended');
    expect(await pubackMids()).toEqual([]);

    releaseFirst();
    await until(async () => (await pubackMids()).length === 2, 'both PUBACKs');
    const [a, b] = await pubackMids();
    expect(a).toBeLessThan(b ?? 0);
  });

  it('does not append a redelivery (DUP) of a message that was appended before a crash, and does not merge new messages', async () => {
    const gw = await gateway();
    const clientId = uniqueClientId();
    const gate = gatedSink(gw.sink);
    const first = track(makeAdapter(gw, { url: broker.url, clientId }, gate.sink));
    await first.start();

    gate.hold();
    const pub = await device(broker.url);
    const payload = JSON.stringify({ level: 'high', temp: 77 });
    await pub.publishAsync('sensors/dev-2/alert', payload, { qos: 1 });
    await until(() => gate.waiting === 1, 'the append to start');
    // The process dies after the append completed but before its PUBACK went out.
    first.abort();
    gate.release();
    await until(async () => (await allEvents(gw.log)).length === 1, 'the first delivery appended');

    const second = track(makeAdapter(gw, { url: broker.url, clientId }));
    await second.start();
    await until(() => counters(second).duplicate === 1, 'the redelivery recognised');
    expect(counters(second).appended).toBe(0);
    expect(await allEvents(gw.log)).toHaveLength(1);

    // The same payload published again is a new message (DUP=0): it is appended.
    await pub.publishAsync('sensors/dev-2/alert', payload, { qos: 1 });
    await until(async () => (await allEvents(gw.log)).length === 2, 'the second identical message');
    expect(counters(second).appended).toBe(1);
  });

  it('appends a redelivery once when the crash came before the append', async () => {
    const gw = await gateway();
    const clientId = uniqueClientId();
    const gate = gatedSink(gw.sink);
    const first = track(makeAdapter(gw, { url: broker.url, clientId }, gate.sink));
    await first.start();

    gate.hold();
    const pub = await device(broker.url);
    await pub.publishAsync('sensors/dev-3/alert', JSON.stringify({ level: 'mid', temp: 50 }), { qos: 1 });
    await until(() => gate.waiting === 1, 'the append to start');
    first.abort();
    gate.discard();

    const second = track(makeAdapter(gw, { url: broker.url, clientId }));
    await second.start();
    await until(async () => (await allEvents(gw.log)).length === 1, 'the redelivered message appended');
    expect(counters(second)).toMatchObject({ appended: 1, duplicate: 0 });
    const [event] = await allEvents(gw.log);
    expect(event && 'content' in event ? event.content.body : '').toBe('dev-3: mid at 50 °C');
  });

  it('dedupes exactly on sg-msgid', async () => {
    const gw = await gateway();
    const adapter = track(makeAdapter(gw, { url: broker.url, clientId: uniqueClientId() }));
    await adapter.start();
    const pub = await device(broker.url);
    const props = { properties: { userProperties: { 'sg-msgid': 'alert-42' } } };
    await pub.publishAsync('sensors/dev-4/alert', JSON.stringify({ level: 'a', temp: 1 }), { qos: 1, ...props });
    await pub.publishAsync('sensors/dev-4/alert', JSON.stringify({ level: 'a', temp: 1 }), { qos: 1, ...props });
    await pub.publishAsync('sensors/dev-4/alert', JSON.stringify({ level: 'b', temp: 2 }), { qos: 1 });
    await until(() => counters(adapter).appended + counters(adapter).duplicate === 3, 'three messages handled');
    const events = await allEvents(gw.log);
    expect(events).toHaveLength(2);
    expect(events[0]?.idem).toBe('mqtt:dev-4:alert-42');
    expect(events[0]?.origin.ids['mqtt.msgId']).toBe('alert-42');
    expect(counters(adapter).duplicate).toBe(1);
    // The msgid identifies the message in the id map; the topic only says where it came from.
    expect(await gw.log.resolve(ROOM, nativeKey('mqtt', 'mqtt.msgId', 'alert-42'))).toBe(events[0]?.eventId);
    expect(await gw.log.resolve(ROOM, nativeKey('mqtt', 'mqtt.topic', 'sensors/dev-4/alert'))).toBeUndefined();
  });

  it('delivers messages published while the gateway was stopped when it comes back', async () => {
    const gw = await gateway();
    const clientId = uniqueClientId();
    const first = track(makeAdapter(gw, { url: broker.url, clientId }));
    await first.start();
    await first.stop();

    const pub = await device(broker.url);
    for (let i = 0; i < 5; i++) await pub.publishAsync(`sensors/dev-${i}/alert`, JSON.stringify({ level: 'away', temp: i }), { qos: 1 });

    const again = track(makeAdapter(gw, { url: broker.url, clientId }));
    await again.start();
    expect(again.status().detail?.['sessionPresent']).toBe(true);
    await until(async () => (await allEvents(gw.log)).length === 5, 'the 5 queued messages');
    const bodies = (await allEvents(gw.log)).map((e) => ('content' in e ? e.content.body : ''));
    expect(bodies).toEqual([0, 1, 2, 3, 4].map((i) => `dev-${i}: away at ${i} °C`));
  });

  it('counts and logs bad input with its reason, keeps the connection up, and goes on', async () => {
    const gw = await gateway([
      { id: ROOM, links: [RULE] },
      { id: 'legacy', links: [{ endpoint: 'mqtt', target: 'legacy/+device/x' }] },
    ]);
    const clientId = uniqueClientId();
    // A first run subscribes to legacy/+/x; the rule is then removed while the gateway is down,
    // so the broker still delivers that topic to the kept session: a topic with no rule.
    const first = track(makeAdapter(gw, { url: broker.url, clientId }));
    await first.start();
    await first.stop();
    await gw.log.rooms.put({ id: 'legacy', links: [] });
    await until(() => gw.links.linksOf('mqtt').length === 1, 'the legacy link removed');

    const pub = await device(broker.url);
    await pub.publishAsync('legacy/dev-9/x', 'old', { qos: 1 });

    const adapter = track(makeAdapter(gw, { url: broker.url, clientId }));
    await adapter.start();
    await pub.publishAsync('sensors/dev-5/alert', '{not json', { qos: 1 });
    // Over the payload limit, within the packet size we advertise: it arrives and is dropped here.
    await pub.publishAsync('sensors/dev-5/alert', Buffer.alloc(256 * 1024 + 100, 0x61), { qos: 1 });
    await pub.publishAsync('sensors/dev-5/alert', JSON.stringify({ level: 'high' }), { qos: 1 });
    await pub.publishAsync('sensors/dev-5/alert', JSON.stringify({ level: 'ok', temp: 21 }), { qos: 1 });

    await until(() => counters(adapter).appended === 1, 'the valid message after the bad ones');
    expect(dropped(adapter)).toMatchObject({ 'no-rule': 1, 'invalid-json': 1, 'payload-too-large': 1, 'template-missing-field': 1 });
    const reasons = gw.logLines.filter((l) => l['msg'] === 'MQTT message dropped').map((l) => l['reason']);
    expect(reasons).toEqual(expect.arrayContaining(['no-rule', 'invalid-json', 'payload-too-large', 'template-missing-field']));
    const missing = gw.logLines.find((l) => l['reason'] === 'template-missing-field');
    expect(String(missing?.['detail'])).toContain('temp');
    // Still the first connection: nothing crashed or reconnected.
    expect(adapter.status()).toMatchObject({ connected: true, detail: { connects: 1 } });
    const events = await allEvents(gw.log);
    expect(events.map((e) => ('content' in e ? e.content.body : ''))).toEqual(['dev-5: ok at 21 °C']);
  });

  it('does not acknowledge while the log is down: the broker redelivers once it is back', async () => {
    const gw = await gateway();
    let down = true;
    const sink: IngestSink = {
      ingest: async (draft, options) => {
        if (down) throw new Error('log unavailable (test)');
        return gw.sink.ingest(draft, options);
      },
      ingestTelemetry: (d) => gw.sink.ingestTelemetry(d),
      resolve: (r, k) => gw.sink.resolve(r, k),
      getEvent: (r, e) => gw.sink.getEvent(r, e),
    };
    const adapter = track(makeAdapter(gw, { url: broker.url, clientId: uniqueClientId(), ingestRetryMs: 200 }, sink));
    await adapter.start();
    const pub = await device(broker.url);
    await pub.publishAsync('sensors/dev-10/alert', JSON.stringify({ level: 'down', temp: 0 }), { qos: 1 });
    // Retries run out, the connection is dropped unacknowledged, and the message comes back.
    await until(() => (adapter.status().detail?.['connects'] as number) >= 2, 'a reconnect after the failed append');
    expect(counters(adapter).ingestErrors).toBeGreaterThanOrEqual(2);
    down = false;
    await until(async () => (await allEvents(gw.log)).length === 1, 'the message appended after the log came back');
    const [event] = await allEvents(gw.log);
    expect(event && 'content' in event ? event.content.body : '').toBe('dev-10: down at 0 °C');
  });

  it('follows room link changes at run time without reconnecting', async () => {
    const gw = await gateway();
    const adapter = track(makeAdapter(gw, { url: broker.url, clientId: uniqueClientId() }));
    await adapter.start();
    const subscriptions = () => adapter.status().detail?.['subscriptions'] as string[];
    expect(subscriptions()).toEqual(['sensors/+/alert']);

    // A room added through the admin API (the room store) brings a new rule.
    await gw.log.rooms.put({ id: 'doors', links: [{ endpoint: 'mqtt', target: 'doors/+device/state' }] });
    await until(() => subscriptions().includes('doors/+/state'), 'the new subscription');
    const pub = await device(broker.url);
    await pub.publishAsync('doors/front/state', 'open', { qos: 1 });
    await until(async () => (await allEvents(gw.log, ['doors'])).length === 1, 'the door event');

    // Removing the link unsubscribes: the broker no longer sends that topic.
    await gw.log.rooms.put({ id: 'doors', links: [] });
    await until(() => !subscriptions().includes('doors/+/state'), 'the unsubscribe');
    const received = counters(adapter).received;
    await pub.publishAsync('doors/front/state', 'closed', { qos: 1 });
    await pub.publishAsync('sensors/dev-9/alert', JSON.stringify({ level: 'x', temp: 1 }), { qos: 1 });
    await until(async () => (await allEvents(gw.log, [ROOM])).length === 1, 'the marker message');
    expect(counters(adapter).received).toBe(received + 1);
    expect(await allEvents(gw.log, ['doors'])).toHaveLength(1);
    expect(adapter.status().detail?.['connects']).toBe(1);
  });

  it('bridges QoS 0 messages in arrival order', async () => {
    const gw = await gateway([{ id: ROOM, links: [{ endpoint: 'mqtt', target: 'sensors/+device/alert', options: { decode: 'text' } }] }]);
    const adapter = track(makeAdapter(gw, { url: broker.url, clientId: uniqueClientId() }));
    await adapter.start();
    const pub = await device(broker.url);
    for (let i = 0; i < 200; i++) pub.publish('sensors/dev-6/alert', `r${i}`, { qos: 0 });
    await until(async () => (await allEvents(gw.log)).length === 200, '200 QoS 0 messages');
    expect((await allEvents(gw.log)).map((e) => ('content' in e ? e.content.body : ''))).toEqual(Array.from({ length: 200 }, (_, i) => `r${i}`));
  });

  it('bounds QoS 0 work in flight while the log is slow: the socket read waits, nothing is lost, order is kept', async () => {
    const gw = await gateway([{ id: ROOM, links: [{ endpoint: 'mqtt', target: 'sensors/+device/alert', options: { decode: 'text' } }] }]);
    const gate = gatedSink(gw.sink);
    gate.hold();
    const window = 8;
    const adapter = track(makeAdapter(gw, { url: broker.url, clientId: uniqueClientId(), qos0InFlight: window }, gate.sink));
    await adapter.start();
    // Another subscriber of the same topic: once it has the whole burst, the broker has sent it to the adapter too.
    const other = await recorder(broker.url);
    await other.client.subscribeAsync('sensors/dev-9/alert', { qos: 0 });
    const pub = await device(broker.url);
    // ~400 KiB: more than one socket read, so an unbounded adapter would take far more than the window.
    const n = 400;
    const pad = 'x'.repeat(1000);
    for (let i = 0; i < n; i++) pub.publish('sensors/dev-9/alert', `r${i} ${pad}`, { qos: 0 });
    await until(() => other.received.length === n, 'the other subscriber has the whole burst');
    await until(() => gate.waiting === window + 1, 'the window full');
    // The message that found the window full is taken; the rest wait in the socket and at the broker.
    expect(counters(adapter).received).toBe(window + 1);
    expect(gate.calls).toBe(window + 1);

    gate.release();
    await until(async () => (await allEvents(gw.log)).length === n, `${n} QoS 0 messages`);
    expect((await allEvents(gw.log)).map((e) => ('content' in e ? e.content.body : ''))).toEqual(Array.from({ length: n }, (_, i) => `r${i} ${pad}`));
    expect(counters(adapter).received).toBe(n);
    expect(dropped(adapter)).toEqual(Object.fromEntries(Object.keys(dropped(adapter)).map((k) => [k, 0])));
  });

  it("routes mqtt.js's own packet trace to the logger at trace level only", async () => {
    const gw = await gateway();
    const quiet = track(makeAdapter(gw, { url: broker.url, clientId: uniqueClientId() }));
    await quiet.start();
    expect(gw.logLines.filter((l) => l['msg'] === 'mqtt.js')).toHaveLength(0);
    await quiet.stop();
    gw.logger.level = 'trace';
    const traced = track(makeAdapter(gw, { url: broker.url, clientId: uniqueClientId() }));
    await traced.start();
    const lines = gw.logLines.filter((l) => l['msg'] === 'mqtt.js').map((l) => String(l['mqtt']));
    expect(lines.some((l) => l.includes('connect'))).toBe(true);
  });

  it('ignores retained messages unless the rule asks for them (then marked historical)', async () => {
    const pub = await device(broker.url);
    await pub.publishAsync('state/dev-7/status', 'online', { qos: 1, retain: true });
    const gw = await gateway([
      { id: 'plain', links: [{ endpoint: 'mqtt', target: 'state/+device/status' }] },
      { id: 'state', links: [{ endpoint: 'mqtt', target: 'state/+device/status', options: { retained: true } }] },
    ]);
    const adapter = track(makeAdapter(gw, { url: broker.url, clientId: uniqueClientId() }));
    await adapter.start();
    await until(() => counters(adapter).appended === 1, 'the retained message bridged once');
    const [event] = await allEvents(gw.log);
    expect(event?.room).toBe('state');
    expect(event?.origin.historical).toBe(true);
    expect(counters(adapter).retainedSkipped).toBe(1);
  });

  it('counts a null field as missing, and posts nothing (template-empty) when a section filters the reading out', async () => {
    const strict: RoomLink = { endpoint: 'mqtt', target: 'strict/+device/t', options: { decode: 'json', template: '{{device}}: {{temp}} °C' } };
    // Only readings above the limit (a truthy `hot`) become chat lines; a null temp falls back to the ^ section.
    const filtering: RoomLink = { endpoint: 'mqtt', target: 'filter/+device/t', options: { decode: 'json', template: '{{#hot}}{{device}}: {{#temp}}{{temp}} °C{{/temp}}{{^temp}}no reading{{/temp}}{{/hot}}  ' } };
    const gw = await gateway([{ id: ROOM, links: [strict, filtering] }]);
    const adapter = track(makeAdapter(gw, { url: broker.url, clientId: uniqueClientId() }));
    await adapter.start();
    const pub = await device(broker.url);
    await pub.publishAsync('strict/pump-1/t', JSON.stringify({ temp: null }), { qos: 1 });
    await pub.publishAsync('filter/pump-2/t', JSON.stringify({ hot: false, temp: 20 }), { qos: 1 });
    await pub.publishAsync('filter/pump-3/t', JSON.stringify({ hot: true, temp: null }), { qos: 1 });
    await pub.publishAsync('filter/pump-4/t', JSON.stringify({ hot: true, temp: 90 }), { qos: 1 });
    const handled = () => counters(adapter).appended + Object.values(dropped(adapter)).reduce((a, b) => a + b, 0);
    await until(() => handled() === 4, 'the four readings handled');
    const bodies = (await allEvents(gw.log)).map((e) => ('content' in e ? e.content.body : ''));
    expect(bodies).toEqual(['pump-3: no reading  ', 'pump-4: 90 °C  ']);
    expect(dropped(adapter)).toMatchObject({ 'template-missing-field': 1, 'template-empty': 1 });
  });

  it('advertises a Maximum Packet Size from maxPayloadBytes: the broker does not send larger packets', async () => {
    const gw = await gateway();
    const adapter = track(makeAdapter(gw, { url: broker.url, clientId: uniqueClientId(), maxPayloadBytes: 1024 }));
    await adapter.start();
    const pub = await device(broker.url);
    await pub.publishAsync('sensors/dev-6/alert', Buffer.alloc(2 * 1024 * 1024, 0x61), { qos: 1 });
    await pub.publishAsync('sensors/dev-6/alert', JSON.stringify({ level: 'ok', temp: 21 }), { qos: 1 });
    await until(() => counters(adapter).appended === 1, 'the small message');
    // Order per topic: the large one, had it been sent, would have arrived first.
    expect(counters(adapter).received).toBe(1);
    expect(dropped(adapter)['payload-too-large']).toBe(0);
    expect(adapter.status()).toMatchObject({ connected: true, detail: { connects: 1 } });
  });

  it('counts per rule, by the rule id (not the topic): ingested and dropped by reason; a removed rule loses its series', async () => {
    const pumps: RoomLink = { endpoint: 'mqtt', target: 'pumps/+device/t', options: { id: 'pumps', decode: 'json', template: '{{device}}: {{temp}}' } };
    const valves: RoomLink = { endpoint: 'mqtt', target: 'valves/+device/t', options: { decode: 'text' } };
    const gw = await gateway([{ id: ROOM, links: [pumps, valves] }]);
    const adapter = track(makeAdapter(gw, { url: broker.url, clientId: uniqueClientId() }));
    await adapter.start();
    const pub = await device(broker.url);
    for (const d of ['p1', 'p2', 'p3']) await pub.publishAsync(`pumps/${d}/t`, JSON.stringify({ temp: 20 }), { qos: 1 });
    await pub.publishAsync('pumps/p4/t', '{oops', { qos: 1 });
    await pub.publishAsync('pumps/p5/t', JSON.stringify({ other: 1 }), { qos: 1 });
    await pub.publishAsync('valves/v1/t', 'open', { qos: 1 });
    const stats = () => Object.fromEntries((adapter.status().ruleStats ?? []).map((s) => [`${s.rule} ${s.stat}`, s.value]));
    await until(() => stats()[`${ROOM}:valves/+device/t ingested`] === 1 && stats()['pumps ingested'] === 3, 'the figures per rule');
    expect(stats()).toEqual({
      'pumps ingested': 3,
      'pumps dropped.invalid-json': 1,
      'pumps dropped.template-missing-field': 1,
      [`${ROOM}:valves/+device/t ingested`]: 1,
    });
    await gw.log.rooms.put({ id: ROOM, links: [valves] });
    await until(() => stats()['pumps ingested'] === undefined, 'the removed rule forgotten');
    expect(Object.keys(stats())).toEqual([`${ROOM}:valves/+device/t ingested`]);
  });
});
