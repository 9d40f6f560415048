/**
 * The XMPP bridge's OMEMO device across a lease takeover (issue 26, point 4):
 * two `syncgate serve` replicas on one Redis, same config and OMEMO secret
 * (from SYNCGATE_ADAPTER_XMPP_OMEMO_SECRET_FILE). Replica A holds the XMPP
 * adapter's connection lease and is the device; it is killed with SIGKILL; a
 * real OMEMO client (python-omemo) sends encrypted messages meanwhile;
 * replica B takes the lease over once it expires and must be the same device
 * (device id and fingerprint in `syncgate status`, one device in the
 * account's list), bridge every message once and in order (read back with
 * `syncgate tail` over HTTP), and answer encrypted so the contact decrypts.
 */
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import { LOOPBACK, getFreePort, waitFor, waitForExit } from '../harness/free-port.js';
import { cliRunner, type CliProcess } from '../harness/cli.js';
import { OmemoPeer, type PeerEvent } from '../harness/omemo-peer.js';
import { startProsody, type ProsodyServer } from '../harness/prosody.js';
import { testPrefix } from '../harness/redis.js';

const run = cliRunner();
const ADMIN = 'omemo-lease-admin-token-0123456789';
const LEASE_MS = 4000;
// The machine is shared and busy: generous deadlines, never fixed sleeps.
const DEADLINE_MS = 90_000;

let server: ProsodyServer;
let peer: OmemoPeer;
let dir: string;
let configFile: string;
let base: Record<string, string>;

interface Replica {
  readonly p: CliProcess;
  readonly env: Record<string, string>;
}

const exited = (p: CliProcess) => () => (p.proc.exitCode !== null || p.proc.signalCode !== null ? new Error(`serve exited: ${p.out.stderr}${p.out.stdout}`) : undefined);

async function serve(): Promise<Replica> {
  const port = await getFreePort();
  const env = { ...base, SYNCGATE_HTTP_PORT: String(port), SYNCGATE_URL: `http://${LOOPBACK}:${port}` };
  // the same secret file for both replicas (only `serve` reads adapter secrets)
  const p = run(['serve', '--config', configFile], { ...env, SYNCGATE_ADAPTER_XMPP_OMEMO_SECRET_FILE: join(dir, 'secret') });
  await waitFor(() => `${p.out.stdout}${p.out.stderr}`.includes('syncgate listening'), { timeoutMs: DEADLINE_MS, what: 'the replica listening', failFast: exited(p) });
  return { p, env };
}

async function finished(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = run(args, env);
  await waitForExit(p.proc);
  return { code: p.proc.exitCode, ...p.out };
}

interface OmemoDetail {
  readonly state?: string;
  readonly deviceId?: number;
  readonly fingerprint?: string;
}

/** The replica's view of the XMPP adapter: `syncgate status` (text) and its --json form. */
async function adapterStatus(r: Replica): Promise<{ text: string; supervisor: string | undefined; omemo: OmemoDetail | undefined }> {
  const text = await finished(['status'], r.env);
  expect(text.code, text.stderr).toBe(0);
  const json = await finished(['status', '--json'], r.env);
  expect(json.code, json.stderr).toBe(0);
  const parsed = JSON.parse(json.stdout) as { adapters?: { xmpp?: { state?: string; detail?: { omemo?: OmemoDetail } } } };
  return { text: text.stdout, supervisor: parsed.adapters?.xmpp?.state, omemo: parsed.adapters?.xmpp?.detail?.omemo };
}

/** Waits until this replica holds the XMPP adapter, connected and ready, with a published device; returns its device. */
async function holder(r: Replica, what: string): Promise<{ deviceId: number; fingerprint: string }> {
  let device: { deviceId: number; fingerprint: string } | undefined;
  await waitFor(
    async () => {
      const s = await adapterStatus(r);
      const printed = /^ {2}omemo\.fingerprint: ((?:[0-9a-f]{8} ){7}[0-9a-f]{8})$/m.exec(s.text)?.[1];
      const ok = /^xmpp \(xmpp\): active, connected, ready$/m.test(s.text) && s.omemo?.state === 'published' && printed !== undefined && printed === s.omemo.fingerprint;
      if (ok && s.omemo?.deviceId !== undefined && printed !== undefined) device = { deviceId: s.omemo.deviceId, fingerprint: printed };
      return ok;
    },
    { timeoutMs: DEADLINE_MS, what, failFast: exited(r.p) },
  );
  if (!device) throw new Error(`${what}: no device`);
  return device;
}

async function kill9(p: CliProcess): Promise<void> {
  p.proc.kill('SIGKILL');
  await waitForExit(p.proc as ChildProcess);
}

describe('the XMPP bridge as an OMEMO device across a lease takeover', () => {
  beforeAll(async () => {
    server = await startProsody();
    await Promise.all([server.createUser('bridge', 'bridge-secret'), server.createUser('alice', 'alice-secret')]);
    peer = await OmemoPeer.start(server, { localpart: 'alice', password: 'alice-secret' });
    dir = await mkdtemp(join(tmpdir(), 'sg-omemo-lease-'));
    configFile = join(dir, 'config.yaml');
    await writeFile(
      configFile,
      stringify({
        partitions: 2,
        shutdownGraceMs: 1000,
        // the connection lease: short, so the takeover comes soon after the kill
        delivery: { leaseMs: LEASE_MS },
        adapters: { xmpp: { type: 'xmpp', service: server.service, jid: `bridge@${server.domain}`, password: 'bridge-secret', reconnect: { minMs: 100, maxMs: 1000 } } },
        rooms: [{ id: 'dm', links: [{ endpoint: 'xmpp', target: `alice@${server.domain}`, options: { type: 'chat' } }] }],
      }),
    );
    await writeFile(join(dir, 'secret'), 'the-omemo-store-secret-0123456789\n', { mode: 0o600 });
    base = {
      SYNCGATE_HTTP_HOST: LOOPBACK,
      SYNCGATE_ADMIN_TOKEN: ADMIN,
      SYNCGATE_REDIS_URL: inject('redisUrl'),
      SYNCGATE_REDIS_PREFIX: testPrefix('omemo-lease'),
    };
  }, 120_000);

  afterAll(async () => {
    await peer?.stop();
    await server?.stop();
  });

  it('A is killed (-9) while holding the lease; B takes it over as the same device, bridges what was sent meanwhile once and in order, and answers encrypted', async () => {
    const a = await serve();
    const first = await holder(a, 'replica A holding the XMPP adapter with its OMEMO device');
    const b = await serve();
    // B is on standby: same Redis, same secret, but not the device in use.
    const standby = await adapterStatus(b);
    expect(standby.supervisor).toBe('standby');
    expect(standby.text).not.toMatch(/^xmpp \(xmpp\): active/m);

    // A device of our own API, to read and write the room as any HTTP client would (through B).
    for (const args of [['user', 'add', 'op'], ['grant', 'op', 'dm']]) expect((await finished(args, b.env)).code).toBe(0);
    const added = await finished(['device', 'add', 'op', '--json'], b.env);
    expect(added.code).toBe(0);
    const { token } = JSON.parse(added.stdout) as { token: string };
    const bodies = async (): Promise<string[]> => {
      const r = await finished(['tail', 'dm', '--once', '--json', '--token', token], b.env);
      expect(r.code).toBe(0);
      return r.stdout
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => (JSON.parse(l) as { content?: { body?: string } }).content?.body ?? '');
    };

    await peer.sendEncrypted(`bridge@${server.domain}`, 'before the takeover');
    await waitFor(async () => (await bodies()).includes('before the takeover'), { timeoutMs: DEADLINE_MS, what: 'the first message bridged by A' });

    // kill -9 A while it holds the lease; five encrypted messages while nobody holds it.
    await kill9(a.p);
    const texts = ['one', 'two', 'three', 'four', 'five'].map((t) => `during the takeover: ${t}`);
    for (const text of texts) await peer.sendEncrypted(`bridge@${server.domain}`, text);

    // B takes the lease over once A's expires: the same device, not a new one.
    const second = await holder(b, 'replica B taking the XMPP adapter over');
    expect(second).toEqual(first);
    const seen = await peer.devices(`bridge@${server.domain}`);
    expect(seen.ids).toEqual([first.deviceId]);
    expect(seen.keys[String(first.deviceId)]).toBe(first.fingerprint.replaceAll(' ', ''));

    // Every message sent meanwhile decrypted by B, once, in order, never as the fallback or a notice.
    await waitFor(async () => (await bodies()).filter((x) => x.startsWith('during the takeover: ')).length >= texts.length, { timeoutMs: DEADLINE_MS, what: 'the five messages bridged by B' });
    const all = await bodies();
    expect(all.filter((x) => x === 'before the takeover')).toHaveLength(1);
    expect(all.filter((x) => x.startsWith('during the takeover: '))).toEqual(texts);
    expect(all.join('\n')).not.toMatch(/could not be read|OMEMO encrypted message/);

    // B answers: the contact's client decrypts it (an encrypted conversation gets nothing in clear).
    const mark = peer.events.length;
    const answer = `answer from B ${randomUUID()}`;
    const res = await fetch(`${b.env['SYNCGATE_URL']}/v1/rooms/dm/send/${randomUUID()}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ kind: 'message', content: { body: answer } }),
    });
    expect(res.status).toBe(200);
    const isAnswer = (e: PeerEvent, i: number): boolean => i >= mark && e.event === 'message' && String(e['body']).includes(answer);
    const got = await peer.waitFor(isAnswer, 'the answer from B at alice, decrypted', DEADLINE_MS);
    expect(got['encrypted']).toBe(true);
    expect(got['senderDevice']).toBe(first.deviceId);
    expect(peer.events.filter((e, i) => isAnswer(e, i))).toHaveLength(1);
    expect(peer.events.slice(mark).some((e) => e.event === 'undecryptable')).toBe(false);
    await kill9(b.p);
  }, 360_000);
});
