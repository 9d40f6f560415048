/**
 * Matrix adapter benchmark (issue 7): application-service ingest. The same
 * transactions of 50 m.room.message events are PUT, one at a time as a
 * homeserver does, to the adapter's AS endpoint (auth, parse, normalise,
 * sink, idempotent append to the Redis log, completed-txn record) and to a
 * bare node:http endpoint that only checks the token, reads and parses the
 * body and answers 200 — measured in the same run.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { parse } from 'yaml';
import { createIngestSink } from '../../src/bridge/ingest.js';
import { createRoomLinks } from '../../src/bridge/links.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { createMatrixAdapter } from '../../adapters/matrix/index.js';
import { parseMatrixConfig, registrationYaml } from '../../adapters/matrix/config.js';
import { createFakeHomeserver, type AppServiceRegistration } from '../harness/fake-homeserver.js';
import { testPrefix, dropPrefix } from '../harness/redis.js';
import { percentile, type Bench, type BenchRow } from './report.js';

const EVENTS_PER_TXN = 50;
const HS_TOKEN = 'bench-hs-token-0123456789';
const BODY = 'The pump in building 7 reported a pressure drop; maintenance is on the way, ETA 20 minutes.';

type Txn = { readonly id: string; readonly payload: string };

function transactions(count: number, roomId: string, senders: readonly string[], run: string): Txn[] {
  const out: Txn[] = [];
  let n = 0;
  for (let t = 0; t < count; t++) {
    const events = Array.from({ length: EVENTS_PER_TXN }, () => {
      n++;
      return {
        type: 'm.room.message',
        room_id: roomId,
        sender: senders[n % senders.length],
        event_id: `$bench-${run}-${n}`,
        origin_server_ts: 1_795_000_000_000 + n,
        content: { msgtype: 'm.text', body: `${BODY} #${n}` },
        unsigned: { age: 12 },
      };
    });
    out.push({ id: `${run}-${t}`, payload: JSON.stringify({ events }) });
  }
  return out;
}

async function pushAll(port: number, txns: readonly Txn[]): Promise<{ eventsPerSec: number; latencies: number[] }> {
  const latencies: number[] = [];
  const start = performance.now();
  for (const txn of txns) {
    const t0 = performance.now();
    const res = await fetch(`http://127.0.0.1:${port}/_matrix/app/v1/transactions/${txn.id}`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${HS_TOKEN}`, 'Content-Type': 'application/json' },
      body: txn.payload,
    });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`transaction ${txn.id} answered ${res.status}`);
    latencies.push(performance.now() - t0);
  }
  const seconds = (performance.now() - start) / 1000;
  return { eventsPerSec: (txns.length * EVENTS_PER_TXN) / seconds, latencies: latencies.sort((a, b) => a - b) };
}

/** The baseline: what any endpoint must do for a transaction, and nothing more. */
async function bareEndpoint(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const ok = req.headers['authorization'] === `Bearer ${HS_TOKEN}`;
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { events?: unknown[] };
      const status = ok && Array.isArray(body.events) ? 200 : 400;
      res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': '2' });
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

export const benchMatrix: Bench = async ({ redisUrl, quick }) => {
  const count = quick ? 20 : 200;
  const hs = await createFakeHomeserver({ serverName: 'bench.test' });
  const prefix = testPrefix('bench-mx');
  const log = createEventLog({ partitions: 16, log: silentLogger(), redis: { url: redisUrl, prefix }, retention: { roomMaxLen: 0 } });
  const admin = new Redis(redisUrl);
  const bare = await bareEndpoint();
  const rows: BenchRow[] = [];
  try {
    const owner = hs.registerUser('owner', 'pw');
    const roomId = hs.createRoom(owner.userId);
    const senders = [owner.userId];
    for (let i = 0; i < 4; i++) {
      const u = hs.registerUser(`user${i}`, 'pw');
      hs.joinRoom(u.userId, roomId);
      senders.push(u.userId);
    }
    await log.rooms.put({ id: 'bench', links: [{ endpoint: 'matrix', target: roomId }] });
    await log.rooms.put({ id: 'bench-direct', links: [] });
    const links = await createRoomLinks({ rooms: log.rooms, logger: silentLogger() });
    const config = parseMatrixConfig({
      mode: 'appservice',
      homeserverUrl: hs.url,
      serverName: hs.serverName,
      appservice: { asToken: 'bench-as-token-0123456789', hsToken: HS_TOKEN, url: 'http://127.0.0.1:9', listenHost: '127.0.0.1', listenPort: 0 },
    });
    // Registered without a URL: only the benchmark pushes, the homeserver never does.
    hs.registerAppService({ ...(parse(registrationYaml(config)) as AppServiceRegistration), url: null });
    const adapter = createMatrixAdapter({
      name: 'matrix',
      config,
      log: silentLogger(),
      sink: createIngestSink({ log, logger: silentLogger() }),
      links,
      state: log.state,
    });
    await adapter.start();
    const port = adapter.listenAddress()?.port ?? 0;
    const run = Date.now().toString(36);

    // Warm-up (display names cached, connections open), not measured.
    await pushAll(port, transactions(3, roomId, senders, `${run}w`));
    await pushAll(bare.port, transactions(3, roomId, senders, `${run}w`));

    const txns = transactions(count, roomId, senders, run);
    const base = await pushAll(bare.port, txns);
    const ours = await pushAll(port, txns);
    const [last] = (await log.roomHistory('bench', { dir: 'b', limit: 1 })).events;
    if (last?.origin.ids['mx.eventId'] !== `$bench-${run}-${count * EVENTS_PER_TXN}`) throw new Error('the last event was not appended');

    rows.push({
      name: `AS ingest, ${count} transactions × ${EVENTS_PER_TXN} events`,
      value: ours.eventsPerSec,
      unit: 'events/s',
      baseline: base.eventsPerSec,
      ratio: ours.eventsPerSec / base.eventsPerSec,
      note: 'baseline: bare node:http endpoint (auth + JSON parse only), same transactions',
    });
    for (const p of [50, 99]) {
      const value = percentile(ours.latencies, p);
      const baseline = percentile(base.latencies, p);
      rows.push({ name: `AS transaction latency p${p}`, value, unit: 'ms', baseline, ratio: value / baseline, note: `${EVENTS_PER_TXN} events appended before the 200` });
    }
    // The same messages straight into the sink (no HTTP, no normalising): what the adapter adds on top.
    const sink = createIngestSink({ log, logger: silentLogger() });
    const t0 = performance.now();
    for (const txn of txns) {
      for (const ev of (JSON.parse(txn.payload) as { events: Array<{ event_id: string; sender: string; origin_server_ts: number; content: { body: string } }> }).events) {
        await sink.ingest({
          v: 1,
          kind: 'message',
          idem: `mx:${ev.event_id}`,
          room: 'bench-direct',
          sender: { uid: `matrix:${ev.sender}`, proto: 'matrix', native: ev.sender, display: ev.sender.slice(1, ev.sender.indexOf(':')), auth: 'server' },
          origin: { proto: 'matrix', via: 'matrix', ids: { 'mx.eventId': ev.event_id } },
          ts: { origin: ev.origin_server_ts, received: Date.now() },
          content: { body: ev.content.body },
        });
      }
    }
    const direct = (count * EVENTS_PER_TXN) / ((performance.now() - t0) / 1000);
    rows.push({
      name: 'AS ingest vs the same drafts appended through the sink directly',
      value: ours.eventsPerSec,
      unit: 'events/s',
      baseline: direct,
      ratio: ours.eventsPerSec / direct,
      note: 'what HTTP, auth, parsing and normalising add to the append',
    });
    // A retried transaction (the homeserver lost our 200) costs one state lookup.
    const retry = await pushAll(port, txns.slice(0, Math.min(20, count)));
    rows.push({ name: 'AS retried transaction (already completed)', value: percentile(retry.latencies, 50), unit: 'ms p50', baseline: percentile(base.latencies, 50), ratio: percentile(retry.latencies, 50) / percentile(base.latencies, 50) });

    await adapter.stop();
    links.close();
  } finally {
    await bare.close();
    await log.close();
    await dropPrefix(admin, prefix);
    admin.disconnect();
    await hs.stop();
  }
  return { title: 'Matrix adapter (issue 7): application-service ingest', rows };
};
