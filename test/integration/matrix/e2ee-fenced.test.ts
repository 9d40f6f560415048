/**
 * Fenced crypto state across a lease takeover (issue 22 point 2): two
 * replicas in one process over one Redis, each an adapter supervisor with
 * the real Matrix adapter and crypto store, the sealed store fenced by its
 * supervisor's lease. Replica A holds the connection and is then "paused":
 * right after a sync answer arrived (listing the member's new device), the
 * answer and every later request of its session are held, as for a process
 * stopped at that point, and its supervisor does not renew. B takes the lease
 * over, is the same device, and receives and sends encrypted messages. A
 * resumes with its stale in-memory state and handles that answer (the new
 * device in its device lists makes its crypto store write): its writes
 * are refused (SG_ERR_STATE_FENCED), nothing of them lands, its session
 * stops, and B's state is intact — a later message decrypts through B and,
 * after B restarts, through the replica that starts next.
 */
import { afterEach, describe, expect, inject, it } from 'vitest';
import type { Adapter } from '../../../src/core/adapter.js';
import type { LogEvent } from '../../../src/core/event.js';
import type { StateStore } from '../../../src/core/ports.js';
import type { DeliveryManager } from '../../../src/bridge/delivery.js';
import { createMatrixAdapter, type MatrixAdapter } from '../../../adapters/matrix/index.js';
import { createIngestSink } from '../../../src/bridge/ingest.js';
import { LeaseFence } from '../../../src/runtime/lease-fence.js';
import { createSealedStore } from '../../../src/runtime/sealed-store.js';
import { AdapterSupervisor } from '../../../src/runtime/supervisor.js';
import { waitFor } from '../../harness/free-port.js';
import { E2eePeer } from '../../harness/matrix-e2ee-peer.js';
import { testPrefix } from '../../harness/redis.js';
import { appendApi, botConfig, createEnv, Driver, matrixLink, waitForEvents, type Env } from './helpers.js';

const RELAY = '@relay:fake.test';
const SECRET = 'a store secret of some length';
const NS = 'matrix-crypto:matrix';

const realFetch = globalThis.fetch;
let env: Env | undefined;
const peers: E2eePeer[] = [];
const supervisors: AdapterSupervisor[] = [];

afterEach(async () => {
  globalThis.fetch = realFetch;
  for (const s of supervisors.splice(0)) await s.stop();
  for (const p of peers.splice(0)) p.close();
  await env?.close();
  env = undefined;
});

/**
 * The network as a paused replica sees it. `pauseAfter(token, what)`: the
 * first /sync answer for that access token whose body matches `what` is
 * held, as for a process stopped right after it received that answer and
 * before it handled it; every later request of that token waits too, until
 * `resume()`. Also remembers the relay's logins (its access tokens).
 */
function pausableFetch() {
  const logins: string[] = [];
  let armed: { token: string; what: (body: Record<string, unknown>) => boolean } | undefined;
  let paused: string | undefined;
  let gate: Promise<void> = Promise.resolve();
  let release = (): void => undefined;
  const tokenOf = (init: RequestInit | undefined) => new Headers(init?.headers).get('authorization')?.replace(/^Bearer /, '');
  globalThis.fetch = async (input, init) => {
    const token = tokenOf(init);
    if (token !== undefined && token === paused) await gate;
    const res = await realFetch(input, init);
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (armed && token === armed.token && url.includes('/_matrix/client/v3/sync') && res.ok && armed.what((await res.clone().json()) as Record<string, unknown>)) {
      armed = undefined;
      paused = token;
      await gate;
    }
    if (url.endsWith('/_matrix/client/v3/login') && res.ok) {
      const body = (await res.clone().json()) as { user_id?: string; access_token?: string };
      if (body.user_id === RELAY && body.access_token) logins.push(body.access_token);
    }
    return res;
  };
  return {
    lastLogin: () => logins.at(-1),
    pauseAfter(token: string, what: (body: Record<string, unknown>) => boolean) {
      gate = new Promise((resolve) => (release = resolve));
      armed = { token, what };
    },
    paused: () => paused !== undefined,
    resume() {
      paused = undefined;
      release();
      gate = Promise.resolve();
    },
  };
}

/** The state store, keeping every value a replica asked to write to the crypto namespace (sealed, so each is unique). */
function attempts(state: StateStore): { state: StateStore; values: string[] } {
  const values: string[] = [];
  const note = (ns: string, set: ReadonlyArray<readonly [string, string]>) => ns === NS && values.push(...set.map(([, v]) => v));
  return {
    values,
    state: {
      get: (ns, k) => state.get(ns, k),
      set: (ns, k, v) => (note(ns, [[k, v]]), state.set(ns, k, v)),
      setIfAbsent: (ns, k, v) => state.setIfAbsent(ns, k, v),
      delete: (ns, k) => state.delete(ns, k),
      entries: (ns) => state.entries(ns),
      advance: (ns, k, v) => state.advance(ns, k, v),
      update: (ns, set, del) => (note(ns, set), state.update(ns, set, del)),
      fencedUpdate: (ns, token, set, del) => (note(ns, set), state.fencedUpdate(ns, token, set, del)),
    },
  };
}

interface Replica {
  readonly adapter: MatrixAdapter;
  readonly supervisor: AdapterSupervisor;
  readonly fence: LeaseFence;
  readonly written: string[];
  readonly refusals: Error[];
  tick(): Promise<void>;
}

function replica(e: Env, owner: string, reclaim?: (holder: string) => boolean): Replica {
  const fence = new LeaseFence();
  const rec = attempts(e.log.state);
  const refusals: Error[] = [];
  fence.onRefused((err) => refusals.push(err));
  const adapter = createMatrixAdapter({
    name: 'matrix',
    config: botConfig(e, {}, { encryption: { storeSecret: SECRET } }),
    log: e.logger.child({ adapter: 'matrix', replica: owner }),
    sink: createIngestSink({ log: e.log, logger: e.logger }),
    links: e.links,
    state: e.log.state,
    sealed: (ns, secret) => createSealedStore(rec.state, ns, secret, fence),
  });
  // deliveries are driven by hand here (Driver): the supervisor only holds the connection
  const delivery: DeliveryManager = { owner, start: async () => undefined, stop: async () => undefined, leases: () => ({}) };
  const supervisor = new AdapterSupervisor({ adapter: adapter as Adapter, delivery, queue: e.log.delivery, owner, leaseMs: 600_000, logger: e.logger, graceMs: 100, fence, ...(reclaim ? { reclaim } : {}) });
  supervisors.push(supervisor);
  // the renewal step, driven by hand (a paused replica's timer does not run)
  return { adapter, supervisor, fence, written: rec.values, refusals, tick: () => supervisor['tick']() };
}

function texts(events: LogEvent[]): string[] {
  return events.filter((ev) => ev.kind === 'message').map((ev) => ('content' in ev ? ev.content.body : ''));
}

function deviceOf(adapter: MatrixAdapter): unknown {
  return (adapter.status().detail?.['encryption'] as { device?: unknown } | undefined)?.device;
}

async function active(r: Replica, e: Env, what: string): Promise<void> {
  await r.tick();
  expect(r.supervisor.current).toBe('active');
  await waitFor(() => r.adapter.status().ready && e.hs.keys.keysOf(RELAY, 'SYNCGATE') !== undefined, { timeoutMs: 60_000, what });
}

describe('Matrix crypto state fenced by the connection lease', () => {
  it('a replica paused past its lease cannot write its stale crypto records after another took over; the new holder decrypts and sends on, also after a restart', async () => {
    const net = pausableFetch();
    const e = await createEnv({ redis: { url: inject('redisUrl'), prefix: testPrefix('mxfenced') } });
    env = e;
    e.hs.registerUser('relay', 'relay-pw');
    e.hs.sendStateAsUser(e.alice.userId, e.roomId, 'm.room.encryption', '', { algorithm: 'm.megolm.v1.aes-sha2' });
    const alice = await E2eePeer.login(e.hs.url, e.alice.userId, 'pw', 'ALICEPHONE');
    peers.push(alice);

    // A holds the connection: a new device, a message each way
    const a = replica(e, 'replica-a#1#aa');
    await active(a, e, 'replica A ready with its device keys uploaded');
    const device = deviceOf(a.adapter);
    expect(device).toMatchObject({ deviceId: 'SYNCGATE', fresh: true });
    const tokenA = net.lastLogin();
    expect(tokenA).toBeDefined();
    await alice.sync();
    await alice.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'to A' });
    await waitForEvents(e.log, (evs) => texts(evs).includes('to A'), 'the first message, decrypted by A', 60_000);
    const driverA = new Driver(a.adapter, e.log, matrixLink(e));
    expect((await driverA.deliver(await appendApi(e.log, { kind: 'message', content: { body: 'from A' } }))).status).toBe('delivered');
    expect((await alice.waitFor((m) => m.sender === RELAY && String(m.content?.['body']).endsWith('from A'), 60_000)).error).toBeUndefined();

    // The member adds a device: A is paused right after its sync answer lists the change, before it handled it.
    net.pauseAfter(tokenA ?? '', (body) => JSON.stringify(body['device_lists'] ?? {}).includes(e.alice.userId));
    const tablet = await E2eePeer.login(e.hs.url, e.alice.userId, 'pw', 'ALICETABLET');
    peers.push(tablet);
    await waitFor(() => net.paused(), { timeoutMs: 60_000, what: 'replica A paused on the sync answer with the new device' });
    // B takes the lease over (A counts as gone) and is the same device
    const b = replica(e, 'replica-b#2#bb', (holder) => holder === 'replica-a#1#aa');
    await active(b, e, 'replica B ready after the takeover');
    expect(deviceOf(b.adapter)).toEqual({ ...(device as object), fresh: false });
    expect(b.fence.current).toBeGreaterThan(a.fence.current ?? Infinity);
    // B decrypts the member's next message and answers it
    await alice.sync();
    await alice.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'to B' });
    await waitForEvents(e.log, (evs) => texts(evs).includes('to B'), 'the message sent after the takeover, decrypted by B', 60_000);
    const driverB = new Driver(b.adapter, e.log, matrixLink(e));
    expect((await driverB.deliver(await appendApi(e.log, { kind: 'message', content: { body: 'from B' } }))).status).toBe('delivered');
    expect((await alice.waitFor((m) => m.sender === RELAY && String(m.content?.['body']).endsWith('from B'), 60_000)).error).toBeUndefined();

    // A resumes: what it was holding runs on its stale state; its writes are refused and its session stops
    const stored = new Set((await e.log.state.entries(NS)).map(([, v]) => v));
    const attemptedBefore = a.written.length;
    net.resume();
    await waitFor(() => a.refusals.length > 0 && a.supervisor.current === 'standby', { timeoutMs: 60_000, what: 'replica A refused and stopped after it resumed' }).catch((err: unknown) => {
      const lines = e.lines.filter((l) => l['replica'] === 'replica-a#1#aa' && l.level >= 30).slice(-15);
      throw new Error(`${String(err)}; refusals ${a.refusals.length}, state ${a.supervisor.current}, attempted ${a.written.length - attemptedBefore}; A's last log lines: ${JSON.stringify(lines)}`);
    });
    expect(a.refusals.every((err) => 'code' in err && err.code === 'SG_ERR_STATE_FENCED')).toBe(true);
    const stale = a.written.slice(attemptedBefore);
    expect(stale.length).toBeGreaterThan(0);
    const now = new Set((await e.log.state.entries(NS)).map(([, v]) => v));
    expect(stale.filter((v) => now.has(v))).toEqual([]);
    expect(stored.size).toBeGreaterThan(0);
    await a.tick();
    expect(a.supervisor.current).toBe('standby');

    // B's state is intact: a message each way through B
    await alice.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'after A resumed' });
    await waitForEvents(e.log, (evs) => texts(evs).includes('after A resumed'), 'a message sent after A resumed, decrypted by B', 60_000);
    expect((await driverB.deliver(await appendApi(e.log, { kind: 'message', content: { body: 'from B, after A resumed' } }))).status).toBe('delivered');
    expect((await alice.waitFor((m) => m.sender === RELAY && String(m.content?.['body']).endsWith('from B, after A resumed'), 60_000)).error).toBeUndefined();

    // ... and after B stops: a message sent meanwhile decrypts through the replica that starts next
    await b.supervisor.stop();
    await alice.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'while nobody held it' });
    const c = replica(e, 'replica-c#3#cc');
    await active(c, e, 'replica C ready');
    expect(deviceOf(c.adapter)).toEqual({ ...(device as object), fresh: false });
    const events = await waitForEvents(e.log, (evs) => texts(evs).includes('while nobody held it'), 'the message sent while nobody held the connection, decrypted by C', 60_000);
    expect(texts(events).filter((t) => t.startsWith('to ') || t.startsWith('after') || t.startsWith('while'))).toEqual(['to A', 'to B', 'after A resumed', 'while nobody held it']);
    expect(events.filter((ev) => ev.kind === 'message' && 'content' in ev && /could not be decrypted/i.test(ev.content.body))).toEqual([]);
    expect(e.hs.keys.uploads.filter((u) => u.userId === RELAY && u.body['device_keys'] !== undefined)).toHaveLength(1);
  }, 300_000);
});
