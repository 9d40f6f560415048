/**
 * The XMPP bridge's OMEMO device as an operator runs it (issue 26): `syncgate
 * serve` with the store secret from SYNCGATE_ADAPTER_XMPP_OMEMO_SECRET_FILE and
 * Redis, `syncgate status` printing the fingerprint a contact's client shows
 * for the bridge (checked against a real OMEMO client, python-omemo), the same
 * device after a kill -9 decrypting what the contact sent while it was down
 * (read back through the HTTP API with `syncgate tail`), and another secret
 * refused rather than a new device.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { LOOPBACK, getFreePort, waitFor, waitForExit } from '../harness/free-port.js';
import { cliRunner, type CliProcess } from '../harness/cli.js';
import { OmemoPeer } from '../harness/omemo-peer.js';
import { startProsody, type ProsodyServer } from '../harness/prosody.js';
import { testPrefix } from '../harness/redis.js';

const run = cliRunner();
const ADMIN = 'omemo-admin-token-0123456789';

let server: ProsodyServer;
let peer: OmemoPeer;
let dir: string;
let configFile: string;
let env: Record<string, string>;

const exited = (p: CliProcess) => () => (p.proc.exitCode !== null || p.proc.signalCode !== null ? new Error(`serve exited: ${p.out.stderr}`) : undefined);

async function serve(secretFile: string): Promise<CliProcess> {
  const p = run(['serve', '--config', configFile], { ...env, SYNCGATE_ADAPTER_XMPP_OMEMO_SECRET_FILE: secretFile });
  await waitFor(async () => (await fetch(`${env['SYNCGATE_URL']}/readyz`).catch(() => undefined))?.status === 200, { timeoutMs: 60_000, what: 'the gateway ready', failFast: exited(p) });
  return p;
}

async function status(): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = run(['status'], env);
  await waitForExit(p.proc);
  return { code: p.proc.exitCode, ...p.out };
}

/** The fingerprint line of `syncgate status`, once the XMPP adapter is active and ready. */
async function printedFingerprint(): Promise<string> {
  let fingerprint = '';
  await waitFor(
    async () => {
      const r = await status();
      expect(r.code).toBe(0);
      fingerprint = /^ {2}omemo\.fingerprint: ((?:[0-9a-f]{8} ){7}[0-9a-f]{8})$/m.exec(r.stdout)?.[1] ?? '';
      return /^xmpp \(xmpp\): active, connected, ready(?:,|$)/m.test(r.stdout) && fingerprint !== '';
    },
    { timeoutMs: 60_000, what: 'syncgate status with the ready XMPP adapter and its fingerprint' },
  );
  return fingerprint;
}

async function kill9(p: CliProcess): Promise<void> {
  p.proc.kill('SIGKILL');
  await waitForExit(p.proc as ChildProcess);
}

describe('syncgate status: the XMPP bridge as an OMEMO device', () => {
  beforeAll(async () => {
    server = await startProsody();
    await Promise.all([server.createUser('bridge', 'bridge-secret'), server.createUser('alice', 'alice-secret')]);
    peer = await OmemoPeer.start(server, { localpart: 'alice', password: 'alice-secret' });
    dir = await mkdtemp(join(tmpdir(), 'sg-omemo-cli-'));
    configFile = join(dir, 'config.yaml');
    await writeFile(
      configFile,
      ['adapters:', '  xmpp:', '    type: xmpp', `    service: ${server.service}`, `    jid: bridge@${server.domain}`, '    password: bridge-secret', 'rooms:', '  - id: dm', '    links:', `      - { endpoint: xmpp, target: alice@${server.domain}, options: { type: chat } }`, ''].join('\n'),
    );
    await writeFile(join(dir, 'secret'), 'the-omemo-store-secret-0123456789\n', { mode: 0o600 });
    await writeFile(join(dir, 'other'), 'a-different-secret-entirely-98765\n', { mode: 0o600 });
    const port = await getFreePort();
    env = {
      SYNCGATE_HTTP_HOST: LOOPBACK,
      SYNCGATE_HTTP_PORT: String(port),
      SYNCGATE_ADMIN_TOKEN: ADMIN,
      SYNCGATE_URL: `http://${LOOPBACK}:${port}`,
      SYNCGATE_REDIS_URL: inject('redisUrl'),
      SYNCGATE_REDIS_PREFIX: testPrefix('omemo-cli'),
    };
  }, 120_000);

  afterAll(async () => {
    await peer?.stop();
    await server?.stop();
  });

  it('prints the fingerprint contacts see; after a kill -9 the same device decrypts the five messages sent meanwhile, once, in order; another secret is refused', async () => {
    const first = await serve(join(dir, 'secret'));
    const fingerprint = await printedFingerprint();
    // What alice's client shows for the bridge's device is what the operator reads.
    const seen = await peer.devices(`bridge@${server.domain}`);
    expect(Object.values(seen.keys)).toContain(fingerprint.replaceAll(' ', ''));
    const json = JSON.parse(await statusJson()) as unknown;
    expect(json).toMatchObject({ adapters: { xmpp: { detail: { omemo: { fingerprint, state: 'published' } } } } });

    // A device of our own API, to read the room as any HTTP client would.
    for (const args of [['user', 'add', 'op'], ['grant', 'op', 'dm']]) expect((await finished(args)).code).toBe(0);
    const { token } = JSON.parse((await finished(['device', 'add', 'op', '--json'])).stdout) as { token: string };
    const bodies = async (): Promise<string[]> => {
      const r = await finished(['tail', 'dm', '--once', '--json', '--token', token]);
      return r.stdout
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => (JSON.parse(l) as { content?: { body?: string } }).content?.body ?? '');
    };
    await peer.sendEncrypted(`bridge@${server.domain}`, 'before the crash');
    await waitFor(async () => (await bodies()).includes('before the crash'), { timeoutMs: 60_000, what: 'the first message in the room' });

    // kill -9; five encrypted messages while the gateway is down; back: all five, once, in order, same device.
    await kill9(first);
    const texts = ['one', 'two', 'three', 'four', 'five'].map((t) => `while down: ${t}`);
    for (const text of texts) await peer.sendEncrypted(`bridge@${server.domain}`, text);
    const second = await serve(join(dir, 'secret'));
    expect(await printedFingerprint()).toBe(fingerprint);
    await waitFor(async () => (await bodies()).filter((b) => b.startsWith('while down: ')).length >= texts.length, { timeoutMs: 60_000, what: 'the five messages after the restart' });
    expect((await bodies()).filter((b) => b.startsWith('while down: '))).toEqual(texts);
    expect((await bodies()).join('\n')).not.toMatch(/could not be read|OMEMO encrypted message/);
    await kill9(second);

    // Another secret: the adapter does not start (no new device, no new fingerprint); the status says why.
    const third = await serve(join(dir, 'other'));
    await waitFor(
      async () => {
        const r = await status();
        return /^xmpp \(xmpp\): failed, not connected, not ready(?:,|$)/m.test(r.stdout) && /last error: .*does not open with the configured secret/.test(r.stdout);
      },
      { timeoutMs: 60_000, what: 'the XMPP adapter failed on the wrong secret' },
    );
    expect((await status()).stdout).not.toMatch(/fingerprint/);
    expect((await peer.devices(`bridge@${server.domain}`)).ids).toHaveLength(1);
    await kill9(third);
  }, 240_000);
});

async function finished(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = run(args, env);
  await waitForExit(p.proc);
  return { code: p.proc.exitCode, ...p.out };
}

async function statusJson(): Promise<string> {
  const p = run(['status', '--json'], env);
  await waitForExit(p.proc);
  return p.out.stdout;
}
