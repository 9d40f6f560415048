/**
 * Where the adapter keeps, per archive (our account, each MUC), the id of the
 * last archived message it handled — written only after that message (and all
 * before it) was durably appended — so that a new session, or a restarted
 * gateway, catches up with MAM from exactly there.
 *
 * The adapter has no storage of its own: the runtime passes a store backed by
 * the log's StateStore (`stateCatchupStore`); the in-memory default survives
 * reconnects but not a restart.
 */
import type { StateStore } from '../../src/core/ports.js';

export interface CatchupPosition {
  /**
   * the archive id (stanza-id by the archive) of the last handled message;
   * absent when the archive was empty at first sight: the next catch-up then
   * reads everything from `ts` on
   */
  readonly id?: string | undefined;
  /** its archive time (ms), for the time-bounded fallback when the id is gone from the archive; without an id, when the archive was found empty */
  readonly ts: number;
}

export interface CatchupStore {
  get(archive: string): Promise<CatchupPosition | undefined>;
  set(archive: string, position: CatchupPosition): Promise<void>;
}

export function memoryCatchupStore(): CatchupStore & { readonly positions: ReadonlyMap<string, CatchupPosition> } {
  const positions = new Map<string, CatchupPosition>();
  return {
    positions,
    get: (archive) => Promise.resolve(positions.get(archive)),
    set: (archive, position) => {
      positions.set(archive, position);
      return Promise.resolve();
    },
  };
}

/** A CatchupStore over the log's state hash `namespace` (use one namespace per adapter instance, e.g. `xmpp-catchup:<name>`). */
export function stateCatchupStore(state: Pick<StateStore, 'get' | 'set'>, namespace: string): CatchupStore {
  return {
    async get(archive) {
      const raw = await state.get(namespace, archive);
      if (raw === undefined) return undefined;
      try {
        const parsed = JSON.parse(raw) as { id?: unknown; ts?: unknown };
        if ((parsed.id !== undefined && typeof parsed.id !== 'string') || typeof parsed.ts !== 'number') return undefined;
        return typeof parsed.id === 'string' ? { id: parsed.id, ts: parsed.ts } : { ts: parsed.ts };
      } catch {
        return undefined;
      }
    },
    set: (archive, position) => state.set(namespace, archive, JSON.stringify(position.id !== undefined ? { id: position.id, ts: position.ts } : { ts: position.ts })),
  };
}
