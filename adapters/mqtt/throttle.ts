/**
 * Per-topic throttling with aggregation: the first message of a quiet topic
 * is posted at once and opens a window of `intervalMs`; messages inside the
 * window are counted (the caller keeps them as telemetry). When the window
 * ends with a count, one summary ("+N more") is posted and a new window
 * opens, so a chatty device posts at most one chat line per interval.
 */

export interface ThrottleSummary<T> {
  readonly key: string;
  /** suppressed messages in the window */
  readonly count: number;
  /** the last suppressed item */
  readonly last: T;
  readonly windowStart: number;
}

export interface ThrottleOptions<T> {
  readonly maxKeys: number;
  readonly onSummary: (summary: ThrottleSummary<T>) => void;
  readonly now?: () => number;
}

interface Window<T> {
  start: number;
  intervalMs: number;
  count: number;
  last: T | undefined;
  timer: NodeJS.Timeout;
}

export type ThrottleDecision = 'post' | 'suppress' | 'overflow';

export class Throttle<T> {
  private readonly windows = new Map<string, Window<T>>();
  private readonly now: () => number;
  private closed = false;

  constructor(private readonly options: ThrottleOptions<T>) {
    this.now = options.now ?? Date.now;
  }

  get size(): number {
    return this.windows.size;
  }

  /** Whether an item for `key` is posted now or counted into the next summary. */
  offer(key: string, intervalMs: number, item: T): ThrottleDecision {
    if (intervalMs <= 0 || this.closed) return 'post';
    const w = this.windows.get(key);
    if (w) {
      w.count++;
      w.last = item;
      return 'suppress';
    }
    // Bounded memory: past the limit, topics pass unthrottled (the caller counts it).
    if (this.windows.size >= this.options.maxKeys) return 'overflow';
    this.open(key, intervalMs);
    return 'post';
  }

  private open(key: string, intervalMs: number): void {
    const timer = setTimeout(() => this.close(key), intervalMs);
    timer.unref();
    this.windows.set(key, { start: this.now(), intervalMs, count: 0, last: undefined, timer });
  }

  /** Ends a window: summary if anything was suppressed (and a new window), else forget the key. */
  private close(key: string): void {
    const w = this.windows.get(key);
    if (!w) return;
    this.windows.delete(key);
    if (w.count > 0 && w.last !== undefined) {
      if (!this.closed) this.open(key, w.intervalMs);
      this.options.onSummary({ key, count: w.count, last: w.last, windowStart: w.start });
    }
  }

  /** Stops all timers without posting anything (a simulated crash). */
  cancel(): void {
    this.closed = true;
    for (const w of this.windows.values()) clearTimeout(w.timer);
    this.windows.clear();
  }

  /** Posts every pending summary now and stops all timers (on stop()). */
  flush(): void {
    this.closed = true;
    for (const [key, w] of [...this.windows]) {
      clearTimeout(w.timer);
      this.close(key);
    }
    this.windows.clear();
  }
}
