/**
 * The one live reader of a partition in this process: a single blocking read
 * loop whose entries fan out in memory to every attached tail. It keeps a
 * bounded buffer of recent entries so a tail that finished reading history can
 * attach without a gap.
 */
import type { Logger } from 'pino';
import { comparePos, type StreamPos } from '../core/position.js';
import type { FeedEntry, LogBackend } from './backend.js';

/**
 * Entries per blocking read. Each one is pushed to every attached tail at
 * once, so a batch costs batch × tails queued items until the tails' readers
 * run: small batches keep a lagging process with thousands of clients from
 * piling up (and promoting) millions of items between two turns of the loop.
 */
const LIVE_BATCH = 64;

export interface LiveSink {
  /** the last position this sink has (delivered or skipped) */
  position(): StreamPos;
  /** synchronous; false = detach me */
  push(entry: FeedEntry): boolean;
}

export interface LiveFeedOptions {
  readonly partition: number;
  readonly backend: LogBackend;
  readonly blockMs: number;
  readonly log: Logger;
  readonly bufferSize?: number;
}

export class LiveFeed {
  private readonly o: LiveFeedOptions;
  private readonly sinks = new Set<LiveSink>();
  private ring: FeedEntry[] = [];
  /** the position just before ring[0] */
  private base: StreamPos = { ms: 0, seq: 0 };
  /** the last position read */
  private last: StreamPos = { ms: 0, seq: 0 };
  private running = false;
  private stopped = false;
  /**
   * Whether `base` is known to be a position the log has reached. A reader
   * starts at its first sink's position, which comes from a client's cursor;
   * until the log's head confirms it, no one may skip ahead to it.
   */
  private confirmed = false;

  constructor(options: LiveFeedOptions) {
    this.o = options;
  }

  get listeners(): number {
    return this.sinks.size;
  }

  /**
   * The position after which this reader holds or will read every entry, when
   * that position is one the log has already reached (so every entry up to it
   * exists now); undefined while the reader is not running or not confirmed.
   * A tail whose history read, started after this call, found nothing of its
   * rooms may move up to it: nothing of its rooms lies in between.
   */
  coveredAfter(): StreamPos | undefined {
    return this.running && this.confirmed && !this.stopped ? this.base : undefined;
  }

  /**
   * The last position this reader has read, when it runs and its start is
   * confirmed (undefined otherwise): every entry after it is still to come,
   * so a sink attached at it now is pushed each one, and everything up to it
   * exists in the log already.
   */
  lastRead(): StreamPos | undefined {
    return this.running && this.confirmed && !this.stopped ? this.last : undefined;
  }

  /** Whether `attach` would take a sink at `pos` now (the running reader's buffer covers what follows it). */
  holds(pos: StreamPos): boolean {
    return this.running && this.confirmed && !this.stopped && comparePos(pos, this.base) >= 0;
  }

  /**
   * Attaches when the buffer covers everything after the sink's position,
   * replaying the buffered part first; returns false when the sink has to read
   * more history first. Synchronous, so no entry can slip in between.
   */
  attach(sink: LiveSink): boolean {
    if (this.stopped) return false;
    const from = sink.position();
    if (!this.running) {
      this.ring = [];
      this.base = from;
      this.last = from;
      this.confirmed = false;
      this.sinks.add(sink);
      this.running = true;
      void this.run();
      return true;
    }
    if (comparePos(from, this.base) < 0) return false;
    // The ring is in feed order: replay from the first entry after `from`.
    let lo = 0;
    let hi = this.ring.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const entry = this.ring[mid];
      if (entry && comparePos(entry.pos, from) <= 0) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.ring.length; i++) {
      const entry = this.ring[i];
      if (entry && !sink.push(entry)) return true;
    }
    this.sinks.add(sink);
    return true;
  }

  detach(sink: LiveSink): void {
    this.sinks.delete(sink);
  }

  stop(): void {
    this.stopped = true;
    this.sinks.clear();
  }

  /**
   * Holds the start position against the log's head: a cursor from the future
   * (forged, or from a log that was since emptied) must not become the point
   * other tails move up to. Such a start is lowered to the head; the sink that
   * asked for it still skips what lies at or before its own position.
   */
  private async confirmStart(): Promise<void> {
    const bounds = await this.o.backend.feedBounds(this.o.partition);
    const head = [bounds.last, bounds.maxDeleted].reduce<StreamPos>((a, b) => (b && comparePos(b, a) > 0 ? b : a), { ms: 0, seq: 0 });
    if (this.ring.length === 0 && comparePos(this.base, head) > 0) {
      this.base = head;
      this.last = head;
    }
    this.confirmed = true;
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (this.sinks.size > 0 && !this.stopped) {
      let entries: FeedEntry[];
      try {
        if (!this.confirmed) await this.confirmStart();
        entries = await this.o.backend.waitFeed(this.o.partition, this.last, this.o.blockMs, LIVE_BATCH);
        failures = 0;
      } catch (err) {
        if (this.stopped) break;
        failures++;
        const delay = Math.min(5000, 100 * 2 ** Math.min(failures, 6)) * (0.5 + Math.random() / 2);
        this.o.log.warn({ err, partition: this.o.partition, delay }, 'live read failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, delay));
        continue;
      }
      for (const entry of entries) {
        if (comparePos(entry.pos, this.last) <= 0) continue;
        this.ring.push(entry);
        this.last = entry.pos;
        for (const sink of this.sinks) {
          if (!sink.push(entry)) this.sinks.delete(sink);
        }
      }
      const excess = this.ring.length - (this.o.bufferSize ?? 4096);
      if (excess > 0) {
        const dropped = this.ring.splice(0, excess);
        const lastDropped = dropped.at(-1);
        if (lastDropped) this.base = lastDropped.pos;
      }
    }
    this.running = false;
    this.confirmed = false;
  }
}
