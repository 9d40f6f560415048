// Starts a private Prosody for one test file: its own config, data and log in a
// temp dir, c2s on a free loopback port, no TLS, s2s and HTTP off.
import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { access, mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
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
  'Prosody is not installed: install the Debian package `prosody` (`apt-get install -y prosody`, or run .ci/install-services.sh as root)';

export interface ProsodyOptions {
  /** XMPP domain of the virtual host; the MUC service is `conference.<domain>`. Default `localhost`. */
  domain?: string;
  /** Prosody's file log level; `debug` logs every stanza (useful when a test fails). Default `info`. */
  logLevel?: 'debug' | 'info';
  /**
   * Lock a new room until its creator configures it (XEP-0045 §10.1, Prosody's default): others get
   * item-not-found meanwhile. Default false: test users' rooms are usable at once.
   */
  roomLocking?: boolean;
  /** Archive (MAM) new rooms unless their configuration turns it off, and offer no option to. Default true. */
  mucArchiveByDefault?: boolean;
  /** Deadline for the server to listen after a (re)start. Default 20 s. */
  startTimeoutMs?: number;
  /**
   * An external component (XEP-0114) `Component "<name>.<domain>"` with this secret, e.g. for the
   * xmpp-rooms adapter; the component listener gets its own free loopback port (`component` on the server).
   */
  component?: { readonly name?: string; readonly secret: string };
}

/** The external component a Prosody harness configured (ProsodyOptions.component). */
export interface ProsodyComponent {
  readonly domain: string;
  readonly secret: string;
  readonly port: number;
  /** `xmpp://127.0.0.1:<port>`, the `service` of `@xmpp/component` */
  readonly service: string;
}

/** What the XMPP tests need of a server, Prosody or ejabberd. */
export interface XmppServer {
  readonly kind: 'prosody' | 'ejabberd';
  readonly domain: string;
  readonly mucDomain: string;
  readonly host: typeof LOOPBACK;
  readonly c2sPort: number;
  /** `xmpp://127.0.0.1:<c2sPort>`, the `service` option of `@xmpp/client`. */
  readonly service: string;
  readonly dataDir: string;
  readonly configPath: string;
  readonly logPath: string;
  /** The server's version from its start-up log line, e.g. `0.12.3`. */
  readonly version: string;
  /** Whether MUC messages carry XEP-0421 `<occupant-id>` (built into Prosody's MUC since 0.12, or mod_muc_occupant_id; not in ejabberd 23.01). */
  readonly occupantId: boolean;
  /** Registers `localpart@domain` (works while the server runs); returns the bare JID. */
  createUser(localpart: string, password: string): Promise<string>;
  /** Stops the server and starts it again on the same port with the same data (accounts, archives, persistent rooms survive). */
  restart(): Promise<void>;
  /** Stops the server and removes its temp dir. Idempotent. */
  stop(): Promise<void>;
}

export type ProsodyServer = XmppServer & { readonly kind: 'prosody'; readonly component: ProsodyComponent | undefined };

export async function startProsody(opts: ProsodyOptions = {}): Promise<ProsodyServer> {
  const prosodyBin = await findExecutable('prosody');
  const prosodyctlBin = await findExecutable('prosodyctl');
  if (prosodyBin === undefined || prosodyctlBin === undefined) throw new Error(MISSING_BINARY);

  const domain = opts.domain ?? 'localhost';
  const mucDomain = `conference.${domain}`;
  const startTimeoutMs = opts.startTimeoutMs ?? 20_000;

  const dir = await mkdtemp(join(tmpdir(), 'sg-prosody-'));
  const dataDir = join(dir, 'data');
  const configPath = join(dir, 'prosody.cfg.lua');
  const logPath = join(dir, 'prosody.log');
  const outPath = join(dir, 'prosody.out');
  await mkdir(dataDir);
  // An existing (empty) certificate dir keeps Prosody from logging errors about /etc/prosody/certs.
  await mkdir(join(dir, 'certs'));

  const pluginDir = await findPluginDir(prosodyBin);
  const occupantIdBuiltIn = await exists(join(pluginDir, 'muc', 'occupant_id.lib.lua'));
  const occupantIdModule = await exists(join(pluginDir, 'mod_muc_occupant_id.lua'));

  let child: ChildProcess | undefined;
  let c2sPort = 0;
  let componentPort = 0;
  let stopped = false;
  const componentDomain = opts.component ? `${opts.component.name ?? 'rooms'}.${domain}` : undefined;

  const launch = async (): Promise<void> => {
    const logOffset = await fileSize(logPath);
    const out = await open(outPath, 'a');
    // stdout/stderr go straight to a file: a pipe nobody reads could block the server.
    const proc = spawn(prosodyBin, ['--config', configPath, '-F'], { cwd: dir, stdio: ['ignore', out.fd, out.fd] });
    await out.close();
    killOnExit(proc);
    child = proc;
    const activated = `Activated service 'c2s' on [${LOOPBACK}]:${c2sPort}`;
    try {
      await waitFor(
        async () => {
          const log = await readFileFrom(logPath, logOffset);
          // Prosody keeps running when its port is taken; it only logs the failure.
          if (log.includes('Failed to open server port')) throw new PortTakenError(`c2s port ${c2sPort} is taken`);
          return log.includes(activated);
        },
        {
          what: `Prosody c2s on ${LOOPBACK}:${c2sPort}`,
          timeoutMs: startTimeoutMs,
          failFast: () => (isRunning(proc) ? undefined : new Error(`Prosody exited with ${proc.exitCode ?? proc.signalCode}`)),
        },
      );
      await waitForPort(LOOPBACK, c2sPort, { timeoutMs: startTimeoutMs });
      if (componentDomain !== undefined) {
        const component = `Activated service 'component' on [${LOOPBACK}]:${componentPort}`;
        await waitFor(async () => (await readFileFrom(logPath, logOffset)).includes(component), { what: `Prosody component listener on ${componentPort}`, timeoutMs: startTimeoutMs });
        await waitForPort(LOOPBACK, componentPort, { timeoutMs: startTimeoutMs });
      }
    } catch (err) {
      await terminate(proc, 5_000);
      if (err instanceof PortTakenError) throw err;
      throw new Error(`Prosody did not start: ${(err as Error).message}\n${await diagnostics(outPath, logPath)}`);
    }
  };

  try {
    await retryOnPortTaken(async () => {
      c2sPort = await getFreePort();
      if (componentDomain !== undefined) componentPort = await getFreePort();
      const component = opts.component && componentDomain !== undefined ? { domain: componentDomain, secret: opts.component.secret, port: componentPort } : undefined;
      await writeFile(
        configPath,
        renderConfig({ domain, mucDomain, component, dir, dataDir, logPath, c2sPort, logLevel: opts.logLevel ?? 'info', occupantIdModule, roomLocking: opts.roomLocking ?? false, archiveByDefault: opts.mucArchiveByDefault ?? true }),
      );
      await launch();
    });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  const log = await readFile(logPath, 'utf8');
  const version = /Prosody version (\S+)/.exec(log)?.[1] ?? 'unknown';

  return {
    kind: 'prosody',
    domain,
    mucDomain,
    host: LOOPBACK,
    c2sPort,
    service: `xmpp://${LOOPBACK}:${c2sPort}`,
    dataDir,
    configPath,
    logPath,
    version,
    occupantId: occupantIdBuiltIn || occupantIdModule,
    component:
      opts.component && componentDomain !== undefined
        ? { domain: componentDomain, secret: opts.component.secret, port: componentPort, service: `xmpp://${LOOPBACK}:${componentPort}` }
        : undefined,

    async createUser(localpart: string, password: string): Promise<string> {
      if (stopped) throw new Error('Prosody harness is stopped');
      if (!/^[a-z0-9._-]+$/i.test(localpart)) throw new Error(`invalid XMPP localpart for a test user: ${localpart}`);
      // prosodyctl writes the account (hashed) straight into the data dir;
      // internal storage reads it on every login, so this works while Prosody runs.
      try {
        await execFileAsync(prosodyctlBin, ['--config', configPath, 'register', localpart, domain, password], {
          cwd: dir,
          timeout: 30_000,
        });
      } catch (err) {
        const e = err as Error & { stdout?: string; stderr?: string };
        throw new Error(`prosodyctl register ${localpart}@${domain} failed: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
      }
      return `${localpart}@${domain}`;
    },

    async restart(): Promise<void> {
      if (stopped) throw new Error('Prosody harness is stopped');
      if (child) await terminate(child);
      await launch();
    },

    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      if (child) await terminate(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

interface ConfigInput {
  domain: string;
  mucDomain: string;
  component: { domain: string; secret: string; port: number } | undefined;
  dir: string;
  dataDir: string;
  logPath: string;
  c2sPort: number;
  logLevel: string;
  occupantIdModule: boolean;
  roomLocking: boolean;
  archiveByDefault: boolean;
}

function renderConfig(c: ConfigInput): string {
  const s = luaString;
  const mucModules = ['muc_mam', ...(c.occupantIdModule ? ['muc_occupant_id'] : [])];
  const lines = [
    '-- Generated by test/harness/prosody.ts for one test run.',
    // Prosody refuses to run as root and prosodyctl would switch to the
    // `prosody` user, which cannot write our temp dir; tests on CI run as root.
    ...(process.getuid?.() === 0 ? ['run_as_root = true'] : []),
    `pidfile = ${s(join(c.dir, 'prosody.pid'))}`,
    `data_path = ${s(c.dataDir)}`,
    `certificates = ${s(join(c.dir, 'certs'))}`,
    `log = { { levels = { min = ${s(c.logLevel)} }, to = "file", filename = ${s(c.logPath)} } }`,
    '',
    `interfaces = { ${s(LOOPBACK)} }`,
    `local_interfaces = { ${s(LOOPBACK)} }`,
    `c2s_interfaces = { ${s(LOOPBACK)} }`,
    `c2s_ports = { ${c.c2sPort} }`,
    'c2s_direct_tls_ports = { }',
    'legacy_ssl_ports = { }',
    // No s2s listener or outgoing federation; no HTTP modules are loaded, so no HTTP listener.
    'modules_disabled = { "s2s", "s2s_auth_certs" }',
    's2s_ports = { }',
    'http_ports = { }',
    'https_ports = { }',
    ...(c.component ? [`component_ports = { ${c.component.port} }`, `component_interfaces = { ${s(LOOPBACK)} }`] : []),
    '',
    // Plaintext c2s on loopback: no certificates, mod_tls is not loaded. Clients
    // use SCRAM-SHA-1 (@xmpp/client refuses PLAIN without TLS); PLAIN is allowed too.
    'c2s_require_encryption = false',
    'allow_unencrypted_plain_auth = true',
    // Hashed, not internal_plain: with plaintext storage Prosody derives the
    // SCRAM keys (10 000 PBKDF2 rounds in Lua) on every login, which blocks the
    // single-threaded server for seconds when clients reconnect together on a
    // loaded machine. 4096 is the RFC 5802 minimum and also halves the client's work.
    'authentication = "internal_hashed"',
    'default_iteration_count = 4096',
    'storage = "internal"',
    '',
    'modules_enabled = {',
    '  "roster", "saslauth", "disco", "carbons", "mam", "smacks", "ping",',
    '  "private", "vcard", "blocklist", "pep",',
    '}',
    'archive_expires_after = "never"',
    'default_archive_policy = true',
    'storage_archive_item_limit = 1000000',
    '',
    `VirtualHost ${s(c.domain)}`,
    '',
    `Component ${s(c.mucDomain)} "muc"`,
    `  modules_enabled = { ${mucModules.map(s).join(', ')} }`,
    '  restrict_room_creation = false',
    // Unless asked for, rooms are usable right after the first join, without submitting the config form.
    `  muc_room_locking = ${c.roomLocking ? 'true' : 'false'}`,
    '  muc_room_default_persistent = true',
    '  muc_room_default_public = true',
    // Off: rooms are archived only when their configuration says so (the form offers the option).
    `  muc_log_by_default = ${c.archiveByDefault ? 'true' : 'false'}`,
    `  muc_log_all_rooms = ${c.archiveByDefault ? 'true' : 'false'}`,
    '  muc_log_expires_after = "never"',
    '',
    ...(c.component ? [`Component ${s(c.component.domain)}`, `  component_secret = ${s(c.component.secret)}`, ''] : []),
  ];
  return lines.join('\n');
}

function luaString(value: string): string {
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
}

/** Debian's `prosody` is a Lua script that names its module dir in CFG_PLUGINDIR. */
async function findPluginDir(prosodyBin: string): Promise<string> {
  try {
    const script = await readFile(prosodyBin, 'utf8');
    const dir = /CFG_PLUGINDIR\s*=\s*'([^']+)'/.exec(script)?.[1];
    if (dir !== undefined) return dir;
  } catch {
    // not readable: fall back to the Debian location
  }
  return '/usr/lib/prosody/modules';
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

async function diagnostics(outPath: string, logPath: string): Promise<string> {
  const tail = (text: string): string => text.split('\n').slice(-30).join('\n');
  return `--- prosody stdout/stderr ---\n${tail(await readFileFrom(outPath, 0))}\n--- prosody log ---\n${tail(await readFileFrom(logPath, 0))}`;
}
