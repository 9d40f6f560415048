/**
 * Makes the crypto store durable. matrix-sdk-crypto-wasm keeps its state
 * (account, Olm and Megolm sessions, tracked devices) in IndexedDB, which
 * Node lacks; fake-indexeddb provides it in memory. This module copies the
 * store's databases into the adapter's sealed store (Redis, AES-256-GCM at
 * rest, src/runtime/sealed-store.ts) and back:
 *
 * - `persist()` reads every object store of the databases under our prefix
 *   in one read-only transaction per database (IndexedDB orders it after
 *   every read-write transaction begun before it, so it sees each completed
 *   operation whole), serialises them with the structured-clone serialiser
 *   (v8, the same types IndexedDB stores: typed arrays, Maps, Dates), deflates
 *   and writes the result as ONE value: a crash leaves either the previous
 *   snapshot or this one, never a mix. Unchanged snapshots are not written.
 * - `restore()` recreates the databases (version, object stores, indexes,
 *   records) in fake-indexeddb before OlmMachine.initialize opens them.
 *
 * The caller (machine.ts) persists after every machine operation that may
 * change the store and before anything it produced is sent — above all the
 * keys uploads and room-key shares — so nothing the homeserver or another
 * device was told is missing after a kill -9.
 */
import { createHash } from 'node:crypto';
import { deserialize, serialize } from 'node:v8';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import type { SealedStore } from '../../../src/core/ports.js';
import type { IdbDatabase, IdbFactory, IdbKey, IdbRequest, IdbTransaction } from './idb-types.js';

const SNAPSHOT_KEY = 'idb';
const FORMAT = 1;

interface IndexSnapshot {
  readonly name: string;
  readonly keyPath: string | string[];
  readonly unique: boolean;
  readonly multiEntry: boolean;
}

interface StoreSnapshot {
  readonly name: string;
  readonly keyPath: string | string[] | null;
  readonly autoIncrement: boolean;
  readonly indexes: IndexSnapshot[];
  readonly keys: IdbKey[];
  readonly values: unknown[];
}

interface DatabaseSnapshot {
  readonly name: string;
  readonly version: number;
  readonly stores: StoreSnapshot[];
}

/** What is sealed: the databases and whose device they belong to. */
export interface Snapshot {
  readonly format: number;
  readonly userId: string;
  readonly deviceId: string;
  readonly databases: DatabaseSnapshot[];
}

function request<T>(req: IdbRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error('IndexedDB request failed'));
  });
}

function openDb(idb: IdbFactory, name: string, version?: number, upgrade?: (db: IdbDatabase) => void): Promise<IdbDatabase> {
  return new Promise((resolve, reject) => {
    const req = idb.open(name, version);
    req.onupgradeneeded = () => upgrade?.(req.result);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error(`cannot open IndexedDB ${name}`));
    req.onblocked = () => reject(new Error(`IndexedDB ${name} is held open elsewhere`));
  });
}

function done(tx: IdbTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error('IndexedDB transaction failed'));
    tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
  });
}

async function snapshotDatabase(idb: IdbFactory, name: string): Promise<DatabaseSnapshot> {
  const db = await openDb(idb, name);
  try {
    const names = [...db.objectStoreNames];
    const stores: StoreSnapshot[] = [];
    if (names.length > 0) {
      const tx = db.transaction(names, 'readonly');
      const reads = names.map(async (storeName) => {
        const store = tx.objectStore(storeName);
        const indexes = [...store.indexNames].map((n) => {
          const index = store.index(n);
          return { name: n, keyPath: index.keyPath, unique: index.unique, multiEntry: index.multiEntry };
        });
        const [keys, values] = await Promise.all([request(store.getAllKeys()), request(store.getAll())]);
        return { name: storeName, keyPath: store.keyPath, autoIncrement: store.autoIncrement, indexes, keys, values };
      });
      stores.push(...(await Promise.all(reads)));
      await done(tx);
    }
    return { name, version: db.version, stores };
  } finally {
    db.close();
  }
}

async function restoreDatabase(idb: IdbFactory, snap: DatabaseSnapshot): Promise<void> {
  await request(idb.deleteDatabase(snap.name));
  const db = await openDb(idb, snap.name, snap.version, (created) => {
    for (const s of snap.stores) {
      const store = created.createObjectStore(s.name, { keyPath: s.keyPath, autoIncrement: s.autoIncrement });
      for (const i of s.indexes) store.createIndex(i.name, i.keyPath, { unique: i.unique, multiEntry: i.multiEntry });
    }
  });
  try {
    if (snap.stores.length === 0) return;
    const tx = db.transaction(snap.stores.map((s) => s.name), 'readwrite');
    for (const s of snap.stores) {
      const store = tx.objectStore(s.name);
      s.values.forEach((value, i) => {
        if (s.keyPath === null) store.put(value, s.keys[i]);
        else store.put(value);
      });
    }
    await done(tx);
  } finally {
    db.close();
  }
}

export interface DurableIdbOptions {
  readonly sealed: SealedStore;
  /** the databases whose names start with this are ours (a fresh one per start; the snapshot holds the rest of the names) */
  readonly prefix: string;
  readonly idb: IdbFactory;
  /** how many writes the IndexedDB has seen (process-wide): unchanged since the last snapshot → nothing to persist */
  readonly writes?: () => number;
}

export class DurableIdb {
  /** hash of the last snapshot written or restored */
  private lastHash: string | undefined;
  /** the write count the last snapshot saw */
  private lastWrites: number | undefined;
  /** snapshots written (status, tests) */
  writes = 0;
  /** bytes of the last sealed snapshot */
  lastBytes = 0;

  constructor(private readonly opts: DurableIdbOptions) {}

  get prefix(): string {
    return this.opts.prefix;
  }

  /** The sealed snapshot, without touching IndexedDB (throws SG_ERR_STATE_SEALED_KEY on a wrong secret). */
  async read(): Promise<Snapshot | undefined> {
    const stored = await this.opts.sealed.get(SNAPSHOT_KEY);
    if (stored === undefined) return undefined;
    const snap = deserialize(inflateRawSync(stored)) as Snapshot;
    if (snap.format !== FORMAT) throw new Error(`crypto store snapshot format ${String(snap.format)} is not ${FORMAT}`);
    return snap;
  }

  /** Our databases in IndexedDB are replaced by the snapshot's (or deleted when `snap` is undefined). */
  async restore(snap: Snapshot | undefined): Promise<void> {
    await this.clear();
    // Names are kept relative to the prefix: each start opens the store under a fresh prefix, so a
    // connection the previous machine of this process may still hold never blocks the restore.
    for (const db of snap?.databases ?? []) await restoreDatabase(this.opts.idb, { ...db, name: this.opts.prefix + db.name });
    this.lastHash = snap ? hash(serialize(snap)) : undefined;
    this.lastWrites = undefined;
  }

  /** Deletes our databases from IndexedDB (the sealed copy stays). */
  async clear(): Promise<void> {
    for (const name of await this.names()) await request(this.opts.idb.deleteDatabase(name));
  }

  /** Writes the current databases to the sealed store when they changed; resolves once durable. */
  async persist(userId: string, deviceId: string): Promise<boolean> {
    // Read before the snapshot: a write made while it is taken is seen by the next persist.
    const writes = this.opts.writes?.();
    if (writes !== undefined && writes === this.lastWrites) return false;
    const databases: DatabaseSnapshot[] = [];
    for (const name of (await this.names()).sort()) databases.push({ ...(await snapshotDatabase(this.opts.idb, name)), name: name.slice(this.opts.prefix.length) });
    const snap: Snapshot = { format: FORMAT, userId, deviceId, databases };
    const bytes = serialize(snap);
    const h = hash(bytes);
    if (h === this.lastHash) {
      this.lastWrites = writes;
      return false;
    }
    const packed = deflateRawSync(bytes);
    await this.opts.sealed.set(SNAPSHOT_KEY, packed);
    this.lastHash = h;
    this.lastWrites = writes;
    this.writes++;
    this.lastBytes = packed.length;
    return true;
  }

  /** Forgets the sealed snapshot (a new device is being set up). */
  async drop(): Promise<void> {
    await this.opts.sealed.delete(SNAPSHOT_KEY);
    this.lastHash = undefined;
  }

  private async names(): Promise<string[]> {
    const all = await this.opts.idb.databases();
    return all.map((d) => d.name ?? '').filter((n) => n.startsWith(this.opts.prefix));
  }
}

function hash(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('base64');
}
