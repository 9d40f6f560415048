/**
 * The small state the adapter must keep across restarts:
 * - completed application-service transaction ids with a hash of their
 *   body, for `transactionTtlHours` (a retried transaction is answered 200
 *   without touching the log again; dedupe rests on event ids, this is an
 *   optimisation, so a homeserver whose ids restart after a database reset
 *   loses nothing),
 * - the bot-mode /sync token (saved only after its batch was appended),
 * - reaction bookkeeping: Matrix has one annotation event per key, the log a
 *   key set per sender (docs/protocols.md, "Matrix").
 *
 * It is the shape of the log's StateStore (src/core/ports.ts), so the runtime
 * passes `log.state` and the state lives in Redis next to the events. The
 * in-memory default is for tests and the embedded memory log.
 */
import type { StateStore } from '../../src/core/ports.js';

export type MatrixState = Pick<StateStore, 'get' | 'set' | 'setIfAbsent' | 'delete' | 'entries'>;

export function memoryMatrixState(): MatrixState {
  const maps = new Map<string, Map<string, string>>();
  const ns = (name: string): Map<string, string> => {
    let m = maps.get(name);
    if (!m) {
      m = new Map();
      maps.set(name, m);
    }
    return m;
  };
  return {
    get: (n, k) => Promise.resolve(ns(n).get(k)),
    set: (n, k, v) => {
      ns(n).set(k, v);
      return Promise.resolve();
    },
    setIfAbsent: (n, k, v) => {
      const m = ns(n);
      if (m.has(k)) return Promise.resolve(false);
      m.set(k, v);
      return Promise.resolve(true);
    },
    delete: (n, k) => Promise.resolve(ns(n).delete(k)),
    entries: (n) => Promise.resolve([...ns(n).entries()]),
  };
}

/** A completed AS transaction: when, and a hash of its body (absent in records from before the hash). */
export interface TxnRecord {
  readonly at: number;
  readonly hash?: string;
}

/** Completed AS transactions, kept for a bounded time. */
export interface TxnStore {
  /** completed within the TTL (with this body, when `hash` is given) */
  isCompleted(txnId: string, hash?: string): Promise<boolean>;
  /** the record of a transaction completed within the TTL */
  completed(txnId: string): Promise<TxnRecord | undefined>;
  /** marks it done; call only after every event of it is durable */
  complete(txnId: string, hash?: string): Promise<void>;
  /** deletes the records older than the TTL; returns how many */
  prune(): Promise<number>;
}

/** How long a completed transaction id is remembered by default: 3 days. */
export const DEFAULT_TXN_TTL_MS = 3 * 24 * 3600_000;

/** The bot account's /sync position. */
export interface SyncTokenStore {
  get(): Promise<string | undefined>;
  set(token: string): Promise<void>;
}

/** A Matrix sender's annotations on one target, key → annotation event id. */
export type AnnotationMap = Record<string, string>;

/** What an inbound annotation was, so its redaction can be turned back into a smaller key set. */
export interface AnnotationRecord {
  readonly roomId: string;
  readonly target: string;
  readonly sender: string;
  readonly key: string;
}

/** One outbound annotation: in bot mode several remote senders can share it. */
export interface SentAnnotation {
  readonly id: string;
  readonly holders: readonly string[];
}

const SEP = '\u0000';

/** A stored transaction record: JSON, or a bare time (records from before the hash). */
function parseTxnRecord(raw: string | undefined): TxnRecord | undefined {
  if (raw === undefined) return undefined;
  if (/^\d+$/.test(raw)) return { at: Number(raw) };
  try {
    const parsed = JSON.parse(raw) as { at?: unknown; hash?: unknown };
    if (typeof parsed.at !== 'number') return undefined;
    return { at: parsed.at, ...(typeof parsed.hash === 'string' ? { hash: parsed.hash } : {}) };
  } catch {
    return undefined;
  }
}

/** Typed views over MatrixState under one namespace per adapter instance. */
export class AdapterStore implements TxnStore {
  constructor(
    private readonly state: MatrixState,
    private readonly ns: string,
    private readonly txnTtlMs: number = DEFAULT_TXN_TTL_MS,
  ) {}

  async isCompleted(txnId: string, hash?: string): Promise<boolean> {
    const record = await this.completed(txnId);
    return record !== undefined && (hash === undefined || record.hash === undefined || record.hash === hash);
  }

  async completed(txnId: string): Promise<TxnRecord | undefined> {
    const record = parseTxnRecord(await this.state.get(this.ns, `txn${SEP}${txnId}`));
    return record !== undefined && Date.now() - record.at <= this.txnTtlMs ? record : undefined;
  }

  async complete(txnId: string, hash?: string): Promise<void> {
    await this.state.set(this.ns, `txn${SEP}${txnId}`, JSON.stringify({ at: Date.now(), ...(hash !== undefined ? { hash } : {}) }));
  }

  async prune(): Promise<number> {
    let removed = 0;
    const now = Date.now();
    for (const [key, value] of await this.state.entries(this.ns)) {
      if (!key.startsWith(`txn${SEP}`)) continue;
      const record = parseTxnRecord(value);
      if (record === undefined || now - record.at > this.txnTtlMs) {
        await this.state.delete(this.ns, key);
        removed++;
      }
    }
    return removed;
  }

  syncToken(userId: string): SyncTokenStore {
    const key = `sync${SEP}${userId}`;
    return { get: () => this.state.get(this.ns, key), set: (token) => this.state.set(this.ns, key, token) };
  }

  // --- inbound reactions: per (room, target, sender) the live annotations
  inboundAnnotations(roomId: string, target: string, sender: string): Promise<AnnotationMap> {
    return this.getJson<AnnotationMap>(`in-rs${SEP}${roomId}${SEP}${target}${SEP}${sender}`, {});
  }
  setInboundAnnotations(roomId: string, target: string, sender: string, map: AnnotationMap): Promise<void> {
    return this.state.set(this.ns, `in-rs${SEP}${roomId}${SEP}${target}${SEP}${sender}`, JSON.stringify(map));
  }
  inboundAnnotation(roomId: string, annotationId: string): Promise<AnnotationRecord | undefined> {
    return this.getJson<AnnotationRecord | undefined>(`in-ann${SEP}${roomId}${SEP}${annotationId}`, undefined);
  }
  setInboundAnnotation(annotationId: string, record: AnnotationRecord): Promise<void> {
    return this.state.set(this.ns, `in-ann${SEP}${record.roomId}${SEP}${annotationId}`, JSON.stringify(record));
  }

  // --- outbound reactions: per (room, target, gateway sender) the key set we rendered, per (room, target, Matrix user, key) the annotation
  sentKeys(roomId: string, target: string, uid: string): Promise<string[]> {
    return this.getJson<string[]>(`out-rs${SEP}${roomId}${SEP}${target}${SEP}${uid}`, []);
  }
  setSentKeys(roomId: string, target: string, uid: string, keys: readonly string[]): Promise<void> {
    return this.state.set(this.ns, `out-rs${SEP}${roomId}${SEP}${target}${SEP}${uid}`, JSON.stringify(keys));
  }
  sentAnnotation(roomId: string, target: string, mxUser: string, key: string): Promise<SentAnnotation | undefined> {
    return this.getJson<SentAnnotation | undefined>(`out-ann${SEP}${roomId}${SEP}${target}${SEP}${mxUser}${SEP}${key}`, undefined);
  }
  async setSentAnnotation(roomId: string, target: string, mxUser: string, key: string, value: SentAnnotation | undefined): Promise<void> {
    const k = `out-ann${SEP}${roomId}${SEP}${target}${SEP}${mxUser}${SEP}${key}`;
    if (value === undefined) await this.state.delete(this.ns, k);
    else await this.state.set(this.ns, k, JSON.stringify(value));
  }

  private async getJson<T>(key: string, fallback: T): Promise<T> {
    const raw = await this.state.get(this.ns, key);
    if (raw === undefined) return fallback;
    try {
      return JSON.parse(raw) as T;
    } catch {
      return fallback;
    }
  }
}
