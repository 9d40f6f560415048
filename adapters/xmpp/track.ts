/**
 * One archive (our account, or a MUC) as the adapter follows it: a serial
 * queue, so messages are appended in archive order and catch-up runs before
 * the live messages that arrived meanwhile; the catch-up position, persisted
 * (coalesced, off the append path) only for messages handled in order; and a
 * bounded set of recently handled archive ids, so live and archive copies of
 * one message cost one append.
 */
import type { Logger } from 'pino';
import type { CatchupPosition, CatchupStore } from './catchup.js';

/** A bounded map that evicts the least recently used entry: `set` and a `get` hit make an entry the most recent. */
export class Lru<K, V> {
  private readonly map = new Map<K, V>();

  constructor(private readonly max: number) {}

  /** a hit becomes the most recently used entry (evicted last) */
  get(key: K): V | undefined {
    if (!this.map.has(key)) return undefined;
    const value = this.map.get(key) as V;
    this.map.delete(key);
    this.map.set(key, value);
    return value;
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  set(key: K, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    while (this.map.size > this.max) {
      const oldest = this.map.keys().next();
      if (oldest.done) break;
      this.map.delete(oldest.value);
    }
  }

  delete(key: K): void {
    this.map.delete(key);
  }

  get size(): number {
    return this.map.size;
  }
}

export class ArchiveTrack {
  /** caught up in this session: live messages handled from now on may advance the position */
  caughtUp = false;
  /** a catch-up is queued or running */
  catchingUp = false;
  /** an append failed: live messages are left to the catch-up that re-reads from the position, to keep the order */
  resyncPending = false;
  readonly recent = new Lru<string, true>(5000);
  private chain: Promise<void> = Promise.resolve();
  private queued = 0;
  private position: CatchupPosition | undefined;
  private persisted: CatchupPosition | undefined;
  private writing: Promise<void> | undefined;

  constructor(
    readonly archive: string,
    private readonly store: CatchupStore,
    private readonly log: Logger,
  ) {}

  get pending(): number {
    return this.queued;
  }

  /** Runs `task` after everything queued before it; a failing task is logged by `onError` and does not stop the queue. */
  enqueue(task: () => Promise<void>, onError: (err: unknown) => void): Promise<void> {
    this.queued++;
    const run = this.chain.then(async () => {
      try {
        await task();
      } catch (err) {
        onError(err);
      } finally {
        this.queued--;
      }
    });
    this.chain = run;
    return run;
  }

  /** Resolves once everything queued so far has run. */
  idle(): Promise<void> {
    return this.chain;
  }

  async load(): Promise<CatchupPosition | undefined> {
    this.position ??= await this.store.get(this.archive);
    this.persisted ??= this.position;
    return this.position;
  }

  /** The position held in memory (after load()). */
  get current(): CatchupPosition | undefined {
    return this.position;
  }

  /** Forgets the position held in memory: the next load() reads the store (another replica may have moved it). */
  reload(): void {
    this.position = undefined;
    this.persisted = undefined;
  }

  /** Records that everything up to `position` is in the log; written to the store in the background. */
  advance(position: CatchupPosition): void {
    this.position = position;
    if (!this.writing) this.writing = this.writeLoop();
  }

  private async writeLoop(): Promise<void> {
    try {
      while (this.position !== undefined && this.position !== this.persisted) {
        const next = this.position;
        try {
          await this.store.set(this.archive, next);
          this.persisted = next;
        } catch (err) {
          // The next advance (or flush) tries again; a stale position only means re-reading some archive.
          this.log.warn({ err, archive: this.archive }, 'could not persist the catch-up position');
          return;
        }
      }
    } finally {
      this.writing = undefined;
    }
  }

  /** Waits for the newest position to be written. */
  async flush(): Promise<void> {
    await this.writing;
    if (this.position !== undefined && this.position !== this.persisted) {
      this.writing = this.writeLoop();
      await this.writing;
    }
  }
}
