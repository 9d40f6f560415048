/**
 * Live fan-out benchmark (issue 19, points 2 and 3): N WebSocket clients on
 * one server while events are published at a fixed rate, against a raw
 * broadcast baseline measured in the same run.
 *
 * Three processes, so that each one's CPU and RSS are its own:
 * - this one orchestrates;
 * - a server child: either our gateway (events appended to the Redis log at
 *   the rate, delivered over /v1/stream) or the baseline — a plain `ws`
 *   server that builds each event's frame once and sends the same bytes to
 *   every socket at the same rate (skipping a socket that holds more than
 *   64 KiB, as a plain broadcast does, so that its memory stays bounded);
 * - a clients child: the N sockets; latency is publish time → receive time
 *   on the machine's wall clock (sub-millisecond in both processes).
 *
 * Per client count: a ladder of rates (each a short run) up to the first rate
 * where p99 ≥ 250 ms or a client misses an event, on the same connections;
 * then an overload run at BENCH_HTTP_RATE (500 ev/s) for deliveries/s and RSS.
 * Then, once, every client of the 5,000 slow (its socket paused): the
 * gateway's RSS must stay bounded (it closes them with their cursor).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import WebSocket, { WebSocketServer } from 'ws';
import type { AddressInfo } from 'node:net';
import { draft, startGateway, type Gateway } from './http.js';

const ROLE_ENV = 'SYNCGATE_BENCH_ROLE';
const ROOM = 'fanout';
/** what the raw broadcast lets a socket hold before it skips it */
const BROADCAST_HOLD_BYTES = 64 * 1024;

/** wall-clock milliseconds with sub-millisecond resolution, comparable across processes */
const wallNow = () => performance.timeOrigin + performance.now();

export type ServerKind = 'gateway' | 'broadcast';

type ToClients =
  | { type: 'connect'; wsUrl: string; clients: number; slow: boolean }
  | { type: 'arm'; step: number }
  | { type: 'finish'; step: number; events: number; drainMs: number }
  | { type: 'resume'; waitMs: number };
type FromClients =
  | { type: 'connected'; ok: number; failed: number; firstError?: string; ms: number }
  | { type: 'armed' }
  | { type: 'result'; p50: number; p99: number; max: number; delivered: number; complete: number; open: number; lastAt: number; cpuMs: number; wallMs: number }
  | { type: 'resumed'; open: number; slowClosed: number; otherClosed: number };

type ToServer = { type: 'start'; kind: ServerKind; redisUrl: string } | { type: 'run'; step: number; rate: number; events: number } | { type: 'stats' };
type FromServer =
  | { type: 'listening'; wsUrl: string }
  | { type: 'sent'; startedAt: number; skipped: number }
  | { type: 'stats'; rssMb: number; cpuMs: number; elapsedMs: number; loopP99: number; tailConnections: number; slowClosed: number; liveClients: number };

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

/**
 * The body of the bench's events: `b:<step>:<seq>:<due time>`. The due time is
 * when the fixed rate schedules the event, not when the publisher got to it: a
 * server too busy to keep its schedule shows it as latency, as a client would.
 */
export function stampBody(step: number, seq: number, due: number): string {
  return `b:${step}:${seq}:${due}`;
}

/** Reads step and publish time after the mark without decoding the frame: the clients must cost less than the server. */
function stampOf(frame: Buffer): { step: number; t0: number } | undefined {
  const at = frame.indexOf(BODY_MARK);
  if (at < 0) return undefined;
  let i = at + BODY_MARK.length;
  let step = 0;
  for (; i < frame.length && frame[i] !== 0x3a; i++) step = step * 10 + ((frame[i] ?? 0x30) - 0x30);
  i++;
  while (i < frame.length && frame[i] !== 0x3a) i++; // the sequence number
  let j = ++i;
  while (j < frame.length && frame[j] !== 0x22) j++;
  return { step, t0: Number(frame.toString('latin1', i, j)) };
}

// --- the clients child

function runClients(): void {
  let hist = new Histogram();
  let step = -1;
  let lastAt = 0;
  let cpu0 = process.cpuUsage();
  let armedAt = performance.now();
  let received = new Uint32Array(0);
  const sockets: WebSocket[] = [];
  const open = new Set<number>();
  let slowClosed = 0;
  let otherClosed = 0;
  const send = (m: FromClients) => process.send?.(m);

  process.on('message', (m: ToClients) => {
    switch (m.type) {
      case 'connect':
        void (async () => {
          const started = performance.now();
          let ok = 0;
          let failed = 0;
          let firstError: string | undefined;
          received = new Uint32Array(m.clients);
          const BATCH = 250;
          for (let start = 0; start < m.clients; start += BATCH) {
            await Promise.all(
              Array.from({ length: Math.min(BATCH, m.clients - start) }, (_, k) => {
                const index = start + k;
                return new Promise<void>((resolve) => {
                  const ws = new WebSocket(m.wsUrl, { perMessageDeflate: false });
                  let ready = false;
                  ws.on('message', (data: Buffer) => {
                    if (!ready) {
                      ready = true;
                      ok++;
                      open.add(index);
                      if (m.slow) ws.pause();
                      resolve();
                      return;
                    }
                    const stamp = stampOf(data);
                    if (stamp !== undefined && stamp.step === step) {
                      const now = wallNow();
                      hist.add(now - stamp.t0);
                      lastAt = now;
                      received[index] = (received[index] ?? 0) + 1;
                    }
                  });
                  ws.on('close', (code) => {
                    if (!ready) return;
                    open.delete(index);
                    if (code === 4029) slowClosed++;
                    else otherClosed++;
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
        break;
      case 'arm':
        step = m.step;
        hist = new Histogram();
        lastAt = 0;
        received.fill(0);
        cpu0 = process.cpuUsage();
        armedAt = performance.now();
        send({ type: 'armed' });
        break;
      case 'finish':
        void (async () => {
          const deadline = Date.now() + m.drainMs;
          const complete = () => [...open].filter((i) => (received[i] ?? 0) >= m.events).length;
          while (complete() < open.size && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
          const cpu = process.cpuUsage(cpu0);
          send({
            type: 'result',
            p50: hist.percentile(50),
            p99: hist.percentile(99),
            max: hist.max,
            delivered: hist.count,
            complete: complete(),
            open: open.size,
            lastAt,
            cpuMs: (cpu.user + cpu.system) / 1000,
            wallMs: performance.now() - armedAt,
          });
        })();
        break;
      case 'resume':
        void (async () => {
          for (const ws of sockets) ws.resume();
          const deadline = Date.now() + m.waitMs;
          while (open.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
          send({ type: 'resumed', open: open.size, slowClosed, otherClosed });
        })();
        break;
    }
  });
  process.on('disconnect', () => {
    for (const ws of sockets) ws.terminate();
    setTimeout(() => process.exit(0), 100).unref();
  });
}

// --- the server child: our gateway, or the raw broadcast

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

interface Publisher {
  readonly wsUrl: string;
  publish(step: number, seq: number, due: number): Promise<unknown> | undefined;
  /** sockets skipped by the last publish (broadcast only) */
  skipped(): number;
  probe(): Promise<{ tailConnections: number; slowClosed: number; liveClients: number }>;
  close(): Promise<void>;
}

async function gatewayPublisher(redisUrl: string): Promise<Publisher> {
  const gw: Gateway = await startGateway(redisUrl);
  const token = await gw.token('fan', [ROOM]);
  const since = await gw.log.head();
  const metric = (text: string, name: string, label?: string) =>
    text
      .split('\n')
      .filter((l) => l.startsWith(name) && (!label || l.includes(label)))
      .reduce((sum, l) => sum + Number(l.split(' ').at(-1) ?? 0), 0);
  return {
    wsUrl: `${gw.url.replace(/^http/, 'ws')}/v1/stream?since=${since}&access_token=${token}`,
    publish: (step, seq, due) => gw.log.append(draft(ROOM, seq, stampBody(step, seq, due))),
    skipped: () => 0,
    probe: async () => {
      const text = await (await fetch(`${gw.url}/metrics`)).text();
      return {
        tailConnections: await redisTailConnections(redisUrl, gw.prefix),
        slowClosed: metric(text, 'syncgate_http_live_closed_total', 'reason="slow"'),
        liveClients: metric(text, 'syncgate_http_live_clients'),
      };
    },
    close: () => gw.close(),
  };
}

async function broadcastPublisher(): Promise<Publisher> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 4096 });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  const sample = draft(ROOM, 0, '');
  const cursor = 'AhAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
  wss.on('connection', (ws) => ws.send(`{"type":"ready","next":"${cursor}"}`));
  let skipped = 0;
  return {
    wsUrl: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`,
    publish: (step, seq, due) => {
      // The same shape and size as our frames, built once per event.
      const { idem: _idem, ...view } = { ...sample, content: { body: stampBody(step, seq, due) }, ts: { received: Date.now() } };
      const frame = Buffer.from(`{"type":"event","next":"${cursor}","event":${JSON.stringify({ ...view, eventId: '0f01JD00000000000000', cursor })}}`);
      skipped = 0;
      for (const ws of wss.clients) {
        if (ws.bufferedAmount > BROADCAST_HOLD_BYTES) skipped++;
        else ws.send(frame, { binary: false });
      }
      return undefined;
    },
    skipped: () => skipped,
    probe: async () => ({ tailConnections: 0, slowClosed: 0, liveClients: wss.clients.size }),
    close: async () => {
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}

function runServer(): void {
  let pub: Publisher | undefined;
  let redisUrl = '';
  let rss = 0;
  let cpu0 = process.cpuUsage();
  let t0 = performance.now();
  const loop = monitorEventLoopDelay({ resolution: 10 });
  const sampler = setInterval(() => (rss = Math.max(rss, process.memoryUsage().rss)), 100);
  const send = (m: FromServer) => process.send?.(m);
  process.on('message', (m: ToServer) => {
    void (async () => {
      switch (m.type) {
        case 'start':
          redisUrl = m.redisUrl;
          pub = m.kind === 'gateway' ? await gatewayPublisher(redisUrl) : await broadcastPublisher();
          send({ type: 'listening', wsUrl: pub.wsUrl });
          break;
        case 'run': {
          if (!pub) throw new Error('not started');
          rss = process.memoryUsage().rss;
          cpu0 = process.cpuUsage();
          loop.reset();
          loop.enable();
          t0 = performance.now();
          const startedAt = wallNow();
          const inFlight = new Set<Promise<unknown>>();
          let skipped = 0;
          for (let i = 0; i < m.events; ) {
            // Fixed rate by the clock: publish what is due, then wait a tick.
            const due = Math.min(m.events, Math.floor(((performance.now() - t0) / 1000) * m.rate) + 1);
            for (; i < due; i++) {
              const p = pub.publish(m.step, i, startedAt + (i * 1000) / m.rate);
              skipped += pub.skipped();
              if (p) {
                const tracked: Promise<unknown> = p.finally(() => inFlight.delete(tracked));
                inFlight.add(tracked);
              }
            }
            await new Promise((r) => setTimeout(r, 1));
          }
          await Promise.all(inFlight);
          send({ type: 'sent', startedAt, skipped });
          break;
        }
        case 'stats': {
          if (!pub) throw new Error('not started');
          loop.disable();
          const cpu = process.cpuUsage(cpu0);
          const probe = await pub.probe();
          send({ type: 'stats', rssMb: rss / 2 ** 20, cpuMs: (cpu.user + cpu.system) / 1000, elapsedMs: performance.now() - t0, loopP99: loop.percentile(99) / 1e6, ...probe });
          break;
        }
      }
    })().catch((err: unknown) => {
      process.stderr.write(`bench server failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    });
  });
  process.on('disconnect', () => {
    clearInterval(sampler);
    void (pub?.close() ?? Promise.resolve()).finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 5000).unref();
  });
}

// --- the orchestrator

function nextMessage<M extends { type: string }, T extends M['type']>(child: ChildProcess, type: T, timeoutMs: number): Promise<Extract<M, { type: T }>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the child process sent no ${type} within ${timeoutMs} ms`)), timeoutMs);
    const onMessage = (m: M) => {
      if (m.type !== type) return;
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      resolve(m as Extract<M, { type: T }>);
    };
    const onExit = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`the child process exited (${code}) before ${type}`));
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

function spawnRole(role: string): ChildProcess {
  // BENCH_FANOUT_PROF=dir: a CPU profile of each server process, for finding what a delivery costs.
  const prof = process.env['BENCH_FANOUT_PROF'];
  return fork(fileURLToPath(import.meta.url), [], {
    execArgv: prof && role === 'fanout-server' ? ['--cpu-prof', '--cpu-prof-dir', prof] : [],
    env: { ...process.env, [ROLE_ENV]: role },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.disconnect();
  const timer = setTimeout(() => child.kill('SIGKILL'), 8000);
  await exited;
  clearTimeout(timer);
}

export interface FanOutRun {
  readonly rate: number;
  readonly events: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly delivered: number;
  readonly deliveredPerSec: number;
  readonly complete: number;
  readonly open: number;
  readonly skipped: number;
  readonly rssMb: number;
  readonly serverCpu: number;
  /** server CPU time per delivered message: what a delivery costs, whatever else the machine runs */
  readonly cpuPerDeliveryUs: number;
  readonly clientCpu: number;
  readonly loopDelayP99: number;
  readonly tailConnections: number;
  readonly slowClosed: number;
}

export interface FanOutSession {
  readonly connected: number;
  readonly connectMs: number;
  readonly firstError?: string;
  run(rate: number, seconds: number, drainMs: number): Promise<FanOutRun>;
  /** slow clients: let them read again and wait for the server's closes */
  resume(waitMs: number): Promise<{ open: number; slowClosed: number; otherClosed: number }>;
  close(): Promise<void>;
}

/** Starts a server of `kind` and `clients` sockets on it. */
export async function openFanOut(kind: ServerKind, redisUrl: string, clients: number, slow = false): Promise<FanOutSession> {
  const server = spawnRole('fanout-server');
  const client = spawnRole('fanout-clients');
  try {
    const listening = nextMessage<FromServer, 'listening'>(server, 'listening', 60_000);
    server.send({ type: 'start', kind, redisUrl } satisfies ToServer);
    const { wsUrl } = await listening;
    const connected = nextMessage<FromClients, 'connected'>(client, 'connected', 300_000);
    client.send({ type: 'connect', wsUrl, clients, slow } satisfies ToClients);
    const c = await connected;
    let step = 0;
    return {
      connected: c.ok,
      connectMs: c.ms,
      ...(c.firstError ? { firstError: c.firstError } : {}),
      run: async (rate, seconds, drainMs) => {
        step++;
        const armed = nextMessage<FromClients, 'armed'>(client, 'armed', 30_000);
        client.send({ type: 'arm', step } satisfies ToClients);
        await armed;
        const events = Math.max(1, Math.round(rate * seconds));
        const sent = nextMessage<FromServer, 'sent'>(server, 'sent', seconds * 1000 + 300_000);
        server.send({ type: 'run', step, rate, events } satisfies ToServer);
        const s = await sent;
        const result = nextMessage<FromClients, 'result'>(client, 'result', drainMs + 60_000);
        client.send({ type: 'finish', step, events, drainMs } satisfies ToClients);
        const r = await result;
        const stats = nextMessage<FromServer, 'stats'>(server, 'stats', 60_000);
        server.send({ type: 'stats' } satisfies ToServer);
        const st = await stats;
        const window = Math.max(1, (r.lastAt || wallNow()) - s.startedAt) / 1000;
        return {
          rate,
          events,
          p50: r.p50,
          p99: r.p99,
          max: r.max,
          delivered: r.delivered,
          deliveredPerSec: r.delivered / window,
          complete: r.complete,
          open: r.open,
          skipped: s.skipped,
          rssMb: st.rssMb,
          serverCpu: st.cpuMs / st.elapsedMs,
          cpuPerDeliveryUs: r.delivered > 0 ? (st.cpuMs * 1000) / r.delivered : Number.NaN,
          clientCpu: r.cpuMs / r.wallMs,
          loopDelayP99: st.loopP99,
          tailConnections: st.tailConnections,
          slowClosed: st.slowClosed,
        };
      },
      resume: async (waitMs) => {
        // The clients' process answers after its own wait, but first reads what 5,000 resumed sockets
        // had queued: under full CPU load (stress-ng beside it) that took over a minute, and the
        // bench failed on a margin of 60 s. The margin only bounds a hung child.
        const resumed = nextMessage<FromClients, 'resumed'>(client, 'resumed', waitMs + 300_000);
        client.send({ type: 'resume', waitMs } satisfies ToClients);
        const r = await resumed;
        return { open: r.open, slowClosed: r.slowClosed, otherClosed: r.otherClosed };
      },
      close: async () => {
        await Promise.all([stopChild(client), stopChild(server)]);
      },
    };
  } catch (err) {
    await Promise.all([stopChild(client), stopChild(server)]);
    throw err;
  }
}

/** A run passes when every open client got every event and p99 stayed under 250 ms. */
export function sustained(run: FanOutRun): boolean {
  return run.open > 0 && run.complete >= run.open && run.p99 < 250;
}

const role = process.env[ROLE_ENV];
if (role === 'fanout-clients') runClients();
else if (role === 'fanout-server') runServer();
