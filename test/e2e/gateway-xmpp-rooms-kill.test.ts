/**
 * The rooms component across a gateway crash: two `syncgate serve`
 * processes share one Redis; A holds the component (XEP-0114) connection and
 * is killed with SIGKILL; B takes the lease over once it expires and
 * connects the component. Occupants learn they are out (a refused message,
 * a self-ping), rejoin, resend what was refused, and MAM continues from the
 * stanza-id they hold: nothing lost, nothing doubled.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import { getFreePort, isRunning, killOnExit, terminate, waitFor } from '../harness/free-port.js';
import { startProsody, type ProsodyServer } from '../harness/prosody.js';
import { testPrefix } from '../harness/redis.js';
import { TestUser, endUsers, xml, DEADLINE_MS } from '../integration/xmpp/helpers.js';
import type { XmlElement } from '@xmpp/client';

const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const ADMIN = 'rooms-kill-admin-token-0123456789';
const SECRET = `s-${randomUUID()}`;
const LEASE_MS = 4000;
const SID = 'urn:xmpp:sid:0';
const MAM = 'urn:xmpp:mam:2';
let prosody: ProsodyServer;
const procs: ChildProcess[] = [];

beforeAll(async () => {
  prosody = await startProsody({ component: { secret: SECRET } });
  await prosody.createUser('alice', 'alice-pw');
}, 60_000);

afterAll(async () => {
  await endUsers();
  for (const p of procs) await terminate(p, 5000);
  await prosody?.stop();
});

interface Replica {
  readonly proc: ChildProcess;
  readonly url: string;
}

async function serve(dir: string, name: string, prefix: string): Promise<Replica> {
  const port = await getFreePort();
  const configFile = join(dir, `${name}.yaml`);
  const component = prosody.component;
  if (!component) throw new Error('no component');
  await writeFile(
    configFile,
    stringify({
      partitions: 2,
      redis: { url: inject('redisUrl'), prefix },
      http: { port, adminToken: ADMIN },
      log: { level: 'info' },
      shutdownGraceMs: 1000,
      delivery: { leaseMs: LEASE_MS },
      rooms: [{ id: 'ops', links: [{ endpoint: 'rooms', target: 'ops' }] }],
      adapters: { rooms: { type: 'xmpp-rooms', service: component.service, domain: component.domain, secret: SECRET, reconnect: { minMs: 100, maxMs: 1000 }, access: [{ domain: prosody.domain, user: 'staff' }] } },
    }),
  );
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SYNCGATE_')));
  const proc = spawn(process.execPath, ['--import', 'tsx', main, 'serve', '--config', configFile], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  killOnExit(proc);
  procs.push(proc);
  let out = '';
  proc.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  proc.stderr?.on('data', (c: Buffer) => (out += c.toString()));
  await waitFor(() => out.includes('syncgate listening'), { timeoutMs: 60_000, what: `replica ${name} to listen`, failFast: () => (proc.exitCode !== null ? new Error(out) : undefined) });
  return { proc, url: `http://127.0.0.1:${port}` };
}

async function call<T>(url: string, method: string, path: string, token: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
}

async function componentHeld(r: Replica): Promise<boolean> {
  const s = await call<{ adapters: Record<string, { state: string; connected: boolean }> }>(r.url, 'GET', '/v1/admin/status', ADMIN).catch(() => undefined);
  return s?.body.adapters['rooms']?.state === 'active' && s.body.adapters['rooms'].connected;
}

describe('xmpp-rooms across a gateway kill -9', () => {
  it('B takes the component over; occupants rejoin; nothing lost or doubled; MAM continues from the held stanza-id', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sg-rooms-kill-'));
    const prefix = testPrefix('roomskill');
    const a = await serve(dir, 'a', prefix);
    await waitFor(() => componentHeld(a), { timeoutMs: 30_000, what: 'A to hold the component' });
    const b = await serve(dir, 'b', prefix);
    expect(await componentHeld(b)).toBe(false);
    expect((await call(b.url, 'POST', '/v1/admin/users', ADMIN, { id: 'staff' })).status).toBe(201);
    expect((await call(b.url, 'POST', '/v1/admin/users', ADMIN, { id: 'carol' })).status).toBe(201);
    expect((await call(b.url, 'PUT', '/v1/admin/users/staff/rooms/ops', ADMIN)).status).toBeLessThan(300);
    expect((await call(b.url, 'PUT', '/v1/admin/users/carol/rooms/ops', ADMIN)).status).toBeLessThan(300);
    const carol = (await call<{ token: string }>(b.url, 'POST', '/v1/admin/devices', ADMIN, { user: 'carol' })).body.token;
    const room = `ops@${prosody.component?.domain ?? ''}`;

    const alice = await TestUser.login(prosody, 'alice', 'alice-pw', 'phone');
    await alice.join(room, 'alice');
    const first = randomUUID();
    let mark = alice.stanzas.length;
    await alice.say(room, 'before the kill', [], first);
    const held = (await alice.waitFor((s) => s.attrs['id'] === first && s.is('message'), 'reflection', DEADLINE_MS, mark)).getChildren('stanza-id', SID)[0]?.attrs['id'] ?? '';
    expect(held).not.toBe('');
    const during = randomUUID();

    // B is paused first, so nobody can take the component over before the message below is sent:
    // under full load B's takeover (once A's 4 s lease ran out) came first, and nothing bounced
    b.proc.kill('SIGSTOP');
    try {
      a.proc.kill('SIGKILL');
      await waitFor(() => !isRunning(a.proc), { timeoutMs: 10_000, what: 'A to die' });
      // while nobody holds the component, a message bounces (Prosody: the component is gone)
      mark = alice.stanzas.length;
      await alice.say(room, 'during the outage', [], during);
      await alice.waitFor((s) => s.attrs['id'] === during && s.attrs['type'] === 'error', 'bounce while the component is down', DEADLINE_MS, mark);
    } finally {
      b.proc.kill('SIGCONT');
    }
    const httpSent: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await call<{ eventId: string }>(b.url, 'PUT', `/v1/rooms/ops/send/${randomUUID()}`, carol, { kind: 'message', content: { body: `http ${i}` } });
      expect(r.status).toBe(200);
      httpSent.push(r.body.eventId);
    }
    await waitFor(() => componentHeld(b), { timeoutMs: 30_000, what: 'B to take the component over' });

    // the new holder does not know Alice: the self-ping says so, she rejoins and resends (same origin-id)
    const ping = await alice.xmpp.iqCaller.request(xml('iq', { type: 'get', to: `${room}/alice` }, xml('ping', { xmlns: 'urn:xmpp:ping' })), DEADLINE_MS).then(
      () => 'joined',
      (err: { condition?: string }) => err.condition,
    );
    expect(ping).toBe('not-acceptable');
    await alice.join(room, 'alice');
    mark = alice.stanzas.length;
    await alice.say(room, 'during the outage', [], during);
    const resent = (await alice.waitFor((s) => s.attrs['id'] === during && s.attrs['type'] === 'groupchat', 'reflection of the resend', DEADLINE_MS, mark)).getChildren('stanza-id', SID)[0]?.attrs['id'];
    await alice.say(room, 'before the kill', [], first);
    const again = (await alice.waitFor((s) => s.attrs['id'] === first && s.attrs['type'] === 'groupchat', 'resend of the first', DEADLINE_MS, mark)).getChildren('stanza-id', SID)[0]?.attrs['id'];
    expect(again).toBe(held);

    // MAM after the held id: Carol's two messages, then the resent one; nothing twice
    const queryid = randomUUID();
    mark = alice.stanzas.length;
    const reply: XmlElement = await alice.xmpp.iqCaller.request(
      xml(
        'iq',
        { type: 'set', to: room },
        xml(
          'query',
          { xmlns: MAM, queryid },
          xml('x', { xmlns: 'jabber:x:data', type: 'submit' }, xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, MAM)), xml('field', { var: 'after-id' }, xml('value', {}, held))),
        ),
      ),
      DEADLINE_MS,
    );
    const ids = alice.stanzas
      .slice(mark)
      .map((s) => s.getChild('result', MAM))
      .filter((r) => r?.attrs['queryid'] === queryid)
      .map((r) => r?.attrs['id']);
    expect(ids).toEqual([...httpSent, resent]);
    expect(reply.getChild('fin', MAM)?.attrs['complete']).toBe('true');
    const sync = await call<{ events: Array<{ content?: { body: string } }> }>(b.url, 'GET', '/v1/sync?limit=100&timeout=0', carol);
    expect(sync.body.events.map((e) => e.content?.body)).toEqual(['before the kill', 'http 0', 'http 1', 'during the outage']);
  }, 180_000);
});
