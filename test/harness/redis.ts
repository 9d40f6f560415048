/**
 * A Redis for tests: REDIS_URL when set, else a `redis-server` started on a
 * free loopback port in its own temp dir (no persistence), stopped afterwards.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { findExecutable, getFreePort, isRunning, killOnExit, terminate, waitForPort, LOOPBACK } from './free-port.js';

export interface TestRedis {
  readonly url: string;
  /** true when this harness started the server (and so may stop or restart it) */
  readonly owned: boolean;
  stop(): Promise<void>;
}

export async function startRedis(): Promise<TestRedis> {
  const fromEnv = process.env['REDIS_URL'];
  if (fromEnv) return { url: fromEnv, owned: false, stop: async () => undefined };
  const bin = await findExecutable('redis-server');
  if (!bin) {
    throw new Error('redis-server not found: install the Debian package `redis-server` (apt-get install -y redis-server) or set REDIS_URL');
  }
  const dir = await mkdtemp(join(tmpdir(), 'syncgate-redis-'));
  for (let attempt = 0; ; attempt++) {
    const port = await getFreePort();
    const child = spawn(bin, ['--port', String(port), '--bind', LOOPBACK, '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    killOnExit(child);
    let exited: Error | undefined;
    child.once('exit', (code) => (exited = new Error(`redis-server exited with code ${code}`)));
    try {
      await waitForPort(LOOPBACK, port, { timeoutMs: 15_000, failFast: () => exited });
    } catch (err) {
      if (isRunning(child)) child.kill('SIGKILL');
      if (attempt < 3) continue; // the port was taken between the probe and the bind
      throw err;
    }
    return {
      url: `redis://${LOOPBACK}:${port}`,
      owned: true,
      stop: async () => {
        await terminate(child, 5_000);
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
