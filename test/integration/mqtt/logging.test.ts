// What the MQTT adapter writes to its log, against a real Mosquitto: the broker
// password never appears, even in mqtt.js's packet trace; payloads that cannot
// be handled are dropped with a counted reason and bounded log lines.
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMosquitto, type MosquittoBroker } from '../../harness/mosquitto.js';
import { allEvents, counters, createGateway, device, dropped, makeAdapter, stopAfterEach, uniqueClientId, until, type Gateway } from './helpers.js';
import { createMqttAdapter, DROP_LOG_WINDOW_MS, DROP_LOGS_PER_WINDOW, parseMqttConfig, type MqttAdapter } from '../../../adapters/mqtt/index.js';
import type { RoomLink } from '../../../src/core/ports.js';
import { createLogger } from '../../../src/log/index.js';

const { adapters, gateways } = stopAfterEach();

async function gateway(rooms: Array<{ id: string; links: RoomLink[] }>): Promise<Gateway> {
  const gw = await createGateway({ rooms });
  gateways.push(gw);
  return gw;
}

function track(a: MqttAdapter): MqttAdapter {
  adapters.push(a);
  return a;
}

/** Every way a secret could be printed: as text, base64, or the bytes of a Buffer (inspect's hex, JSON's and inspect's decimals). */
function encodings(secret: string): string[] {
  const bytes = [...Buffer.from(secret, 'utf8')];
  const hex = bytes.map((b) => b.toString(16).padStart(2, '0'));
  return [
    secret,
    Buffer.from(secret).toString('base64'),
    Buffer.from(secret).toString('base64url'),
    hex.join(''),
    hex.join(' '),
    bytes.join(','),
    bytes.join(', '),
  ];
}

describe('MQTT adapter log: no broker password at any level', () => {
  let broker: MosquittoBroker;
  const users = { gw: 'gw-Trace-Secret-7f3a9c' };

  beforeAll(async () => {
    // Anonymous clients refused: the adapter is only connected if it sent the password.
    broker = await startMosquitto({ useEnv: false, users, anonymous: false });
  });
  afterAll(async () => broker?.stop());

  it("keeps the password out of mqtt.js's packet trace (the CONNECT packet is logged without it)", async () => {
    const gw = await gateway([{ id: 'traced', links: [{ endpoint: 'mqtt', target: 'trace/+device/x', options: { decode: 'json' } }] }]);
    let output = '';
    const destination = new Writable({
      write(chunk: Buffer, _enc, cb) {
        output += chunk.toString('utf8');
        cb();
      },
    });
    // The production logger (with its redaction paths), at trace level.
    const logger = createLogger({ level: 'trace', destination });
    const clientId = uniqueClientId();
    const adapter = track(
      createMqttAdapter({
        name: 'mqtt',
        config: parseMqttConfig({ url: broker.url, clientId, username: 'gw', password: users.gw, reconnect: { minMs: 100, maxMs: 1000 } }),
        log: logger,
        sink: gw.sink,
        links: gw.links,
      }),
    );
    await adapter.start();
    await until(() => adapter.status().ready, 'the adapter connected with its password and subscribed');

    const lines = output
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    // The trace is there, with the CONNECT packet itself (so this cannot pass by logging nothing) …
    const connectLines = lines.filter((l) => l['msg'] === 'mqtt.js' && String(l['mqtt']).includes("cmd: 'connect'"));
    expect(connectLines.length).toBeGreaterThan(0);
    expect(connectLines.some((l) => String(l['mqtt']).includes(clientId) && String(l['mqtt']).includes("username: 'gw'"))).toBe(true);
    // … and the password appears nowhere, in no form.
    for (const form of encodings(users.gw)) expect(output, `the password as ${form}`).not.toContain(form);
  });
});

describe('MQTT adapter log: payloads too deeply nested to handle', () => {
  let broker: MosquittoBroker;

  beforeAll(async () => {
    broker = await startMosquitto({ useEnv: false });
  });
  afterAll(async () => broker?.stop());

  it('drops deeply nested JSON on a rule without a template with a counted reason, logs bounded lines without stacks, and goes on', async () => {
    const room = 'deep';
    const gw = await gateway([{ id: room, links: [{ endpoint: 'mqtt', target: 'deep/+device/data', options: { decode: 'json' } }] }]);
    const adapter = track(makeAdapter(gw, { url: broker.url, clientId: uniqueClientId() }));
    await adapter.start();

    const levels = 6000;
    const nestedArrays = '['.repeat(levels) + ']'.repeat(levels);
    const nestedObjects = '{"a":'.repeat(levels) + '1' + '}'.repeat(levels);
    const count = 100;
    const pub = await device(broker.url);
    const started = Date.now();
    for (let i = 0; i < count; i++) await pub.publishAsync('deep/dev-1/data', i % 2 === 0 ? nestedArrays : nestedObjects, { qos: 1 });
    await pub.publishAsync('deep/dev-1/data', JSON.stringify({ ok: true, reading: { values: [1, [2, 3]] } }), { qos: 1 });

    await until(() => counters(adapter).appended === 1, 'the normal message after the deep ones');
    const elapsed = Date.now() - started;
    expect(dropped(adapter)).toMatchObject({ 'json-too-deep': count, 'internal-error': 0 });
    const events = await allEvents(gw.log, [room]);
    expect(events.map((e) => ('content' in e ? e.content.body : ''))).toEqual(['{"ok":true,"reading":{"values":[1,[2,3]]}}']);
    // Still the first connection.
    expect(adapter.status()).toMatchObject({ connected: true, detail: { connects: 1 } });

    // Warnings and errors about these messages: at most a window's worth of lines (plus the
    // "suppressed" line) per window that began while they came in, and not one stack trace.
    const problems = gw.logLines.filter((l) => Number(l['level']) >= 40);
    const windows = Math.floor(elapsed / DROP_LOG_WINDOW_MS) + 1;
    expect(problems.length).toBeLessThanOrEqual(windows * (DROP_LOGS_PER_WINDOW + 1));
    expect(problems.filter((l) => l['reason'] === 'json-too-deep').length).toBeGreaterThan(0);
    for (const line of problems) {
      expect(line['err']).toBeUndefined();
      expect(JSON.stringify(line)).not.toMatch(/\\n\s+at /);
    }
  });
});
