/**
 * Encrypted Matrix rooms through a real `syncgate serve` child process (bot
 * mode, Redis): the crypto state survives a kill -9. A member (an
 * independent Rust-crypto client) sends five messages while the gateway is
 * dead; the restarted gateway decrypts and bridges all five, in order, as
 * the same device with the same identity keys. The store secret comes from
 * SYNCGATE_ADAPTER_MATRIX_ENCRYPTION_STORE_SECRET_FILE; another secret makes
 * the adapter refuse to start (SG_ERR_STATE_SEALED_KEY) instead of
 * announcing a new device.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { cliRunner, type CliProcess } from '../harness/cli.js';
import { createFakeHomeserver } from '../harness/fake-homeserver.js';
import { getFreePort, waitFor, waitForExit } from '../harness/free-port.js';
import { E2eePeer } from '../harness/matrix-e2ee-peer.js';
import { testPrefix } from '../harness/redis.js';

const run = cliRunner();
const cleanup: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

const ADMIN = 'mx-e2ee-admin-token-0123456789';
const RELAY = '@relay:fake.test';

interface CryptoStatus {
  active: boolean;
  device?: { deviceId: string; curve25519: string; ed25519: string; fresh: boolean };
}

describe('Matrix encrypted room, gateway killed with SIGKILL', () => {
  it('the restarted gateway is the same device and bridges, in order, the five messages sent while it was dead', async () => {
    const hs = await createFakeHomeserver({ serverName: 'fake.test' });
    cleanup.push(() => hs.stop());
    const alice = hs.registerUser('alice', 'pw');
    hs.registerUser('relay', 'relay-pw');
    const roomId = hs.createRoom(alice.userId, { name: 'Secret', preset: 'public_chat', initialState: [{ type: 'm.room.encryption', content: { algorithm: 'm.megolm.v1.aes-sha2' } }] });
    const peer = await E2eePeer.login(hs.url, alice.userId, 'pw', 'ALICEPHONE');
    cleanup.push(() => peer.close());

    const prefix = testPrefix('mxe2ee');
    const httpPort = await getFreePort();
    const dir = await mkdtemp(join(tmpdir(), 'sg-mx-e2ee-'));
    const configFile = join(dir, 'syncgate.yaml');
    const secretFile = join(dir, 'store-secret');
    const wrongSecretFile = join(dir, 'wrong-secret');
    await writeFile(secretFile, 'the crypto store secret, kept in a file\n');
    await writeFile(wrongSecretFile, 'not the secret the store was sealed with\n');
    await writeFile(
      configFile,
      stringify({
        partitions: 2,
        redis: { url: inject('redisUrl'), prefix },
        http: { host: '127.0.0.1', port: httpPort, adminToken: ADMIN },
        log: { level: 'info' },
        replicaId: 'matrix-pod-0',
        shutdownGraceMs: 1000,
        rooms: [{ id: 'secret', links: [{ endpoint: 'matrix', target: roomId }] }],
        adapters: {
          matrix: {
            type: 'matrix',
            mode: 'bot',
            homeserverUrl: hs.url,
            serverName: 'fake.test',
            stopGraceMs: 300,
            bot: { userId: RELAY, password: 'relay-pw', syncTimeoutMs: 2000 },
            encryption: { mode: 'optional' },
          },
        },
      }),
    );
    const log = createEventLog({ partitions: 2, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    cleanup.push(() => log.close());
    const bodies = async () => (await log.read(undefined, { rooms: new Set(['secret']), limit: 100 })).events.flatMap((e) => ('content' in e ? [e.content.body] : []));
    const adapterStatus = async (): Promise<{ ready: boolean; detail: { encryption?: CryptoStatus } } | undefined> => {
      const res = await fetch(`http://127.0.0.1:${httpPort}/v1/admin/status`, { headers: { authorization: `Bearer ${ADMIN}` } }).catch(() => undefined);
      if (res?.status !== 200) return undefined;
      return ((await res.json()) as { adapters: Record<string, { ready: boolean; detail: { encryption?: CryptoStatus } }> }).adapters['matrix'];
    };
    const serve = async (file: string): Promise<CliProcess> => {
      const p = run(['serve', '--config', configFile], { SYNCGATE_ADAPTER_MATRIX_ENCRYPTION_STORE_SECRET_FILE: file });
      const exited = () => (p.proc.exitCode !== null || p.proc.signalCode !== null ? new Error(`syncgate exited:\n${p.out.stdout}\n${p.out.stderr}`) : undefined);
      await waitFor(async () => (await adapterStatus())?.ready === true && (await adapterStatus())?.detail.encryption?.active === true, {
        timeoutMs: 60_000,
        what: 'the Matrix adapter ready with its crypto active',
        failFast: exited,
      });
      return p;
    };

    const first = await serve(secretFile);
    const before = (await adapterStatus())?.detail.encryption?.device;
    expect(before).toMatchObject({ deviceId: 'SYNCGATE', fresh: true });
    await waitFor(() => hs.keys.keysOf(RELAY, 'SYNCGATE') !== undefined, { timeoutMs: 30_000, what: 'the bridge device keys uploaded' });
    await peer.sync();
    await peer.sendEncrypted(roomId, 'm.room.message', { msgtype: 'm.text', body: 'before the kill' });
    await waitFor(async () => (await bodies()).includes('before the kill'), { timeoutMs: 30_000, what: 'the first message in the log' });

    first.proc.kill('SIGKILL');
    await waitForExit(first.proc);
    const sent = ['one', 'two', 'three', 'four', 'five'].map((n) => `while dead: ${n}`);
    for (const body of sent) await peer.sendEncrypted(roomId, 'm.room.message', { msgtype: 'm.text', body });

    const second = await serve(secretFile);
    const after = (await adapterStatus())?.detail.encryption?.device;
    expect(after).toEqual({ ...before, fresh: false });
    await waitFor(async () => (await bodies()).includes(sent[4] ?? ''), { timeoutMs: 60_000, what: 'the five messages sent while dead in the log' });
    expect(await bodies()).toEqual(['before the kill', ...sent]);
    expect(hs.keys.uploads.filter((u) => u.userId === RELAY && u.body['device_keys'] !== undefined)).toHaveLength(1);

    // Another secret: the adapter does not start (the gateway stays up, the adapter is reported failed).
    second.proc.kill('SIGTERM');
    await waitForExit(second.proc);
    const third = run(['serve', '--config', configFile], { SYNCGATE_ADAPTER_MATRIX_ENCRYPTION_STORE_SECRET_FILE: wrongSecretFile });
    await waitFor(() => third.out.stdout.includes('SG_ERR_STATE_SEALED_KEY'), { timeoutMs: 60_000, what: 'the adapter refusing the wrong store secret' });
    expect((await adapterStatus())?.ready ?? false).toBe(false);
    expect(hs.keys.uploads.filter((u) => u.userId === RELAY && u.body['device_keys'] !== undefined)).toHaveLength(1);
  }, 240_000);
  it('a standby replica that takes the connection lease over after the active one died is the same device and decrypts what was sent meanwhile', async () => {
    const hs = await createFakeHomeserver({ serverName: 'fake.test' });
    cleanup.push(() => hs.stop());
    const alice = hs.registerUser('alice', 'pw');
    hs.registerUser('relay', 'relay-pw');
    const roomId = hs.createRoom(alice.userId, { name: 'Secret', preset: 'public_chat', initialState: [{ type: 'm.room.encryption', content: { algorithm: 'm.megolm.v1.aes-sha2' } }] });
    const peer = await E2eePeer.login(hs.url, alice.userId, 'pw', 'ALICEPHONE');
    cleanup.push(() => peer.close());
    const prefix = testPrefix('mxe2eelease');
    const dir = await mkdtemp(join(tmpdir(), 'sg-mx-e2ee-lease-'));
    const secretFile = join(dir, 'store-secret');
    await writeFile(secretFile, 'the crypto store secret, kept in a file\n');
    const replica = async (name: string) => {
      const port = await getFreePort();
      const file = join(dir, `${name}.yaml`);
      await writeFile(
        file,
        stringify({
          partitions: 2,
          redis: { url: inject('redisUrl'), prefix },
          http: { host: '127.0.0.1', port, adminToken: ADMIN },
          log: { level: 'info' },
          replicaId: name,
          delivery: { leaseMs: 3000 },
          shutdownGraceMs: 1000,
          rooms: [{ id: 'secret', links: [{ endpoint: 'matrix', target: roomId }] }],
          adapters: { matrix: { type: 'matrix', mode: 'bot', homeserverUrl: hs.url, serverName: 'fake.test', stopGraceMs: 300, bot: { userId: RELAY, password: 'relay-pw', syncTimeoutMs: 2000 } } },
        }),
      );
      const p = run(['serve', '--config', file], { SYNCGATE_ADAPTER_MATRIX_ENCRYPTION_STORE_SECRET_FILE: secretFile });
      const status = async (): Promise<{ ready: boolean; detail: { encryption?: CryptoStatus } } | undefined> => {
        const res = await fetch(`http://127.0.0.1:${port}/v1/admin/status`, { headers: { authorization: `Bearer ${ADMIN}` } }).catch(() => undefined);
        if (res?.status !== 200) return undefined;
        return ((await res.json()) as { adapters: Record<string, { ready: boolean; detail: { encryption?: CryptoStatus } }> }).adapters['matrix'];
      };
      const active = async () => {
        const st = await status();
        return st?.ready === true && st.detail.encryption?.active === true;
      };
      return { p, status, active };
    };
    const log = createEventLog({ partitions: 2, log: silentLogger(), redis: { url: inject('redisUrl'), prefix } });
    cleanup.push(() => log.close());
    const bodies = async () => (await log.read(undefined, { rooms: new Set(['secret']), limit: 100 })).events.flatMap((e) => ('content' in e ? [e.content.body] : []));

    const a = await replica('replica-a');
    await waitFor(a.active, { timeoutMs: 60_000, what: 'replica A active with its crypto' });
    const b = await replica('replica-b');
    await waitFor(async () => (await b.status()) !== undefined, { timeoutMs: 60_000, what: 'replica B up (standby)' });
    expect(await b.active()).toBe(false);
    const device = (await a.status())?.detail.encryption?.device;
    await waitFor(() => hs.keys.keysOf(RELAY, 'SYNCGATE') !== undefined, { timeoutMs: 30_000, what: 'the bridge device keys uploaded' });
    await peer.sync();
    await peer.sendEncrypted(roomId, 'm.room.message', { msgtype: 'm.text', body: 'to replica A' });
    await waitFor(async () => (await bodies()).includes('to replica A'), { timeoutMs: 30_000, what: 'the first message in the log' });

    a.p.proc.kill('SIGKILL');
    await waitForExit(a.p.proc);
    const sent = ['one', 'two', 'three'].map((n) => `during the takeover: ${n}`);
    for (const body of sent) await peer.sendEncrypted(roomId, 'm.room.message', { msgtype: 'm.text', body });
    await waitFor(b.active, { timeoutMs: 60_000, what: 'replica B to take the connection over with its crypto' });
    expect((await b.status())?.detail.encryption?.device).toEqual({ ...device, fresh: false });
    await waitFor(async () => (await bodies()).includes(sent[2] ?? ''), { timeoutMs: 60_000, what: 'the messages sent during the takeover in the log' });
    expect(await bodies()).toEqual(['to replica A', ...sent]);
    expect(hs.keys.uploads.filter((u) => u.userId === RELAY && u.body['device_keys'] !== undefined)).toHaveLength(1);
  }, 240_000);
});
