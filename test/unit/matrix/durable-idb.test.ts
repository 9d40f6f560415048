/**
 * The crypto store's durability (adapters/matrix/crypto/durable-idb.ts):
 * IndexedDB databases (fake-indexeddb) copied into a sealed store and back,
 * with their versions, object stores, indexes, keys and binary values;
 * record by record, only the changed records written, in one atomic update;
 * a store of the earlier whole-snapshot format loaded and migrated.
 */
import { serialize } from 'node:v8';
import { deflateRawSync } from 'node:zlib';
import 'fake-indexeddb/auto';
import { describe, expect, it } from 'vitest';
import { SyncgateError } from '../../../src/core/errors.js';
import type { StateStore } from '../../../src/core/ports.js';
import { createSealedStore } from '../../../src/runtime/sealed-store.js';
import { DurableIdb, encodeKey } from '../../../adapters/matrix/crypto/durable-idb.js';
import type { IdbDatabase, IdbFactory } from '../../../adapters/matrix/crypto/idb-types.js';
import { createEventLog } from '../../../src/eventlog/index.js';
import { silentLogger } from '../../../src/log/index.js';

const idb = (globalThis as unknown as { indexedDB: IdbFactory }).indexedDB;

function open(name: string, version?: number, upgrade?: (db: IdbDatabase) => void): Promise<IdbDatabase> {
  return new Promise((resolve, reject) => {
    const req = idb.open(name, version);
    req.onupgradeneeded = () => upgrade?.(req.result);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error('open failed'));
  });
}

async function readAll(db: IdbDatabase, store: string): Promise<{ keys: unknown[]; values: unknown[] }> {
  const tx = db.transaction([store], 'readonly');
  const s = tx.objectStore(store);
  const [keys, values] = await Promise.all(
    [s.getAllKeys(), s.getAll()].map(
      (req) =>
        new Promise<unknown[]>((resolve, reject) => {
          req.onsuccess = () => resolve(req.result as unknown[]);
          req.onerror = () => reject(req.error ?? new Error('read failed'));
        }),
    ),
  );
  return { keys: keys ?? [], values: values ?? [] };
}

async function put(db: IdbDatabase, store: string, key: string | string[], value: unknown): Promise<void> {
  const tx = db.transaction([store], 'readwrite');
  tx.objectStore(store).put(value, key);
  await new Promise<void>((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error('write failed'));
  });
}

function stateStore(): StateStore {
  return createEventLog({ partitions: 1, log: silentLogger() }).state;
}

async function del(db: IdbDatabase, store: string, key: string): Promise<void> {
  const tx = db.transaction([store], 'readwrite');
  (tx.objectStore(store) as unknown as { delete(k: string): unknown }).delete(key);
  await new Promise<void>((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error('delete failed'));
  });
}

/** A state store that counts atomic updates and can be made to fail them. */
function watched(state: StateStore): StateStore & { updates: Array<{ set: string[]; del: string[] }>; failNext: boolean } {
  const w = {
    ...state,
    get: state.get.bind(state),
    set: state.set.bind(state),
    setIfAbsent: state.setIfAbsent.bind(state),
    delete: state.delete.bind(state),
    entries: state.entries.bind(state),
    advance: state.advance.bind(state),
    updates: [] as Array<{ set: string[]; del: string[] }>,
    failNext: false,
    update: async (ns: string, set: ReadonlyArray<readonly [string, string]>, dels: readonly string[]) => {
      if (w.failNext) {
        w.failNext = false;
        throw new Error('Redis went away');
      }
      w.updates.push({ set: set.map(([k]) => k), del: [...dels] });
      await state.update(ns, set, dels);
    },
  };
  return w;
}

describe('DurableIdb', () => {
  it('restores every database under a new prefix: version, stores, indexes, keys and binary values', async () => {
    const state = stateStore();
    const a = new DurableIdb({ sealed: createSealedStore(state, 'crypto', 'a secret of enough length'), idb, prefix: 'run1-' });
    const db = await open('run1-::crypto', 7, (created) => {
      const s = created.createObjectStore('sessions', { keyPath: null, autoIncrement: false });
      s.createIndex('by_sender', 'sender', { unique: false, multiEntry: false });
      created.createObjectStore('core', { keyPath: null, autoIncrement: false });
    });
    await put(db, 'sessions', ['room', 'sess1'], { sender: 'curveA', pickle: new Uint8Array([1, 2, 3]), at: new Date(5) });
    await put(db, 'core', 'account', new Map([['k', 'v']]));
    db.close();
    expect(await a.persist('@bot:x', 'DEV')).toBe(true);

    const b = new DurableIdb({ sealed: createSealedStore(state, 'crypto', 'a secret of enough length'), idb, prefix: 'run2-' });
    const snap = await b.read();
    expect(snap).toMatchObject({ userId: '@bot:x', deviceId: 'DEV' });
    await b.restore(snap);
    const back = await open('run2-::crypto');
    expect(back.version).toBe(7);
    expect([...back.objectStoreNames].sort()).toEqual(['core', 'sessions']);
    const sessions = await readAll(back, 'sessions');
    expect(sessions.keys).toEqual([['room', 'sess1']]);
    expect(sessions.values).toEqual([{ sender: 'curveA', pickle: new Uint8Array([1, 2, 3]), at: new Date(5) }]);
    const index = back.transaction(['sessions'], 'readonly').objectStore('sessions').index('by_sender');
    expect({ keyPath: index.keyPath, unique: index.unique, multiEntry: index.multiEntry }).toEqual({ keyPath: 'sender', unique: false, multiEntry: false });
    expect((await readAll(back, 'core')).values).toEqual([new Map([['k', 'v']])]);
    back.close();
  });

  it('writes nothing when nothing changed, and again after a change', async () => {
    const state = stateStore();
    const d = new DurableIdb({ sealed: createSealedStore(state, 'crypto2', 'a secret of enough length'), idb, prefix: 'run3-' });
    const db = await open('run3-::x', 1, (created) => created.createObjectStore('s', { keyPath: null, autoIncrement: false }));
    await put(db, 's', 'a', 1);
    expect(await d.persist('@u:x', 'D')).toBe(true);
    expect(await d.persist('@u:x', 'D')).toBe(false);
    await put(db, 's', 'a', 2);
    expect(await d.persist('@u:x', 'D')).toBe(true);
    expect(d.writes).toBe(2);
    db.close();
  });

  it('refuses a snapshot sealed with another secret (SG_ERR_STATE_SEALED_KEY)', async () => {
    const state = stateStore();
    const d = new DurableIdb({ sealed: createSealedStore(state, 'crypto3', 'a secret of enough length'), idb, prefix: 'run4-' });
    const db = await open('run4-::x', 1, (created) => created.createObjectStore('s', { keyPath: null, autoIncrement: false }));
    await put(db, 's', 'a', 1);
    db.close();
    await d.persist('@u:x', 'D');
    const other = new DurableIdb({ sealed: createSealedStore(state, 'crypto3', 'another secret, same length'), idb, prefix: 'run5-' });
    const err = await other.read().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SyncgateError);
    expect((err as SyncgateError).code).toBe('SG_ERR_STATE_SEALED_KEY');
  });

  it('writes only the records that changed (and deletes removed ones) in one atomic update, under names that reveal no key', async () => {
    const state = watched(stateStore());
    const sealed = createSealedStore(state, 'crypto6', 'a secret of enough length');
    const d = new DurableIdb({ sealed, idb, prefix: 'run6-' });
    const db = await open('run6-::crypto', 1, (created) => created.createObjectStore('inbound_group_sessions', { keyPath: null, autoIncrement: false }));
    for (let i = 0; i < 50; i++) await put(db, 'inbound_group_sessions', `!room:x|session-${i}`, { pickle: new Uint8Array(400).fill(i) });
    expect(await d.persist('@u:x', 'D')).toBe(true);
    expect(state.updates).toHaveLength(1);
    expect(state.updates[0]?.set).toHaveLength(51); // 50 records and meta
    const full = d.lastBytes;

    await put(db, 'inbound_group_sessions', '!room:x|session-7', { pickle: new Uint8Array(400).fill(99) });
    await put(db, 'inbound_group_sessions', '!room:x|session-new', { pickle: new Uint8Array(400).fill(1) });
    await del(db, 'inbound_group_sessions', '!room:x|session-3');
    expect(await d.persist('@u:x', 'D')).toBe(true);
    expect(state.updates).toHaveLength(2);
    expect(state.updates[1]?.set).toHaveLength(2);
    expect(state.updates[1]?.del).toHaveLength(1);
    expect(d.last).toMatchObject({ records: 2, deleted: 1 });
    expect(d.lastBytes).toBeLessThan(full / 10);
    // Names in clear say nothing of rooms or sessions; values are sealed.
    const raw = await state.entries('crypto6');
    expect(raw.map(([k]) => k).sort()).toContain('meta');
    expect(JSON.stringify(raw)).not.toMatch(/room|session/);

    // What a new process reads: the current records, the deleted one gone.
    const again = new DurableIdb({ sealed: createSealedStore(state, 'crypto6', 'a secret of enough length'), idb, prefix: 'run7-' });
    const snap = await again.read();
    const store = snap?.databases[0]?.stores[0];
    const records = new Map(store?.keys.map((k, i) => [k as string, store.values[i]]));
    expect(records.size).toBe(50);
    expect(records.has('!room:x|session-3')).toBe(false);
    expect(records.get('!room:x|session-7')).toEqual({ pickle: new Uint8Array(400).fill(99) });
    expect(records.get('!room:x|session-new')).toEqual({ pickle: new Uint8Array(400).fill(1) });
    // Restored as read, nothing differs: the first persist writes nothing.
    await again.restore(snap);
    expect(await again.persist('@u:x', 'D')).toBe(false);
    db.close();
  });

  it('a failed update is written again by the next persist (nothing is taken as stored before it is)', async () => {
    const state = watched(stateStore());
    const d = new DurableIdb({ sealed: createSealedStore(state, 'crypto8', 'a secret of enough length'), idb, prefix: 'run8-', writes: () => 1 });
    const db = await open('run8-::x', 1, (created) => created.createObjectStore('s', { keyPath: null, autoIncrement: false }));
    await put(db, 's', 'a', 1);
    state.failNext = true;
    await expect(d.persist('@u:x', 'D')).rejects.toThrow(/Redis went away/);
    expect(await state.entries('crypto8')).toEqual([]);
    // The write counter has not moved: the persist still writes.
    expect(await d.persist('@u:x', 'D')).toBe(true);
    expect(state.updates[0]?.set).toHaveLength(2);
    db.close();
  });

  it('loads a store of the whole-snapshot format (format 1) and migrates it on the first persist, in one update', async () => {
    const state = watched(stateStore());
    const sealed = createSealedStore(state, 'crypto9', 'a secret of enough length');
    // What the previous build wrote: the whole snapshot, deflated, as one sealed value under `idb`.
    const legacy = {
      format: 1,
      userId: '@bot:x',
      deviceId: 'OLDDEV',
      databases: [
        {
          name: '::matrix-sdk-crypto',
          version: 3,
          stores: [
            { name: 'core', keyPath: null, autoIncrement: false, indexes: [], keys: ['account'], values: [{ pickle: new Uint8Array([9, 9]) }] },
            { name: 'devices', keyPath: 'id', autoIncrement: false, indexes: [{ name: 'by_user', keyPath: 'user', unique: false, multiEntry: false }], keys: ['d1'], values: [{ id: 'd1', user: '@a:x' }] },
          ],
        },
      ],
    };
    await sealed.set('idb', deflateRawSync(serialize(legacy)));

    const d = new DurableIdb({ sealed, idb, prefix: 'run9-' });
    const snap = await d.read();
    expect(snap).toMatchObject({ userId: '@bot:x', deviceId: 'OLDDEV' });
    await d.restore(snap);
    const db = await open('run9-::matrix-sdk-crypto');
    expect(db.version).toBe(3);
    expect((await readAll(db, 'devices')).values).toEqual([{ id: 'd1', user: '@a:x' }]);
    db.close();
    expect(await d.persist('@bot:x', 'OLDDEV')).toBe(true);
    expect(state.updates).toHaveLength(1);
    expect(state.updates[0]?.del).toEqual(['idb']);
    expect(state.updates[0]?.set).toHaveLength(3); // two records and meta
    expect((await state.entries('crypto9')).map(([k]) => k)).not.toContain('idb');

    const next = new DurableIdb({ sealed: createSealedStore(state, 'crypto9', 'a secret of enough length'), idb, prefix: 'run10-' });
    const migrated = await next.read();
    expect(migrated).toMatchObject({ format: 2, userId: '@bot:x', deviceId: 'OLDDEV' });
    await next.restore(migrated);
    const back = await open('run10-::matrix-sdk-crypto');
    expect((await readAll(back, 'core')).values).toEqual([{ pickle: new Uint8Array([9, 9]) }]);
    expect((await readAll(back, 'devices')).keys).toEqual(['d1']);
    const index = back.transaction(['devices'], 'readonly').objectStore('devices').index('by_user');
    expect(index.keyPath).toBe('user');
    back.close();
  });

  it('a stored state of another device is replaced whole: its records deleted in the same update that writes the new ones', async () => {
    const state = watched(stateStore());
    const sealedA = createSealedStore(state, 'crypto11', 'a secret of enough length');
    const a = new DurableIdb({ sealed: sealedA, idb, prefix: 'run11-' });
    const db = await open('run11-::x', 1, (created) => created.createObjectStore('s', { keyPath: null, autoIncrement: false }));
    await put(db, 's', 'old-1', 1);
    await put(db, 's', 'old-2', 2);
    db.close();
    await a.persist('@u:x', 'OLD');
    const b = new DurableIdb({ sealed: createSealedStore(state, 'crypto11', 'a secret of enough length'), idb, prefix: 'run12-' });
    expect(await b.read()).toMatchObject({ deviceId: 'OLD' });
    await b.restore(undefined);
    const fresh = await open('run12-::x', 1, (created) => created.createObjectStore('s', { keyPath: null, autoIncrement: false }));
    await put(fresh, 's', 'new', 3);
    fresh.close();
    await b.persist('@u:x', 'NEW');
    expect(state.updates.at(-1)?.del).toHaveLength(2);
    const snap = await new DurableIdb({ sealed: createSealedStore(state, 'crypto11', 'a secret of enough length'), idb, prefix: 'run13-' }).read();
    expect(snap).toMatchObject({ deviceId: 'NEW' });
    expect(snap?.databases[0]?.stores[0]?.keys).toEqual(['new']);
  });

  it('encodes keys of every IndexedDB key type distinctly', () => {
    const keys = ['1', 1, new Date(1), new Uint8Array([1]), ['1'], [1, '1'], Infinity, -Infinity];
    expect(new Set(keys.map((k) => encodeKey(k))).size).toBe(keys.length);
    expect(encodeKey(new Uint8Array([1, 2]))).toBe(encodeKey(new Uint8Array([1, 2]).buffer));
  });
});
