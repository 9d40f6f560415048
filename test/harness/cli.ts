/**
 * The `syncgate` command run from source as a child process, as an operator
 * runs it: no SYNCGATE_* variable of the test process leaks in, output is
 * collected, and every process started is stopped after the file's tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';
import { isRunning, killOnExit, terminate, waitFor } from './free-port.js';

const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

export interface CliProcess {
  readonly proc: ChildProcess;
  readonly out: { stdout: string; stderr: string };
}

/** Starts `syncgate <args>` with these extra environment variables. */
export type CliRun = (args: string[], env?: Record<string, string>) => CliProcess;

/** Call at the top of a test file; returns the function that starts `syncgate <args>`. */
export function cliRunner(): CliRun {
  const procs: ChildProcess[] = [];
  afterAll(async () => {
    for (const p of procs) {
      // a paused (SIGSTOP) process would sit out the SIGTERM grace period
      if (isRunning(p)) p.kill('SIGCONT');
      await terminate(p, 5000);
    }
  });
  return (args, env = {}) => {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SYNCGATE_')));
    const proc = spawn(process.execPath, ['--import', 'tsx', main, ...args], { env: { ...clean, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    killOnExit(proc);
    procs.push(proc);
    const out = { stdout: '', stderr: '' };
    proc.stdout?.on('data', (c: Buffer) => (out.stdout += c.toString()));
    proc.stderr?.on('data', (c: Buffer) => (out.stderr += c.toString()));
    return { proc, out };
  };
}

/** `syncgate serve --config <configFile>` started by `run`, once it listens; fails at once if it exits first. */
export async function serveConfig(run: CliRun, configFile: string, what: string, timeoutMs = 30_000): Promise<CliProcess> {
  const p = run(['serve', '--config', configFile]);
  await waitFor(() => p.out.stdout.includes('syncgate listening'), { timeoutMs, what, failFast: () => (p.proc.exitCode !== null ? new Error(p.out.stdout + p.out.stderr) : undefined) });
  return p;
}
