/**
 * The @xmpp/client wrapper: one c2s connection of the bridge account.
 *
 * - Resource fixed from config, so a restart binds the same full JID.
 * - Reconnect with jittered exponential backoff (the library's reconnect waits
 *   a fixed second; it is switched off and driven from here).
 * - XEP-0198 stream management (on in the library): `sendConfirmed` resolves
 *   when the server acknowledged the stanza; without SM it falls back to an
 *   XEP-0199 ping, whose answer proves the server processed what came before.
 * - Tells the adapter about a new session (`onSession`: rejoin and catch up)
 *   and a resumption (`onResumed`: nothing was lost, rooms are still joined).
 *
 * Two fixes to the library's XEP-0198 counting (0.14.0), both of which make
 * Prosody close the stream:
 * - iq replies consumed by the iq caller never reach the counting middleware,
 *   so 'h' falls behind by one per request and the server's unacked queue
 *   grows until it gives up ("too many unacked stanzas"). They are counted here.
 * - 'online' fires before <enable/> is sent; a reply to anything sent then can
 *   arrive after <enabled/> reset the counter, so 'h' runs ahead of the
 *   server ("acknowledged more stanzas than sent"). The session is handed to
 *   the adapter only once SM is enabled, and nothing is sent before.
 */
import { client, type Client, type XmlElement } from '@xmpp/client';
import type { Logger } from 'pino';
import { ReconnectLoop, xmppJsTarget } from '../../src/core/reconnect.js';
import { accountDomain, type XmppAdapterConfig } from './config.js';
import { XmppNotConnectedError, XmppStanzaError } from './errors.js';
import { DISCO_IDENTITY } from './protocol.js';
import { NS, xml } from './xml.js';

const NS_STREAMS = 'http://etherx.jabber.org/streams';
const NS_SM = 'urn:xmpp:sm:3';

export interface ConnectionDeps {
  readonly config: XmppAdapterConfig;
  readonly log: Logger;
  readonly onStanza: (stanza: XmlElement) => void;
  /** a new session is online (first connect, or a reconnect that could not resume) */
  readonly onSession: () => void;
  readonly onResumed: () => void;
  readonly onDisconnect: () => void;
  /** disco#info features we answer with */
  readonly features: readonly string[];
}

export interface ConnectionStatus {
  readonly online: boolean;
  readonly status: string;
  readonly sessions: number;
  readonly resumptions: number;
  readonly reconnectAttempts: number;
  readonly smEnabled: boolean;
  readonly lastError: string | undefined;
  readonly jid: string | undefined;
}

interface AckWaiter {
  resolve(): void;
  reject(err: Error): void;
}

export class XmppConnection {
  private readonly xmpp: Client;
  private readonly loop: ReconnectLoop;
  private sessions = 0;
  private resumptions = 0;
  private readonly ackWaiters = new WeakMap<XmlElement, AckWaiter>();
  /** the server offered XEP-0198 in its last stream features */
  private smOffered = false;
  /** the session is usable: online and XEP-0198 settled (see above) */
  private settled = false;

  constructor(private readonly deps: ConnectionDeps) {
    const { config, log } = deps;
    const [local] = config.jid.split('@');
    this.xmpp = client({
      service: config.service,
      domain: accountDomain(config),
      username: local,
      password: config.password,
      resource: config.resource,
      timeout: config.streamTimeoutMs,
    });
    const xmpp = this.xmpp;
    xmpp.reconnect.stop();
    this.loop = new ReconnectLoop({
      target: xmppJsTarget(xmpp),
      ...config.reconnect,
      onWait: (delayMs, attempt) => log.warn({ delayMs, attempt }, 'XMPP reconnecting'),
      onFailure: (err, phase) => log.warn({ err }, phase === 'connect' ? 'XMPP connection failed' : 'XMPP reconnect failed'),
    });
    xmpp.streamManagement.timeout = config.smTimeoutMs;
    xmpp.streamManagement.requestAckInterval = config.smRequestAckIntervalMs;

    xmpp.on('error', (err) => {
      this.loop.lastError = err.condition ?? err.message;
      if (this.loop.stopping) return;
      log.warn({ err: err.message, condition: err.condition }, 'XMPP connection error');
      // An error before the session is up (authentication refused, stream error) leaves the
      // stream half-open: drop it, and the backoff decides when to try again.
      if (xmpp.status !== 'online' && xmpp.status !== 'disconnect' && xmpp.status !== 'offline') {
        xmpp.disconnect().catch(() => undefined);
      }
    });
    xmpp.on('status', (status) => log.debug({ status }, 'XMPP connection status'));
    // Small interactive stanzas: without this, Nagle holds a send behind an unacknowledged one (~40 ms).
    xmpp.on('connect', () => xmpp.socket?.setNoDelay?.(true));
    xmpp.on('disconnect', () => {
      this.settled = false;
      if (this.loop.stopping) return;
      deps.onDisconnect();
      this.loop.schedule();
    });
    xmpp.on('nonza', (el) => {
      if (el.is('features', NS_STREAMS)) this.smOffered = el.getChild('sm', NS_SM) !== undefined;
    });
    xmpp.on('online', () => {
      this.loop.succeeded();
      this.sessions++;
      log.info({ jid: xmpp.jid?.toString(), session: this.sessions }, 'XMPP session online');
      this.settled = false;
      this.whenSmSettled()
        .then(() => {
          if (this.loop.stopping || xmpp.status !== 'online') return;
          this.settled = true;
          deps.onSession();
        })
        .catch((err: unknown) => log.error({ err }, 'session start failed'));
    });
    // Count iq replies the iq caller swallowed (see above): note 'h' before the middleware runs, fix it after.
    const sm = xmpp.streamManagement;
    let hBefore = -1;
    xmpp.prependListener('element', (el) => {
      hBefore = el.is('iq') && (el.attrs['type'] === 'result' || el.attrs['type'] === 'error') ? sm.inbound : -1;
    });
    xmpp.on('element', () => {
      if (hBefore >= 0 && sm.enabled && sm.inbound === hBefore) sm.inbound++;
      hBefore = -1;
    });
    xmpp.streamManagement.on('resumed', () => {
      this.settled = true;
      this.loop.succeeded();
      this.resumptions++;
      log.info({ jid: xmpp.jid?.toString() }, 'XMPP session resumed');
      deps.onResumed();
    });
    xmpp.streamManagement.on('ack', (stanza) => {
      this.ackWaiters.get(stanza)?.resolve();
      this.ackWaiters.delete(stanza);
    });
    xmpp.streamManagement.on('fail', (stanza) => {
      this.ackWaiters.get(stanza)?.reject(new XmppNotConnectedError('the session ended before the server acknowledged the stanza'));
      this.ackWaiters.delete(stanza);
    });
    xmpp.on('stanza', (stanza) => {
      if (this.loop.stopping) return;
      try {
        deps.onStanza(stanza);
      } catch (err) {
        log.error({ err }, 'failed to handle an inbound stanza');
      }
    });
    // The node of a caps query (XEP-0115 `node#ver`) is echoed back.
    xmpp.iqCallee.get(NS.discoInfo, 'query', ({ element }) =>
      xml(
        'query',
        { xmlns: NS.discoInfo, ...(element.attrs['node'] !== undefined ? { node: element.attrs['node'] } : {}) },
        xml('identity', { ...DISCO_IDENTITY }),
        ...deps.features.map((f) => xml('feature', { var: f })),
      ),
    );
  }

  /** Resolves once XEP-0198 is enabled (or failed, or not offered), bounded by the stream timeout. */
  private async whenSmSettled(): Promise<void> {
    const sm = this.xmpp.streamManagement;
    if (!this.smOffered) return;
    const deadline = Date.now() + this.deps.config.streamTimeoutMs;
    // <enable/> goes out right after 'online'; wait for <enabled/> (enableSent drops back on <failed/>).
    let sent = false;
    while (!sm.enabled && Date.now() < deadline && this.xmpp.status === 'online') {
      if (sm.enableSent) sent = true;
      else if (sent) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    if (!sm.enabled) this.deps.log.warn('XMPP stream management was offered but is not enabled; continuing without it');
  }

  /** Starts connecting; returns at once (see the adapter's start() for waiting). */
  start(): void {
    this.xmpp.start().catch((err: unknown) => this.loop.failed(err, 'connect'));
  }

  get online(): boolean {
    return this.settled && this.xmpp.status === 'online' && !this.loop.stopping;
  }

  async send(stanza: XmlElement): Promise<void> {
    if (!this.online) throw new XmppNotConnectedError();
    await this.xmpp.send(stanza);
  }

  /** An iq round trip; rejects with the library's StanzaError (see stanzaErrorCondition) or a timeout. */
  async request(iq: XmlElement, timeoutMs: number): Promise<XmlElement> {
    if (!this.online) throw new XmppNotConnectedError();
    return this.xmpp.iqCaller.request(iq, timeoutMs);
  }

  /** Sends and resolves once the server has the stanza (XEP-0198 ack, or a ping round trip without SM). */
  async sendConfirmed(stanza: XmlElement, timeoutMs: number): Promise<void> {
    if (!this.online) throw new XmppNotConnectedError();
    const sm = this.xmpp.streamManagement;
    if (!sm.enabled) {
      await this.xmpp.send(stanza);
      await this.request(xml('iq', { type: 'get', to: accountDomain(this.deps.config) }, xml('ping', { xmlns: NS.ping })), timeoutMs).catch((err: unknown) => {
        // An error reply still proves the server processed the stream up to here.
        if (!(err instanceof Error && err.name === 'StanzaError')) throw err;
      });
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const acked = new Promise<void>((resolve, reject) => {
      this.ackWaiters.set(stanza, { resolve, reject });
      timer = setTimeout(() => reject(new XmppStanzaError('remote-server-timeout', 'wait', 'no stream management ack in time')), timeoutMs);
    });
    try {
      await this.xmpp.send(stanza);
      await acked;
    } finally {
      clearTimeout(timer);
      this.ackWaiters.delete(stanza);
    }
  }

  status(): ConnectionStatus {
    return {
      online: this.online,
      status: this.xmpp.status,
      sessions: this.sessions,
      resumptions: this.resumptions,
      reconnectAttempts: this.loop.attempt,
      smEnabled: this.xmpp.streamManagement.enabled,
      lastError: this.loop.lastError,
      jid: this.xmpp.jid?.toString(),
    };
  }

  /** Closes the stream (the server sends our unavailable presence to the rooms) within `timeoutMs`. */
  async stop(timeoutMs: number): Promise<void> {
    this.loop.stop();
    const status = this.xmpp.status;
    if (status === 'offline') return;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([this.xmpp.stop().catch(() => undefined), deadline]);
    clearTimeout(timer);
    this.xmpp.socket?.destroy();
  }

  /** Drops the TCP connection as a network failure would: it reconnects and resumes the session. For tests. */
  interrupt(): void {
    this.xmpp.socket?.destroy();
  }

  /** Drops the connection like a crash: no closing stream, no reconnect. For tests. */
  abort(): void {
    this.loop.stop();
    this.xmpp.socket?.destroy();
  }
}
