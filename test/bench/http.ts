/**
 * HTTP API benchmarks (issue 3), against a Redis log:
 *
 * (a) live fan-out (fanout.ts): 1,000, 5,000 and 10,000 WebSocket clients
 *     (BENCH_HTTP_CLIENTS) against a raw `ws` broadcast of the same frames in
 *     the same run: the highest rate with p99 < 250 ms, deliveries/s at 500
 *     ev/s (BENCH_HTTP_RATE), and the gateway's RSS with every client slow.
 * (b) catch-up: one device syncing a backlog page by page (limit=1000) over
 *     HTTP, against paging `log.read` in process.
 */
import { execSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { DraftOf } from '../../src/core/event.js';
import type { EventLog } from '../../src/core/ports.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { buildApp } from '../../src/http/index.js';
import { requestJson } from '../../src/cli/client.js';
import { silentLogger } from '../../src/log/index.js';
import { testPrefix } from '../harness/redis.js';
import { openFanOut, sustained, type FanOutRun, type ServerKind } from './fanout.js';
import { percentile, type Bench, type BenchRow } from './report.js';

const ADMIN = 'bench-admin-token-0123456789';

export function draft(room: string, i: number, body: string): DraftOf<'message'> {
  return {
    v: 1,
    kind: 'message',
    idem: `bench:${i}:${Math.random().toString(36).slice(2)}`,
    room,
    sender: { uid: 'probe', proto: 'api', native: 'probe', display: 'Probe', auth: 'api-token' },
    origin: { proto: 'api', via: 'api', ids: {} },
    ts: { received: Date.now() },
    content: { body },
  };
}

export interface Gateway {
  readonly url: string;
  readonly log: EventLog;
  readonly prefix: string;
  /** the admin token of this gateway */
  readonly adminToken: string;
  /** one request with a bearer token; throws on a status ≥ 300; the parsed body (undefined for 204) */
  call(token: string, method: string, path: string, body?: unknown): Promise<unknown>;
  token(user: string, rooms: string[]): Promise<string>;
  close(): Promise<void>;
}

export interface GatewayOptions {
  readonly partitions?: number;
  /** the key prefix's name (a fresh random prefix is made from it) */
  readonly name?: string;
}

/** The HTTP app on a Redis log, listening on a free port: the HTTP and console benches' server. */
export async function startGateway(redisUrl: string, options: GatewayOptions = {}): Promise<Gateway> {
  const prefix = testPrefix(options.name ?? 'bench-http');
  const tailBuffer = Number(process.env['BENCH_HTTP_TAIL_BUFFER'] ?? 0);
  const log = createEventLog({
    partitions: options.partitions ?? 16,
    log: silentLogger(),
    redis: { url: redisUrl, prefix },
    retention: { roomMaxLen: 0 },
    ...(tailBuffer > 0 ? { tailBuffer } : {}),
  });
  const app = await buildApp({
    log,
    logger: silentLogger(),
    config: {
      host: '127.0.0.1',
      port: 0,
      adminToken: ADMIN,
      bodyLimitBytes: 1_048_576,
      // the bench measures delivery, not the limiter
      rateLimit: { perSecond: 1e9, burst: 1e9 },
      syncTimeoutMaxMs: 30_000,
      heartbeatMs: 15_000,
      trustProxy: false, cors: { origins: [] },
    },
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  if (!address || typeof address === 'string') throw new Error('no address');
  const url = `http://127.0.0.1:${address.port}`;
  const call = async (token: string, method: string, path: string, body?: unknown): Promise<unknown> => {
    const r = await requestJson(url, token, method, path, body);
    if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${r.text}`);
    return r.body;
  };
  const admin = (method: string, path: string, body?: unknown) => call(ADMIN, method, path, body) as Promise<{ token?: string } | undefined>;
  return {
    url,
    log,
    prefix,
    adminToken: ADMIN,
    call,
    token: async (user, rooms) => {
      await admin('POST', '/v1/admin/users', { id: user });
      for (const room of rooms) {
        await admin('PUT', `/v1/admin/rooms/${room}`, { links: [] });
        await admin('PUT', `/v1/admin/users/${user}/rooms/${room}`);
      }
      const device = await admin('POST', '/v1/admin/devices', { user });
      if (!device?.token) throw new Error('no token');
      return device.token;
    },
    close: async () => {
      await app.close();
      await log.close();
    },
  };
}

// --- (b) catch-up

async function catchUp(
  redisUrl: string,
  backlog: number,
  rounds: number,
): Promise<{ httpRate: number; rawRate: number; httpCpuUs: number; rawCpuUs: number; rounds: number; pages: number; events: number; pageP50: number; pageP99: number }> {
  const rooms = ['c0', 'c1', 'c2', 'c3'];
  const gw = await startGateway(redisUrl);
  try {
    const token = await gw.token('reader', rooms);
    const since = await gw.log.head();
    const body = 'The pump in building 7 reported a pressure drop; maintenance is on the way, ETA 20 minutes.';
    let next = 0;
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < backlog) {
          const i = next++;
          await gw.log.append(draft(rooms[i % rooms.length] ?? 'c0', i, body));
        }
      }),
    );

    // Alternated over rounds after an unmeasured warm-up of each, medians (as the eventlog
    // section does): one pass of each, one after the other, differed by 3× from run to run
    // on a shared machine. CPU time is this process's (server and client over HTTP).
    const pageMs: number[] = [];
    const overHttp = async (record: boolean) => {
      let cursor = since;
      let events = 0;
      let pages = 0;
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (;;) {
        const started = performance.now();
        const r = await fetch(`${gw.url}/v1/sync?since=${cursor}&limit=1000`, { headers: { authorization: `Bearer ${token}` } });
        const page = (await r.json()) as { events: unknown[]; next: string };
        if (r.status !== 200) throw new Error(`sync: ${r.status} ${JSON.stringify(page)}`);
        if (record) pageMs.push(performance.now() - started);
        pages++;
        events += page.events.length;
        cursor = page.next;
        if (page.events.length === 0) break;
      }
      const cpu = process.cpuUsage(c0);
      return { rate: events / ((performance.now() - t0) / 1000), cpuUs: (cpu.user + cpu.system) / events, events, pages };
    };

    // baseline: the same pages read in process, without HTTP, JSON or auth
    const granted = new Set(rooms);
    const inProcess = async () => {
      let rawCursor = since;
      let rawEvents = 0;
      const c0 = process.cpuUsage();
      const t1 = performance.now();
      for (;;) {
        const page = await gw.log.read(rawCursor, { rooms: granted, limit: 1000 });
        rawEvents += page.events.length;
        rawCursor = page.next;
        if (page.events.length === 0) break;
      }
      const cpu = process.cpuUsage(c0);
      return { rate: rawEvents / ((performance.now() - t1) / 1000), cpuUs: (cpu.user + cpu.system) / rawEvents, events: rawEvents };
    };
    await overHttp(false);
    await inProcess();
    const httpRuns: Array<Awaited<ReturnType<typeof overHttp>>> = [];
    const rawRuns: Array<Awaited<ReturnType<typeof inProcess>>> = [];
    for (let round = 0; round < rounds; round++) {
      httpRuns.push(await overHttp(true));
      rawRuns.push(await inProcess());
    }
    for (const r of [...httpRuns, ...rawRuns]) if (r.events !== backlog) throw new Error(`catch-up read ${r.events} of ${backlog} events`);
    const median = (xs: number[]) => percentile([...xs].sort((a, b) => a - b), 50);
    pageMs.sort((x, y) => x - y);
    return {
      httpRate: median(httpRuns.map((r) => r.rate)),
      rawRate: median(rawRuns.map((r) => r.rate)),
      httpCpuUs: median(httpRuns.map((r) => r.cpuUs)),
      rawCpuUs: median(rawRuns.map((r) => r.cpuUs)),
      rounds,
      pages: httpRuns[0]?.pages ?? 0,
      events: backlog,
      pageP50: percentile(pageMs, 50),
      pageP99: percentile(pageMs, 99),
    };
  } finally {
    await gw.close();
  }
}

function openFileLimit(): number {
  try {
    return Number(execSync('ulimit -n', { shell: '/bin/sh' }).toString().trim());
  } catch {
    return Number.NaN;
  }
}

const LADDER = [2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000];

interface Ladder {
  readonly kind: ServerKind;
  readonly clients: number;
  readonly connected: number;
  readonly connectMs: number;
  readonly firstError?: string;
  /** the highest rate of the ladder that passed */
  readonly best?: FanOutRun;
  /** the run at the overload rate */
  readonly overload: FanOutRun;
}

/** One server kind with `clients` sockets: the rate ladder, then the overload run, on the same connections. */
async function ladder(kind: ServerKind, redisUrl: string, clients: number, overloadRate: number, quick: boolean): Promise<Ladder> {
  const session = await openFanOut(kind, redisUrl, clients);
  try {
    let best: FanOutRun | undefined;
    let overload: FanOutRun | undefined;
    // Unmeasured: the first frames of a process pay for JIT and lazy setup.
    await session.run(LADDER[0] ?? 2, 1, 3_000);
    for (const rate of LADDER) {
      const r = await session.run(rate, quick ? 1.5 : 2, 3_000);
      if (rate === overloadRate && r.events * clients >= 400_000) overload = r;
      if (!sustained(r)) break;
      best = r;
    }
    // About 400,000 deliveries whatever the client count: enough to measure, short enough for a baseline that sends one write per message.
    overload ??= await session.run(overloadRate, Math.max(0.1, Math.min(quick ? 1 : 2, 800 / clients)), 15_000);
    return {
      kind,
      clients,
      connected: session.connected,
      connectMs: session.connectMs,
      ...(session.firstError ? { firstError: session.firstError } : {}),
      ...(best ? { best } : {}),
      overload,
    };
  } finally {
    await session.close();
  }
}

export const benchHttp: Bench = async (ctx) => {
  const counts = (process.env['BENCH_HTTP_CLIENTS'] ?? (ctx.quick ? '200,1000' : '1000,5000,10000')).split(',').map(Number).filter((n) => n > 0);
  const rate = Number(process.env['BENCH_HTTP_RATE'] ?? 500);
  const backlog = ctx.quick ? 20_000 : 100_000;
  const fdLimit = openFileLimit();
  const rows: BenchRow[] = [];
  const n = (x: number) => x.toLocaleString('en-US');

  for (const clients of counts) {
    if (Number.isFinite(fdLimit) && fdLimit < clients + 200) {
      rows.push({ name: `fan-out ${n(clients)} clients: not run`, value: 0, unit: 'clients', note: `ulimit -n ${fdLimit} < ${clients + 200}` });
      continue;
    }
    const raw = await ladder('broadcast', ctx.redisUrl, clients, rate, ctx.quick);
    const ours = await ladder('gateway', ctx.redisUrl, clients, rate, ctx.quick);
    const o = ours.overload;
    const b = raw.overload;
    const rateNote = (l: Ladder) =>
      l.best
        ? `p50 ${l.best.p50.toFixed(1)} ms, p99 ${l.best.p99.toFixed(1)} ms, ${n(Math.round(l.best.deliveredPerSec))} msg/s, server CPU ${(l.best.serverCpu * 100).toFixed(0)}%, ${l.best.cpuPerDeliveryUs.toFixed(1)} µs CPU per delivery`
        : `not even ${LADDER[0]} ev/s`;
    const complete = (r: FanOutRun) => `${r.complete}/${r.open} open clients got all ${r.events} events`;
    rows.push(
      {
        name: `fan-out ${n(clients)} clients: highest rate with p99 < 250 ms`,
        value: ours.best?.rate ?? 0,
        unit: 'ev/s',
        baseline: raw.best?.rate ?? 0,
        ...(raw.best ? { ratio: (ours.best?.rate ?? 0) / raw.best.rate } : {}),
        note: `${rateNote(ours)}; ${ours.connected}/${clients} connected in ${(ours.connectMs / 1000).toFixed(1)} s${ours.firstError ? ` (first error: ${ours.firstError})` : ''}; ladder ${LADDER.join(', ')} ev/s`,
      },
      { name: `fan-out ${n(clients)} clients: raw ws broadcast, highest rate with p99 < 250 ms`, value: raw.best?.rate ?? 0, unit: 'ev/s', note: rateNote(raw) },
      {
        name: `fan-out ${n(clients)} clients @ ${rate} ev/s: deliveries`,
        value: o.deliveredPerSec,
        unit: 'msg/s',
        baseline: b.deliveredPerSec,
        ratio: o.deliveredPerSec / b.deliveredPerSec,
        goal: 'ratio ≥ 0.5',
        note: `offered ${n(clients * rate)} msg/s for ${o.events} events; ${complete(o)}${o.slowClosed ? `, ${o.slowClosed} closed as slow` : ''}; server CPU ${(o.serverCpu * 100).toFixed(0)}% (baseline ${(b.serverCpu * 100).toFixed(0)}%), clients CPU ${(o.clientCpu * 100).toFixed(0)}%; load average ${loadavg()[0]?.toFixed(1)}`,
      },
      {
        name: `fan-out ${n(clients)} clients @ ${rate} ev/s: server CPU per delivery`,
        value: o.cpuPerDeliveryUs,
        unit: 'µs',
        baseline: b.cpuPerDeliveryUs,
        ratio: o.cpuPerDeliveryUs / b.cpuPerDeliveryUs,
        note: 'CPU time of the server process / messages delivered: what a delivery costs, whatever else the machine runs',
      },
      {
        name: `fan-out ${n(clients)} clients @ ${rate} ev/s: raw ws broadcast deliveries`,
        value: b.deliveredPerSec,
        unit: 'msg/s',
        note: `same frame bytes to every socket; ${n(b.skipped)} sends skipped (socket holding > 64 KiB); ${complete(b)}`,
      },
      {
        name: `fan-out ${n(clients)} clients @ ${rate} ev/s: latency p99`,
        value: o.p99,
        unit: 'ms',
        baseline: b.p99,
        ratio: o.p99 / b.p99,
        ...(clients >= 5000 && rate >= 500 ? { goal: 'p99 < 250 ms' } : {}),
        note: `p50 ${o.p50.toFixed(1)} ms (baseline ${b.p50.toFixed(1)}); gateway event-loop delay p99 ${o.loopDelayP99.toFixed(0)} ms`,
      },
      { name: `fan-out ${n(clients)} clients @ ${rate} ev/s: gateway RSS (max)`, value: o.rssMb, unit: 'MiB', baseline: b.rssMb, note: 'the gateway process only; baseline: the raw broadcast process' },
      { name: `fan-out ${n(clients)} clients: Redis blocking connections`, value: o.tailConnections, unit: 'conns', note: 'CLIENT LIST names with tail: — at most one per partition, whatever the number of clients' },
    );
  }

  // Memory under overload: every client slow (its socket paused), 5,000 of them.
  if (process.env['BENCH_HTTP_SKIP_SLOW'] !== '1') {
    const slowClients = Number(process.env['BENCH_HTTP_SLOW_CLIENTS'] ?? (ctx.quick ? 1000 : 5000));
    const session = await openFanOut('gateway', ctx.redisUrl, slowClients, true);
    try {
      // stallMs (10 s) passes during the drain: the gateway closes the paused clients.
      const r = await session.run(rate, ctx.quick ? 3 : 5, 13_000);
      const after = await session.resume(5_000);
      rows.push({
        name: `fan-out ${n(slowClients)} slow clients @ ${rate} ev/s: gateway RSS (max)`,
        value: r.rssMb,
        unit: 'MiB',
        goal: '< 1,024 MiB',
        note: `every socket paused for ${r.events} events; ${r.slowClosed} closed as slow by the gateway (${after.slowClosed} saw close 4029, ${after.otherClosed} another close, ${after.open} still open after resuming)`,
      });
    } finally {
      await session.close();
    }
  }

  if (process.env['BENCH_HTTP_SKIP_CATCHUP'] === '1') return { title: 'HTTP API (issue 3)', rows };
  const cu = await catchUp(ctx.redisUrl, backlog, ctx.quick ? 1 : 3);
  rows.push({
    name: `catch-up: ${cu.events.toLocaleString('en-US')} events, limit=1000, over HTTP`,
    value: cu.httpRate,
    unit: 'events/s',
    baseline: cu.rawRate,
    ratio: cu.httpRate / cu.rawRate,
    goal: 'ratio ≥ 0.8',
    note: `${cu.pages} pages, 4 rooms, page p50 ${cu.pageP50.toFixed(0)} ms / p99 ${cu.pageP99.toFixed(0)} ms; medians of ${cu.rounds} alternated rounds; CPU ${cu.httpCpuUs.toFixed(1)} µs an event (server and client) against ${cu.rawCpuUs.toFixed(1)}; baseline: log.read in process`,
  });
  return { title: 'HTTP API (issue 3)', rows };
};
