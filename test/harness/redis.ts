/**
 * A Redis for tests: REDIS_URL when set, else a `redis-server` started on a
 * free loopback port in its own temp dir (no persistence), stopped afterwards.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { findExecutable, getFreePort, isRunning, killOnExit, terminate, waitForPort, LOOPBACK } from './free-port.js';

export interface TestRedis {
  readonly url: string;
  /** true when this harness started the server (and so may stop or restart it) */
  readonly owned: boolean;
  stop(): Promise<void>;
}

/** A Redis of the test's own that it may kill and start again on the same port (an outage). */
export interface OwnedRedis extends TestRedis {
  /** SIGKILL: the server is gone at once, as in a crash */
  kill(): Promise<void>;
  /** starts the server again on the same port and waits until it accepts connections */
  restart(): Promise<void>;
}

async function redisBinary(): Promise<string> {
  const bin = await findExecutable('redis-server');
  if (!bin) {
    throw new Error('redis-server not found: install the Debian package `redis-server` (apt-get install -y redis-server) or set REDIS_URL');
  }
  return bin;
}

/** Spawns redis-server on `port`; resolves when it accepts connections. */
async function spawnRedis(bin: string, dir: string, port: number, durable: boolean): Promise<ChildProcess> {
  // durable: every write fsynced to the append-only file, so a SIGKILL loses nothing acknowledged
  const persistence = durable ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
  const child = spawn(bin, ['--port', String(port), '--bind', LOOPBACK, '--save', '', ...persistence, '--dir', dir, '--daemonize', 'no'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  killOnExit(child);
  let exited: Error | undefined;
  child.once('exit', (code) => (exited = new Error(`redis-server exited with code ${code}`)));
  try {
    await waitForPort(LOOPBACK, port, { timeoutMs: 15_000, failFast: () => exited });
  } catch (err) {
    if (isRunning(child)) child.kill('SIGKILL');
    throw err;
  }
  return child;
}

export async function startRedis(): Promise<TestRedis> {
  const fromEnv = process.env['REDIS_URL'];
  if (fromEnv) return { url: fromEnv, owned: false, stop: async () => undefined };
  return startOwnedRedis({ durable: false });
}

/**
 * Always a private redis-server (REDIS_URL is not used: the test stops and
 * starts it). Durable by default: what it acknowledged survives a kill.
 */
export async function startOwnedRedis(options: { durable?: boolean } = {}): Promise<OwnedRedis> {
  const durable = options.durable ?? true;
  const bin = await redisBinary();
  const dir = await mkdtemp(join(tmpdir(), 'syncgate-redis-'));
  for (let attempt = 0; ; attempt++) {
    const port = await getFreePort();
    let child: ChildProcess;
    try {
      child = await spawnRedis(bin, dir, port, durable);
    } catch (err) {
      if (attempt < 3) continue; // the port was taken between the probe and the bind
      throw err;
    }
    let current = child;
    return {
      url: `redis://${LOOPBACK}:${port}`,
      owned: true,
      kill: async () => {
        if (!isRunning(current)) return;
        const exited = new Promise<void>((resolve) => current.once('exit', () => resolve()));
        current.kill('SIGKILL');
        await exited;
      },
      restart: async () => {
        current = await spawnRedis(bin, dir, port, durable);
      },
      stop: async () => {
        await terminate(current, 5_000);
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
}

/** A fresh key prefix per test, so runs never collide on a shared Redis. */
export function testPrefix(name = 't'): string {
  return `sgtest:${name}:${randomBytes(6).toString('hex')}:`;
}

/** Removes every key under a test prefix (benchmarks clean up after themselves). */
export async function dropPrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.unlink(...keys);
  } while (cursor !== '0');
}

/** One-shot command on the server at LOOPBACK:`port` (with `password` when given); the connection is closed afterwards. */
export async function redisCommand(port: number, password: string | undefined, ...args: string[]): Promise<unknown> {
  const client = new Redis({ host: LOOPBACK, port, lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 2_000, retryStrategy: () => null, ...(password ? { password } : {}) });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const [cmd = '', ...rest] = args;
    return await client.call(cmd, ...rest);
  } finally {
    client.disconnect();
  }
}
