/**
 * The crypto store's durability (adapters/matrix/crypto/durable-idb.ts):
 * IndexedDB databases (fake-indexeddb) copied into a sealed store and back,
 * with their versions, object stores, indexes, keys and binary values.
 */
import 'fake-indexeddb/auto';
import { describe, expect, it } from 'vitest';
import { SyncgateError } from '../../../src/core/errors.js';
import type { StateStore } from '../../../src/core/ports.js';
import { createSealedStore } from '../../../src/runtime/sealed-store.js';
import { DurableIdb } from '../../../adapters/matrix/crypto/durable-idb.js';
import type { IdbDatabase, IdbFactory } from '../../../adapters/matrix/crypto/idb-types.js';
import { memoryMatrixState } from '../../../adapters/matrix/store.js';

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
  return memoryMatrixState() as StateStore;
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
});
