/**
 * Redis Cluster (issue 17): append throughput and p50/p99 latency on a
 * 6-node cluster (3 masters, 3 replicas, started here) with waitReplicas 0
 * and 1, against the single Redis of the same run (waitReplicas 0: it has no
 * replica); catch-up read on the cluster against the single Redis.
 */
import { performance } from 'node:perf_hooks';
import type { EventLog } from '../../src/core/ports.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { testPrefix } from '../harness/redis.js';
import { startRedisCluster } from '../harness/redis-cluster.js';
import { benchMessage } from './eventlog.js';
import { percentile, type Bench, type BenchRow } from './report.js';

type Target = { readonly url: string } | { readonly cluster: { readonly nodes: readonly string[] } };

async function openLog(target: Target, rooms: readonly string[], waitReplicas: number): Promise<EventLog> {
  const log = createEventLog({ partitions: 16, log: silentLogger(), redis: { ...target, prefix: testPrefix('bench-cluster'), waitReplicas, waitTimeoutMs: 5_000 }, retention: { roomMaxLen: 0 } });
  for (const id of rooms) await log.rooms.put({ id, links: [] });
  return log;
}

/** appends `total` events from `concurrency` producers; events/s and per-append latencies in ms */
async function appendRun(log: EventLog, rooms: readonly string[], total: number, concurrency: number, offset: number): Promise<{ rate: number; latencies: number[] }> {
  let next = 0;
  const latencies: number[] = [];
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        const i = next++;
        const t0 = performance.now();
        await log.append(benchMessage(rooms[i % rooms.length] ?? 'r0', offset + i));
        latencies.push(performance.now() - t0);
      }
    }),
  );
  latencies.sort((a, b) => a - b);
  return { rate: total / ((performance.now() - start) / 1000), latencies };
}

async function catchUp(log: EventLog, rooms: readonly string[]): Promise<{ rate: number; read: number }> {
  const start = performance.now();
  let since: string | undefined;
  let read = 0;
  for (;;) {
    const page = await log.read(since, { rooms: new Set(rooms), limit: 1000 });
    read += page.events.length;
    since = page.next;
    if (page.events.length === 0) break;
  }
  return { rate: read / ((performance.now() - start) / 1000), read };
}

export const benchCluster: Bench = async ({ redisUrl, quick }) => {
  const total = quick ? 2_000 : 20_000;
  const concurrency = 16;
  const rooms = Array.from({ length: 64 }, (_, i) => `r${i}`);
  const cluster = await startRedisCluster();
  const rows: BenchRow[] = [];
  try {
    const single = await openLog({ url: redisUrl }, rooms, 0);
    const onCluster0 = await openLog({ cluster: { nodes: cluster.nodes } }, rooms, 0);
    const onCluster1 = await openLog({ cluster: { nodes: cluster.nodes } }, rooms, 1);
    try {
      // unmeasured warm-up of each
      for (const log of [single, onCluster0, onCluster1]) await appendRun(log, rooms, 500, concurrency, 1_000_000);
      const base = await appendRun(single, rooms, total, concurrency, 0);
      const c0 = await appendRun(onCluster0, rooms, total, concurrency, 0);
      const c1 = await appendRun(onCluster1, rooms, total, concurrency, 0);
      const note = `${concurrency} producers, 64 rooms, 16 partitions; baseline: one Redis, waitReplicas 0`;
      for (const [label, run] of [['waitReplicas 0', c0], ['waitReplicas 1', c1]] as const) {
        rows.push({ name: `cluster append throughput, ${label}`, value: run.rate, unit: 'events/s', baseline: base.rate, ratio: run.rate / base.rate, note });
        rows.push({ name: `cluster append latency p50, ${label}`, value: percentile(run.latencies, 50) * 1000, unit: 'µs', baseline: percentile(base.latencies, 50) * 1000, ratio: percentile(run.latencies, 50) / percentile(base.latencies, 50) });
        rows.push({ name: `cluster append latency p99, ${label}`, value: percentile(run.latencies, 99) * 1000, unit: 'µs', baseline: percentile(base.latencies, 99) * 1000, ratio: percentile(run.latencies, 99) / percentile(base.latencies, 99) });
      }
      const readBase = await catchUp(single, rooms);
      const readCluster = await catchUp(onCluster0, rooms);
      rows.push({ name: 'cluster catch-up read', value: readCluster.rate, unit: 'events/s', baseline: readBase.rate, ratio: readCluster.rate / readBase.rate, note: `read ${readCluster.read} (baseline ${readBase.read}), pages of 1,000` });
    } finally {
      await Promise.all([single.close(), onCluster0.close(), onCluster1.close()]);
    }
  } finally {
    await cluster.stop();
  }
  return { title: 'Redis Cluster (6 nodes: 3 masters + 3 replicas) vs one Redis', rows };
};
