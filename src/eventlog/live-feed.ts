/**
 * The one live reader of a partition in this process: a single blocking read
 * loop whose entries fan out in memory to every attached tail. It keeps a
 * bounded buffer of recent entries so a tail that finished reading history can
 * attach without a gap.
 */
import type { Logger } from 'pino';
import { comparePos, type StreamPos } from '../core/position.js';
import type { FeedEntry, LogBackend } from './backend.js';

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

  constructor(options: LiveFeedOptions) {
    this.o = options;
  }

  get listeners(): number {
    return this.sinks.size;
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
      this.sinks.add(sink);
      this.running = true;
      void this.run();
      return true;
    }
    if (comparePos(from, this.base) < 0) return false;
    for (const entry of this.ring) {
      if (comparePos(entry.pos, from) > 0 && !sink.push(entry)) return true;
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

  private async run(): Promise<void> {
    let failures = 0;
    while (this.sinks.size > 0 && !this.stopped) {
      let entries: FeedEntry[];
      try {
        entries = await this.o.backend.waitFeed(this.o.partition, this.last, this.o.blockMs, 512);
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
  }
}
