/**
 * The console's API on a big room (issue 25): a room of 100,000 events
 * (BENCH_CONSOLE_EVENTS; 10,000 with BENCH_QUICK) on Redis with one MQTT
 * link, the newest half of its first pages delivered (delivery records) and
 * one retrying. Measured over HTTP, sequentially: the first timeline page
 * with each link's delivery state, against the device API's plain page of
 * the same events in the same run, the two requests alternating so both see
 * the same load (the baseline); a trace by event id; the
 * lag. Goal: first page p99 ≤ 100 ms.
 */
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { draft, startGateway } from './http.js';
import { percentile, type Bench, type BenchRow } from './report.js';

const ROOM = 'bench-console';

/**
 * Two requests measured alternately, `n` times each: both see the same load
 * of a shared machine, so their ratio holds even when the load moves.
 */
async function timedPair(n: number, a: () => Promise<void>, b: () => Promise<void>): Promise<[{ p50: number; p99: number }, { p50: number; p99: number }]> {
  for (let i = 0; i < 5; i++) {
    await a();
    await b();
  }
  const ms: [number[], number[]] = [[], []];
  for (let i = 0; i < n; i++) {
    for (const [j, run] of [a, b].entries()) {
      const t = performance.now();
      await run();
      ms[j]?.push(performance.now() - t);
    }
  }
  return [stats(ms[0]), stats(ms[1])];
}

function stats(ms: number[]): { p50: number; p99: number } {
  ms.sort((x, y) => x - y);
  return { p50: percentile(ms, 50), p99: percentile(ms, 99) };
}

async function timed(n: number, run: () => Promise<void>): Promise<{ p50: number; p99: number }> {
  for (let i = 0; i < 5; i++) await run();
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await run();
    ms.push(performance.now() - t);
  }
  ms.sort((a, b) => a - b);
  return { p50: percentile(ms, 50), p99: percentile(ms, 99) };
}

export const benchConsole: Bench = async ({ redisUrl, quick }) => {
  const total = Number(process.env['BENCH_CONSOLE_EVENTS'] ?? (quick ? 10_000 : 100_000));
  const requests = quick ? 100 : 300;
  const gw = await startGateway(redisUrl, { partitions: 16, name: 'bench-console' });
  const { log } = gw;
  const ADMIN = gw.adminToken;
  try {
    const call = gw.call;
    await call(ADMIN, 'PUT', `/v1/admin/rooms/${ROOM}`, { links: [{ endpoint: 'mqtt', target: 'plant/+device/alert' }] });
    await call(ADMIN, 'POST', '/v1/admin/users', { id: 'reader' });
    await call(ADMIN, 'PUT', `/v1/admin/users/reader/rooms/${ROOM}`);
    const device = ((await call(ADMIN, 'POST', '/v1/admin/devices', { user: 'reader' })) as { token: string }).token;

    const body = 'The pump in building 7 reported a pressure drop; maintenance is on the way, ETA 20 minutes.';
    const ids: string[] = new Array<string>(total);
    let next = 0;
    const fill0 = performance.now();
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < total) {
          const i = next++;
          ids[i] = (await log.append(draft(ROOM, i, body))).eventId;
        }
      }),
    );
    const fillS = (performance.now() - fill0) / 1000;
    // the newest events: every other one delivered (a record with its time), one retrying; the rest pending
    const newest = ids.slice(-500);
    await Promise.all(newest.map((id, i) => (i % 2 === 0 ? log.delivery.recordDelivery(ROOM, id, 'mqtt', {}) : Promise.resolve())));
    const retrying = newest.at(-1) ?? '';
    await log.delivery.noteRetry(ROOM, retrying, 'mqtt', { attempt: 2, nextAt: Date.now() + 1000, error: 'bench', at: Date.now() });

    const limit = 50;
    const [timeline, plain] = await timedPair(
      requests,
      async () => {
        await call(ADMIN, 'GET', `/v1/admin/rooms/${ROOM}/timeline?limit=${limit}`);
      },
      async () => {
        await call(device, 'GET', `/v1/rooms/${ROOM}/messages?dir=b&limit=${limit}`);
      },
    );
    const traceTarget = ids[Math.floor(total / 2)] ?? '';
    const trace = await timed(requests, async () => {
      await call(ADMIN, 'GET', `/v1/admin/trace/${traceTarget}?room=${ROOM}`);
    });
    const lag = await timed(Math.min(100, requests), async () => {
      await call(ADMIN, 'GET', '/v1/admin/lag');
    });
    const rows: BenchRow[] = [
      { name: `room size`, value: total, unit: 'events', note: `appended in ${fillS.toFixed(1)} s` },
      {
        name: `first timeline page (${limit}) with delivery states, p99`,
        value: timeline.p99,
        unit: 'ms',
        baseline: plain.p99,
        ratio: timeline.p99 / plain.p99,
        goal: '≤ 100 ms',
        note: `p50 ${timeline.p50.toFixed(1)} ms; baseline: the device API's page of the same events, measured alternately`,
      },
      { name: 'first timeline page, p50', value: timeline.p50, unit: 'ms', baseline: plain.p50, ratio: timeline.p50 / plain.p50, note: `machine load average ${(loadavg()[0] ?? 0).toFixed(1)} on ${cpus().length} CPUs` },
      { name: 'trace by event id (room given), p99', value: trace.p99, unit: 'ms', note: `p50 ${trace.p50.toFixed(1)} ms` },
      { name: 'lag (16 partitions), p99', value: lag.p99, unit: 'ms', note: `p50 ${lag.p50.toFixed(1)} ms` },
    ];
    return { title: `Console API on a room of ${total.toLocaleString('en-US')} events (Redis, sequential requests)`, rows };
  } finally {
    await gw.close();
  }
};
