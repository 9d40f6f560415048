import { backoffDelay } from './backoff.js';

/** The connection a reconnect loop drives (an xmpp.js client or component, seen through what the loop needs). */
export interface Reconnectable {
  /** the stream is fully down: a reconnect may start */
  isDown(): boolean;
  /** the stream is up */
  isOnline(): boolean;
  reconnect(): Promise<unknown>;
  disconnect(): Promise<unknown>;
}

/** What the loop needs of an xmpp.js connection (client or component), structurally. */
export interface XmppJsConnection {
  readonly status: string;
  readonly reconnect: { reconnect(): Promise<unknown> };
  disconnect(): Promise<unknown>;
}

/** An xmpp.js connection as a reconnect target: down in `disconnect` or `offline`. */
export function xmppJsTarget(xmpp: XmppJsConnection): Reconnectable {
  return {
    isDown: () => xmpp.status === 'disconnect' || xmpp.status === 'offline',
    isOnline: () => xmpp.status === 'online',
    reconnect: () => xmpp.reconnect.reconnect(),
    disconnect: () => xmpp.disconnect(),
  };
}

export interface ReconnectLoopDeps {
  readonly target: Reconnectable;
  readonly minMs: number;
  readonly maxMs: number;
  /** told before each wait (for a log line) */
  readonly onWait: (delayMs: number, attempt: number) => void;
  /** told when the first connect (`connect`) or a later one (`reconnect`) failed */
  readonly onFailure: (message: string, phase: 'connect' | 'reconnect') => void;
}

/**
 * Reconnects with jittered exponential backoff, for connections whose library
 * reconnect waits a fixed delay. Owns the attempt count, the last error and the
 * timer; the caller tells it when a session came up (`succeeded`) and when the
 * stream dropped (`schedule`). No I/O of its own: it only calls the target.
 */
export class ReconnectLoop {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  attempt = 0;
  lastError: string | undefined;

  constructor(private readonly deps: ReconnectLoopDeps) {}

  get stopping(): boolean {
    return this.stopped;
  }

  /** A session is up: the next outage starts the backoff from the beginning. */
  succeeded(): void {
    this.attempt = 0;
  }

  /** A (re)connect attempt failed with `err`: note it and make sure another one comes. */
  failed(err: unknown, phase: 'connect' | 'reconnect'): void {
    this.lastError = err instanceof Error ? err.message : String(err);
    if (this.stopped) return;
    this.deps.onFailure(this.lastError, phase);
    this.recover();
  }

  /** The stream dropped: try again after the backoff. */
  schedule(): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    const delay = backoffDelay(this.attempt, this.deps.minMs, this.deps.maxMs);
    this.deps.onWait(delay, this.attempt);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.stopped) return;
      this.attempt++;
      if (!this.deps.target.isDown()) return;
      this.deps.target.reconnect().catch((err: unknown) => this.failed(err, 'reconnect'));
    }, delay);
    this.timer.unref();
  }

  /** No more attempts (stop or abort). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** After a failed (re)connect that did not close the socket, close it: the disconnect schedules the next try. */
  private recover(): void {
    const target = this.deps.target;
    if (target.isDown()) this.schedule();
    else if (!target.isOnline()) target.disconnect().catch(() => this.schedule());
  }
}
