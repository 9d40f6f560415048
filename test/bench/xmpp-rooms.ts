/**
 * The rooms component (xmpp-rooms) in a whole gateway on Redis, with a real
 * Prosody: (a) MAM pages of 100 from a large room, against reading the same
 * pages from the log directly in the same run; (b) reflection latency
 * (send → own reflection, which means "stored") at a paced rate, beside HTTP
 * send → WebSocket receipt at the same rate in the same run.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { client, xml, type Client, type XmlElement } from '@xmpp/client';
import WebSocket from 'ws';
import { encodeEventPosition } from '../../src/core/cursor.js';
import { locateEventId } from '../../src/core/position.js';
import { startGateway } from '../harness/gateway.js';
import { waitFor } from '../harness/free-port.js';
import { startProsody } from '../harness/prosody.js';
import { testPrefix } from '../harness/redis.js';
import { percentile, type Bench } from './report.js';

const MAM = 'urn:xmpp:mam:2';
const NS_SID = 'urn:xmpp:sid:0';

function sorted(values: number[]): number[] {
  return [...values].sort((a, b) => a - b);
}

/** Sends one at a time on a fixed schedule (rate per second); resolves when all were sent. */
async function paced(count: number, perSecond: number, send: (i: number) => Promise<void>): Promise<void> {
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const due = start + (i * 1000) / perSecond;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    await send(i);
  }
}

export const benchXmppRooms: Bench = async (ctx) => {
  const roomSize = ctx.quick ? 10_000 : 100_000;
  const queries = ctx.quick ? 20 : 50;
  const rate = 200;
  const messages = ctx.quick ? 400 : 2000;
  const secret = `bench-${randomUUID()}`;
  const prosody = await startProsody({ component: { secret } });
  const clients: Client[] = [];
  let gw: Awaited<ReturnType<typeof startGateway>> | undefined;
  try {
    const component = prosody.component;
    if (!component) throw new Error('no component');
    await prosody.createUser('alice', 'alice-pw');
    gw = await startGateway({
      redisUrl: ctx.redisUrl,
      prefix: testPrefix('bench-rooms'),
      config: {
        adapters: {
          rooms: { type: 'xmpp-rooms', service: component.service, domain: component.domain, secret, access: [{ domain: prosody.domain, user: 'alice' }], rateLimit: { perSecond: 10_000, burst: 100_000 }, mamMaxPage: 1000 },
        },
        rooms: [
          { id: 'big', links: [{ endpoint: 'rooms', target: 'big' }] },
          { id: 'live', links: [{ endpoint: 'rooms', target: 'live' }] },
        ],
      },
    });
    const token = await gw.deviceToken('alice', ['big', 'live']);
    const log = gw.gateway.log;
    await waitFor(async () => (await gw?.gateway.status())?.adapters['rooms']?.connected === true, { what: 'component connected', timeoutMs: 30_000 });

    // (a) fill the big room
    const ids: string[] = [];
    const BATCH = 500;
    for (let i = 0; i < roomSize; i += BATCH) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(BATCH, roomSize - i) }, (_, k) =>
          log.append({
            v: 1,
            kind: 'message',
            idem: `bench:${randomUUID()}`,
            room: 'big',
            sender: { uid: 'api:carol', proto: 'api', native: 'carol', display: 'Carol', auth: 'api-token' },
            origin: { proto: 'api', via: 'api', ids: {} },
            ts: { received: Date.now() },
            content: { body: `event ${i + k} with some text in it` },
          }),
        ),
      );
      ids.push(...batch.map((r) => r.eventId));
    }
    ids.sort();

    const seen: XmlElement[] = [];
    const alice = client({ service: prosody.service, domain: prosody.domain, username: 'alice', password: 'alice-pw', resource: 'bench', timeout: 10_000 });
    clients.push(alice);
    alice.on('error', () => undefined);
    alice.on('connect', () => alice.socket?.setNoDelay?.(true));
    const waiters = new Map<string, (t: number) => void>();
    alice.on('stanza', (s) => {
      const id = s.attrs['id'];
      const w = id === undefined ? undefined : waiters.get(id);
      if (w && s.is('message') && s.attrs['type'] === 'groupchat') {
        waiters.delete(id as string);
        w(performance.now());
      } else if (!s.is('message') || s.getChild('result', MAM) === undefined) seen.push(s);
    });
    await alice.start();
    await waitFor(() => alice.streamManagement.enabled, { what: 'stream management', timeoutMs: 10_000 });

    const P = log.info.partitions;
    const picks = Array.from({ length: queries }, (_, q) => ids[Math.floor(((q + 0.5) / queries) * (ids.length - 200))] as string);
    const mamTimes: number[] = [];
    let mamEvents = 0;
    for (const after of picks) {
      const t0 = performance.now();
      let got = 0;
      const queryid = randomUUID();
      const count = (s: XmlElement) => {
        if (s.getChild('result', MAM)?.attrs['queryid'] === queryid) got++;
      };
      alice.on('stanza', count);
      await alice.iqCaller.request(
        xml('iq', { type: 'set', to: `big@${component.domain}` }, xml('query', { xmlns: MAM, queryid }, xml('set', { xmlns: 'http://jabber.org/protocol/rsm' }, xml('max', {}, '100'), xml('after', {}, after)))),
        30_000,
      );
      mamTimes.push(performance.now() - t0);
      mamEvents += got;
      (alice as unknown as { removeListener(e: string, f: (s: XmlElement) => void): void }).removeListener('stanza', count);
    }
    const logTimes: number[] = [];
    for (const after of picks) {
      const location = locateEventId(after);
      if (!location) throw new Error('bad id');
      const t0 = performance.now();
      await log.roomHistory('big', { from: encodeEventPosition({ partitions: P, partition: location.partition, pos: location.pos }), dir: 'f', limit: 100 });
      logTimes.push(performance.now() - t0);
    }
    const mamTotal = mamTimes.reduce((a, b) => a + b, 0);
    const logTotal = logTimes.reduce((a, b) => a + b, 0);
    if (mamEvents !== queries * 100) throw new Error(`MAM returned ${mamEvents} of ${queries * 100} results`);

    // (b) reflection latency at `rate` msg/s, beside HTTP send → WebSocket at the same rate
    const room = `live@${component.domain}`;
    await alice.send(xml('presence'));
    await alice.send(xml('presence', { to: `${room}/alice` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' }, xml('history', { maxstanzas: '0' }))));
    await waitFor(() => seen.some((s) => s.is('message') && s.attrs['from'] === room && s.getChild('subject') !== undefined), { what: 'join', timeoutMs: 10_000 });
    const reflections: number[] = [];
    const pending: Array<Promise<void>> = [];
    await paced(messages, rate, async (i) => {
      const id = `r${i}-${randomUUID()}`;
      const t0 = performance.now();
      pending.push(new Promise<void>((resolve) => waiters.set(id, (t) => (reflections.push(t - t0), resolve()))));
      await alice.send(xml('message', { to: room, type: 'groupchat', id }, xml('body', {}, `paced ${i}`), xml('origin-id', { xmlns: NS_SID, id })));
    });
    await Promise.all(pending);

    const since = await log.head();
    const ws = new WebSocket(`${gw.url.replace(/^http/, 'ws')}/v1/stream?since=${encodeURIComponent(since)}&access_token=${token}`, { perMessageDeflate: false });
    const wsSeen = new Map<string, number>();
    ws.on('message', (data: Buffer) => {
      const m = /"body":"(h\d+)"/.exec(data.toString());
      if (m?.[1]) wsSeen.set(m[1], performance.now());
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const httpSent = new Map<string, number>();
    await paced(messages, rate, async (i) => {
      const body = `h${i}`;
      httpSent.set(body, performance.now());
      void gw?.device(token, 'PUT', `/v1/rooms/live/send/${randomUUID()}`, { kind: 'message', content: { body } });
    });
    await waitFor(() => wsSeen.size >= messages, { what: 'every HTTP message on the WebSocket', timeoutMs: 120_000 });
    ws.close();
    const wsLat = sorted([...httpSent].map(([b, t]) => (wsSeen.get(b) ?? t) - t));
    const refl = sorted(reflections);

    return {
      title: 'XMPP rooms component (xmpp-rooms: MAM from the log, append-then-reflect)',
      rows: [
        {
          name: `MAM page of 100 from a ${roomSize.toLocaleString('en-US')}-event room`,
          value: (mamEvents / mamTotal) * 1000,
          unit: 'events/s',
          baseline: ((queries * 100) / logTotal) * 1000,
          ratio: mamTotal / logTotal,
          note: `${queries} pages at spread after-ids; baseline: the same pages read from the log directly (ratio: time vs baseline)`,
        },
        { name: 'MAM page p50', value: percentile(sorted(mamTimes), 50), unit: 'ms', baseline: percentile(sorted(logTimes), 50) },
        { name: 'MAM page p99', value: percentile(sorted(mamTimes), 99), unit: 'ms', baseline: percentile(sorted(logTimes), 99) },
        { name: `reflection latency p50 at ${rate} msg/s`, value: percentile(refl, 50), unit: 'ms', baseline: percentile(wsLat, 50), ratio: percentile(refl, 50) / percentile(wsLat, 50), note: `${messages} messages: send → own reflection (stored); baseline: HTTP send → WebSocket, same rate` },
        { name: `reflection latency p99 at ${rate} msg/s`, value: percentile(refl, 99), unit: 'ms', baseline: percentile(wsLat, 99), ratio: percentile(refl, 99) / percentile(wsLat, 99) },
      ],
    };
  } finally {
    await Promise.all(clients.map((c) => c.stop().catch(() => undefined)));
    await gw?.stop();
    await prosody.stop();
  }
};
