/**
 * Redis Sentinel for tests: a master and one replica (`redis-server`
 * --replicaof) and three sentinels (`redis-server --sentinel`, quorum 2,
 * down-after 1 s) on free loopback ports in a temp dir; ready once every
 * sentinel names the master, knows the replica and the other sentinels;
 * stopped afterwards.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findExecutable, getFreePort, isRunning, killOnExit, terminate, waitFor, waitForPort, LOOPBACK } from './free-port.js';
import { redisCommand } from './redis.js';

export const SENTINEL_MASTER_NAME = 'sgmaster';

export interface SentinelDataNode {
  readonly port: number;
  readonly alive: boolean;
  /** SIGKILL: gone at once, as in a crash */
  kill(): Promise<void>;
  /** starts the killed server again on its port (empty: no persistence); the sentinels make it a replica of the current master */
  restart(): Promise<void>;
}

export interface TestRedisSentinel {
  /** the sentinels, host:port */
  readonly sentinels: readonly string[];
  readonly name: string;
  readonly sentinelPassword?: string;
  /** the data servers' password, when they have one */
  readonly dataPassword?: string;
  /** the master and the replica as started (the roles change with a failover) */
  readonly servers: readonly SentinelDataNode[];
  /** the port of the master the sentinels name now */
  masterPort(): Promise<number>;
  stop(): Promise<void>;
}

async function spawnServer(bin: string, args: string[], port: number, what: string): Promise<ChildProcess> {
  const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  killOnExit(child);
  let exited: Error | undefined;
  child.once('exit', (code) => (exited = new Error(`${what} (:${port}) exited with code ${code}`)));
  await waitForPort(LOOPBACK, port, { timeoutMs: 15_000, failFast: () => exited });
  return child;
}

export interface SentinelOptions {
  /** requirepass of the master and the replica (the sentinels and the replica authenticate with it) */
  readonly dataPassword?: string;
  /** requirepass of the sentinels themselves */
  readonly sentinelPassword?: string;
}

async function sentinelMaster(port: number, auth: string | undefined): Promise<number | undefined> {
  try {
    const reply = (await redisCommand(port, auth, 'SENTINEL', 'get-master-addr-by-name', SENTINEL_MASTER_NAME)) as [string, string] | null;
    return reply ? Number(reply[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Every sentinel names `master`, sees a replica of it with a live link, and knows the other sentinels. */
async function settled(sentinelPorts: readonly number[], master: number | undefined, auth: string | undefined): Promise<boolean> {
  try {
    for (const port of sentinelPorts) {
      const named = await sentinelMaster(port, auth);
      if (named === undefined || (master !== undefined && named !== master)) return false;
      const replicas = (await redisCommand(port, auth, 'SENTINEL', 'replicas', SENTINEL_MASTER_NAME)) as string[][];
      const linked = replicas.some((fields) => {
        const flags = fields[fields.indexOf('flags') + 1] ?? '';
        return !/s_down|o_down|disconnected/.test(flags) && fields[fields.indexOf('master-link-status') + 1] === 'ok';
      });
      if (!linked) return false;
      const others = (await redisCommand(port, auth, 'SENTINEL', 'sentinels', SENTINEL_MASTER_NAME)) as unknown[];
      if (others.length !== sentinelPorts.length - 1) return false;
    }
    return true;
  } catch {
    return false;
  }
}

export async function startRedisSentinel(options: SentinelOptions = {}): Promise<TestRedisSentinel> {
  const auth = options.sentinelPassword;
  const bin = await findExecutable('redis-server');
  if (!bin) throw new Error('redis-server not found: install the Debian package `redis-server` (it runs as a sentinel with --sentinel)');
  const dir = await mkdtemp(join(tmpdir(), 'syncgate-redis-sentinel-'));
  const children: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(children.map((c) => terminate(c, 5_000)));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const masterPort = await getFreePort();
    const replicaPort = await getFreePort();
    const dataArgs = (port: number, replicaOf?: number) => [
      '--port', String(port), '--bind', LOOPBACK, '--protected-mode', 'no', '--daemonize', 'no',
      '--save', '', '--appendonly', 'no', '--dir', dir, '--dbfilename', `dump-${port}.rdb`,
      ...(replicaOf !== undefined ? ['--replicaof', LOOPBACK, String(replicaOf)] : []),
      ...(options.dataPassword !== undefined ? ['--requirepass', options.dataPassword, '--masterauth', options.dataPassword] : []),
    ];
    const servers: SentinelDataNode[] = [];
    for (const [port, replicaOf] of [[masterPort, undefined], [replicaPort, masterPort]] as const) {
      let child = await spawnServer(bin, dataArgs(port, replicaOf), port, 'redis-server');
      children.push(child);
      servers.push({
        port,
        get alive() {
          return isRunning(child);
        },
        kill: async () => {
          if (!isRunning(child)) return;
          const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
          child.kill('SIGKILL');
          await exited;
        },
        // as a master of nothing: the sentinels see a stale master come back and turn it into a replica
        restart: async () => {
          child = await spawnServer(bin, dataArgs(port), port, 'redis-server');
          children.push(child);
        },
      });
    }
    const sentinelPorts: number[] = [];
    for (let i = 0; i < 3; i++) {
      const port = await getFreePort();
      const conf = join(dir, `sentinel-${port}.conf`);
      await writeFile(
        conf,
        [
          `port ${port}`,
          `bind ${LOOPBACK}`,
          'protected-mode no',
          'daemonize no',
          `dir ${dir}`,
          `sentinel monitor ${SENTINEL_MASTER_NAME} ${LOOPBACK} ${masterPort} 2`,
          `sentinel down-after-milliseconds ${SENTINEL_MASTER_NAME} 1000`,
          `sentinel failover-timeout ${SENTINEL_MASTER_NAME} 5000`,
          `sentinel parallel-syncs ${SENTINEL_MASTER_NAME} 1`,
          ...(options.dataPassword !== undefined ? [`sentinel auth-pass ${SENTINEL_MASTER_NAME} ${options.dataPassword}`] : []),
          // the sentinels talk to each other with the same password
          ...(options.sentinelPassword !== undefined ? [`requirepass ${options.sentinelPassword}`, `sentinel sentinel-pass ${options.sentinelPassword}`] : []),
          '',
        ].join('\n'),
      );
      children.push(await spawnServer(bin, [conf, '--sentinel'], port, 'redis-sentinel'));
      sentinelPorts.push(port);
    }
    await waitFor(() => settled(sentinelPorts, masterPort, auth), { timeoutMs: 60_000, intervalMs: 200, what: 'the sentinels to know the master, its replica and each other' });
    return {
      sentinels: sentinelPorts.map((p) => `${LOOPBACK}:${p}`),
      name: SENTINEL_MASTER_NAME,
      ...(auth !== undefined ? { sentinelPassword: auth } : {}),
      ...(options.dataPassword !== undefined ? { dataPassword: options.dataPassword } : {}),
      servers,
      masterPort: async () => {
        const named = await sentinelMaster(sentinelPorts[0] ?? 0, auth);
        if (named === undefined) throw new Error('the sentinels name no master');
        return named;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Kills (-9) the current master, waits until the sentinels have promoted the
 * replica, starts the killed server again and waits until it is the new
 * master's replica with a live link. Returns the killed port.
 */
export async function sentinelFailover(s: TestRedisSentinel): Promise<number> {
  const old = await s.masterPort();
  const victim = s.servers.find((n) => n.port === old);
  if (!victim) throw new Error(`the master :${old} is not a server this harness started`);
  await victim.kill();
  const ports = s.sentinels.map((n) => Number(n.slice(n.lastIndexOf(':') + 1)));
  await waitFor(async () => (await Promise.all(ports.map((p) => sentinelMaster(p, s.sentinelPassword)))).every((m) => m !== undefined && m !== old), {
    timeoutMs: 60_000,
    intervalMs: 200,
    what: `the sentinels to promote a replica of :${old}`,
  });
  await victim.restart();
  const promoted = await s.masterPort();
  // Sentinel turns a stale master that comes back into a replica on its own schedule (it reads an
  // instance's INFO every 10 s): ~20 s here, past 60 s once and past 180 s once in whole suite runs
  // under stress-ng --cpu 2 (the second on e5c5929). That is Redis' timing, not the gateway's, and
  // this test is about the gateway: the harness does what Sentinel would do (REPLICAOF the promoted
  // master), so what is left to wait for is the full sync and the sentinels reading the link as up.
  await redisCommand(old, s.dataPassword, 'REPLICAOF', LOOPBACK, String(promoted));
  try {
    await waitFor(() => settled(ports, promoted, s.sentinelPassword), { timeoutMs: 180_000, intervalMs: 200, what: `:${old} to come back as a replica of :${promoted}` });
  } catch (err) {
    // what each side saw, for the next time it does not settle
    const seen = await Promise.all([
      redisCommand(old, s.dataPassword, 'INFO', 'replication').catch((e: unknown) => String(e)),
      ...ports.map((p) => redisCommand(p, s.sentinelPassword, 'SENTINEL', 'replicas', SENTINEL_MASTER_NAME).catch((e: unknown) => String(e))),
    ]);
    throw new Error(`${String(err)}; the restarted server and the sentinels' replicas: ${JSON.stringify(seen)}`);
  }
  return old;
}
