/**
 * The `syncgate` command run from source as a child process, as an operator
 * runs it: no SYNCGATE_* variable of the test process leaks in, output is
 * collected, and every process started is stopped after the file's tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';
import { killOnExit, terminate } from './free-port.js';

const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

export interface CliProcess {
  readonly proc: ChildProcess;
  readonly out: { stdout: string; stderr: string };
}

/** Call at the top of a test file; returns the function that starts `syncgate <args>`. */
export function cliRunner(): (args: string[], env?: Record<string, string>) => CliProcess {
  const procs: ChildProcess[] = [];
  afterAll(async () => {
    for (const p of procs) await terminate(p, 5000);
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
