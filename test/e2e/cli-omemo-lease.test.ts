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
      const ok = /^xmpp \(xmpp\): active, connected, ready(?:,|$)/m.test(s.text) && s.omemo?.state === 'published' && printed !== undefined && printed === s.omemo.fingerprint;
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

/** One test's gateway: its own bridge account (so its own OMEMO device) and key prefix; both replicas share them. */
async function configure(localpart: string): Promise<string> {
  configFile = join(dir, `${localpart}.yaml`);
  await writeFile(
    configFile,
    stringify({
      partitions: 2,
      shutdownGraceMs: 1000,
      // the connection lease: short, so the takeover comes soon after the kill
      delivery: { leaseMs: LEASE_MS },
      adapters: { xmpp: { type: 'xmpp', service: server.service, jid: `${localpart}@${server.domain}`, password: 'bridge-secret', reconnect: { minMs: 100, maxMs: 1000 } } },
      rooms: [{ id: 'dm', links: [{ endpoint: 'xmpp', target: `alice@${server.domain}`, options: { type: 'chat' } }] }],
    }),
  );
  base = { SYNCGATE_HTTP_HOST: LOOPBACK, SYNCGATE_ADMIN_TOKEN: ADMIN, SYNCGATE_REDIS_URL: inject('redisUrl'), SYNCGATE_REDIS_PREFIX: testPrefix(`omemo-lease-${localpart}`) };
  return `${localpart}@${server.domain}`;
}

/** A user of our own API granted the room; returns its token and a reader of the room's bodies (`syncgate tail` over HTTP). */
async function apiReader(r: Replica): Promise<{ token: string; bodies: () => Promise<string[]> }> {
  for (const args of [['user', 'add', 'op'], ['grant', 'op', 'dm']]) expect((await finished(args, r.env)).code).toBe(0);
  const added = await finished(['device', 'add', 'op', '--json'], r.env);
  expect(added.code).toBe(0);
  const { token } = JSON.parse(added.stdout) as { token: string };
  const bodies = (): Promise<string[]> => finishedBodies(r, token);
  return { token, bodies };
}

/** Sends `body` to the room over HTTP through replica `r`; resolves once the contact's client decrypted it (never in clear). */
async function answerDecrypted(r: Replica, token: string, deviceId: number, label: string): Promise<void> {
  const mark = peer.events.length;
  const answer = `${label} ${randomUUID()}`;
  const res = await fetch(`${r.env['SYNCGATE_URL']}/v1/rooms/dm/send/${randomUUID()}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ kind: 'message', content: { body: answer } }),
  });
  expect(res.status).toBe(200);
  const isAnswer = (e: PeerEvent, i: number): boolean => i >= mark && e.event === 'message' && String(e['body']).includes(answer);
  const failed = (e: PeerEvent, i: number): boolean => i >= mark && e.event === 'undecryptable';
  const got = await peer.waitFor((e, i) => isAnswer(e, i) || failed(e, i), `${label} at alice, decrypted`, DEADLINE_MS);
  expect(got.event, JSON.stringify(got)).toBe('message');
  expect(got['encrypted']).toBe(true);
  expect(got['senderDevice']).toBe(deviceId);
  expect(peer.events.filter((e, i) => isAnswer(e, i))).toHaveLength(1);
}

/** The room's bodies read through replica `r`'s HTTP API. */
async function finishedBodies(r: Replica, token: string): Promise<string[]> {
  const out = await finished(['tail', 'dm', '--once', '--json', '--token', token], r.env);
  expect(out.code, out.stderr).toBe(0);
  return out.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => (JSON.parse(l) as { content?: { body?: string } }).content?.body ?? '');
}

describe('the XMPP bridge as an OMEMO device across a lease takeover', () => {
  beforeAll(async () => {
    server = await startProsody();
    await Promise.all([server.createUser('bridge', 'bridge-secret'), server.createUser('bridge2', 'bridge-secret'), server.createUser('alice', 'alice-secret')]);
    peer = await OmemoPeer.start(server, { localpart: 'alice', password: 'alice-secret' });
    dir = await mkdtemp(join(tmpdir(), 'sg-omemo-lease-'));
    await writeFile(join(dir, 'secret'), 'the-omemo-store-secret-0123456789\n', { mode: 0o600 });
  }, 120_000);

  afterAll(async () => {
    await peer?.stop();
    await server?.stop();
  });

  it('A is killed (-9) while holding the lease; B takes it over as the same device, bridges what was sent meanwhile once and in order, and answers encrypted', async () => {
    const bridge = await configure('bridge');
    const a = await serve();
    const first = await holder(a, 'replica A holding the XMPP adapter with its OMEMO device');
    const b = await serve();
    // B is on standby: same Redis, same secret, but not the device in use.
    const standby = await adapterStatus(b);
    expect(standby.supervisor).toBe('standby');
    expect(standby.text).not.toMatch(/^xmpp \(xmpp\): active/m);

    // A device of our own API, to read and write the room as any HTTP client would (through B).
    const { token, bodies } = await apiReader(b);

    await peer.sendEncrypted(bridge, 'before the takeover');
    await waitFor(async () => (await bodies()).includes('before the takeover'), { timeoutMs: DEADLINE_MS, what: 'the first message bridged by A' });

    // kill -9 A while it holds the lease; five encrypted messages while nobody holds it.
    await kill9(a.p);
    const texts = ['one', 'two', 'three', 'four', 'five'].map((t) => `during the takeover: ${t}`);
    for (const text of texts) await peer.sendEncrypted(bridge, text);

    // B takes the lease over once A's expires: the same device, not a new one.
    const second = await holder(b, 'replica B taking the XMPP adapter over');
    expect(second).toEqual(first);
    const seen = await peer.devices(bridge);
    expect(seen.ids).toEqual([first.deviceId]);
    expect(seen.keys[String(first.deviceId)]).toBe(first.fingerprint.replaceAll(' ', ''));

    // Every message sent meanwhile decrypted by B, once, in order, never as the fallback or a notice.
    await waitFor(async () => (await bodies()).filter((x) => x.startsWith('during the takeover: ')).length >= texts.length, { timeoutMs: DEADLINE_MS, what: 'the five messages bridged by B' });
    const all = await bodies();
    expect(all.filter((x) => x === 'before the takeover')).toHaveLength(1);
    expect(all.filter((x) => x.startsWith('during the takeover: '))).toEqual(texts);
    expect(all.join('\n')).not.toMatch(/could not be read|OMEMO encrypted message/);

    // B answers: the contact's client decrypts it (an encrypted conversation gets nothing in clear).
    await answerDecrypted(b, token, first.deviceId, 'answer from B');
    await kill9(b.p);
  }, 360_000);
  it('A, paused past its lease, loses it to B, which answers and advances the sessions; B dies; A takes the lease back as the same device and reads and answers with the sessions as B left them', async () => {
    const bridge = await configure('bridge2');
    const a = await serve();
    const first = await holder(a, 'replica A holding the XMPP adapter with its OMEMO device');
    const b = await serve();
    const { token, bodies } = await apiReader(b);
    const sent: string[] = [];
    const say = async (text: string): Promise<void> => {
      await peer.sendEncrypted(bridge, text);
      sent.push(text);
    };
    await say('to A');
    await waitFor(async () => (await bodies()).includes('to A'), { timeoutMs: DEADLINE_MS, what: 'the first message bridged by A' });
    await answerDecrypted(a, token, first.deviceId, 'answer from A');

    // A is paused past its lease: B takes over, reads, answers (the ratchets move on in Redis, not in A's memory).
    a.p.proc.kill('SIGSTOP');
    try {
      expect(await holder(b, 'replica B taking the XMPP adapter over')).toEqual(first);
      await say('to B: one');
      await waitFor(async () => (await bodies()).includes('to B: one'), { timeoutMs: DEADLINE_MS, what: 'a message bridged by B' });
      await answerDecrypted(b, token, first.deviceId, 'answer from B');
      await say('to B: two');
      await waitFor(async () => (await bodies()).includes('to B: two'), { timeoutMs: DEADLINE_MS, what: 'a second message bridged by B' });

      // B dies holding the lease; A wakes up at once (B's lease still runs), gives up, and wins the lease back once it expires.
      await kill9(b.p);
    } finally {
      a.p.proc.kill('SIGCONT');
    }
    // The contact writes during the handover (whoever holds the lease then, A reads it: live or from the archive).
    await say('during the handover: one');
    await say('during the handover: two');
    // A holds the lease again: after noticing it lost it and winning it back, or (B's lease run out before A's next
    // check) without ever noticing that B held it meanwhile. Either way, the same device with B's sessions.
    expect(await holder(a, 'replica A holding the XMPP adapter again')).toEqual(first);
    expect((await peer.devices(bridge)).ids).toEqual([first.deviceId]);

    await say('back to A');
    const read = () => finishedBodies(a, token);
    await waitFor(async () => { const got = await read(); return sent.every((x) => got.includes(x)); }, { timeoutMs: DEADLINE_MS, what: 'every message bridged, the last ones by A after it took the lease back' });
    const all = await read();
    expect(all.filter((x) => sent.includes(x))).toEqual(sent);
    expect(all.join('\n')).not.toMatch(/could not be read|OMEMO encrypted message/);
    await answerDecrypted(a, token, first.deviceId, 'answer from A again');
    await kill9(a.p);
  }, 480_000);
});
