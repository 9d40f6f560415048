/**
 * Crash recovery (issue 14): a single replica is killed with SIGKILL (no
 * lease released) and started again; time from the new process's spawn to
 * the first event bridged out (appended to the log → delivered by the
 * adapter). With the same replicaId (a restarted pod keeps its name) the new
 * process takes its dead incarnation's leases at once; the baseline, a
 * replica with another id, has to wait for them to expire (delivery.leaseMs,
 * default 15 s) — which is what every restart cost before replica identities.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { dropPrefix, testPrefix } from '../harness/redis.js';
import { redisRecorder } from '../harness/test-adapter.js';
import type { Bench, BenchRow } from './report.js';

const child = fileURLToPath(new URL('./restart-child.js', import.meta.url));

function startReplica(redisUrl: string, prefix: string, replicaId: string): { proc: ChildProcess; listening: Promise<number> } {
  const proc = spawn(process.execPath, [child], { env: { ...process.env, BENCH_REDIS_URL: redisUrl, BENCH_PREFIX: prefix, BENCH_REPLICA_ID: replicaId }, stdio: ['ignore', 'pipe', 'inherit'] });
  const listening = new Promise<number>((resolve, reject) => {
    proc.stdout?.on('data', (c: Buffer) => {
      if (c.toString().includes('listening')) resolve(performance.now());
    });
    proc.once('exit', (code) => reject(new Error(`replica exited (${code}) before listening`)));
  });
  return { proc, listening };
}

async function killHard(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.kill('SIGKILL');
  await exited;
}

async function until(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const benchRestart: Bench = async ({ redisUrl, quick }) => {
  const rows: BenchRow[] = [];
  const prefix = testPrefix('bench-restart');
  const redis = new Redis(redisUrl);
  const recorder = redisRecorder(redis, prefix);
  const log = createEventLog({ partitions: 4, log: silentLogger(), redis: { url: redisUrl, prefix } });
  await log.rooms.put({ id: 'plant', links: [{ endpoint: 'remote', target: 'plant@remote' }] });
  const delivered = async (eventId: string) => (await recorder.all()).some((d) => d.eventId === eventId);
  const procs: ChildProcess[] = [];
  try {
    /** kills the running replica with SIGKILL, starts `replicaId`, and times spawn → listening → first bridged event */
    const restart = async (replicaId: string, label: string) => {
      for (const p of procs.splice(0)) await killHard(p);
      const t0 = performance.now();
      const next = startReplica(redisUrl, prefix, replicaId);
      procs.push(next.proc);
      const { eventId } = await log.append(message('plant', `after the crash (${label})`));
      await until(() => delivered(eventId), 120_000, `the first delivery after restarting as ${replicaId}`);
      return { listeningMs: (await next.listening) - t0, bridgingMs: performance.now() - t0 };
    };

    // warm-up: a replica bridging, which then crashes
    const first = startReplica(redisUrl, prefix, 'bench-pod-0');
    procs.push(first.proc);
    // the first start creates the consumer groups (at the end of the feed): append after it
    await first.listening;
    const { eventId } = await log.append(message('plant', 'before the crash'));
    await until(() => delivered(eventId), 60_000, 'the first replica to bridge');

    const runs = quick ? 1 : 3;
    const same: Array<{ listeningMs: number; bridgingMs: number }> = [];
    for (let i = 0; i < runs; i++) same.push(await restart('bench-pod-0', `same id #${i + 1}`));
    // Baseline: the dead replica's leases held until they expire (another identity, as every restart was before).
    const other = await restart('bench-pod-1', 'another id');
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
    const bridging = median(same.map((r) => r.bridgingMs));
    rows.push({ name: 'kill -9, restart as the same replica: spawn → API listening', value: median(same.map((r) => r.listeningMs)), unit: 'ms', note: `median of ${runs}` });
    rows.push({
      name: 'kill -9, restart as the same replica: spawn → first event bridged',
      value: bridging,
      unit: 'ms',
      baseline: other.bridgingMs,
      ratio: bridging / other.bridgingMs,
      goal: '< 2000 ms',
      note: `median of ${runs}; baseline = another replica id, waits out the dead lease (delivery.leaseMs 15 s)`,
    });
    rows.push({ name: 'kill -9, another replica takes over: spawn → first event bridged', value: other.bridgingMs, unit: 'ms', note: 'the lease expires first' });
  } finally {
    for (const p of procs.splice(0)) await killHard(p);
    await log.close();
    await dropPrefix(redis, prefix);
    await redis.quit();
  }
  return { title: 'Crash recovery: time to bridging after kill -9 (single replica)', rows };
};
