/**
 * The component's connection (XEP-0114 over @xmpp/component): the
 * handshake with the shared secret, and reconnects with jittered exponential
 * backoff driven from here (the library's own reconnect waits a fixed
 * delay). The dispatch (dispatch.ts) is installed on the library's
 * middleware by the adapter.
 */
import { component, type Component } from '@xmpp/component';
import type { Logger } from 'pino';
import { ReconnectLoop, xmppJsTarget } from '../../src/core/reconnect.js';
import type { XmppRoomsConfig } from './config.js';
import { NS, xml, type XmlElement } from './ns.js';

export interface SessionStatus {
  readonly online: boolean;
  readonly status: string;
  readonly sessions: number;
  readonly reconnectAttempts: number;
  readonly lastError: string | undefined;
}

export class ComponentNotConnectedError extends Error {
  constructor() {
    super('the component is not connected');
    this.name = 'ComponentNotConnectedError';
  }
}

export class ComponentSession {
  readonly xmpp: Component;
  private readonly loop: ReconnectLoop;
  private sessions = 0;
  /** stanzas written on the stream so far (what a flush must cover) */
  private written = 0;
  /** the newest flush in flight and how many written stanzas it covers */
  private flushing: { readonly covers: number; readonly done: Promise<void> } | undefined;
  /** flushes waiting on the stream: failed when it drops */
  private readonly onDrop = new Set<() => void>();

  constructor(
    private readonly config: XmppRoomsConfig,
    private readonly log: Logger,
    private readonly onOnline: () => void,
  ) {
    this.xmpp = component({ service: config.service, domain: config.domain, password: config.secret });
    const xmpp = this.xmpp;
    xmpp.reconnect.stop();
    xmpp.timeout = config.streamTimeoutMs;
    this.loop = new ReconnectLoop({
      target: xmppJsTarget(xmpp),
      ...config.reconnect,
      onWait: (delayMs, attempt) => log.warn({ delayMs, attempt }, 'XMPP component reconnecting'),
      onFailure: (err, phase) => log.warn({ err }, phase === 'connect' ? 'XMPP component connection failed' : 'XMPP component reconnect failed'),
    });
    xmpp.on('error', (err) => {
      this.loop.lastError = err.condition ?? err.message;
      if (this.loop.stopping) return;
      log.warn({ err: err.message, condition: err.condition }, 'XMPP component connection error');
      if (xmpp.status !== 'online' && xmpp.status !== 'disconnect' && xmpp.status !== 'offline') xmpp.disconnect().catch(() => undefined);
    });
    xmpp.on('connect', () => xmpp.socket?.setNoDelay?.(true));
    xmpp.on('disconnect', () => {
      for (const fail of [...this.onDrop]) fail();
      this.loop.schedule();
    });
    xmpp.on('online', () => {
      this.loop.succeeded();
      this.sessions++;
      this.loop.lastError = undefined;
      log.info({ domain: config.domain, session: this.sessions }, 'XMPP component online');
      onOnline();
    });
  }

  start(): void {
    this.xmpp.start().catch((err: unknown) => this.loop.failed(err, 'connect'));
  }

  get online(): boolean {
    return this.xmpp.status === 'online' && !this.loop.stopping;
  }

  async send(stanza: XmlElement): Promise<void> {
    if (!this.online) throw new ComponentNotConnectedError();
    if (stanza.attrs['from'] === undefined) stanza.attrs['from'] = this.config.domain;
    this.written++;
    await this.xmpp.send(stanza);
  }

  /**
   * Resolves once the server has every stanza sent so far: a ping to our own
   * domain went through it and came back (it handles a stream in order).
   * Rejects when the stream drops first or after timeoutMs. A write into a
   * connection that is already gone succeeds locally, so a delivery is only
   * "delivered" after this. Flushes in flight that cover the caller are shared.
   */
  flush(timeoutMs: number): Promise<void> {
    const current = this.flushing;
    if (current && current.covers >= this.written) return current.done;
    const entry = { covers: this.written, done: this.ping(timeoutMs) };
    this.flushing = entry;
    const clear = () => {
      if (this.flushing === entry) this.flushing = undefined;
    };
    entry.done.then(clear, clear);
    return entry.done;
  }

  private async ping(timeoutMs: number): Promise<void> {
    if (!this.online) throw new ComponentNotConnectedError();
    let fail: (() => void) | undefined;
    const dropped = new Promise<never>((_, reject) => {
      fail = () => reject(new ComponentNotConnectedError());
      this.onDrop.add(fail);
    });
    const iq = xml('iq', { type: 'get', from: this.config.domain, to: this.config.domain }, xml('ping', { xmlns: NS.ping }));
    const answered = this.xmpp.iqCaller.request(iq, timeoutMs).then(
      () => undefined,
      (err: unknown) => {
        // an error answer came back through the server too: the stream is alive
        if (err instanceof Error && err.name === 'StanzaError') return;
        throw err;
      },
    );
    try {
      await Promise.race([answered, dropped]);
    } finally {
      if (fail) this.onDrop.delete(fail);
      answered.catch(() => undefined);
      dropped.catch(() => undefined);
    }
  }

  status(): SessionStatus {
    return { online: this.online, status: this.xmpp.status, sessions: this.sessions, reconnectAttempts: this.loop.attempt, lastError: this.loop.lastError };
  }

  async stop(timeoutMs: number): Promise<void> {
    this.loop.stop();
    if (this.xmpp.status === 'offline') return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([this.xmpp.stop().catch(() => undefined), deadline]);
    clearTimeout(timer);
    this.xmpp.socket?.destroy();
  }

  /** Drops the connection like a crash (no closing stream, no reconnect). For tests. */
  abort(): void {
    this.loop.stop();
    this.xmpp.socket?.destroy();
  }
}
