/**
 * The small state the adapter must keep across restarts:
 * - completed application-service transaction ids (a retried transaction is
 *   answered 200 without touching the log again),
 * - the bot-mode /sync token (saved only after its batch was appended),
 * - reaction bookkeeping: Matrix has one annotation event per key, the log a
 *   key set per sender (docs/protocols.md, "Matrix").
 *
 * It is the shape of the log's StateStore (src/core/ports.ts), so the runtime
 * passes `log.state` and the state lives in Redis next to the events. The
 * in-memory default is for tests and the embedded memory log.
 */
import type { StateStore } from '../../src/core/ports.js';

export type MatrixState = Pick<StateStore, 'get' | 'set' | 'setIfAbsent' | 'delete'>;

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
  };
}

/** Completed AS transactions. */
export interface TxnStore {
  isCompleted(txnId: string): Promise<boolean>;
  /** marks it done; call only after every event of it is durable */
  complete(txnId: string): Promise<void>;
}

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

/** Typed views over MatrixState under one namespace per adapter instance. */
export class AdapterStore implements TxnStore {
  constructor(
    private readonly state: MatrixState,
    private readonly ns: string,
  ) {}

  async isCompleted(txnId: string): Promise<boolean> {
    return (await this.state.get(this.ns, `txn${SEP}${txnId}`)) !== undefined;
  }

  async complete(txnId: string): Promise<void> {
    await this.state.set(this.ns, `txn${SEP}${txnId}`, String(Date.now()));
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
