/**
 * Telemetry over HTTP: `GET /v1/rooms/:room/telemetry` pages a room's
 * readings by cursor (newest first, granted rooms only), and the live stream
 * sends new readings when asked (`telemetry=true`).
 */
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { DraftOf } from '../../../src/core/event.js';
import type { EventLog } from '../../../src/core/ports.js';
import { ADMIN_TOKEN, adminDevice, adminRoom, adminUser, expectStatus, startApp, waitFor, type TestApp } from './helpers.js';

const open: TestApp[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((a) => a.close()));
});

let seq = 0;
async function reading(log: EventLog, room: string, value: number): Promise<void> {
  seq++;
  const draft: DraftOf<'telemetry'> = {
    v: 1,
    kind: 'telemetry',
    idem: `mqtt:pump-1:${process.pid}-${seq}`,
    room,
    sender: { uid: 'mqtt:pump-1', proto: 'mqtt', native: 'pump-1', auth: 'broker-acl' },
    origin: { proto: 'mqtt', via: 'mqtt', ids: { 'mqtt.topic': 'sensors/pump-1/temp' } },
    ts: { received: Date.now() },
    telemetry: { contentType: 'application/json', payload: JSON.stringify({ temp: value }), topic: 'sensors/pump-1/temp' },
  };
  await log.appendTelemetry(draft);
}

interface Reading {
  id: string;
  payload: string;
  contentType: string;
  topic?: string;
  sender: { uid: string };
}

describe('telemetry over HTTP', () => {
  it('pages a granted room\'s readings newest first by cursor; other rooms and bad cursors are refused', async () => {
    const t = await startApp();
    open.push(t);
    const c = t.client;
    await adminRoom(c, 'ops');
    await adminRoom(c, 'lobby');
    await adminUser(c, 'alice', ['ops']);
    const dev = await adminDevice(c, 'alice');
    for (let i = 0; i < 5; i++) await reading(t.log, 'ops', 20 + i);
    await reading(t.log, 'lobby', 99);

    const temps: number[] = [];
    let from: string | undefined;
    let pages = 0;
    for (;;) {
      const r = expectStatus(await c.request('GET', `/v1/rooms/ops/telemetry?limit=2${from ? `&from=${from}` : ''}`, { token: dev.token }), 200).body as unknown as { readings: Reading[]; next?: string };
      pages++;
      temps.push(...r.readings.map((x) => (JSON.parse(x.payload) as { temp: number }).temp));
      if (pages === 1) expect(r.readings[0]).toMatchObject({ contentType: 'application/json', topic: 'sensors/pump-1/temp', sender: { uid: 'mqtt:pump-1' } });
      if (r.next === undefined) break;
      from = r.next;
    }
    expect(temps).toEqual([24, 23, 22, 21, 20]);
    expect(pages).toBe(3);
    const forbidden = await c.request('GET', '/v1/rooms/lobby/telemetry', { token: dev.token });
    expect({ status: forbidden.status, code: forbidden.body.code }).toEqual({ status: 403, code: 'SG_ERR_FORBIDDEN' });
    const bad = await c.request('GET', '/v1/rooms/ops/telemetry?from=garbage', { token: dev.token });
    expect({ status: bad.status, code: bad.body.code }).toEqual({ status: 400, code: 'SG_ERR_CURSOR_INVALID' });
    expect((await c.request('GET', '/v1/rooms/ops/telemetry', { token: ADMIN_TOKEN })).status).toBe(401);
  });

  it('sends new readings in the live stream when asked (SSE, no cursor id)', async () => {
    const t = await startApp({ listen: true });
    open.push(t);
    const c = t.client;
    await adminRoom(c, 'ops');
    await adminUser(c, 'alice', ['ops']);
    const dev = await adminDevice(c, 'alice');
    await reading(t.log, 'ops', 1);
    const abort = new AbortController();
    const res = await fetch(`${t.url}/v1/stream?telemetry=true`, { headers: { accept: 'text/event-stream', authorization: `Bearer ${dev.token}` }, signal: abort.signal });
    expect(res.status).toBe(200);
    let text = '';
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const reading$ = (async () => {
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        text += decoder.decode(value);
      }
    })().catch(() => undefined);
    await waitFor(() => text.includes('event: ready'), 'the stream ready');
    await reading(t.log, 'ops', 2);
    await waitFor(() => text.includes('event: telemetry'), 'the reading in the stream');
    const frame = text.split('\n\n').find((f) => f.startsWith('event: telemetry')) ?? '';
    expect(frame).not.toContain('\nid: ');
    const data = JSON.parse(frame.split('\ndata: ')[1] ?? '{}') as { room: string; reading: Reading };
    // Only what arrived after the stream opened.
    expect(data).toMatchObject({ room: 'ops', reading: { payload: '{"temp":2}', contentType: 'application/json' } });
    expect(text.split('event: telemetry')).toHaveLength(2);
    abort.abort();
    await reading$;
  });

  it('sends new readings in the live stream when asked (WebSocket)', async () => {
    const t = await startApp({ listen: true });
    open.push(t);
    const c = t.client;
    await adminRoom(c, 'ops');
    await adminUser(c, 'alice', ['ops']);
    const dev = await adminDevice(c, 'alice');
    const frames: Array<{ type: string; room?: string; reading?: Reading }> = [];
    const ws = new WebSocket(`${(t.url ?? '').replace(/^http/, 'ws')}/v1/stream?telemetry=true&access_token=${dev.token}`);
    ws.on('message', (data: Buffer) => frames.push(JSON.parse(data.toString()) as { type: string }));
    try {
      await waitFor(() => frames.some((f) => f.type === 'ready'), 'the stream ready');
      await reading(t.log, 'ops', 7);
      await waitFor(() => frames.some((f) => f.type === 'telemetry'), 'the reading in the stream');
      expect(frames.find((f) => f.type === 'telemetry')).toMatchObject({ room: 'ops', reading: { payload: '{"temp":7}', sender: { uid: 'mqtt:pump-1' } } });
    } finally {
      ws.close();
    }
  });
});
