/**
 * The Matrix crypto store in Redis (adapters/matrix/crypto/durable-idb.ts)
 * with the real OlmMachine: stored record by record (one sealed field per
 * IndexedDB record, under blinded names, plus `meta`), an encrypted send
 * writing only what changed in one atomic write; and a store left by the
 * earlier build (the whole state as one sealed value, `idb`) migrated on the
 * first start: the same device, its sessions kept (a message sent while the
 * gateway was down decrypts), `idb` gone.
 */
import { serialize } from 'node:v8';
import { deflateRawSync } from 'node:zlib';
import { afterEach, describe, expect, inject, it } from 'vitest';
import type { LogEvent } from '../../../src/core/event.js';
import type { StateStore } from '../../../src/core/ports.js';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import { createMatrixAdapter } from '../../../adapters/matrix/index.js';
import { DurableIdb } from '../../../adapters/matrix/crypto/durable-idb.js';
import type { IdbFactory } from '../../../adapters/matrix/crypto/idb-types.js';
import { createIngestSink } from '../../../src/bridge/ingest.js';
import { createSealedStore } from '../../../src/runtime/sealed-store.js';
import { waitFor } from '../../harness/free-port.js';
import { E2eePeer } from '../../harness/matrix-e2ee-peer.js';
import { testPrefix } from '../../harness/redis.js';
import { appendApi, botConfig, createEnv, Driver, matrixLink, waitForEvents, type Env } from './helpers.js';

const RELAY = '@relay:fake.test';
const SECRET = 'a store secret of some length';
const NS = 'matrix-crypto:matrix';

let env: Env | undefined;
let peer: E2eePeer | undefined;
const adapters: MatrixAdapter[] = [];

afterEach(async () => {
  for (const a of adapters.splice(0)) await a.stop();
  peer?.close();
  await env?.close();
  env = undefined;
});

/** The state store, recording each atomic update of the crypto namespace. */
function recording(state: StateStore): { state: StateStore; updates: Array<{ set: string[]; del: string[] }> } {
  const updates: Array<{ set: string[]; del: string[] }> = [];
  return {
    updates,
    state: {
      get: (ns, k) => state.get(ns, k),
      set: (ns, k, v) => state.set(ns, k, v),
      setIfAbsent: (ns, k, v) => state.setIfAbsent(ns, k, v),
      delete: (ns, k) => state.delete(ns, k),
      entries: (ns) => state.entries(ns),
      advance: (ns, k, v) => state.advance(ns, k, v),
      update: async (ns, set, del) => {
        await state.update(ns, set, del);
        if (ns === NS) updates.push({ set: set.map(([k]) => k), del: [...del] });
      },
      fencedUpdate: async (ns, token, set, del) => {
        const deleted = await state.fencedUpdate(ns, token, set, del);
        if (ns === NS && (set.length > 0 || del.length > 0)) updates.push({ set: set.map(([k]) => k), del: [...del] });
        return deleted;
      },
    },
  };
}

async function setup(): Promise<{ e: Env; p: E2eePeer; rec: ReturnType<typeof recording>; start: () => Promise<MatrixAdapter> }> {
  const e = await createEnv({ redis: { url: inject('redisUrl'), prefix: testPrefix('mxe2eestore') } });
  env = e;
  e.hs.registerUser('relay', 'relay-pw');
  e.hs.sendStateAsUser(e.alice.userId, e.roomId, 'm.room.encryption', '', { algorithm: 'm.megolm.v1.aes-sha2' });
  const p = await E2eePeer.login(e.hs.url, e.alice.userId, 'pw', 'ALICEPHONE');
  peer = p;
  const rec = recording(e.log.state);
  const start = async (): Promise<MatrixAdapter> => {
    const adapter = createMatrixAdapter({
      name: 'matrix',
      config: botConfig(e, {}, { encryption: { storeSecret: SECRET } }),
      log: e.logger.child({ adapter: 'matrix' }),
      sink: createIngestSink({ log: e.log, logger: e.logger }),
      links: e.links,
      state: rec.state,
      sealed: (ns, secret) => createSealedStore(rec.state, ns, secret),
    });
    adapters.push(adapter);
    await adapter.start();
    await waitFor(() => e.hs.keys.keysOf(RELAY, 'SYNCGATE') !== undefined && adapter.status().ready, { timeoutMs: 30_000, what: 'the bridge device keys uploaded and the adapter ready' });
    await p.sync();
    return adapter;
  };
  return { e, p, rec, start };
}

function deviceOf(adapter: MatrixAdapter): { deviceId: string; curve25519: string; ed25519: string; fresh: boolean } | undefined {
  return (adapter.status().detail?.['encryption'] as { device?: { deviceId: string; curve25519: string; ed25519: string; fresh: boolean } }).device;
}

function texts(events: LogEvent[]): string[] {
  return events.filter((ev) => ev.kind === 'message').map((ev) => ('content' in ev ? ev.content.body : ''));
}

async function stop(adapter: MatrixAdapter): Promise<void> {
  await adapter.stop();
  adapters.splice(adapters.indexOf(adapter), 1);
}

describe('Matrix crypto store in Redis', () => {
  it('is stored record by record under blinded names; an encrypted send writes only the changed records, in one atomic write', async () => {
    const { e, p, rec, start } = await setup();
    const adapter = await start();
    const driver = new Driver(adapter, e.log, matrixLink(e));
    expect((await driver.deliver(await appendApi(e.log, { kind: 'message', content: { body: 'first, shares the room key' } }))).status).toBe('delivered');
    const stored = await e.log.state.entries(NS);
    const records = stored.filter(([k]) => k.startsWith('r:'));
    expect(stored.map(([k]) => k)).toContain('meta');
    expect(stored.map(([k]) => k)).not.toContain('idb');
    expect(records.length).toBeGreaterThan(5);
    expect(JSON.stringify(stored)).not.toContain(e.roomId);
    expect(JSON.stringify(stored)).not.toContain(RELAY);

    const before = rec.updates.length;
    expect((await driver.deliver(await appendApi(e.log, { kind: 'message', content: { body: 'second, same session' } }))).status).toBe('delivered');
    const during = rec.updates.slice(before);
    // The Megolm session's message index moved: a record or two, never the whole store.
    expect(during.length).toBeGreaterThanOrEqual(1);
    for (const u of during) expect(u.set.length + u.del.length).toBeLessThan(records.length / 2);
    const got = await p.waitFor((m) => m.sender === RELAY && String(m.content?.['body']).includes('second, same session'));
    expect(got.error).toBeUndefined();
  });

  it('migrates a store of the whole-snapshot format on the first start: same device, sessions kept, the old value gone', async () => {
    const { e, p, rec, start } = await setup();
    const first = await start();
    const device = deviceOf(first);
    expect(device?.fresh).toBe(true);
    await p.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'before the upgrade' });
    await waitForEvents(e.log, (evs) => texts(evs).includes('before the upgrade'), 'the first message');
    await stop(first);

    // What the earlier build left: the whole state as ONE deflated, sealed value under `idb`.
    const sealed = createSealedStore(e.log.state, NS, SECRET);
    const snap = await new DurableIdb({ sealed, idb: (globalThis as unknown as { indexedDB: IdbFactory }).indexedDB, prefix: 'convert-' }).read();
    expect(snap?.deviceId).toBe('SYNCGATE');
    const current = (await e.log.state.entries(NS)).map(([k]) => k);
    await sealed.update([['idb', deflateRawSync(serialize({ ...snap, format: 1 }))]], current);
    expect((await e.log.state.entries(NS)).map(([k]) => k)).toEqual(['idb']);

    // Sent with the session the bridge got before the upgrade: only the migrated state decrypts it.
    await p.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'while the gateway was upgraded' });
    const updatesBefore = rec.updates.length;
    const second = await start();
    expect(deviceOf(second)).toEqual({ ...device, fresh: false });
    await waitForEvents(e.log, (evs) => texts(evs).includes('while the gateway was upgraded'), 'the message sent during the upgrade, decrypted');
    const keys = (await e.log.state.entries(NS)).map(([k]) => k);
    expect(keys).toContain('meta');
    expect(keys).not.toContain('idb');
    // The first write after the start stored every record and deleted `idb`, in one atomic write.
    const migration = rec.updates.slice(updatesBefore).find((u) => u.del.includes('idb'));
    expect(migration?.set).toContain('meta');
    expect(migration?.set.filter((k) => k.startsWith('r:')).length).toBeGreaterThan(5);
    // No new identity announced.
    expect(e.hs.keys.uploads.filter((u) => u.userId === RELAY && u.body['device_keys'] !== undefined)).toHaveLength(1);
  });
});
