// MQTT adapter outbound against a real Mosquitto: room events published to the
// room topic once with sg-eid / sg-cursor and not ingested back; commands with
// MQTT 5 request/response, replies and timeouts.
import type { IPublishPacket } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LogEvent } from '../../../src/core/event.js';
import type { RoomLink } from '../../../src/core/ports.js';
import { partitionOf } from '../../../src/core/position.js';
import { parseMqttConfig, type MqttAdapter } from '../../../adapters/mqtt/index.js';
import { message } from '../../fixtures/events.js';
import { createDeliveryManager } from '../../../src/bridge/delivery.js';
import { silentLogger } from '../../../src/log/index.js';
import { startMosquitto, type MosquittoBroker } from '../../harness/mosquitto.js';
import { allEvents, counters, createGateway, device, dropped, makeAdapter, recorder, stopAfterEach, uniqueClientId, until, type Gateway } from './helpers.js';

const ROOM = 'ops';
const RULE: RoomLink = { endpoint: 'mqtt', target: 'sensors/+device/alert', options: { decode: 'text' } };
const COMMANDS = [
  {
    pattern: '^!(?<device>[\\w-]+) (?<command>.+)$',
    topic: 'devices/{{device}}/cmd',
    responseTopic: 'devices/{{device}}/cmd/response',
    timeoutMs: 1500,
  },
];

const { adapters, gateways } = stopAfterEach();

async function setup(url: string, links: RoomLink[] = [RULE], config: Record<string, unknown> = {}): Promise<{ gw: Gateway; adapter: MqttAdapter }> {
  const gw = await createGateway({ rooms: [{ id: ROOM, links }] });
  gateways.push(gw);
  const adapter = makeAdapter(gw, { url, clientId: uniqueClientId(), commands: COMMANDS, ...config });
  adapters.push(adapter);
  await adapter.start();
  return { gw, adapter };
}

/** A message sent through the HTTP API, as the log holds it. */
async function apiMessage(gw: Gateway, body: string): Promise<LogEvent> {
  const result = await gw.log.append(message(ROOM, body));
  const event = await gw.log.getEvent(ROOM, result.eventId);
  if (!event) throw new Error('appended event not found');
  return event;
}

const userProp = (p: IPublishPacket, name: string) => {
  const v = p.properties?.userProperties?.[name];
  return Array.isArray(v) ? v[0] : v;
};

describe('MQTT outbound', () => {
  let broker: MosquittoBroker;

  beforeAll(async () => {
    broker = await startMosquitto({ useEnv: false });
  });
  afterAll(async () => broker?.stop());

  it('publishes a room message on the room topic once, with sg-eid and sg-cursor, and does not ingest it back', async () => {
    // Two MQTT links in the room, one of them matching the out topic itself.
    const links: RoomLink[] = [RULE, { endpoint: 'mqtt', target: 'sg/v1/rooms/+room/out', options: { decode: 'json' } }];
    const { gw, adapter } = await setup(broker.url, links);
    const observer = await recorder(broker.url);
    await observer.client.subscribeAsync(`sg/v1/rooms/${ROOM}/out`, { qos: 1 });

    const first = await apiMessage(gw, 'pump 7 looks fine');
    const results = [];
    for (const link of links) results.push(await adapter.deliver(first, { room: ROOM, link }, { attempt: 0, references: {} }));
    // The second link has the same out topic: published once, from the first link.
    expect(results.map((r) => r.status)).toEqual(['delivered', 'skipped']);
    const second = await apiMessage(gw, 'second');
    for (const link of links) await adapter.deliver(second, { room: ROOM, link }, { attempt: 0, references: {} });

    // Order per topic is kept, so a duplicate of the first would be here before the second.
    await until(() => observer.received.some((p) => userProp(p, 'sg-eid') === second.eventId), 'the second publication');
    expect(observer.received).toHaveLength(2);
    const [p] = observer.received;
    expect(p?.qos).toBe(1);
    expect(p?.topic).toBe(`sg/v1/rooms/${ROOM}/out`);
    expect(userProp(p as IPublishPacket, 'sg-eid')).toBe(first.eventId);
    expect(userProp(p as IPublishPacket, 'sg-pos')).toBe(first.cursor);
    expect(p?.properties?.contentType).toBe('application/vnd.syncgate.event+json;v=1');
    expect(JSON.parse(String(p?.payload))).toMatchObject({ v: 1, eventId: first.eventId, room: ROOM, kind: 'message', content: { body: 'pump 7 looks fine' }, sender: { uid: 'alice' } });

    // No Local: the adapter's own publications never reach its subscription.
    expect(counters(adapter).received).toBe(0);
    expect(counters(adapter).published).toBe(2);

    // Someone else republishing it (with our sg-eid) is recognised as an echo, not appended.
    const forwarder = await device(broker.url);
    await forwarder.publishAsync(`sg/v1/rooms/${ROOM}/out`, String(p?.payload), { qos: 1, properties: { userProperties: { 'sg-eid': first.eventId } } });
    await until(() => counters(adapter).echo === 1, 'the echo recognised');
    expect(await allEvents(gw.log)).toHaveLength(2);
  });

  it('publishes as sg-cursor a sync cursor that resumes /v1/sync just after the event, skipping nothing of other partitions', async () => {
    // Another room on another partition, with history before and after.
    const other = ['lab', 'yard', 'dock', 'roof', 'cellar'].find((r) => partitionOf(r, 4) !== partitionOf(ROOM, 4)) ?? 'lab';
    const gw = await createGateway({ rooms: [{ id: ROOM, links: [RULE] }, { id: other, links: [] }] });
    gateways.push(gw);
    const adapter = makeAdapter(gw, { url: broker.url, clientId: uniqueClientId() });
    adapters.push(adapter);
    await adapter.start();
    const observer = await recorder(broker.url, { protocolVersion: 4 });
    const v5 = await recorder(broker.url);
    await observer.client.subscribeAsync(`sg/v1/rooms/${ROOM}/out`, { qos: 1 });
    await v5.client.subscribeAsync(`sg/v1/rooms/${ROOM}/out`, { qos: 1 });

    const before = await gw.log.append(message(other, 'other room, earlier'));
    const events = [await apiMessage(gw, 'one'), await apiMessage(gw, 'two'), await apiMessage(gw, 'three')];
    const after = await gw.log.append(message(other, 'other room, later'));
    const published = events[1] as LogEvent;
    expect(await adapter.deliver(published, { room: ROOM, link: RULE }, { attempt: 0, references: {} })).toMatchObject({ status: 'delivered' });
    await until(() => observer.received.length === 1 && v5.received.length === 1, 'the publication at both subscribers');

    const packet = v5.received[0] as IPublishPacket;
    const cursor = userProp(packet, 'sg-cursor') as string;
    // What /v1/sync does with `since`: exactly the room's events after the published one, and all of the other partition.
    const page = await gw.log.read(cursor, { rooms: new Set([ROOM, other]), limit: 100 });
    expect(page.events.map((e) => e.eventId)).toEqual(expect.arrayContaining([events[2]?.eventId, before.eventId, after.eventId]));
    expect(page.events).toHaveLength(3);
    expect(userProp(packet, 'sg-pos')).toBe(published.cursor);
    // The position resumes /messages after the event.
    const history = await gw.log.roomHistory(ROOM, { from: userProp(packet, 'sg-pos') as string, dir: 'f', limit: 10 });
    expect(history.events.map((e) => e.eventId)).toEqual([events[2]?.eventId]);
    // An MQTT 3.1.1 subscriber has no user properties: the payload carries the same.
    const body = JSON.parse(String(observer.received[0]?.payload)) as Record<string, unknown>;
    expect(body).toMatchObject({ eventId: published.eventId, cursor: published.cursor, next: cursor });
  });

  it('mirrors device messages and gateway notices to the out topic when the link asks (outOwn), with its QoS and retain', async () => {
    const mirror: RoomLink = { ...RULE, options: { ...RULE.options, outOwn: true, outQos: 2, outRetain: true } };
    const gw = await createGateway({ rooms: [{ id: ROOM, links: [mirror] }] });
    gateways.push(gw);
    const adapter = makeAdapter(gw, { url: broker.url, clientId: uniqueClientId(), commands: COMMANDS });
    adapters.push(adapter);
    await adapter.start();
    const manager = createDeliveryManager({ log: gw.log, adapters: [adapter], links: gw.links, logger: silentLogger(), options: { leaseMs: 3000, backoffBaseMs: 20, backoffMaxMs: 200 } });
    try {
      await manager.start();
      await until(() => (manager.leases()['mqtt'] ?? []).length === 4, 'the delivery leases');
      const topic = `sg/v1/rooms/${ROOM}/out`;
      const live = await recorder(broker.url);
      await live.client.subscribeAsync(topic, { qos: 2 });
      const pump = await device(broker.url);
      await pump.publishAsync('sensors/pump-1/alert', 'pressure low', { qos: 1 });
      await until(() => counters(adapter).appended === 1, 'the device message appended');
      await gw.log.append(message(ROOM, '!pump-9 start'));
      const kinds = () => live.received.map((p) => (JSON.parse(String(p.payload)) as { content: { body: string } }).content.body);
      await until(() => live.received.length === 3, 'the device message, the command and the timeout notice on the out topic');
      expect(kinds()).toEqual(['pressure low', '!pump-9 start', 'No response from pump-9 to "!pump-9 start" within 1.5 s']);
      expect(live.received.map((p) => p.qos)).toEqual([2, 2, 2]);
      // Retained: a dashboard connecting now sees the room's latest event at once.
      const late = await recorder(broker.url);
      await late.client.subscribeAsync(topic, { qos: 2 });
      await until(() => late.received.length === 1, 'the retained latest event');
      expect(late.received[0]?.retain).toBe(true);
      expect(userProp(late.received[0] as IPublishPacket, 'sg-eid')).toBe(userProp(live.received[2] as IPublishPacket, 'sg-eid'));
    } finally {
      await manager.stop(1000);
      // Clear the retained message for other tests on this broker.
      const cleaner = await device(broker.url);
      await cleaner.publishAsync(`sg/v1/rooms/${ROOM}/out`, '', { qos: 1, retain: true });
    }
  });

  it('skips kinds that are not for devices and events that came from MQTT', async () => {
    const { gw, adapter } = await setup(broker.url);
    const event = await apiMessage(gw, 'x');
    const fromMqtt = { ...event, origin: { ...event.origin, via: 'mqtt' } };
    expect((await adapter.deliver(fromMqtt, { room: ROOM, link: RULE }, { attempt: 0, references: {} })).status).toBe('skipped');
    const typing = { ...event, kind: 'typing', typing: { active: true } } as unknown as LogEvent;
    expect((await adapter.deliver(typing, { room: ROOM, link: RULE }, { attempt: 0, references: {} })).status).toBe('skipped');
  });

  it('asks for a retry while disconnected and publishes after reconnecting', async () => {
    const own = await startMosquitto({ useEnv: false });
    try {
      const { gw, adapter } = await setup(own.url);
      const event = await apiMessage(gw, 'while the broker restarts');
      const restarting = own.restart();
      await until(() => !adapter.status().connected, 'the disconnect');
      const during = await adapter.deliver(event, { room: ROOM, link: RULE }, { attempt: 0, references: {} });
      expect(during.status).toBe('retry');
      await restarting;
      await until(() => adapter.status().ready, 'the reconnect');
      expect(await adapter.deliver(event, { room: ROOM, link: RULE }, { attempt: 1, references: {} })).toMatchObject({ status: 'delivered' });
    } finally {
      await Promise.all(adapters.splice(0).map((a) => a.stop()));
      await own.stop();
    }
  });

  it('sends a command to the device and brings its reply back into the room as a reply', async () => {
    const { gw, adapter } = await setup(broker.url);
    const pump = await recorder(broker.url, { clientId: 'pump-7-test' });
    await pump.client.subscribeAsync('devices/pump-7/cmd', { qos: 1 });
    pump.client.on('message', (_topic, payload, packet) => {
      const { responseTopic, correlationData } = packet.properties ?? {};
      if (!responseTopic) return;
      const cmd = JSON.parse(payload.toString()) as { command: string };
      void pump.client.publishAsync(responseTopic, `${cmd.command}ped`, { qos: 1, properties: { ...(correlationData ? { correlationData } : {}) } });
    });

    const command = await apiMessage(gw, '!pump-7 stop');
    expect(await adapter.deliver(command, { room: ROOM, link: RULE }, { attempt: 0, references: {} })).toMatchObject({ status: 'delivered' });
    await until(() => pump.received.length === 1, 'the command at the device');
    const sent = pump.received[0] as IPublishPacket;
    expect(sent.properties?.responseTopic).toBe('devices/pump-7/cmd/response');
    expect(sent.properties?.correlationData?.toString()).toBe(command.eventId);
    expect(JSON.parse(String(sent.payload))).toMatchObject({ command: 'stop', device: 'pump-7', eventId: command.eventId, room: ROOM });

    await until(async () => (await allEvents(gw.log)).length === 2, 'the reply in the room');
    const reply = (await allEvents(gw.log))[1];
    expect(reply).toMatchObject({ kind: 'message', content: { body: 'stopped' }, rel: { replyTo: command.eventId }, sender: { uid: 'mqtt:pump-7', auth: 'broker-acl' } });
    expect(counters(adapter)).toMatchObject({ commandsSent: 1, commandResponses: 1, commandTimeouts: 0 });
    expect(adapter.status().detail?.['pendingCommands']).toBe(0);
  });

  it('binds a reply to its command: another device, a second reply and one after the timeout are dropped with a reason', async () => {
    const { gw, adapter } = await setup(broker.url);
    const other = await device(broker.url);
    const body = (e: LogEvent) => ('content' in e ? e.content.body : '');
    const command = await apiMessage(gw, '!pump-7 stop');
    expect(await adapter.deliver(command, { room: ROOM, link: RULE }, { attempt: 0, references: {} })).toMatchObject({ status: 'delivered' });
    const correlationData = Buffer.from(command.eventId);
    // pump-8 answers pump-7's command: not its answer.
    await other.publishAsync('devices/pump-8/cmd/response', 'stopped (says pump-8)', { qos: 1, properties: { correlationData } });
    await until(() => dropped(adapter)['response-wrong-device'] === 1, 'the reply from the wrong device dropped');
    await other.publishAsync('devices/pump-7/cmd/response', 'stopped', { qos: 1, properties: { correlationData } });
    await other.publishAsync('devices/pump-7/cmd/response', 'stopped again', { qos: 1, properties: { correlationData } });
    await until(() => dropped(adapter)['response-duplicate'] === 1, 'the second reply dropped');

    const late = await apiMessage(gw, '!pump-9 start');
    expect(await adapter.deliver(late, { room: ROOM, link: RULE }, { attempt: 0, references: {} })).toMatchObject({ status: 'delivered' });
    await until(() => counters(adapter).commandTimeouts === 1, 'the timeout');
    await other.publishAsync('devices/pump-9/cmd/response', 'started, finally', { qos: 1, properties: { correlationData: Buffer.from(late.eventId) } });
    await until(() => dropped(adapter)['response-late'] === 1, 'the late reply dropped');
    await until(async () => (await allEvents(gw.log)).length === 4, 'the timeout notice in the room');

    const events = await allEvents(gw.log);
    expect(events.map(body)).toEqual(['!pump-7 stop', 'stopped', '!pump-9 start', 'No response from pump-9 to "!pump-9 start" within 1.5 s']);
    expect(events[1]).toMatchObject({ rel: { replyTo: command.eventId }, sender: { uid: 'mqtt:pump-7' } });
    expect(counters(adapter).commandResponses).toBe(1);
  });

  it('authorises commands per sender: HTTP users by default, bridged senders only when listed; a denial is a notice and counted', async () => {
    const xmpp = (uid: string, auth: 'server' | 'claimed' = 'server') => ({ uid, proto: 'xmpp' as const, native: uid.slice(5), display: uid.slice(5), auth });
    const api = (uid: string) => ({ uid, proto: 'api' as const, native: `${uid}/d1`, auth: 'api-token' as const });
    const send = async (gw: Gateway, adapter: MqttAdapter, body: string, sender: LogEvent['sender']) => {
      const result = await gw.log.append(message(ROOM, body, { sender }));
      const event = (await gw.log.getEvent(ROOM, result.eventId)) as LogEvent;
      expect(await adapter.deliver(event, { room: ROOM, link: RULE }, { attempt: 0, references: {} })).toMatchObject({ status: 'delivered' });
      return event.eventId;
    };
    const pump = await recorder(broker.url);
    await pump.client.subscribeAsync('devices/+/cmd', { qos: 1 });
    const commandsAt = () => pump.received.map((p) => p.properties?.correlationData?.toString());

    // Default: any HTTP user (granted the room: the API checks), no bridged sender.
    const first = await setup(broker.url, [RULE], { commands: [{ ...COMMANDS[0], timeoutMs: 60_000 }] });
    const byApi = await send(first.gw, first.adapter, '!pump-1 stop', api('alice'));
    const byXmpp = await send(first.gw, first.adapter, '!pump-1 start', xmpp('xmpp:mallory@example.org'));
    await until(async () => (await allEvents(first.gw.log)).length === 3, 'the denial notice');
    await until(() => commandsAt().includes(byApi), 'the allowed command at the device');
    const notice = (await allEvents(first.gw.log))[2];
    expect(notice).toMatchObject({ rel: { replyTo: byXmpp }, sender: { uid: 'mqtt:gateway' }, content: { body: 'mallory@example.org may not send "!pump-1 start"' } });
    expect(counters(first.adapter)).toMatchObject({ commandsDenied: 1, commandsSent: 1 });
    await first.adapter.stop();

    // Listed: users, roles and bridged identities (never a merely claimed one).
    const allow = { users: ['bob'], roles: ['ops'], bridged: ['xmpp:carol@example.org'] };
    const second = await setup(broker.url, [RULE], { roles: { ops: ['dave', 'matrix:@erin:example.org'] }, commands: [{ ...COMMANDS[0], timeoutMs: 60_000, allow }] });
    const denied = [await send(second.gw, second.adapter, '!pump-2 stop', api('alice')), await send(second.gw, second.adapter, '!pump-2 stop', xmpp('xmpp:carol@example.org', 'claimed'))];
    const allowed = [
      await send(second.gw, second.adapter, '!pump-2 stop', api('bob')),
      await send(second.gw, second.adapter, '!pump-2 stop', api('dave')),
      await send(second.gw, second.adapter, '!pump-2 stop', xmpp('xmpp:carol@example.org')),
      await send(second.gw, second.adapter, '!pump-2 stop', { uid: 'matrix:@erin:example.org', proto: 'matrix', native: '@erin:example.org', auth: 'server' }),
    ];
    await until(() => allowed.every((id) => commandsAt().includes(id)), 'the allowed commands at the device');
    await until(async () => (await allEvents(second.gw.log)).filter((e) => e.sender.uid === 'mqtt:gateway').length === 2, 'two denial notices');
    const replies = (await allEvents(second.gw.log)).filter((e) => e.sender.uid === 'mqtt:gateway').map((e) => (e.kind === 'message' ? e.rel?.replyTo : undefined));
    expect(replies).toEqual(denied);
    expect(commandsAt().filter((id) => denied.includes(id ?? '') || id === byXmpp)).toEqual([]);
    expect(counters(second.adapter)).toMatchObject({ commandsDenied: 2, commandsSent: 4 });
  });

  it('refuses a command allowed to a role that does not exist', () => {
    expect(() => parseMqttConfig({ url: 'mqtt://h:1', clientId: 'c', commands: [{ ...COMMANDS[0], allow: { roles: ['nobody'] } }] })).toThrow('no role nobody');
  });

  it('posts a timeout notice, as a reply, when the device does not answer', async () => {
    const { gw, adapter } = await setup(broker.url);
    const command = await apiMessage(gw, '!pump-9 start');
    expect(await adapter.deliver(command, { room: ROOM, link: RULE }, { attempt: 0, references: {} })).toMatchObject({ status: 'delivered' });
    await until(async () => (await allEvents(gw.log)).length === 2, 'the timeout notice');
    const notice = (await allEvents(gw.log))[1];
    expect(notice).toMatchObject({ rel: { replyTo: command.eventId }, sender: { uid: 'mqtt:gateway' }, content: { body: 'No response from pump-9 to "!pump-9 start" within 1.5 s' } });
    expect(counters(adapter).commandTimeouts).toBe(1);
  });

  it('clears command timers on stop', async () => {
    const { gw, adapter } = await setup(broker.url, [RULE], { commands: [{ ...COMMANDS[0], timeoutMs: 60_000 }] });
    const command = await apiMessage(gw, '!pump-10 stop');
    await adapter.deliver(command, { room: ROOM, link: RULE }, { attempt: 0, references: {} });
    expect(adapter.status().detail?.['pendingCommands']).toBe(1);
    await adapter.stop();
    expect(adapter.status().detail?.['pendingCommands']).toBe(0);
  });

  it('refuses to put a value with a topic separator into a command topic', async () => {
    const { gw, adapter } = await setup(broker.url, [RULE], { commands: [{ ...COMMANDS[0], pattern: '^!(?<device>\\S+) (?<command>.+)$' }] });
    const command = await apiMessage(gw, '!pump-1/../pump-2 stop');
    // The room message itself still goes out; the command does not.
    expect(await adapter.deliver(command, { room: ROOM, link: RULE }, { attempt: 0, references: {} })).toMatchObject({ status: 'delivered' });
    // `published` counts PUBACKed publications: only the room topic one.
    expect(counters(adapter)).toMatchObject({ commandsRefused: 1, commandsSent: 0, published: 1 });
  });
});
