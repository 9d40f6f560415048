// Catch-up from a cursor over MQTT (request/response on the sync topic)
// against a real Mosquitto: a device offline through 200 events resyncs
// exactly those, in order, for its granted rooms only; bad requests get an
// error answer with a code, and the adapter keeps running.
import { randomUUID } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { message } from '../../fixtures/events.js';
import { startMosquitto, type MosquittoBroker } from '../../harness/mosquitto.js';
import { counters, createGateway, DEADLINE_MS, device, makeAdapter, stopAfterEach, uniqueClientId, until } from './helpers.js';

const ROOM = 'plant';
const OTHER = 'office';

interface Answer {
  events?: Array<{ eventId: string; room: string; content?: { body: string } }>;
  next?: string;
  limited?: boolean;
  error?: { code: string; message: string };
}

const { adapters, gateways } = stopAfterEach();

/** A device's sync client: one response topic, answers matched by correlation data. */
async function syncClient(url: string, name: string): Promise<{ client: MqttClient; ask(body: unknown, options?: { responseTopic?: boolean }): Promise<Answer>; replies: Answer[] }> {
  const client = await device(url, { clientId: `${name}-${randomUUID().slice(0, 8)}` });
  const responseTopic = `devices/${name}/sync-answer`;
  await client.subscribeAsync([responseTopic, `sg/v1/sync/${name}/reply`], { qos: 1 });
  const waiting = new Map<string, (a: Answer) => void>();
  const replies: Answer[] = [];
  client.on('message', (topic, payload, packet) => {
    const answer = JSON.parse(payload.toString()) as Answer;
    if (topic.endsWith('/reply')) replies.push(answer);
    const id = packet.properties?.correlationData?.toString();
    if (id) waiting.get(id)?.(answer);
  });
  return {
    client,
    replies,
    async ask(body, options = {}) {
      const id = randomUUID();
      let timer: NodeJS.Timeout | undefined;
      const answer = new Promise<Answer>((resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer to ${JSON.stringify(body)} within ${DEADLINE_MS} ms`)), DEADLINE_MS);
        waiting.set(id, (a) => {
          clearTimeout(timer);
          resolve(a);
        });
      });
      await client.publishAsync(`sg/v1/sync/${name}`, typeof body === 'string' ? body : JSON.stringify(body), {
        qos: 1,
        properties: { correlationData: Buffer.from(id), ...(options.responseTopic === false ? {} : { responseTopic }) },
      });
      return answer;
    },
  };
}

describe('MQTT sync (catch-up from a cursor)', () => {
  let broker: MosquittoBroker;

  beforeAll(async () => {
    broker = await startMosquitto({ useEnv: false });
  });
  afterAll(async () => broker?.stop());

  async function setup() {
    const gw = await createGateway({ rooms: [{ id: ROOM, links: [{ endpoint: 'mqtt', target: 'sensors/+device/t' }] }, { id: OTHER, links: [] }] });
    gateways.push(gw);
    const adapter = makeAdapter(gw, {
      url: broker.url,
      clientId: uniqueClientId(),
      sync: { grants: [{ pattern: '^pump-', rooms: [ROOM] }], maxLimit: 500 },
    });
    adapters.push(adapter);
    await adapter.start();
    await until(() => adapter.status().ready, 'the adapter subscribed');
    return { gw, adapter };
  }

  it('resyncs a device that was offline through 200 events: exactly those, in order, from its granted rooms only', async () => {
    const { gw, adapter } = await setup();
    for (let i = 0; i < 5; i++) await gw.log.append(message(ROOM, `before ${i}`));
    const devices = await Promise.all(['pump-1', 'pump-2', 'pump-3'].map((n) => syncClient(broker.url, n)));
    const [one, two, three] = devices as [Awaited<ReturnType<typeof syncClient>>, Awaited<ReturnType<typeof syncClient>>, Awaited<ReturnType<typeof syncClient>>];
    // Without `since`: the latest events and the cursor of now.
    const first = await three.ask({ limit: 3 });
    expect(first.events?.map((e) => e.content?.body)).toEqual(['before 2', 'before 3', 'before 4']);
    const cursor = first.next as string;

    // pump-3 goes offline; 200 events in its room (and some in a room it is not granted).
    await three.client.endAsync();
    const expected: string[] = [];
    for (let i = 0; i < 200; i++) {
      expected.push((await gw.log.append(message(ROOM, `while away ${i}`))).eventId);
      if (i % 20 === 0) await gw.log.append(message(OTHER, `not for pumps ${i}`));
    }

    const back = await syncClient(broker.url, 'pump-3');
    // The others ask at the same time.
    const others = Promise.all([one.ask({ limit: 2 }), two.ask({ limit: 2 })]);
    const got: string[] = [];
    let since = cursor;
    for (let pages = 0; pages < 50; pages++) {
      const page = await back.ask({ since, limit: 64 });
      expect(page.error).toBeUndefined();
      if ((page.events ?? []).length === 0) break;
      got.push(...(page.events ?? []).map((e) => e.eventId));
      expect(page.events?.every((e) => e.room === ROOM)).toBe(true);
      since = page.next as string;
    }
    expect(got).toEqual(expected);
    for (const answer of await others) expect(answer.events?.map((e) => e.eventId)).toEqual(expected.slice(-2));
    expect(counters(adapter)).toMatchObject({ syncErrors: 0, syncEvents: 3 + 200 + 4 });
  });

  it('answers bad requests with an error code, never crashing', async () => {
    const { gw, adapter } = await setup();
    await gw.log.append(message(ROOM, 'one'));
    const pump = await syncClient(broker.url, 'pump-9');
    const valve = await syncClient(broker.url, 'valve-1');
    expect((await pump.ask({ since: 'garbage-cursor' })).error?.code).toBe('SG_ERR_CURSOR_INVALID');
    expect((await pump.ask({ since: 42 })).error?.code).toBe('SG_ERR_CURSOR_INVALID');
    expect((await pump.ask({ rooms: [OTHER] })).error?.code).toBe('SG_ERR_ROOM_UNKNOWN');
    expect((await pump.ask({ rooms: ['no-such-room'] })).error?.code).toBe('SG_ERR_ROOM_UNKNOWN');
    expect((await pump.ask('{not json')).error?.code).toBe('SG_ERR_REQUEST_INVALID');
    expect((await pump.ask({ limit: 100_000 })).error?.code).toBe('SG_ERR_PARAM_INVALID');
    expect((await valve.ask({})).error?.code).toBe('SG_ERR_FORBIDDEN');
    // No response topic: the error goes to <request topic>/reply.
    expect((await pump.ask({}, { responseTopic: false })).error?.code).toBe('SG_ERR_REQUEST_INVALID');
    expect(pump.replies.map((r) => r.error?.code)).toEqual(['SG_ERR_REQUEST_INVALID']);
    // Still serving, on the first connection.
    expect((await pump.ask({ rooms: [ROOM] })).events?.map((e) => e.content?.body)).toEqual(['one']);
    expect(adapter.status()).toMatchObject({ connected: true, detail: { connects: 1 } });
  });
});
