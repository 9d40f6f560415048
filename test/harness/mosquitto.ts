// Gives a test file an MQTT broker: the one named by MQTT_URL when set, else a
// private Mosquitto with its own config, persistence and log in a temp dir,
// listening on a free loopback port.
import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  LOOPBACK,
  fileSize,
  findExecutable,
  getFreePort,
  isRunning,
  killOnExit,
  PortTakenError,
  readFileFrom,
  retryOnPortTaken,
  terminate,
  waitFor,
  waitForPort,
} from './free-port.js';

const execFileAsync = promisify(execFile);

const MISSING_BINARY =
  'Mosquitto is not installed: install the Debian package `mosquitto` (`apt-get install -y mosquitto`, or run .ci/install-services.sh as root)';

export interface MosquittoOptions {
  /** Use the broker named by MQTT_URL when that variable is set. Default true; restart tests pass false. */
  useEnv?: boolean;
  /** Username → password; written with `mosquitto_passwd -b`. Anonymous clients stay allowed unless `anonymous` is false. */
  users?: Record<string, string>;
  /** Allow clients without a username. Default true; false (with `users`) makes the broker require a password. */
  anonymous?: boolean;
  /**
   * Mosquitto ACL file content, e.g. `user gw\ntopic read devices/#\npattern write devices/%u/#`.
   * `topic` lines before the first `user` line apply to anonymous clients; with an
   * ACL file, anything not granted is denied.
   */
  acl?: string;
  /** Also log debug lines (every packet, ACL denials). Default false. */
  verboseLog?: boolean;
  /** Deadline for the broker to listen after a (re)start. Default 15 s. */
  startTimeoutMs?: number;
}

export interface MosquittoBroker {
  /** `mqtt://host:port`. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** True when the broker comes from MQTT_URL and is not ours to restart. */
  readonly external: boolean;
  /** Our generated mosquitto.conf; null for an external broker. */
  readonly configPath: string | null;
  readonly logPath: string | null;
  /** Stops and starts the broker on the same port; persistent sessions and queued QoS 1/2 messages survive. */
  restart(): Promise<void>;
  /** Stops the broker (kept stopped until `resume`); the port stays ours to start on again. */
  pause(): Promise<void>;
  /** Starts a paused broker again on the same port. */
  resume(): Promise<void>;
  /** Rewrites the ACL file (a broker started with `acl`) and has the broker reload it (SIGHUP). */
  setAcl(acl: string): Promise<void>;
  /** Stops our broker and removes its temp dir; a no-op for an external broker. Idempotent. */
  stop(): Promise<void>;
}

export async function startMosquitto(opts: MosquittoOptions = {}): Promise<MosquittoBroker> {
  const envUrl = process.env['MQTT_URL'];
  if ((opts.useEnv ?? true) && envUrl !== undefined && envUrl !== '') {
    if (opts.users !== undefined || opts.acl !== undefined || opts.anonymous === false) {
      throw new Error('startMosquitto: users/acl/anonymous need our own broker; pass { useEnv: false }');
    }
    return externalBroker(envUrl);
  }

  const mosquittoBin = await findExecutable('mosquitto');
  if (mosquittoBin === undefined) throw new Error(MISSING_BINARY);
  const passwdBin = opts.users === undefined ? undefined : await findExecutable('mosquitto_passwd');
  if (opts.users !== undefined && passwdBin === undefined) throw new Error(MISSING_BINARY);

  const startTimeoutMs = opts.startTimeoutMs ?? 15_000;
  const dir = await mkdtemp(join(tmpdir(), 'sg-mosquitto-'));
  const configPath = join(dir, 'mosquitto.conf');
  const logPath = join(dir, 'mosquitto.log');
  const outPath = join(dir, 'mosquitto.out');
  const passwordPath = join(dir, 'passwd');
  const aclPath = join(dir, 'acl');

  let child: ChildProcess | undefined;
  let port = 0;
  let stopped = false;

  const launch = async (): Promise<void> => {
    const logOffset = await fileSize(logPath);
    const outOffset = await fileSize(outPath);
    const out = await open(outPath, 'a');
    // Output goes straight to a file: a pipe nobody reads could block the broker.
    const proc = spawn(mosquittoBin, ['-c', configPath], { cwd: dir, stdio: ['ignore', out.fd, out.fd] });
    await out.close();
    killOnExit(proc);
    child = proc;
    try {
      await waitFor(async () => /mosquitto version \S+ running/.test(await readFileFrom(logPath, logOffset)), {
        what: `Mosquitto on ${LOOPBACK}:${port}`,
        timeoutMs: startTimeoutMs,
        failFast: () => (isRunning(proc) ? undefined : new Error(`Mosquitto exited with ${proc.exitCode ?? proc.signalCode}`)),
      });
      await waitForPort(LOOPBACK, port, { timeoutMs: startTimeoutMs });
    } catch (err) {
      await terminate(proc, 5_000);
      const output = (await readFileFrom(logPath, logOffset)) + (await readFileFrom(outPath, outOffset));
      // Mosquitto exits when its port is taken; the caller retries on another port.
      if (/Address already in use/.test(output)) throw new PortTakenError(`port ${port} is taken`);
      throw new Error(`Mosquitto did not start: ${(err as Error).message}\n${tail(output)}`);
    }
  };

  try {
    if (opts.users !== undefined && passwdBin !== undefined) {
      await writePasswordFile(passwdBin, passwordPath, opts.users);
    }
    if (opts.acl !== undefined) await writeFile(aclPath, `${opts.acl}\n`);
    await retryOnPortTaken(async () => {
      port = await getFreePort();
      await writeFile(
        configPath,
        renderConfig({
          port,
          dir,
          logPath,
          passwordPath: opts.users === undefined ? undefined : passwordPath,
          aclPath: opts.acl === undefined ? undefined : aclPath,
          anonymous: opts.anonymous ?? true,
          verboseLog: opts.verboseLog ?? false,
        }),
      );
      await launch();
    });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  return {
    url: `mqtt://${LOOPBACK}:${port}`,
    host: LOOPBACK,
    port,
    external: false,
    configPath,
    logPath,

    async restart(): Promise<void> {
      if (stopped) throw new Error('Mosquitto harness is stopped');
      // SIGTERM makes Mosquitto write its persistence file before it exits.
      if (child) await terminate(child);
      await launch();
    },

    async pause(): Promise<void> {
      if (stopped) throw new Error('Mosquitto harness is stopped');
      if (child) await terminate(child);
      child = undefined;
    },

    async resume(): Promise<void> {
      if (stopped) throw new Error('Mosquitto harness is stopped');
      if (child && isRunning(child)) return;
      await launch();
    },

    async setAcl(acl: string): Promise<void> {
      if (opts.acl === undefined) throw new Error('setAcl: start the broker with an `acl` to reload');
      const before = await fileSize(logPath);
      await writeFile(aclPath, `${acl}\n`);
      child?.kill('SIGHUP');
      // Mosquitto logs the reload once it has read the files again.
      await waitFor(async () => /Reloading config/i.test(await readFileFrom(logPath, before)), { what: 'Mosquitto to reload its ACL', timeoutMs: 10_000 });
    },

    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      if (child) await terminate(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function externalBroker(url: string): MosquittoBroker {
  const parsed = new URL(url);
  return {
    url,
    host: parsed.hostname,
    port: parsed.port === '' ? 1883 : Number(parsed.port),
    external: true,
    configPath: null,
    logPath: null,
    async restart(): Promise<void> {
      throw new Error(`cannot restart the external broker from MQTT_URL (${url}); start our own with { useEnv: false }`);
    },
    async pause(): Promise<void> {
      throw new Error(`cannot stop the external broker from MQTT_URL (${url}); start our own with { useEnv: false }`);
    },
    async resume(): Promise<void> {
      throw new Error(`cannot start the external broker from MQTT_URL (${url}); start our own with { useEnv: false }`);
    },
    async setAcl(): Promise<void> {
      throw new Error(`cannot change the ACL of the external broker from MQTT_URL (${url}); start our own with { useEnv: false }`);
    },
    async stop(): Promise<void> {
      // Not ours to stop.
    },
  };
}

interface ConfigInput {
  port: number;
  dir: string;
  logPath: string;
  passwordPath: string | undefined;
  aclPath: string | undefined;
  anonymous: boolean;
  verboseLog: boolean;
}

function renderConfig(c: ConfigInput): string {
  const lines = [
    '# Generated by test/harness/mosquitto.ts for one test run.',
    // Run as the current user: as root, Mosquitto would otherwise switch to the
    // `mosquitto` user, which cannot write our temp dir.
    `user ${userInfo().username}`,
    'per_listener_settings false',
    `listener ${c.port} ${LOOPBACK}`,
    `allow_anonymous ${c.anonymous}`,
    ...(c.passwordPath === undefined ? [] : [`password_file ${c.passwordPath}`]),
    ...(c.aclPath === undefined ? [] : [`acl_file ${c.aclPath}`]),
    '',
    // Sessions and queued messages survive a restart (written on SIGTERM and every autosave).
    'persistence true',
    `persistence_location ${c.dir}/`,
    'persistence_file mosquitto.db',
    'autosave_interval 5',
    // Large queues for offline persistent sessions, so tests of long absences are not cut off by defaults (1000).
    'max_queued_messages 1000000',
    'max_queued_bytes 0',
    '',
    `log_dest file ${c.logPath}`,
    'log_type error',
    'log_type warning',
    'log_type notice',
    'log_type information',
    ...(c.verboseLog ? ['log_type debug', 'log_type subscribe', 'log_type unsubscribe'] : []),
    'log_timestamp true',
    'connection_messages true',
    '',
  ];
  return lines.join('\n');
}

async function writePasswordFile(passwdBin: string, path: string, users: Record<string, string>): Promise<void> {
  // Start from an empty file so `-b` only ever adds users (and `users: {}` still yields a valid file).
  await writeFile(path, '', { mode: 0o600 });
  for (const [user, password] of Object.entries(users)) {
    try {
      await execFileAsync(passwdBin, ['-b', path, user, password], { timeout: 30_000 });
    } catch (err) {
      const e = err as Error & { stdout?: string; stderr?: string };
      throw new Error(`mosquitto_passwd for ${user} failed: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
    }
  }
}

function tail(text: string): string {
  return text.split('\n').slice(-30).join('\n');
}
