// Small helpers shared by the server harnesses: free loopback ports, waiting on
// conditions with a deadline, and stopping child server processes.
import type { ChildProcess } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { access, readFile, stat } from 'node:fs/promises';
import { constants } from 'node:fs';

export const LOOPBACK = '127.0.0.1';

/**
 * Asks the kernel for a free TCP port on the loopback interface.
 *
 * The port is released before the caller binds it, so another process can
 * take it in between; harnesses detect a failed bind and retry on a new port.
 */
export async function getFreePort(host: string = LOOPBACK): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host, port: 0, exclusive: true }, () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error('free-port: listening socket has no TCP address'));
        return;
      }
      const { port } = address;
      server.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/** Tries one TCP connect: true if it is accepted, false on refusal, error or timeout. */
export async function canConnect(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.removeAllListeners();
      socket.on('error', () => undefined);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

export interface WaitOptions {
  /** Give up after this many milliseconds. */
  timeoutMs: number;
  /** What is being waited for, for the timeout message. */
  what: string;
  /** Polling interval; a condition poll, not a fixed sleep. */
  intervalMs?: number;
  /**
   * Called before every poll; return an Error to stop waiting at once (e.g. the
   * server process exited), so a broken start fails fast instead of at the deadline.
   */
  failFast?: () => Error | undefined;
}

/** Polls `check` until it returns true, the deadline passes or `failFast` reports an error. */
export async function waitFor(check: () => boolean | Promise<boolean>, opts: WaitOptions): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  const intervalMs = opts.intervalMs ?? 50;
  for (;;) {
    const early = opts.failFast?.();
    if (early) throw early;
    if (await check()) return;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what}`);
    }
    await new Promise<void>((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** The port was taken between getFreePort() and the server's bind: worth another try on a new port. */
export class PortTakenError extends Error {}

/**
 * Runs `start` (take free ports, write the config, launch the server) again
 * while it fails with PortTakenError, `attempts` times at most: a free port
 * can be taken by another process before the server binds it.
 */
export async function retryOnPortTaken(start: () => Promise<void>, attempts = 3): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await start();
      return;
    } catch (err) {
      if (!(err instanceof PortTakenError) || attempt >= attempts) throw err;
    }
  }
}

/** Waits until `host:port` accepts TCP connections. */
export async function waitForPort(
  host: string,
  port: number,
  opts: Omit<WaitOptions, 'what'> & { what?: string },
): Promise<void> {
  await waitFor(() => canConnect(host, port), { ...opts, what: opts.what ?? `${host}:${port} to accept connections` });
}

/** Size of a file in bytes, 0 if it does not exist yet. */
export async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/**
 * A (log) file's text from byte `offset` on, '' if it does not exist yet. A
 * restarted server appends to the same log, so readiness checks read only
 * what the new process wrote.
 */
export async function readFileFrom(path: string, offset = 0): Promise<string> {
  try {
    return (await readFile(path)).subarray(offset).toString('utf8');
  } catch {
    return '';
  }
}

/** True while the child has neither exited nor been killed by a signal. */
export function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Resolves when the child has exited (at once if it already has). */
export async function waitForExit(child: ChildProcess): Promise<void> {
  if (!isRunning(child)) return;
  await new Promise<void>((resolve) => child.once('exit', () => resolve()));
}

/**
 * SIGTERM, then SIGKILL if the child is still running after `graceMs`.
 * Servers save their state on SIGTERM (Mosquitto's persistence file), so the
 * grace period matters for restart tests.
 */
export async function terminate(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (!isRunning(child)) return;
  const exited = waitForExit(child);
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const killed = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      if (isRunning(child)) child.kill('SIGKILL');
      resolve();
    }, graceMs);
  });
  await Promise.race([exited, killed]);
  clearTimeout(timer);
  await exited;
}

/**
 * Kills still-running children when the test process exits without calling
 * stop() (a crashed test), so no server outlives its test run.
 */
const orphans = new Set<ChildProcess>();
let exitHookInstalled = false;

export function killOnExit(child: ChildProcess): void {
  orphans.add(child);
  child.once('exit', () => orphans.delete(child));
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const c of orphans) {
      if (isRunning(c)) c.kill('SIGKILL');
    }
  });
}

/**
 * Finds an executable on PATH or in the sbin/bin directories, which are not on
 * PATH for every user (Debian puts mosquitto in /usr/sbin).
 */
export async function findExecutable(name: string): Promise<string | undefined> {
  const dirs = [...(process.env['PATH'] ?? '').split(':'), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  for (const dir of dirs) {
    if (dir === '') continue;
    const candidate = `${dir}/${name}`;
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}
