// The MQTT adapter across a Redis outage longer than the Redis client's own
// retries: a device keeps publishing (QoS 1) while the harness's redis-server
// is killed for 12 s and started again; every message is in the log once, in
// the order it was published.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RoomLink } from '../../../src/core/ports.js';
import { startMosquitto, type MosquittoBroker } from '../../harness/mosquitto.js';
import { startOwnedRedis, type OwnedRedis } from '../../harness/redis.js';
import { allEvents, counters, createGateway, device, makeAdapter, stopAfterEach, uniqueClientId, until } from './helpers.js';

const ROOM = 'line-9';
const RULE: RoomLink = { endpoint: 'mqtt', target: 'plant/+device/event', options: { decode: 'json', template: '#{{n}}' } };
const OUTAGE_MS = 12_000;

const { adapters, gateways } = stopAfterEach();

describe('MQTT adapter across a Redis outage', () => {
  let broker: MosquittoBroker;
  let redis: OwnedRedis;

  beforeAll(async () => {
    broker = await startMosquitto({ useEnv: false });
    redis = await startOwnedRedis();
  });
  afterAll(async () => {
    await broker?.stop();
    await redis?.stop();
  });

  it('keeps per-room order and loses nothing when Redis is away for 12 s', async () => {
    const gw = await createGateway({ backend: 'redis', redisUrl: redis.url, rooms: [{ id: ROOM, links: [RULE] }] });
    gateways.push(gw);
    const adapter = makeAdapter(gw, { url: broker.url, clientId: uniqueClientId() });
    adapters.push(adapter);
    await adapter.start();
    const pub = await device(broker.url, { clientId: uniqueClientId('sg-pub'), clean: false, properties: { sessionExpiryInterval: 600 } });
    let n = 0;
    const publish = async () => pub.publishAsync('plant/press-9/event', JSON.stringify({ n: n++ }), { qos: 1 });
    for (let i = 0; i < 20; i++) await publish();
    await until(() => counters(adapter).appended === 20, 'the first 20 appended');

    await redis.kill();
    const killedAt = Date.now();
    // one message every 100 ms through the whole outage
    while (Date.now() - killedAt < OUTAGE_MS) {
      await publish();
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await redis.restart();
    for (let i = 0; i < 20; i++) await publish();
    const total = n;
    await until(async () => (await allEvents(gw.log, [ROOM])).length >= total, `all ${total} messages in the log`, 120_000);
    const bodies = (await allEvents(gw.log, [ROOM])).map((e) => ('content' in e ? e.content.body : ''));
    expect(bodies).toEqual(Array.from({ length: total }, (_, i) => `#${i}`));
  });
});
