/**
 * HTTP API benchmarks (issue 3), against a Redis log:
 *
 * (a) live fan-out: N WebSocket clients on one gateway process while events
 *     are appended at a fixed rate. The clients run in a child process (the
 *     gateway's RSS and CPU are its own); latency is append time → receive
 *     time on the machine's wall clock, read with sub-millisecond resolution
 *     in both processes. Baseline: one client at the same rate.
 * (b) catch-up: one device syncing a backlog page by page (limit=1000) over
 *     HTTP, against paging `log.read` in process.
 *
 * The client side of (a) is this same file, started with SYNCGATE_BENCH_ROLE.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { execSync } from 'node:child_process';
import { cpus } from 'node:os';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import type { DraftOf } from '../../src/core/event.js';
import type { EventLog } from '../../src/core/ports.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { buildApp } from '../../src/http/index.js';
import { silentLogger } from '../../src/log/index.js';
import { testPrefix } from '../harness/redis.js';
import { percentile, type Bench, type BenchRow } from './report.js';

const ROLE_ENV = 'SYNCGATE_BENCH_ROLE';
const ADMIN = 'bench-admin-token-0123456789';
const ROOM = 'fanout';

/** wall-clock milliseconds with sub-millisecond resolution, comparable across processes */
const wallNow = () => performance.timeOrigin + performance.now();

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
  token(user: string, rooms: string[]): Promise<string>;
  close(): Promise<void>;
}

export async function startGateway(redisUrl: string, partitions = 16): Promise<Gateway> {
  const prefix = testPrefix('bench-http');
  const tailBuffer = Number(process.env['BENCH_HTTP_TAIL_BUFFER'] ?? 0);
  const log = createEventLog({
    partitions,
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
  const call = async (method: string, path: string, body?: unknown) => {
    const r = await fetch(url + path, {
      method,
      headers: { authorization: `Bearer ${ADMIN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
    return r.status === 204 ? undefined : ((await r.json()) as { token?: string });
  };
  return {
    url,
    log,
    prefix,
    token: async (user, rooms) => {
      await call('POST', '/v1/admin/users', { id: user });
      for (const room of rooms) {
        await call('PUT', `/v1/admin/rooms/${room}`, { links: [] });
        await call('PUT', `/v1/admin/users/${user}/rooms/${room}`);
      }
      const device = await call('POST', '/v1/admin/devices', { user });
      if (!device?.token) throw new Error('no token');
      return device.token;
    },
    close: async () => {
      await app.close();
      await log.close();
    },
  };
}

// --- (a) live fan-out

type ToClients = { type: 'connect'; url: string; token: string; since: string; clients: number } | { type: 'finish'; events: number; drainMs: number };
type FromClients =
  | { type: 'connected'; ok: number; failed: number; firstError?: string; ms: number }
  | { type: 'result'; p50: number; p99: number; max: number; delivered: number; complete: number; closedEarly: number; cpuMs: number; rssMb: number };

/** Latency histogram in 0.1 ms buckets up to 120 s. */
class Histogram {
  private readonly buckets = new Uint32Array(1_200_001);
  count = 0;
  max = 0;
  add(ms: number): void {
    const i = Math.min(this.buckets.length - 1, Math.max(0, Math.round(ms * 10)));
    this.buckets[i] = (this.buckets[i] ?? 0) + 1;
    this.count++;
    if (ms > this.max) this.max = ms;
  }
  percentile(p: number): number {
    if (this.count === 0) return Number.NaN;
    const rank = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      seen += this.buckets[i] ?? 0;
      if (seen >= rank) return i / 10;
    }
    return this.max;
  }
}

const BODY_MARK = Buffer.from('"body":"b:');

/** Reads `<seq>:<t0>` after the mark without decoding the frame: the clients must cost less than the gateway. */
function stampOf(frame: Buffer): number | undefined {
  const at = frame.indexOf(BODY_MARK);
  if (at < 0) return undefined;
  let i = at + BODY_MARK.length;
  while (i < frame.length && frame[i] !== 0x3a) i++; // skip the sequence number
  let j = ++i;
  while (j < frame.length && frame[j] !== 0x22) j++;
  return Number(frame.toString('latin1', i, j));
}

/** The child process: opens the clients, records latencies, reports. */
function runClients(): void {
  const hist = new Histogram();
  const received: number[] = [];
  const sockets: WebSocket[] = [];
  let closedEarly = 0;
  const cpu0 = process.cpuUsage();
  const send = (m: FromClients) => process.send?.(m);

  process.on('message', (raw: ToClients) => {
    if (raw.type === 'connect') {
      void (async () => {
        const started = performance.now();
        let ok = 0;
        let failed = 0;
        let firstError: string | undefined;
        const wsUrl = `${raw.url.replace(/^http/, 'ws')}/v1/stream?since=${raw.since}&access_token=${raw.token}`;
        const BATCH = 250;
        for (let start = 0; start < raw.clients; start += BATCH) {
          await Promise.all(
            Array.from({ length: Math.min(BATCH, raw.clients - start) }, (_, k) => {
              const index = start + k;
              received[index] = 0;
              return new Promise<void>((resolve) => {
                const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
                let ready = false;
                ws.on('message', (data: Buffer) => {
                  if (!ready) {
                    ready = true;
                    ok++;
                    resolve();
                    return;
                  }
                  const t0 = stampOf(data);
                  if (t0 !== undefined) {
                    hist.add(wallNow() - t0);
                    received[index] = (received[index] ?? 0) + 1;
                  }
                });
                ws.on('close', () => {
                  if (ready) closedEarly++;
                });
                ws.on('error', (err) => {
                  if (!ready) {
                    failed++;
                    firstError ??= err.message;
                    resolve();
                  }
                });
                sockets.push(ws);
              });
            }),
          );
        }
        send({ type: 'connected', ok, failed, ms: performance.now() - started, ...(firstError ? { firstError } : {}) });
      })();
    } else {
      void (async () => {
        const deadline = Date.now() + raw.drainMs;
        const done = () => received.filter((n) => n >= raw.events).length;
        while (done() < sockets.length - closedEarly && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        const cpu = process.cpuUsage(cpu0);
        send({
          type: 'result',
          p50: hist.percentile(50),
          p99: hist.percentile(99),
          max: hist.max,
          delivered: hist.count,
          complete: done(),
          closedEarly,
          cpuMs: (cpu.user + cpu.system) / 1000,
          rssMb: process.memoryUsage().rss / 2 ** 20,
        });
        for (const ws of sockets) ws.terminate();
        setTimeout(() => process.exit(0), 100).unref();
      })();
    }
  });
}

function nextMessage<T extends FromClients['type']>(child: ChildProcess, type: T, timeoutMs: number): Promise<Extract<FromClients, { type: T }>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the client process sent no ${type} within ${timeoutMs} ms`)), timeoutMs);
    const onMessage = (m: FromClients) => {
      if (m.type !== type) return;
      clearTimeout(timer);
      child.off('message', onMessage);
      resolve(m as Extract<FromClients, { type: T }>);
    };
    child.on('message', onMessage);
    child.once('exit', (code) => reject(new Error(`the client process exited (${code}) before ${type}`)));
  });
}

async function redisTailConnections(redisUrl: string, prefix: string): Promise<number> {
  const redis = new Redis(redisUrl, { lazyConnect: true });
  try {
    await redis.connect();
    const list = (await redis.client('LIST')) as string;
    return list.split('\n').filter((line) => line.includes(`name=${prefix}tail:`)).length;
  } finally {
    redis.disconnect();
  }
}

interface FanOutResult {
  readonly clients: number;
  readonly connected: number;
  readonly connectMs: number;
  readonly rate: number;
  readonly events: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly deliveredPerSec: number;
  readonly complete: number;
  readonly closedEarly: number;
  readonly rssMb: number;
  readonly gatewayCpu: number;
  readonly clientCpu: number;
  readonly loopDelayP99: number;
  readonly tailConnections: number;
  readonly firstError?: string;
}

async function fanOut(redisUrl: string, clients: number, rate: number, seconds: number, drainMs: number): Promise<FanOutResult> {
  const gw = await startGateway(redisUrl);
  const child = fork(fileURLToPath(import.meta.url), [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, [ROLE_ENV]: 'ws-clients' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  try {
    const token = await gw.token('fan', [ROOM]);
    const since = await gw.log.head();
    const connected = nextMessage(child, 'connected', 300_000);
    child.send({ type: 'connect', url: gw.url, token, since, clients } satisfies ToClients);
    const c = await connected;

    const total = Math.round(rate * seconds);
    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    let rss = process.memoryUsage().rss;
    const sampler = setInterval(() => (rss = Math.max(rss, process.memoryUsage().rss)), 200);
    const cpu0 = process.cpuUsage();
    let tailConnections = 0;
    const started = performance.now();
    const inFlight = new Set<Promise<unknown>>();
    for (let i = 0; i < total; ) {
      // Fixed rate by the clock: send what is due, then wait a tick.
      const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * rate) + 1);
      for (; i < due; i++) {
        const p = gw.log.append(draft(ROOM, i, `b:${i}:${wallNow()}`)).finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
      if (i === Math.floor(total / 2)) tailConnections = await redisTailConnections(redisUrl, gw.prefix);
      await new Promise((r) => setTimeout(r, 1));
    }
    await Promise.all(inFlight);
    const finished = nextMessage(child, 'result', drainMs + 60_000);
    child.send({ type: 'finish', events: total, drainMs } satisfies ToClients);
    const r = await finished;
    const elapsed = (performance.now() - started) / 1000;
    clearInterval(sampler);
    loop.disable();
    const cpu = process.cpuUsage(cpu0);
    tailConnections ||= await redisTailConnections(redisUrl, gw.prefix);
    return {
      clients,
      connected: c.ok,
      connectMs: c.ms,
      rate,
      events: total,
      p50: r.p50,
      p99: r.p99,
      max: r.max,
      deliveredPerSec: r.delivered / elapsed,
      complete: r.complete,
      closedEarly: r.closedEarly,
      rssMb: rss / 2 ** 20,
      gatewayCpu: (cpu.user + cpu.system) / 1000 / (elapsed * 1000),
      clientCpu: r.cpuMs / (elapsed * 1000),
      loopDelayP99: loop.percentile(99) / 1e6,
      tailConnections,
      ...(c.firstError ? { firstError: c.firstError } : {}),
    };
  } finally {
    child.kill();
    await gw.close();
  }
}

// --- (b) catch-up

async function catchUp(redisUrl: string, backlog: number): Promise<{ httpRate: number; rawRate: number; pages: number; events: number; pageP50: number; pageP99: number }> {
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

    let cursor = since;
    let events = 0;
    let pages = 0;
    const pageMs: number[] = [];
    const t0 = performance.now();
    for (;;) {
      const started = performance.now();
      const r = await fetch(`${gw.url}/v1/sync?since=${cursor}&limit=1000`, { headers: { authorization: `Bearer ${token}` } });
      const page = (await r.json()) as { events: unknown[]; next: string };
      if (r.status !== 200) throw new Error(`sync: ${r.status} ${JSON.stringify(page)}`);
      pageMs.push(performance.now() - started);
      pages++;
      events += page.events.length;
      cursor = page.next;
      if (page.events.length === 0) break;
    }
    const httpRate = events / ((performance.now() - t0) / 1000);

    // baseline: the same pages read in process, without HTTP, JSON or auth
    let rawCursor = since;
    let rawEvents = 0;
    const t1 = performance.now();
    const granted = new Set(rooms);
    for (;;) {
      const page = await gw.log.read(rawCursor, { rooms: granted, limit: 1000 });
      rawEvents += page.events.length;
      rawCursor = page.next;
      if (page.events.length === 0) break;
    }
    const rawRate = rawEvents / ((performance.now() - t1) / 1000);
    if (events !== backlog || rawEvents !== backlog) throw new Error(`catch-up read ${events} (raw ${rawEvents}) of ${backlog} events`);
    pageMs.sort((x, y) => x - y);
    return { httpRate, rawRate, pages, events, pageP50: percentile(pageMs, 50), pageP99: percentile(pageMs, 99) };
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

export const benchHttp: Bench = async (ctx) => {
  const clients = Number(process.env['BENCH_HTTP_CLIENTS'] ?? (ctx.quick ? 500 : 5000));
  const rate = Number(process.env['BENCH_HTTP_RATE'] ?? 500);
  const seconds = ctx.quick ? 5 : 10;
  const backlog = ctx.quick ? 20_000 : 100_000;
  const fdLimit = openFileLimit();
  const rows: BenchRow[] = [];

  const base = await fanOut(ctx.redisUrl, 1, rate, Math.min(seconds, 3), 10_000);

  // What the gateway sustains with this many clients: the highest rate (going up) where every
  // client got every event and p99 stayed under 250 ms. Before the goal run, whose overload
  // leaves the process RSS high.
  let sustained: FanOutResult | undefined;
  for (const step of [2, 5, 10, 20, 50, 100, 200].filter((r) => r < rate)) {
    const r = await fanOut(ctx.redisUrl, clients, step, 5, 15_000);
    if (r.complete < r.connected || r.p99 >= 250) break;
    sustained = r;
  }

  const run = await fanOut(ctx.redisUrl, clients, rate, seconds, 30_000);
  const goal = clients >= 5000 && rate >= 500 ? 'p99 < 250 ms' : undefined;
  const limits = [
    `${cpus().length} cores; gateway CPU ${(run.gatewayCpu * 100).toFixed(0)}%, clients CPU ${(run.clientCpu * 100).toFixed(0)}%`,
    `gateway event-loop delay p99 ${run.loopDelayP99.toFixed(0)} ms`,
    `ulimit -n ${fdLimit}${fdLimit < clients * 2 + 100 ? ' (limits the clients!)' : ''}`,
  ].join('; ');
  const complete = (r: FanOutResult) => `${r.complete}/${r.connected} clients got all ${r.events} events${r.closedEarly ? `, ${r.closedEarly} closed early` : ''}`;
  rows.push(
    { name: 'fan-out: clients connected', value: run.connected, unit: 'clients', note: `of ${clients} in ${(run.connectMs / 1000).toFixed(1)} s${run.firstError ? `; first error: ${run.firstError}` : ''}` },
    { name: `fan-out ${run.clients} clients @ ${rate} ev/s: latency p50`, value: run.p50, unit: 'ms', baseline: base.p50, ratio: run.p50 / base.p50, note: 'baseline: 1 client, same rate' },
    { name: `fan-out ${run.clients} clients @ ${rate} ev/s: latency p99`, value: run.p99, unit: 'ms', baseline: base.p99, ratio: run.p99 / base.p99, ...(goal ? { goal } : {}), note: limits },
    { name: 'fan-out: deliveries', value: run.deliveredPerSec, unit: 'msg/s', note: `offered ${(clients * rate).toLocaleString('en-US')} msg/s; ${complete(run)} (30 s drain)` },
    { name: 'fan-out: gateway RSS (max)', value: run.rssMb, unit: 'MiB', baseline: base.rssMb, note: 'the gateway process only (clients run in a child process); under overload the per-client tail buffers fill' },
    { name: 'fan-out: Redis blocking connections', value: run.tailConnections, unit: 'conns', baseline: base.tailConnections, note: 'CLIENT LIST names with tail: — at most one per partition, whatever the number of clients' },
  );

  rows.push(
    sustained
      ? {
          name: `fan-out ${clients} clients: highest rate with p99 < 250 ms`,
          value: sustained.rate,
          unit: 'ev/s',
          note: `p50 ${sustained.p50.toFixed(1)} ms, p99 ${sustained.p99.toFixed(1)} ms, ${Math.round(sustained.deliveredPerSec).toLocaleString('en-US')} msg/s, gateway CPU ${(sustained.gatewayCpu * 100).toFixed(0)}%, process RSS ${Math.round(sustained.rssMb)} MiB (steps 2, 5, 10, 20, 50, 100, 200 ev/s)`,
        }
      : { name: `fan-out ${clients} clients: highest rate with p99 < 250 ms`, value: 0, unit: 'ev/s', note: 'not even 2 ev/s' },
  );

  if (process.env['BENCH_HTTP_SKIP_CATCHUP'] === '1') return { title: 'HTTP API (issue 3)', rows };
  const cu = await catchUp(ctx.redisUrl, backlog);
  rows.push({
    name: `catch-up: ${cu.events.toLocaleString('en-US')} events, limit=1000, over HTTP`,
    value: cu.httpRate,
    unit: 'events/s',
    baseline: cu.rawRate,
    ratio: cu.httpRate / cu.rawRate,
    note: `${cu.pages} pages, 4 rooms, page p50 ${cu.pageP50.toFixed(0)} ms / p99 ${cu.pageP99.toFixed(0)} ms; baseline: log.read in process`,
  });
  return { title: 'HTTP API (issue 3)', rows };
};

if (process.env[ROLE_ENV] === 'ws-clients') runClients();
