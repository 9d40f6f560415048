/**
 * Crash recovery (issue 14): a single replica is killed with SIGKILL (no
 * lease released) and started again; time from the new process's spawn to
 * the first event bridged out (appended to the log → delivered by the
 * adapter). With the same replicaId (a restarted pod keeps its name) the new
 * process takes its dead incarnation's leases at once; the baseline, a
 * replica with another id, has to wait for them to expire (delivery.leaseMs,
 * default 15 s) — which is what every restart cost before replica identities.
 *
 * Matrix (issue 12, point 8): the same crash with a Matrix adapter in
 * application-service mode while the homeserver (the fake, with Synapse's
 * retry backoff) holds a transaction for it: time from the new process's
 * spawn to its AS listener accepting connections, and to the homeserver's
 * pending transaction answered 200. The homeserver retries at once when the
 * new process pings it (Synapse 1.132+); the baselines are a homeserver that
 * waits out its backoff (older Synapse) and another replica id, which waits
 * for the dead process's connection lease before it even listens.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { parse } from 'yaml';
import { parseMatrixConfig, registrationYaml } from '../../adapters/matrix/config.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { message } from '../fixtures/events.js';
import { createFakeHomeserver, type AppServiceRegistration, type FakeHomeserverOptions } from '../harness/fake-homeserver.js';
import { getFreePort } from '../harness/free-port.js';
import { dropPrefix, testPrefix } from '../harness/redis.js';
import { redisRecorder } from '../harness/test-adapter.js';
import type { Bench, BenchRow } from './report.js';

const child = fileURLToPath(new URL('./restart-child.js', import.meta.url));

function startReplica(redisUrl: string, prefix: string, replicaId: string, env: Record<string, string> = {}): { proc: ChildProcess; listening: Promise<number> } {
  const proc = spawn(process.execPath, [child], { env: { ...process.env, ...env, BENCH_REDIS_URL: redisUrl, BENCH_PREFIX: prefix, BENCH_REPLICA_ID: replicaId }, stdio: ['ignore', 'pipe', 'inherit'] });
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
    for (const p of procs.splice(0)) await killHard(p);
    rows.push(...(await matrixRestart(redisUrl, runs)));
  } finally {
    for (const p of procs.splice(0)) await killHard(p);
    await log.close();
    await dropPrefix(redis, prefix);
    await redis.quit();
  }
  return { title: 'Crash recovery: time to bridging after kill -9 (single replica)', rows };
};

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

/** One TCP connect to the loopback port: true when it is accepted. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

interface MatrixRestart {
  /** spawn → the gateway's API listens (Node has loaded the modules, the log answers) */
  readonly apiMs: number;
  /** spawn → the AS listener accepts TCP connections */
  readonly listenerMs: number;
  /** spawn → the homeserver's pending transaction answered 200 */
  readonly acceptedMs: number;
}

/**
 * A gateway with a Matrix appservice adapter against a fake homeserver
 * (`hsOptions`): started as `replicaIds[0]`, then per further id killed
 * with SIGKILL, one Matrix message sent while it is down (the homeserver's
 * push fails and it backs off), and started again as that id.
 */
async function matrixScenario(redisUrl: string, hsOptions: FakeHomeserverOptions, replicaIds: readonly string[]): Promise<MatrixRestart[]> {
  const hs = await createFakeHomeserver({ serverName: 'bench.test', ...hsOptions });
  const prefix = testPrefix('bench-mx-restart');
  const redis = new Redis(redisUrl);
  const procs: ChildProcess[] = [];
  try {
    const alice = hs.registerUser('alice', 'pw');
    const roomId = hs.createRoom(alice.userId, { name: 'Ops' });
    const asPort = await getFreePort();
    const adapter = {
      mode: 'appservice',
      homeserverUrl: hs.url,
      serverName: 'bench.test',
      stopGraceMs: 300,
      appservice: { asToken: 'bench-as-token-0123456789', hsToken: 'bench-hs-token-0123456789', url: `http://127.0.0.1:${asPort}`, listenHost: '127.0.0.1', listenPort: asPort },
    };
    const reg = parse(registrationYaml(parseMatrixConfig(adapter))) as AppServiceRegistration;
    hs.registerAppService(reg);
    const env = { BENCH_MATRIX: JSON.stringify({ adapter, roomId }) };
    const delivered = (body: string) => hs.appServiceTransactions(reg.id).some((t) => t.delivered && JSON.stringify(t.body).includes(body));

    const [firstId, ...restartIds] = replicaIds;
    const first = startReplica(redisUrl, prefix, firstId ?? 'bench-mx-pod-0', env);
    procs.push(first.proc);
    await until(() => Promise.resolve(hs.joinedMembers(roomId).includes(`@${reg.sender_localpart}:bench.test`)), 60_000, 'the Matrix adapter to join its room');
    hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body: 'before the crash' });
    await until(() => Promise.resolve(delivered('before the crash')), 60_000, 'the first Matrix transaction');

    const out: MatrixRestart[] = [];
    for (const [i, replicaId] of restartIds.entries()) {
      for (const p of procs.splice(0)) await killHard(p);
      const body = `while down #${i + 1}`;
      hs.sendAsUser(alice.userId, roomId, 'm.room.message', { msgtype: 'm.text', body });
      const pending = () => hs.appServiceTransactions(reg.id).find((t) => JSON.stringify(t.body).includes(body));
      await until(() => Promise.resolve((pending()?.attempts.length ?? 0) >= 1), 60_000, 'the homeserver to fail pushing to the dead gateway');
      const t0 = performance.now();
      const next = startReplica(redisUrl, prefix, replicaId, env);
      procs.push(next.proc);
      let listenerMs: number | undefined;
      await until(
        async () => {
          if (listenerMs === undefined && (await accepts(asPort))) listenerMs = performance.now() - t0;
          return pending()?.delivered === true;
        },
        120_000,
        `the pending transaction after restarting as ${replicaId}`,
      );
      const acceptedMs = performance.now() - t0;
      out.push({ apiMs: (await next.listening) - t0, listenerMs: listenerMs ?? acceptedMs, acceptedMs });
    }
    return out;
  } finally {
    for (const p of procs.splice(0)) await killHard(p);
    await hs.stop();
    await dropPrefix(redis, prefix);
    await redis.quit();
  }
}

async function matrixRestart(redisUrl: string, runs: number): Promise<BenchRow[]> {
  const same = Array.from({ length: runs }, () => 'bench-mx-pod-0');
  // Synapse 1.132+: a successful ping ends the backoff.
  const pinged = await matrixScenario(redisUrl, {}, ['bench-mx-pod-0', ...same, 'bench-mx-pod-1']);
  const sameId = pinged.slice(0, runs);
  const otherId = pinged.at(-1);
  // Before 1.132 the homeserver retries only when its backoff (2 s, 4 s …) runs out.
  const backoff = await matrixScenario(redisUrl, { pingRetriesTransactions: false }, ['bench-mx-pod-0', ...same]);
  const accepted = median(sameId.map((r) => r.acceptedMs));
  const acceptedOnBackoff = median(backoff.map((r) => r.acceptedMs));
  return [
    { name: 'Matrix AS, kill -9, restart as the same replica: spawn → API listening', value: median(sameId.map((r) => r.apiMs)), unit: 'ms', note: `median of ${runs}; Node loading the modules, the log answering` },
    { name: 'Matrix AS, kill -9, restart as the same replica: spawn → AS listener accepting', value: median(sameId.map((r) => r.listenerMs)), unit: 'ms', goal: '< 1000 ms', note: `median of ${runs}` },
    {
      name: 'Matrix AS, kill -9, restart as the same replica: API listening → AS listener accepting',
      value: median(sameId.map((r) => r.listenerMs - r.apiMs)),
      unit: 'ms',
      note: `median of ${runs}; the lease taken back, the adapter started`,
    },
    {
      name: 'Matrix AS, kill -9, restart as the same replica: spawn → pending transaction accepted (homeserver retries on our ping)',
      value: accepted,
      unit: 'ms',
      baseline: acceptedOnBackoff,
      ratio: accepted / acceptedOnBackoff,
      note: `median of ${runs}; baseline = a homeserver that retries on its backoff only (Synapse before 1.132; 2 s after a fresh failure)`,
    },
    ...(otherId
      ? [{ name: 'Matrix AS, kill -9, another replica takes over: spawn → pending transaction accepted', value: otherId.acceptedMs, unit: 'ms', note: `the connection lease expires first (listener after ${Math.round(otherId.listenerMs)} ms)` }]
      : []),
  ];
}
