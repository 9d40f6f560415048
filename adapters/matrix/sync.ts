/**
 * Bot mode: the /sync loop, written here instead of using the SDK's
 * MatrixClient, which saves `next_batch` before its (unawaited) handlers run,
 * so a crash mid-batch skips events (docs/protocols.md, "Matrix", "Catch-up"), and has no gap
 * handling.
 *
 * - Every event of a batch is appended (awaited) before the batch's
 *   `next_batch` is saved; a failure or a stop mid-batch leaves the old token,
 *   and the same batch is read again (duplicates are absorbed by `mx:<id>`).
 * - What of a room's timeline is bridged — from our join on, nothing old on
 *   the very first sync, a `limited` gap completed from /messages — is
 *   catchup.ts's.
 */
import type { Logger } from 'pino';
import { timelineToBridge, type CatchupDeps } from './catchup.js';
import { sleep, type JsonObject, type MatrixHttp } from './client.js';
import { MatrixApiError } from './errors.js';
import type { InboundPort } from './inbound/dispatch.js';
import { isObject } from './normalise.js';
import type { SyncTokenStore } from './store.js';

export interface SyncDeps {
  readonly http: MatrixHttp;
  readonly userId: string;
  readonly tokens: SyncTokenStore;
  readonly inbound: InboundPort;
  readonly log: Logger;
  readonly timeoutMs: number;
  readonly timelineLimit: number;
  readonly isLinked: (roomId: string) => boolean;
  /** our bot is invited to a linked room */
  readonly onInvite: (roomId: string) => Promise<void>;
  /**
   * The batch's to-device events, device lists and key counts, before its
   * rooms (room keys first, then the events they decrypt); durable when it
   * resolves, so the token saved after the batch acknowledges nothing lost.
   */
  readonly onCrypto?: (res: JsonObject) => Promise<void>;
}

export interface SyncCounters {
  batches: number;
  failures: number;
  gapFills: number;
  gapEvents: number;
}

const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const obj = (v: unknown): JsonObject => (isObject(v) ? v : {});

export class SyncLoop {
  readonly counters: SyncCounters = { batches: 0, failures: 0, gapFills: 0, gapEvents: 0 };
  lastSyncAt = 0;
  /** the last /sync failed */
  failing = false;
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  private stopped = false;
  private readonly catchup: CatchupDeps;

  constructor(private readonly deps: SyncDeps) {
    this.catchup = { ...deps, signal: this.abort.signal, counters: this.counters };
  }

  /** Starts the loop; resolves once the homeserver answered the first /sync (or it failed). */
  start(): Promise<void> {
    let first!: () => void;
    const firstDone = new Promise<void>((resolve) => (first = resolve));
    this.running = this.run(first);
    return firstDone;
  }

  /** Ends the long-poll at once; waits up to `graceMs` for a batch being appended (its token is then not saved). */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    if (!this.running) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.running, new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
  }

  private async run(firstDone: () => void): Promise<void> {
    let since: string | undefined;
    // Starting without the saved token would skip what happened meanwhile: wait for the store instead.
    for (let attempt = 1; ; attempt++) {
      try {
        since = await this.deps.tokens.get();
        break;
      } catch (err) {
        if (this.stopped) {
          firstDone();
          return;
        }
        this.failing = true;
        this.deps.log.error({ err }, 'could not read the saved sync token; retrying');
        firstDone();
        await sleep(backoff(attempt), this.abort.signal);
      }
    }
    let failures = 0;
    const filter = JSON.stringify({ room: { timeline: { limit: this.deps.timelineLimit } } });
    while (!this.stopped) {
      try {
        const res = await this.deps.http.request('GET', '/_matrix/client/v3/sync', {
          query: { filter, timeout: since === undefined ? 0 : this.deps.timeoutMs, ...(since !== undefined ? { since } : {}) },
          timeoutMs: this.deps.timeoutMs + 30_000,
          signal: this.abort.signal,
        });
        const next = res['next_batch'];
        if (typeof next !== 'string' || next === '') throw new MatrixApiError(200, 'M_BAD_JSON', 'sync answer without next_batch');
        // start() waits for the homeserver's first answer, not for the log: a slow append must not hold the start.
        firstDone();
        await this.batch(res, since);
        // A stopped loop saves nothing: a successor may already be running from the old token.
        if (this.stopped) break;
        await this.deps.tokens.set(next);
        this.deps.log.debug({ since, next }, 'sync batch appended; token saved');
        since = next;
        failures = 0;
        this.failing = false;
        this.lastSyncAt = Date.now();
        this.counters.batches++;
      } catch (err) {
        if (this.stopped) break;
        failures++;
        this.failing = true;
        this.counters.failures++;
        const wait = err instanceof MatrixApiError && err.retryAfterMs !== undefined ? err.retryAfterMs : backoff(failures);
        this.deps.log.warn({ err, failures, waitMs: wait }, 'Matrix sync failed; the batch will be read again');
        firstDone();
        await sleep(wait, this.abort.signal);
      }
    }
    firstDone();
  }

  private async batch(res: JsonObject, since: string | undefined): Promise<void> {
    await this.deps.onCrypto?.(res);
    const rooms = obj(res['rooms']);
    for (const [roomId, room] of Object.entries(obj(rooms['join']))) {
      if (this.stopped) throw new Error('stopped');
      const r = obj(room);
      for (const ev of arr(obj(r['state'])['events'])) await this.deps.inbound.observeState(ev, roomId);
      const bridged = await timelineToBridge(this.catchup, roomId, obj(r['timeline']), since);
      const seen = new Set<string>();
      for (const ev of bridged) {
        const id = isObject(ev) && typeof ev['event_id'] === 'string' ? ev['event_id'] : undefined;
        if (id !== undefined) {
          if (seen.has(id)) continue;
          seen.add(id);
        }
        if (this.stopped) throw new Error('stopped');
        await this.deps.inbound.handleEvent(ev, roomId);
      }
      if (since !== undefined) {
        for (const edu of arr(obj(r['ephemeral'])['events'])) {
          if (isObject(edu) && edu['type'] === 'm.receipt') await this.deps.inbound.handleReceipts(roomId, edu['content']);
        }
      }
    }
    for (const roomId of Object.keys(obj(rooms['invite']))) {
      if (this.deps.isLinked(roomId)) await this.deps.onInvite(roomId);
    }
  }
}

function backoff(failures: number): number {
  const base = Math.min(30_000, 500 * 2 ** Math.min(failures - 1, 10));
  return Math.round(base / 2 + Math.random() * (base / 2));
}
