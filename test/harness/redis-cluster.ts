/**
 * A Redis Cluster for tests: REDIS_CLUSTER_NODES (comma-separated host:port)
 * when set, else 6 `redis-server --cluster-enabled yes` (3 masters, 3
 * replicas) on free loopback ports in a temp dir, joined with
 * `redis-cli --cluster create … --cluster-replicas 1 --cluster-yes`, ready
 * once every node reports cluster_state:ok with 3 masters and linked
 * replicas; stopped afterwards.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { findExecutable, getFreePort, isRunning, killOnExit, terminate, waitFor, waitForPort, LOOPBACK } from './free-port.js';
import { redisCommand } from './redis.js';

const run = promisify(execFile);

export interface ClusterNode {
  readonly port: number;
  /** SIGKILL: the node is gone at once, as in a crash */
  kill(): Promise<void>;
  /** SIGSTOP / SIGCONT: the node stays connected but answers nothing (a stalled replica) */
  pause(): void;
  resume(): void;
  /** starts the killed node again on its ports with its cluster config: it rejoins (a failed-over master comes back as a replica) */
  restart(): Promise<void>;
  readonly alive: boolean;
}

export interface TestRedisCluster {
  /** seed list host:port */
  readonly nodes: readonly string[];
  /** true when this harness started the servers (so a test may kill one) */
  readonly owned: boolean;
  /** the started nodes (empty when given by REDIS_CLUSTER_NODES) */
  readonly servers: readonly ClusterNode[];
  stop(): Promise<void>;
}

/** One-shot command on one node; the connection is closed afterwards. */
export async function nodeCommand(port: number, ...args: string[]): Promise<unknown> {
  return redisCommand(port, undefined, ...args);
}

/** Every given node says cluster_state:ok and sees `masters` masters with slots and `replicas` linked replicas. */
export async function clusterHealthy(ports: readonly number[], masters: number, replicas: number): Promise<boolean> {
  try {
    for (const port of ports) {
      const info = String(await nodeCommand(port, 'CLUSTER', 'INFO'));
      if (!/^cluster_state:ok/m.test(info)) return false;
      const lines = String(await nodeCommand(port, 'CLUSTER', 'NODES')).trim().split('\n');
      const live = lines.map((l) => l.split(' ')).filter((f) => !(f[2] ?? '').includes('fail'));
      if (live.filter((f) => (f[2] ?? '').includes('master') && f.length >= 9).length !== masters) return false;
      if (live.filter((f) => (f[2] ?? '').includes('slave')).length !== replicas) return false;
      const role = String(await nodeCommand(port, 'INFO', 'replication'));
      if (/^role:slave/m.test(role) && !/^master_link_status:up/m.test(role)) return false;
    }
    return true;
  } catch {
    return false;
  }
}

export interface RedisClusterOptions {
  /**
   * `cluster-require-full-coverage` (default yes, as Redis ships): with false
   * the nodes keep serving their slots while a shard has no master, so a test
   * can lose one shard entirely and check the others keep working.
   */
  readonly requireFullCoverage?: boolean;
}

async function spawnNode(bin: string, dir: string, port: number, busPort: number, options: RedisClusterOptions): Promise<ChildProcess> {
  await mkdir(dir, { recursive: true });
  const child = spawn(
    bin,
    [
      '--port', String(port), '--bind', LOOPBACK, '--protected-mode', 'no', '--daemonize', 'no',
      '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'), '--cluster-port', String(busPort),
      '--cluster-node-timeout', '2000', '--save', '', '--appendonly', 'no', '--dir', dir,
      '--cluster-require-full-coverage', options.requireFullCoverage === false ? 'no' : 'yes',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  killOnExit(child);
  let exited: Error | undefined;
  child.once('exit', (code) => (exited = new Error(`redis-server (cluster node :${port}) exited with code ${code}`)));
  await waitForPort(LOOPBACK, port, { timeoutMs: 15_000, failFast: () => exited });
  return child;
}

export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<TestRedisCluster> {
  const fromEnv = process.env['REDIS_CLUSTER_NODES'];
  // a cluster from the environment is shared: a test that needs its own settings (and kills nodes) starts its own
  if (fromEnv && options.requireFullCoverage === undefined) {
    return { nodes: fromEnv.split(',').map((n) => n.trim()).filter(Boolean), owned: false, servers: [], stop: async () => undefined };
  }
  const bin = await findExecutable('redis-server');
  const cli = await findExecutable('redis-cli');
  if (!bin || !cli) throw new Error('redis-server / redis-cli not found: install the Debian package `redis-server` or set REDIS_CLUSTER_NODES');
  const dir = await mkdtemp(join(tmpdir(), 'syncgate-redis-cluster-'));
  const children: ChildProcess[] = [];
  const servers: ClusterNode[] = [];
  const stop = async () => {
    await Promise.all(children.map((c) => terminate(c, 5_000)));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const used = new Set<number>();
    const pick = async () => {
      for (;;) {
        const p = await getFreePort();
        if (p < 55_536 && !used.has(p) && !used.has(p + 10_000)) {
          used.add(p);
          return p;
        }
      }
    };
    for (let i = 0; i < 6; i++) {
      const port = await pick();
      const bus = await pick();
      let child = await spawnNode(bin, join(dir, String(port)), port, bus, options);
      children.push(child);
      servers.push({
        port,
        get alive() {
          return isRunning(child);
        },
        pause: () => void child.kill('SIGSTOP'),
        resume: () => void child.kill('SIGCONT'),
        restart: async () => {
          child = await spawnNode(bin, join(dir, String(port)), port, bus, options);
          children.push(child);
        },
        kill: async () => {
          if (!isRunning(child)) return;
          child.kill('SIGCONT');
          const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
          child.kill('SIGKILL');
          await exited;
        },
      });
    }
    const ports = servers.map((s) => s.port);
    await run(cli, ['--cluster', 'create', ...ports.map((p) => `${LOOPBACK}:${p}`), '--cluster-replicas', '1', '--cluster-yes'], { timeout: 60_000 });
    await waitFor(() => clusterHealthy(ports, 3, 3), { timeoutMs: 60_000, intervalMs: 200, what: 'the test cluster to report cluster_state:ok with 3 masters and 3 linked replicas' });
    return { nodes: ports.map((p) => `${LOOPBACK}:${p}`), owned: true, servers, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The master serving `slot` and its replicas (ports and node ids), from CLUSTER NODES as `port` sees it. */
export async function slotShard(port: number, slot: number): Promise<{ master: number; masterId: string; replicas: number[] }> {
  const nodes = String(await nodeCommand(port, 'CLUSTER', 'NODES'))
    .trim()
    .split('\n')
    .map((line) => line.split(' '));
  const portOf = (address: string) => Number(address.slice(address.lastIndexOf(':') + 1).split('@')[0]);
  const owner = nodes.find(
    (f) =>
      (f[2] ?? '').includes('master') &&
      f.slice(8).some((range) => {
        const [from = -1, to = from] = range.split('-').map(Number);
        return slot >= from && slot <= to;
      }),
  );
  if (!owner) throw new Error(`no master serves slot ${slot}`);
  return { master: portOf(owner[1] ?? ''), masterId: owner[0] ?? '', replicas: nodes.filter((f) => f[3] === owner[0]).map((f) => portOf(f[1] ?? '')) };
}

/** The ports of the master serving `key`'s slot and of its replicas. */
export async function shardOf(port: number, key: string): Promise<{ master: number; replicas: number[] }> {
  const { master, replicas } = await slotShard(port, Number(await nodeCommand(port, 'CLUSTER', 'KEYSLOT', key)));
  return { master, replicas };
}

/**
 * Moves one hash slot with its keys to the master on `toPort`, the way
 * `redis-cli --cluster reshard` moves each slot (IMPORTING / MIGRATING,
 * MIGRATE the keys, SETSLOT NODE on every master). Clients follow with
 * ASK and MOVED.
 */
export async function moveSlot(
  masters: readonly number[],
  slot: number,
  toPort: number,
  /** keys per MIGRATE (default 100), and what to wait for after each (a test that writes while the slot is half moved) */
  options: { readonly keysPerMigrate?: number; readonly between?: () => Promise<void> } = {},
): Promise<void> {
  const from = await slotShard(toPort, slot);
  if (from.master === toPort) return;
  const toId = String(await nodeCommand(toPort, 'CLUSTER', 'MYID'));
  await nodeCommand(toPort, 'CLUSTER', 'SETSLOT', String(slot), 'IMPORTING', from.masterId);
  await nodeCommand(from.master, 'CLUSTER', 'SETSLOT', String(slot), 'MIGRATING', toId);
  for (;;) {
    const keys = (await nodeCommand(from.master, 'CLUSTER', 'GETKEYSINSLOT', String(slot), String(options.keysPerMigrate ?? 100))) as string[];
    if (keys.length === 0) break;
    await nodeCommand(from.master, 'MIGRATE', LOOPBACK, String(toPort), '', '0', '5000', 'KEYS', ...keys);
    await options.between?.();
  }
  for (const port of [toPort, from.master, ...masters.filter((p) => p !== toPort && p !== from.master)]) {
    await nodeCommand(port, 'CLUSTER', 'SETSLOT', String(slot), 'NODE', toId);
  }
}

/**
 * Kills (-9) the master serving `key`'s slot, waits until its replica is
 * promoted (3 masters, 2 replicas), starts the killed node again and waits
 * until it has rejoined as a replica (3 and 3). Returns the killed port.
 */
export async function failOverMasterOf(c: TestRedisCluster, key: string): Promise<number> {
  const seed = c.servers.find((s) => s.alive)?.port ?? 0;
  const { master } = await shardOf(seed, key);
  const victim = c.servers.find((s) => s.port === master);
  if (!victim) throw new Error(`the master of ${key} (:${master}) is not a node this harness started`);
  await victim.kill();
  const survivors = c.servers.filter((s) => s !== victim).map((s) => s.port);
  await waitFor(() => clusterHealthy(survivors, 3, 2), { timeoutMs: 60_000, intervalMs: 200, what: `the replica of :${master} to be promoted` });
  await victim.restart();
  await waitFor(() => clusterHealthy(c.servers.map((s) => s.port), 3, 3), { timeoutMs: 60_000, intervalMs: 200, what: `:${master} to rejoin as a replica` });
  return master;
}
