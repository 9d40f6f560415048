/**
 * The mqtt.js wrapper: one MQTT 5 connection with a persistent session.
 *
 * - Session: fixed client id, Clean Start off, Session Expiry from config,
 *   so the broker queues QoS 1 messages while we are away.
 * - At-least-once in: `handleMessage` is overridden, so the PUBACK for a
 *   QoS 1 message goes out only after `onMessage` resolved (the event is in
 *   the log). mqtt.js handles inbound packets one at a time; rather than
 *   hold the connection for each append, we let it go on to the next packet
 *   and send the PUBACKs ourselves, in arrival order (handlePipelined).
 *   Nothing on this path waits for one of our own publications. An ack that
 *   completes after its connection was replaced is dropped: the broker will
 *   redeliver the message on the new connection (DUP), and a stale PUBACK
 *   must not be queued for a connection it does not belong to.
 * - Reconnect with jittered exponential backoff (mqtt.js only has a fixed
 *   period; we reset the period it reads before each wait).
 * - No unbounded offline queue: `queueQoSZero` off, and publish() refuses
 *   while disconnected — the caller's work stays in the log.
 * - Subscriptions carry a subscription identifier derived from the filter,
 *   with No Local, at QoS 1. QoS 1 rather than 2: mqtt.js keeps QoS 2 state
 *   (after PUBREC) only in memory, so a crash there would lose the message;
 *   at QoS 1 the broker redelivers it and our dedupe absorbs the repeat.
 */
import { formatWithOptions } from 'node:util';
import { connect, ErrorWithReasonCode } from 'mqtt';
import type { IClientOptions, IConnackPacket, IPublishPacket, MqttClient } from 'mqtt';
import type { Logger } from 'pino';
import { backoffDelay } from '../../src/core/backoff.js';
import type { MqttAdapterConfig } from './config.js';
import { isPermanentPubackCode, MqttPublishError } from './errors.js';
import type { InboundMessage } from './normalise.js';
import type { Publication } from './render.js';

/** Tells mqtt.js's publish handler that we send the PUBACK ourselves (see handlePipelined). */
const ACK_DEFERRED = new Error('PUBACK sent by the adapter after the append');

/** The part of mqtt.js's client we use to send a PUBACK outside its handler. */
interface PacketWriter {
  _sendPacket(packet: { cmd: 'puback'; messageId: number; reasonCode: number }): void;
}

export interface SubscriptionSpec {
  readonly filter: string;
  readonly id: number;
  /** Retain Handling (MQTT 5 §3.8.3.1) */
  readonly rh: 0 | 1 | 2;
}

export interface ConnectionDeps {
  readonly config: MqttAdapterConfig;
  readonly log: Logger;
  /**
   * resolve → acknowledge; reject → drop the connection unacknowledged, so
   * the broker redelivers. Nothing returned: go on at once (a QoS 0 message
   * whose append is on its way, with room for more).
   */
  readonly onMessage: (message: InboundMessage) => Promise<void> | undefined;
}

export interface ConnectionStatus {
  readonly connected: boolean;
  /** connected and every wanted subscription has been granted */
  readonly subscribed: boolean;
  readonly connects: number;
  readonly lastError: string | undefined;
  readonly subscriptionErrors: number;
  readonly sessionPresent: boolean | undefined;
  /** filters the broker has granted on this connection */
  readonly granted: readonly string[];
}

/** Room for the fixed header, topic and properties of a PUBLISH around the largest payload we accept. */
export const PACKET_OVERHEAD_BYTES = 16 * 1024;

/**
 * The MQTT 5 Maximum Packet Size we advertise: the broker does not send us a
 * larger packet [MQTT-3.1.2-24] (it discards it, as if delivered), so a
 * payload we would drop as payload-too-large never crosses the network.
 */
export function maximumPacketSize(maxPayloadBytes: number): number {
  return maxPayloadBytes + PACKET_OVERHEAD_BYTES;
}

const noTrace = (): void => undefined;

/** Fields of mqtt.js packets that carry credentials: the CONNECT password, and the authentication data of CONNECT and AUTH. */
const SECRET_FIELDS: ReadonlySet<string> = new Set(['password', 'authenticationData']);
const REDACTED = '[redacted]';
/** How far into a trace argument secrets are looked for: beyond what `%o` (depth 4) prints. */
const REDACT_DEPTH = 6;

/**
 * A trace argument with its credential fields replaced (copies only what
 * changes). mqtt.js formats packets into the message string, where pino's
 * path redaction cannot reach them, so this runs before the formatting.
 */
function redactSecrets(value: unknown, depth = 0): unknown {
  if (typeof value !== 'object' || value === null || depth > REDACT_DEPTH || ArrayBuffer.isView(value)) return value;
  let copy: Record<string, unknown> | unknown[] | undefined;
  const source = value as Record<string, unknown>;
  for (const key of Object.keys(source)) {
    const field = source[key];
    const next = SECRET_FIELDS.has(key) && field !== undefined ? REDACTED : redactSecrets(field, depth + 1);
    if (next === field) continue;
    copy ??= Array.isArray(value) ? [...(value as unknown[])] : { ...source };
    (copy as Record<string, unknown>)[key] = next;
  }
  return copy ?? value;
}

/** mqtt.js's `debug` trace as lines of our logger at trace level, without the broker password in any form. */
function traceTo(log: Logger, password: string | undefined): (...args: unknown[]) => void {
  return (...args: unknown[]) => {
    let text = formatWithOptions({ depth: 2 }, ...args.map((a) => redactSecrets(a)));
    // Also a password that reached the trace some other way (a format argument of its own).
    if (password && text.includes(password)) text = text.split(password).join(REDACTED);
    log.trace({ mqtt: text }, 'mqtt.js');
  };
}

function toInbound(packet: IPublishPacket): InboundMessage {
  const props = packet.properties;
  // Built field by field: conditional spreads cost more than the rest of this per-message step.
  const m: { -readonly [K in keyof InboundMessage]: InboundMessage[K] } = {
    topic: packet.topic,
    payload: typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload,
    qos: packet.qos,
    dup: packet.dup,
    retain: packet.retain,
  };
  if (packet.messageId !== undefined) m.packetId = packet.messageId;
  if (props) {
    if (props.userProperties) m.userProperties = props.userProperties;
    if (props.contentType !== undefined) m.contentType = props.contentType;
    if (props.correlationData !== undefined) m.correlationData = props.correlationData;
    if (props.responseTopic !== undefined) m.responseTopic = props.responseTopic;
    const ids = props.subscriptionIdentifier;
    if (ids !== undefined) m.subscriptionIds = Array.isArray(ids) ? ids : [ids];
  }
  return m;
}

/**
 * One session: start() once, stop() (or abort()) once. Its state — acks owed,
 * granted subscriptions, the `stopping` flag — belongs to that session, so
 * the adapter makes a new connection to start again.
 */
export class MqttConnection {
  private client: MqttClient | undefined;
  /** bumped on every close: acks of an older connection are not sent */
  private generation = 0;
  private attempt = 0;
  private stopping = false;
  private aborted = false;
  private wanted = new Map<string, SubscriptionSpec>();
  /** what the broker has granted on the current connection */
  private granted = new Map<string, SubscriptionSpec>();
  private sync: Promise<void> = Promise.resolve();
  private inFlightPublishes = 0;
  private readonly publishWaiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  private serverReceiveMaximum = 65_535;
  private connects = 0;
  private subscriptionErrors = 0;
  private lastError: string | undefined;
  private sessionPresent: boolean | undefined;
  private readonly pendingAcks = new Set<Promise<void>>();
  /** QoS 1 messages in arrival order, waiting for their append before their PUBACK */
  private ackQueue: Array<{ readonly messageId: number; readonly generation: number; done: boolean }> = [];
  /** ingest failures in a row: they lengthen the wait before the next reconnect */
  private failureStreak = 0;

  constructor(private readonly deps: ConnectionDeps) {}

  /** Connects; resolves on the first CONNACK or, if the broker is not reachable, after the connect timeout (retrying in the background). */
  async start(): Promise<void> {
    // Silently doing nothing here once left a replica that won its lease back without a connection.
    if (this.client || this.stopping) throw new Error('an MqttConnection is started once: make a new one to connect again');
    const { config, log } = this.deps;
    const options: IClientOptions = {
      protocolVersion: 5,
      clientId: config.clientId,
      clean: false,
      keepalive: config.keepaliveSec,
      connectTimeout: config.connectTimeoutMs,
      reconnectPeriod: backoffDelay(0, config.reconnect.minMs, config.reconnect.maxMs),
      reconnectOnConnackError: true,
      queueQoSZero: false,
      resubscribe: false,
      properties: { sessionExpiryInterval: config.sessionExpirySec, receiveMaximum: config.receiveMaximum, maximumPacketSize: maximumPacketSize(config.maxPayloadBytes) },
      // mqtt.js traces every packet through `debug`, which allocates its arguments on each call even
      // when off: a measurable share of the CPU per message. Its trace goes to our logger at trace level.
      log: log.isLevelEnabled('trace') ? traceTo(log, config.password) : noTrace,
      ...(config.username !== undefined ? { username: config.username } : {}),
      ...(config.password !== undefined ? { password: config.password } : {}),
    };
    const client = connect(config.url, options);
    this.client = client;
    client.handleMessage = (packet, callback) => this.handle(packet, callback);

    client.on('connect', (connack: IConnackPacket) => this.onConnect(connack));
    client.on('close', () => {
      // Acks still owed on this connection are never sent: the broker redelivers those messages.
      this.generation++;
      this.granted.clear();
      this.ackQueue = [];
    });
    client.on('reconnect', () => {
      // mqtt.js reads reconnectPeriod when it schedules the next attempt after this one fails.
      this.attempt++;
      client.options.reconnectPeriod = backoffDelay(this.attempt, config.reconnect.minMs, config.reconnect.maxMs);
    });
    client.on('offline', () => log.warn({ clientId: config.clientId }, 'MQTT connection lost; reconnecting'));
    client.on('error', (err: Error) => {
      this.lastError = err.message;
      log.warn({ err: err.message, code: (err as { code?: unknown }).code }, 'MQTT client error');
    });

    const connected = await new Promise<boolean>((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        client.off('connect', onConnect);
        client.off('close', onClose);
        if (!ok) log.warn({ clientId: config.clientId, err: this.lastError }, 'MQTT broker not reachable yet; the adapter keeps trying');
        resolve(ok);
      };
      const onConnect = () => done(true);
      const onClose = () => done(false);
      const timer = setTimeout(() => done(false), config.connectTimeoutMs);
      timer.unref();
      client.on('connect', onConnect);
      client.on('close', onClose);
    });
    // The first subscriptions are in place when start() returns (when the broker is up).
    if (connected) await this.sync;
  }

  private onConnect(connack: IConnackPacket): void {
    const { config, log } = this.deps;
    this.connects++;
    this.attempt = this.failureStreak;
    this.sessionPresent = connack.sessionPresent;
    this.serverReceiveMaximum = connack.properties?.receiveMaximum ?? 65_535;
    if (this.client) this.client.options.reconnectPeriod = backoffDelay(this.attempt, config.reconnect.minMs, config.reconnect.maxMs);
    const grantedExpiry = connack.properties?.sessionExpiryInterval;
    log.info({ clientId: config.clientId, sessionPresent: connack.sessionPresent, connects: this.connects, sessionExpirySec: grantedExpiry ?? config.sessionExpirySec }, 'MQTT connected');
    if (!connack.sessionPresent && this.connects > 1) {
      log.warn({ clientId: config.clientId }, 'the broker did not keep our session: messages published while we were disconnected are not delivered');
    }
    // Subscribe (again) to everything: after a new session nothing is there, and
    // with a kept session the broker may hold a previous process's set.
    this.granted.clear();
    this.reconcile();
    this.releasePublishWaiters();
  }

  private handle(packet: IPublishPacket, callback: (error?: Error) => void): void {
    const generation = this.generation;
    let inbound: InboundMessage;
    try {
      inbound = toInbound(packet);
    } catch (err) {
      this.deps.log.error({ err }, 'could not read an MQTT packet; acknowledging it');
      callback();
      return;
    }
    if (packet.qos === 1 && packet.messageId !== undefined && this.pubackSender()) {
      this.handlePipelined(inbound, packet.messageId, generation, callback);
      return;
    }
    // QoS 0 (the adapter returns at once unless too much is in flight), or the plain one-at-a-time path.
    const pending = this.deps.onMessage(inbound);
    if (pending === undefined) {
      callback();
      return;
    }
    const work = pending.then(
      () => {
        if (this.aborted || generation !== this.generation) {
          this.deps.log.debug({ topic: packet.topic, packetId: packet.messageId }, 'connection replaced before the ack; the broker redelivers');
          return;
        }
        this.failureStreak = 0;
        callback();
      },
      (err: unknown) => this.ingestFailed(err, packet.topic, generation),
    );
    // A QoS 0 message owes no ack (the adapter tracks its append); the rest are waited for on stop.
    if (packet.qos > 0) this.trackPending(work);
  }

  /**
   * QoS 1 without waiting: the message's append starts now, mqtt.js goes on to
   * the next packet, and PUBACKs are sent by us, each only after its own
   * append and in the order the messages arrived [MQTT-4.6.0-2]. The adapter
   * issues the appends in arrival order, so the log keeps that order too. The
   * broker's in-flight limit (our Receive Maximum) bounds the window.
   */
  private handlePipelined(inbound: InboundMessage, messageId: number, generation: number, callback: (error?: Error) => void): void {
    const entry = { messageId, generation, done: false };
    this.ackQueue.push(entry);
    const work = Promise.resolve(this.deps.onMessage(inbound)).then(
      () => {
        entry.done = true;
        this.flushAcks();
      },
      (err: unknown) => this.ingestFailed(err, inbound.topic, generation),
    );
    this.trackPending(work);
    // An error tells mqtt.js not to send its own PUBACK; it then handles the next packet.
    callback(ACK_DEFERRED);
  }

  /** Sends the PUBACKs of the leading finished messages, in arrival order. */
  private flushAcks(): void {
    const send = this.pubackSender();
    while (this.ackQueue[0]?.done) {
      const entry = this.ackQueue.shift();
      if (!entry || !send || this.aborted || entry.generation !== this.generation || !this.client?.connected) continue;
      this.failureStreak = 0;
      send(entry.messageId);
    }
  }

  private ingestFailed(err: unknown, topic: string, generation: number): void {
    if (this.aborted || generation !== this.generation) return;
    this.lastError = (err as Error).message;
    this.deps.log.error({ err, topic }, 'could not ingest an MQTT message; dropping the connection so the broker redelivers it');
    // No ack: close the socket so the message stays with the broker (redelivered with DUP),
    // and wait longer before each such reconnect while the log keeps failing.
    this.failureStreak++;
    const { reconnect } = this.deps.config;
    if (this.client) {
      this.client.options.reconnectPeriod = backoffDelay(this.failureStreak, reconnect.minMs, reconnect.maxMs);
      this.client.stream.destroy();
    }
  }

  private trackPending(work: Promise<void>): void {
    this.pendingAcks.add(work);
    const forget = () => this.pendingAcks.delete(work);
    work.then(forget, forget);
  }

  /**
   * mqtt.js sends PUBACK from its publish handler; to acknowledge out of that
   * handler we use its packet writer. Without it (another mqtt.js version),
   * messages are handled one at a time instead.
   */
  private pubackSender(): ((messageId: number) => void) | undefined {
    const client = this.client as unknown as PacketWriter | undefined;
    if (!client || typeof client._sendPacket !== 'function') return undefined;
    return (messageId) => client._sendPacket({ cmd: 'puback', messageId, reasonCode: 0 });
  }

  /** Sets the subscriptions wanted; applies the difference on the live connection (no reconnect). */
  setSubscriptions(wanted: ReadonlyMap<string, SubscriptionSpec>): Promise<void> {
    this.wanted = new Map(wanted);
    return this.reconcile();
  }

  private reconcile(): Promise<void> {
    const next = this.sync.then(() => this.applySubscriptions());
    this.sync = next.catch(() => undefined);
    return this.sync;
  }

  private async applySubscriptions(): Promise<void> {
    const client = this.client;
    if (!client || !client.connected || this.stopping) return;
    const { log } = this.deps;
    const removed = [...this.granted.keys()].filter((f) => !this.wanted.has(f));
    if (removed.length > 0) {
      try {
        await client.unsubscribeAsync(removed);
        for (const f of removed) this.granted.delete(f);
        log.info({ filters: removed }, 'MQTT unsubscribed');
      } catch (err) {
        log.warn({ err, filters: removed }, 'MQTT unsubscribe failed');
      }
    }
    // One SUBSCRIBE per filter: a subscription identifier belongs to the whole packet.
    const added = [...this.wanted.values()].filter((s) => {
      const g = this.granted.get(s.filter);
      return !g || g.id !== s.id || g.rh !== s.rh;
    });
    await Promise.all(
      added.map(async (s) => {
        try {
          await client.subscribeAsync(s.filter, { qos: 1, nl: true, rap: false, rh: s.rh, properties: { subscriptionIdentifier: s.id } });
          if (client.connected) this.granted.set(s.filter, s);
        } catch (err) {
          this.subscriptionErrors++;
          this.lastError = (err as Error).message;
          log.error({ err: (err as Error).message, filter: s.filter }, 'MQTT subscribe refused');
        }
      }),
    );
    if (added.length > 0) log.info({ filters: added.map((s) => s.filter) }, 'MQTT subscribed');
  }

  private releasePublishWaiters(): void {
    while (this.inFlightPublishes < this.serverReceiveMaximum && this.publishWaiters.length > 0) {
      this.inFlightPublishes++;
      this.publishWaiters.shift()?.resolve();
    }
  }

  /** Publishes (QoS 1 unless the publication says otherwise) and resolves on the PUBACK (QoS 2: PUBCOMP; QoS 0: once written); refuses while disconnected (nothing is queued here). */
  async publish(publication: Publication): Promise<void> {
    const client = this.client;
    if (!client || !client.connected || this.stopping) throw new MqttPublishError('not connected to the MQTT broker', { permanent: false });
    // Stay within the broker's Receive Maximum (mqtt.js does not count outgoing QoS 1 in flight).
    if (this.inFlightPublishes >= this.serverReceiveMaximum) await new Promise<void>((resolve, reject) => this.publishWaiters.push({ resolve, reject }));
    else this.inFlightPublishes++;
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new MqttPublishError(`no PUBACK within ${this.deps.config.publishTimeoutMs} ms`, { permanent: false })),
          this.deps.config.publishTimeoutMs,
        );
      });
      await Promise.race([client.publishAsync(publication.topic, publication.payload, { qos: publication.qos ?? 1, retain: publication.retain ?? false, properties: { ...publication.properties } }), timeout]);
    } catch (err) {
      if (err instanceof MqttPublishError) throw err;
      if (err instanceof ErrorWithReasonCode) {
        throw new MqttPublishError(err.message, { permanent: isPermanentPubackCode(err.code), reasonCode: err.code, cause: err });
      }
      throw new MqttPublishError((err as Error).message, { permanent: false, cause: err });
    } finally {
      clearTimeout(timer);
      this.inFlightPublishes--;
      this.releasePublishWaiters();
    }
  }

  status(): ConnectionStatus {
    const connected = this.client?.connected === true;
    const subscribed = connected && [...this.wanted.keys()].every((f) => this.granted.has(f));
    return {
      connected,
      subscribed,
      connects: this.connects,
      lastError: this.lastError,
      subscriptionErrors: this.subscriptionErrors,
      sessionPresent: this.sessionPresent,
      granted: [...this.granted.keys()],
    };
  }

  /** Waits (up to `deadlineMs`) for message handling in progress, then disconnects cleanly. */
  async stop(deadlineMs = 5_000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const client = this.client;
    if (!client) return;
    const deadline = () => new Promise<void>((resolve) => setTimeout(resolve, deadlineMs).unref());
    await Promise.race([Promise.allSettled([...this.pendingAcks]), deadline()]);
    for (const waiter of this.publishWaiters.splice(0)) waiter.reject(new MqttPublishError('the adapter is stopping', { permanent: false }));
    // A clean DISCONNECT keeps the session (its expiry is set on CONNECT); force it after the deadline.
    await Promise.race([client.endAsync(false), deadline().then(() => client.endAsync(true))]).catch(() => undefined);
  }

  /** Drops the connection like a crash: no DISCONNECT, nothing in progress is acknowledged. */
  abort(): void {
    this.aborted = true;
    this.stopping = true;
    this.client?.end(true);
  }
}
