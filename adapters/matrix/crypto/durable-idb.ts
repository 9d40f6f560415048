/**
 * Makes the crypto store durable. matrix-sdk-crypto-wasm keeps its state
 * (account, Olm and Megolm sessions, tracked devices) in IndexedDB, which
 * Node lacks; fake-indexeddb provides it in memory. This module copies the
 * store's databases into the adapter's sealed store (Redis, AES-256-GCM at
 * rest, src/runtime/sealed-store.ts) and back, record by record:
 *
 * - Stored form (format 2), in the sealed namespace `matrix-crypto:<adapter>`:
 *   `meta`: the format, whose device it is (user and device id) and the
 *   databases' schema (names, versions, object stores, indexes);
 *   `r:<name>`: one IndexedDB record each (database, object store, key,
 *   value), sealed on its own; `<name>` is the sealed store's blind() of
 *   database, store and key, so no room or session id is stored in clear.
 *   Values go through the structured-clone serialiser (v8: the types
 *   IndexedDB stores, typed arrays, Maps, Dates).
 * - `persist()` reads every object store of the databases under our prefix
 *   in one read-only transaction per database (IndexedDB orders it after
 *   every read-write transaction begun before it, so it sees each completed
 *   operation whole), compares each record with what is stored (a hash per
 *   record, kept since the last read or write) and writes ONLY the records
 *   that changed, the removed ones deleted and `meta` when the schema or
 *   device changed, as ONE atomic update of the state store (Redis: one
 *   MULTI on the namespace's hash). A crash leaves the previous state or
 *   this one, never a mix; it resolves once the update is in Redis.
 * - `read()` reads the whole namespace at once (one HGETALL: a consistent
 *   view) and `restore()` recreates the databases (version, object stores,
 *   indexes, records) in fake-indexeddb before OlmMachine.initialize opens them.
 * - Format 1 (before per-record writes): the whole store as ONE sealed value
 *   under `idb` (deflated). It still loads; the first persist after it writes
 *   every record and `meta` and deletes `idb` in the same atomic update.
 *
 * The caller (machine.ts) persists after every machine operation that may
 * change the store and before anything it produced is sent — above all the
 * keys uploads and room-key shares — so nothing the homeserver or another
 * device was told is missing after a kill -9.
 */
import { createHash } from 'node:crypto';
import { deserialize, serialize } from 'node:v8';
import { inflateRawSync } from 'node:zlib';
import type { SealedStore } from '../../../src/core/ports.js';
import type { IdbDatabase, IdbFactory, IdbKey, IdbRequest, IdbTransaction } from './idb-types.js';

/** format 1: the whole store as one sealed value */
const LEGACY_KEY = 'idb';
const LEGACY_FORMAT = 1;
const META_KEY = 'meta';
const RECORD_PREFIX = 'r:';
const FORMAT = 2;

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

/** What is stored, whole: the databases and whose device they belong to. */
export interface Snapshot {
  readonly format: number;
  readonly userId: string;
  readonly deviceId: string;
  readonly databases: DatabaseSnapshot[];
}

type StoreSchema = Omit<StoreSnapshot, 'keys' | 'values'>;

/** The `meta` value (format 2). */
interface Meta {
  readonly format: number;
  readonly userId: string;
  readonly deviceId: string;
  readonly databases: Array<{ readonly name: string; readonly version: number; readonly stores: StoreSchema[] }>;
}

/** An `r:` value (format 2). */
interface StoredRecord {
  readonly db: string;
  readonly store: string;
  readonly key: IdbKey;
  readonly value: unknown;
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
  /** the databases whose names start with this are ours (a fresh one per start; the store holds the rest of the names) */
  readonly prefix: string;
  readonly idb: IdbFactory;
  /** how many writes the IndexedDB has seen (process-wide): unchanged since the last persist → nothing to persist */
  readonly writes?: () => number;
}

/** What one persist wrote (status, bench, tests). */
export interface PersistStats {
  /** records written (set) */
  readonly records: number;
  /** records deleted */
  readonly deleted: number;
  /** bytes of the sealed values written (meta included) */
  readonly bytes: number;
}

export class DurableIdb {
  /** stored key → hash of its plaintext, as this process last read or wrote it (records and meta) */
  private known = new Map<string, string>();
  /** the write count the last persist saw */
  private lastWrites: number | undefined;
  /** atomic updates written (status, tests) */
  writes = 0;
  /** bytes of the sealed values of the last update */
  lastBytes = 0;
  /** what the last update wrote */
  last: PersistStats = { records: 0, deleted: 0, bytes: 0 };
  /** bytes of sealed values written since this object was made */
  bytesWritten = 0;
  /** record label → stored name (an HMAC each: computed once per record) */
  private readonly names = new Map<string, string>();

  constructor(private readonly opts: DurableIdbOptions) {}

  get prefix(): string {
    return this.opts.prefix;
  }

  /**
   * The stored crypto state, without touching IndexedDB (throws
   * SG_ERR_STATE_SEALED_KEY on a wrong secret). Notes what is stored, so the
   * next persist writes only what differs from it.
   */
  async read(): Promise<Snapshot | undefined> {
    const entries = await this.opts.sealed.entries();
    this.known = new Map();
    const byKey = new Map(entries);
    const metaBytes = byKey.get(META_KEY);
    if (metaBytes === undefined) {
      const legacy = byKey.get(LEGACY_KEY);
      // The old whole snapshot stays known (with no hash): the first persist deletes it.
      if (legacy !== undefined) this.known.set(LEGACY_KEY, '');
      for (const [k] of entries) if (k.startsWith(RECORD_PREFIX)) this.known.set(k, '');
      if (legacy === undefined) return undefined;
      const snap = deserialize(inflateRawSync(legacy)) as Snapshot;
      if (snap.format !== LEGACY_FORMAT) throw new Error(`crypto store snapshot format ${String(snap.format)} is not ${LEGACY_FORMAT}`);
      return snap;
    }
    const meta = deserialize(metaBytes) as Meta;
    if (meta.format !== FORMAT) throw new Error(`crypto store format ${String(meta.format)} is not ${FORMAT}`);
    this.known.set(META_KEY, hash(metaBytes));
    if (byKey.has(LEGACY_KEY)) this.known.set(LEGACY_KEY, '');
    const stores = new Map<string, { keys: IdbKey[]; values: unknown[] }>();
    const slot = (db: string, store: string): { keys: IdbKey[]; values: unknown[] } => {
      const id = `${db}\u0000${store}`;
      let s = stores.get(id);
      if (!s) stores.set(id, (s = { keys: [], values: [] }));
      return s;
    };
    for (const [k, bytes] of entries) {
      if (!k.startsWith(RECORD_PREFIX)) continue;
      const rec = deserialize(bytes) as StoredRecord;
      this.known.set(k, hash(bytes));
      const s = slot(rec.db, rec.store);
      s.keys.push(rec.key);
      s.values.push(rec.value);
    }
    const databases = meta.databases.map((db) => ({
      name: db.name,
      version: db.version,
      stores: db.stores.map((schema) => ({ ...schema, ...(stores.get(`${db.name}\u0000${schema.name}`) ?? { keys: [], values: [] }) })),
    }));
    return { format: FORMAT, userId: meta.userId, deviceId: meta.deviceId, databases };
  }

  /** Our databases in IndexedDB are replaced by the snapshot's (or deleted when `snap` is undefined). */
  async restore(snap: Snapshot | undefined): Promise<void> {
    await this.clear();
    // Names are kept relative to the prefix: each start opens the store under a fresh prefix, so a
    // connection the previous machine of this process may still hold never blocks the restore.
    for (const db of snap?.databases ?? []) await restoreDatabase(this.opts.idb, { ...db, name: this.opts.prefix + db.name });
    this.lastWrites = undefined;
  }

  /** Deletes our databases from IndexedDB (the sealed copy stays). */
  async clear(): Promise<void> {
    for (const name of await this.databaseNames()) await request(this.opts.idb.deleteDatabase(name));
  }

  /** Writes what changed in the databases since the last read or persist, in one atomic update; resolves once durable. */
  async persist(userId: string, deviceId: string): Promise<boolean> {
    // Read before the records: a write made while they are read is seen by the next persist.
    const writes = this.opts.writes?.();
    if (writes !== undefined && writes === this.lastWrites) return false;
    const current = new Map<string, Uint8Array>();
    const meta: Meta = { format: FORMAT, userId, deviceId, databases: [] };
    for (const name of (await this.databaseNames()).sort()) {
      const db = await snapshotDatabase(this.opts.idb, name);
      const rel = name.slice(this.opts.prefix.length);
      meta.databases.push({ name: rel, version: db.version, stores: db.stores.map(({ name: n, keyPath, autoIncrement, indexes }) => ({ name: n, keyPath, autoIncrement, indexes })) });
      for (const s of db.stores) {
        s.keys.forEach((key, i) => {
          const rec: StoredRecord = { db: rel, store: s.name, key, value: s.values[i] };
          current.set(this.recordName(`${rel}\u0000${s.name}\u0000${encodeKey(key)}`), serialize(rec));
        });
      }
    }
    current.set(META_KEY, serialize(meta));
    const set: Array<[string, Uint8Array]> = [];
    const hashes = new Map<string, string>();
    for (const [k, bytes] of current) {
      const h = hash(bytes);
      hashes.set(k, h);
      if (this.known.get(k) !== h) set.push([k, bytes]);
    }
    const del = [...this.known.keys()].filter((k) => !current.has(k));
    if (set.length === 0 && del.length === 0) {
      this.lastWrites = writes;
      return false;
    }
    await this.opts.sealed.update(set, del);
    this.known = hashes;
    this.lastWrites = writes;
    const bytes = set.reduce((n, [, v]) => n + v.length, 0);
    this.last = { records: set.filter(([k]) => k !== META_KEY).length, deleted: del.length, bytes };
    this.writes++;
    this.lastBytes = bytes;
    this.bytesWritten += bytes;
    return true;
  }

  /** Forgets the stored crypto state (a new device is being set up). */
  async drop(): Promise<void> {
    const stored = await this.opts.sealed.entries();
    await this.opts.sealed.update([], stored.map(([k]) => k).filter((k) => k === META_KEY || k === LEGACY_KEY || k.startsWith(RECORD_PREFIX)));
    this.known = new Map();
    this.lastWrites = undefined;
  }

  private recordName(label: string): string {
    let name = this.names.get(label);
    if (name === undefined) {
      name = RECORD_PREFIX + this.opts.sealed.blind(label);
      this.names.set(label, name);
    }
    return name;
  }

  private async databaseNames(): Promise<string[]> {
    const all = await this.opts.idb.databases();
    return all.map((d) => d.name ?? '').filter((n) => n.startsWith(this.opts.prefix));
  }
}

function hash(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('base64');
}

/** A stable text for an IndexedDB key (strings, numbers, dates, binary, arrays of these). */
export function encodeKey(key: IdbKey): string {
  const tag = (k: IdbKey): unknown => {
    if (typeof k === 'string') return ['s', k];
    if (typeof k === 'number') return ['n', String(k)];
    if (k instanceof Date) return ['d', k.getTime()];
    if (Array.isArray(k)) return ['a', k.map(tag)];
    const view = ArrayBuffer.isView(k) ? new Uint8Array(k.buffer, k.byteOffset, k.byteLength) : new Uint8Array(k);
    return ['b', Buffer.from(view).toString('base64')];
  };
  return JSON.stringify(tag(key));
}
