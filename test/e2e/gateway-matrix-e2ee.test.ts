/**
 * Encrypted Matrix rooms through real `syncgate serve` child processes
 * (Redis), in bot mode and in appservice mode: the crypto state survives a
 * kill -9 and a lease takeover by another replica. A member (an independent
 * Rust-crypto client) sends five messages while the gateway is dead; the
 * restarted gateway (or the replica that took over) decrypts and bridges all
 * five, in order, as the same device with the same identity keys, whose
 * keys were announced once. The store secret comes from
 * SYNCGATE_ADAPTER_MATRIX_ENCRYPTION_STORE_SECRET_FILE; another secret makes
 * the adapter refuse to start (SG_ERR_STATE_SEALED_KEY) instead of
 * announcing a new device.
 *
 * Appservice mode: the bridge device comes from m.login.application_service;
 * room keys (to-device) and device lists come in the homeserver's
 * transactions (MSC2409, MSC3202, as Synapse sends them with its
 * experimental features on). Two replicas sit behind one front (the
 * registration's URL), which passes each request to the replica that
 * listens, as a Service in front of pods would.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { parseMatrixConfig, registrationYaml } from '../../adapters/matrix/config.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { cliRunner, type CliProcess } from '../harness/cli.js';
import { createFakeHomeserver, type AppServiceRegistration, type FakeHomeserver } from '../harness/fake-homeserver.js';
import { getFreePort, waitFor, waitForExit } from '../harness/free-port.js';
import { startHttpFront } from '../harness/http-front.js';
import { E2eePeer } from '../harness/matrix-e2ee-peer.js';
import { testPrefix } from '../harness/redis.js';

const run = cliRunner();
const cleanup: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

const ADMIN = 'mx-e2ee-admin-token-0123456789';
const SECRET = 'the crypto store secret, kept in a file\n';
type Mode = 'bot' | 'appservice';
/** the user whose device the bridge is, per mode */
const BRIDGE: Record<Mode, string> = { bot: '@relay:fake.test', appservice: '@syncgate:fake.test' };

interface CryptoStatus {
  active: boolean;
  device?: { deviceId: string; curve25519: string; ed25519: string; fresh: boolean };
}
type AdapterStatus = { ready: boolean; detail: { encryption?: CryptoStatus } };

/** A homeserver with an encrypted room, its member's Rust-crypto client, a Redis prefix and the store secret's file. */
interface World {
  readonly mode: Mode;
  readonly hs: FakeHomeserver;
  readonly roomId: string;
  readonly peer: E2eePeer;
  readonly prefix: string;
  readonly dir: string;
  readonly secretFile: string;
  /** the registration's URL (appservice mode): where the homeserver pushes; default the first replica's listener */
  asUrl?: string;
  registered: boolean;
  bodies(): Promise<string[]>;
  /** the bridge device's keys uploads that announced device keys */
  announced(): number;
}

async function world(mode: Mode, tag: string): Promise<World> {
  const hs = await createFakeHomeserver({ serverName: 'fake.test', ...(mode === 'appservice' ? { msc2409ToDevice: true, msc3202TransactionExtensions: true } : {}) });
  cleanup.push(() => hs.stop());
  const alice = hs.registerUser('alice', 'pw');
  if (mode === 'bot') hs.registerUser('relay', 'relay-pw');
  const roomId = hs.createRoom(alice.userId, { name: 'Secret', preset: 'public_chat', initialState: [{ type: 'm.room.encryption', content: { algorithm: 'm.megolm.v1.aes-sha2' } }] });
  const peer = await E2eePeer.login(hs.url, alice.userId, 'pw', 'ALICEPHONE');
  cleanup.push(() => peer.close());
  const prefix = testPrefix(tag);
  const dir = await mkdtemp(join(tmpdir(), `sg-${tag}-`));
  const secretFile = join(dir, 'store-secret');
  await writeFile(secretFile, SECRET);
  const log = createEventLog({ partitions: 2, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
  cleanup.push(() => log.close());
  return {
    mode,
    hs,
    roomId,
    peer,
    prefix,
    dir,
    secretFile,
    registered: false,
    bodies: async () => (await log.read(undefined, { rooms: new Set(['secret']), limit: 100 })).events.flatMap((e) => ('content' in e ? [e.content.body] : [])),
    announced: () => hs.keys.uploads.filter((u) => u.userId === BRIDGE[mode] && u.body['device_keys'] !== undefined).length,
  };
}

/** The adapter's config for this world; appservice mode: listening on `asPort`, registered (once) at `w.asUrl`. */
function matrixConfig(w: World, asPort: number): Record<string, unknown> {
  const common = { type: 'matrix', homeserverUrl: w.hs.url, serverName: 'fake.test', stopGraceMs: 300, encryption: { mode: 'optional' } };
  if (w.mode === 'bot') return { ...common, mode: 'bot', bot: { userId: BRIDGE.bot, password: 'relay-pw', syncTimeoutMs: 2000 } };
  const matrix = {
    ...common,
    mode: 'appservice',
    appservice: { asToken: 'as-token-0123456789abcdef', hsToken: 'hs-token-0123456789abcdef', url: w.asUrl ?? `http://127.0.0.1:${asPort}`, listenHost: '127.0.0.1', listenPort: asPort },
  };
  if (!w.registered) {
    // Our own registration file (it asks for MSC2409 and MSC3202), as the CLI writes it.
    w.hs.registerAppService(parse(registrationYaml(parseMatrixConfig({ mode: matrix.mode, homeserverUrl: matrix.homeserverUrl, serverName: matrix.serverName, appservice: matrix.appservice }))) as AppServiceRegistration);
    w.registered = true;
  }
  return matrix;
}

interface Replica {
  readonly name: string;
  readonly asPort: number;
  /** starts `syncgate serve` (again) with this replica's config; `secretFile` defaults to the world's */
  serve(secretFile?: string): CliProcess;
  status(): Promise<AdapterStatus | undefined>;
  /** ready with its crypto active */
  active(): Promise<boolean>;
  /** fails a wait at once when the process `p` died */
  exited(p: CliProcess): () => Error | undefined;
}

/** One gateway replica (its config file, HTTP and AS ports): the start-up every test here shares. */
async function replica(w: World, name: string, opts: { leaseMs?: number; asPort?: number } = {}): Promise<Replica> {
  const port = await getFreePort();
  const asPort = opts.asPort ?? (await getFreePort());
  const file = join(w.dir, `${name}.yaml`);
  await writeFile(
    file,
    stringify({
      partitions: 2,
      redis: { url: inject('redisUrl'), prefix: w.prefix },
      http: { host: '127.0.0.1', port, adminToken: ADMIN },
      log: { level: 'info' },
      replicaId: name,
      ...(opts.leaseMs !== undefined ? { delivery: { leaseMs: opts.leaseMs } } : {}),
      shutdownGraceMs: 1000,
      rooms: [{ id: 'secret', links: [{ endpoint: 'matrix', target: w.roomId }] }],
      adapters: { matrix: matrixConfig(w, asPort) },
    }),
  );
  const status = async (): Promise<AdapterStatus | undefined> => {
    const res = await fetch(`http://127.0.0.1:${port}/v1/admin/status`, { headers: { authorization: `Bearer ${ADMIN}` } }).catch(() => undefined);
    if (res?.status !== 200) return undefined;
    return ((await res.json()) as { adapters: Record<string, AdapterStatus> }).adapters['matrix'];
  };
  return {
    name,
    asPort,
    serve: (secretFile = w.secretFile) => {
      const p = run(['serve', '--config', file], { SYNCGATE_ADAPTER_MATRIX_ENCRYPTION_STORE_SECRET_FILE: secretFile });
      cleanup.push(async () => {
        if (p.proc.exitCode === null && p.proc.signalCode === null) {
          p.proc.kill('SIGKILL');
          await waitForExit(p.proc);
        }
      });
      return p;
    },
    status,
    active: async () => {
      const st = await status();
      return st?.ready === true && st.detail.encryption?.active === true;
    },
    exited: (p) => () => (p.proc.exitCode !== null || p.proc.signalCode !== null ? new Error(`syncgate ${name} exited:\n${p.out.stdout}\n${p.out.stderr}`) : undefined),
  };
}

async function untilActive(r: Replica, p: CliProcess, what: string): Promise<void> {
  // a start is a tsx transpile and load of the whole gateway: minutes on a saturated machine
  await waitFor(() => r.active(), { timeoutMs: 240_000, what, failFast: r.exited(p) }).catch(async (err: unknown) => {
    throw new Error(`${String(err)}; status: ${JSON.stringify(await r.status())}; output:\n${p.out.stdout.slice(-4000)}`);
  });
}

/** The member's first message, bridged: the bridge device known to the member's client. */
async function firstMessage(w: World, body: string): Promise<void> {
  await waitFor(() => w.hs.keys.keysOf(BRIDGE[w.mode], 'SYNCGATE') !== undefined, { timeoutMs: 30_000, what: 'the bridge device keys uploaded' });
  await w.peer.sync();
  await w.peer.sendEncrypted(w.roomId, 'm.room.message', { msgtype: 'm.text', body });
  await waitFor(async () => (await w.bodies()).includes(body), { timeoutMs: 60_000, what: `"${body}" in the log` });
}

async function sendFive(w: World, label: string): Promise<string[]> {
  const sent = ['one', 'two', 'three', 'four', 'five'].map((n) => `${label}: ${n}`);
  for (const body of sent) await w.peer.sendEncrypted(w.roomId, 'm.room.message', { msgtype: 'm.text', body });
  return sent;
}

/** A failed wait for bridged messages, with what the log holds, the homeserver's pushes (appservice mode) and the gateway's output. */
async function diagnosis(w: World, err: unknown, p: CliProcess): Promise<string> {
  const pushes = w.mode === 'appservice'
    ? w.hs.appServiceTransactions('syncgate').map((t) => ({ txnId: t.txnId, events: Array.isArray(t.body['events']) ? t.body['events'].length : 0, attempts: t.attempts, retryDelaysMs: t.retryDelaysMs, retriedBy: t.retriedBy, delivered: t.delivered }))
    : [];
  return `${String(err)}; in the log: ${JSON.stringify(await w.bodies())}; pushes: ${JSON.stringify(pushes)}; output:\n${p.out.stdout.slice(-12000)}`;
}

async function killed(p: CliProcess): Promise<void> {
  p.proc.kill('SIGKILL');
  await waitForExit(p.proc);
}

describe.each<Mode>(['bot', 'appservice'])('Matrix encrypted room, %s mode, gateway killed with SIGKILL', (mode) => {
  it('the restarted gateway is the same device and bridges, in order, the five messages sent while it was dead', async () => {
    const w = await world(mode, `mxe2ee-${mode}`);
    const pod = await replica(w, 'matrix-pod-0');
    const first = pod.serve();
    await untilActive(pod, first, 'the Matrix adapter ready with its crypto active');
    const before = (await pod.status())?.detail.encryption?.device;
    expect(before).toMatchObject({ deviceId: 'SYNCGATE', fresh: true });
    await firstMessage(w, 'before the kill');

    await killed(first);
    const sent = await sendFive(w, 'while dead');

    const second = pod.serve();
    await untilActive(pod, second, 'the restarted adapter ready with its crypto active');
    expect((await pod.status())?.detail.encryption?.device).toEqual({ ...before, fresh: false });
    await waitFor(async () => (await w.bodies()).includes(sent[4] ?? ''), { timeoutMs: 180_000, what: 'the five messages sent while dead in the log' }).catch(async (err: unknown) => {
      throw new Error(await diagnosis(w, err, second));
    });
    expect(await w.bodies()).toEqual(['before the kill', ...sent]);
    expect(w.announced()).toBe(1);

    // Another secret: the adapter does not start (the gateway stays up, the adapter is reported failed).
    second.proc.kill('SIGTERM');
    await waitForExit(second.proc);
    const wrongSecretFile = join(w.dir, 'wrong-secret');
    await writeFile(wrongSecretFile, 'not the secret the store was sealed with\n');
    const third = pod.serve(wrongSecretFile);
    await waitFor(() => third.out.stdout.includes('SG_ERR_STATE_SEALED_KEY'), { timeoutMs: 60_000, what: 'the adapter refusing the wrong store secret' });
    expect((await pod.status())?.ready ?? false).toBe(false);
    expect(w.announced()).toBe(1);
  }, 900_000);

  it('a standby replica that takes the connection lease over after the active one died is the same device and decrypts, in order, the five messages sent meanwhile', async () => {
    const w = await world(mode, `mxe2eelease-${mode}`);
    const ports = { a: await getFreePort(), b: await getFreePort() };
    const front = mode === 'appservice' ? await startHttpFront(() => [ports.a, ports.b]) : undefined;
    if (front) {
      cleanup.push(() => front.close());
      w.asUrl = front.url;
    }
    const a = await replica(w, 'replica-a', { leaseMs: 3000, asPort: ports.a });
    const pa = a.serve();
    await untilActive(a, pa, 'replica A active with its crypto');
    const b = await replica(w, 'replica-b', { leaseMs: 3000, asPort: ports.b });
    const pb = b.serve();
    await waitFor(async () => (await b.status()) !== undefined, { timeoutMs: 240_000, what: 'replica B up (standby)', failFast: b.exited(pb) });
    expect(await b.active()).toBe(false);
    const device = (await a.status())?.detail.encryption?.device;
    expect(device).toMatchObject({ deviceId: 'SYNCGATE', fresh: true });
    await firstMessage(w, 'to replica A');

    await killed(pa);
    const sent = await sendFive(w, 'during the takeover');
    await untilActive(b, pb, 'replica B to take the connection over with its crypto');
    expect((await b.status())?.detail.encryption?.device).toEqual({ ...device, fresh: false });
    await waitFor(async () => (await w.bodies()).includes(sent[4] ?? ''), { timeoutMs: 180_000, what: 'the messages sent during the takeover in the log' }).catch(async (err: unknown) => {
      throw new Error(await diagnosis(w, err, pb));
    });
    expect(await w.bodies()).toEqual(['to replica A', ...sent]);
    expect(w.announced()).toBe(1);
    // Appservice mode: the homeserver's pushes reached replica A, then replica B.
    if (front) expect([front.forwarded.get(ports.a) ?? 0, front.forwarded.get(ports.b) ?? 0].every((n) => n > 0)).toBe(true);
  }, 900_000);
});
