/**
 * The Matrix adapter (docs/protocols.md, "Matrix"): application-service mode
 * (ghost users, pushed transactions) or bot mode (one relay account, /sync).
 *
 * In: transactions (appservice.ts) or /sync batches (sync.ts) → inbound/ →
 * the sink; acknowledged (200 / new sync token) only after the append.
 * Out: deliver() renders (render.ts) and sends with PUT
 * /rooms/{room}/send/{type}/{txnId = our event id}, so the homeserver
 * treats a retried delivery as a retransmission; a 429 answers `retry` with
 * the wait the homeserver asked for, so the delivery engine keeps order.
 *
 * Native ids: `mx.eventId` for the Matrix event an event became (reactions:
 * also `mx.annotation.<key>` per annotation sent). Relations arrive as the
 * targets' native ids in context.references.
 */
import { createHash } from 'node:crypto';
import type { Adapter, AdapterDeps, AdapterStatus, DeliveryContext, DeliveryResult, DeliveryTarget, LinkRefusal } from '../../src/core/adapter.js';
import type { RoomLink } from '../../src/core/ports.js';
import type { Attachment, DraftOf, EventKind, LogEvent, Positioned } from '../../src/core/event.js';
import { AppserviceServer } from './appservice.js';
import { loadMatrixSdk, mxPath, sleep, MatrixHttp, type JsonObject, type SdkLoad } from './client.js';
import { botUserId, ghostUserRegex, type MatrixAdapterConfig } from './config.js';
import { deliveryFailure, isMatrixApiError, MatrixApiError, MatrixConfigError, MatrixNotJoinedError } from './errors.js';
import { Ghosts } from './ghosts.js';
import { createInbound, type InboundPort } from './inbound/dispatch.js';
import { isObject } from './normalise.js';
import {
  annotationTxnId,
  expandPrefix,
  MAX_TEXT_JSON_BYTES,
  mediaTxnId,
  renderAnnotation,
  renderEdit,
  renderMedia,
  renderMessage,
  renderRedaction,
  unannotateTxnId,
  type MediaRef,
  type RenderOptions,
} from './render.js';
import { AdapterStore, memoryMatrixState, type MatrixState, type TxnStore } from './store.js';
import { SyncLoop } from './sync.js';

export { parseMatrixConfig, registrationYaml, randomToken, MatrixAdapterConfig } from './config.js';
export { memoryMatrixState, type MatrixState, type TxnStore } from './store.js';
// The adapter type's descriptor (config, secrets, links, CLI): the one entry in src/runtime's adapter list.
import { describeMatrixAdapter } from './descriptor.js';
export const matrixAdapter = describeMatrixAdapter(createMatrixAdapter);

export interface MatrixAdapterDeps extends AdapterDeps<MatrixAdapterConfig> {
  /**
   * Where completed transaction ids, the bot's sync token and the reaction
   * maps live. The runtime passes `log.state` (Redis); absent: in memory, with
   * a warning (a restart then replays or loses that state).
   */
  readonly state?: MatrixState;
}

export interface MatrixAdapter extends Adapter {
  readonly mode: 'appservice' | 'bot';
  /** where the application-service listener is bound (after start; appservice mode) */
  listenAddress(): { host: string; port: number } | undefined;
  /** the transaction store, for tests and operations */
  readonly txns: TxnStore;
}

type Logged<K extends EventKind> = DraftOf<K> & Positioned;

interface Speaker {
  /** the Matrix user the event is sent as */
  readonly userId: string;
  /** set when asserting a ghost's identity (appservice mode) */
  readonly asUser?: string;
}

const CONNECT_RETRY_MAX_MS = 60_000;
/** attachment URL → its upload, so a retried delivery does not upload again */
const MAX_REMEMBERED_UPLOADS = 1000;
/** how long after the connection (and its ping) matrix-bot-sdk is loaded */
const SDK_LOAD_DELAY_MS = 2000;
/** how often completed transaction records past their TTL are removed */
const TXN_PRUNE_EVERY_MS = 3600_000;

export function createMatrixAdapter(deps: MatrixAdapterDeps): MatrixAdapter {
  return new MatrixAdapterImpl(deps);
}

class MatrixAdapterImpl implements MatrixAdapter {
  readonly protocol = 'matrix' as const;
  /** one event's text; a longer one is cut with a marker (render.ts fitTextContent) */
  readonly maxBodyBytes = MAX_TEXT_JSON_BYTES;
  readonly name: string;
  readonly mode: 'appservice' | 'bot';
  readonly txns: TxnStore;
  private readonly config: MatrixAdapterConfig;
  private readonly http: MatrixHttp;
  private readonly store: AdapterStore;
  private readonly inbound: InboundPort;
  private readonly ghosts: Ghosts | undefined;
  private readonly server: AppserviceServer | undefined;
  private readonly ghostRegex: RegExp | undefined;
  private userId: string;
  private sync: SyncLoop | undefined;
  private sdk: SdkLoad | undefined;
  private connected = false;
  private started = false;
  private stopping = false;
  private connectTimer: NodeJS.Timeout | undefined;
  private connectFailures = 0;
  private unwatchLinks: (() => void) | undefined;
  private healthTimer: NodeJS.Timeout | undefined;
  private sdkTimer: NodeJS.Timeout | undefined;
  private readonly joined = new Set<string>();
  private readonly joinProblems = new Map<string, string>();
  private readonly encrypted = new Set<string>();
  /** transactions in order, one at a time; a repeated txnId joins the one in flight */
  private txnChain: Promise<void> = Promise.resolve();
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly uploads = new Map<string, MediaRef>();
  /** the last appservice ping at start */
  private pingResult: { supported: boolean; ok?: boolean; durationMs?: number; error?: string } | undefined;
  /** the ping at start, while it runs (it never rejects) */
  private pinging: Promise<void> | undefined;
  /** 0: the first completed transaction prunes the expired records */
  private lastTxnPrune = 0;
  private readonly delivery = { delivered: 0, retried: 0, rejected: 0, skipped: 0, rateLimited: 0 };

  constructor(private readonly deps: MatrixAdapterDeps) {
    this.name = deps.name;
    this.config = deps.config;
    this.mode = deps.config.mode;
    if (!deps.state) deps.log.warn('Matrix adapter state is kept in memory: completed transactions, the sync token and reaction maps are lost on restart');
    this.store = new AdapterStore(deps.state ?? memoryMatrixState(), `matrix:${deps.name}`, (deps.config.appservice?.transactionTtlHours ?? 72) * 3600_000);
    this.txns = this.store;
    const token = this.mode === 'appservice' ? (this.config.appservice?.asToken ?? '') : (this.config.bot?.accessToken ?? '');
    this.http = new MatrixHttp({ baseUrl: this.config.homeserverUrl, accessToken: token, timeoutMs: this.config.requestTimeoutMs });
    this.userId = botUserId(this.config);
    if (this.mode === 'appservice') {
      const as = this.config.appservice;
      if (!as) throw new MatrixConfigError(['/appservice: required in appservice mode (validate with parseMatrixConfig)']);
      this.ghostRegex = new RegExp(`^(?:${ghostUserRegex({ serverName: this.config.serverName, appservice: as })})$`);
      this.ghosts = new Ghosts({ http: this.http, prefix: as.ghostPrefix, serverName: this.config.serverName, log: deps.log });
      this.server = new AppserviceServer({
        hsToken: as.hsToken,
        maxBodyBytes: as.maxBodyBytes,
        log: deps.log,
        onTransaction: (txnId, body) => this.transaction(txnId, body),
      });
    }
    const template = this.config.mediaUrlTemplate;
    this.inbound = createInbound({
      name: deps.name,
      log: deps.log,
      sink: deps.sink,
      links: deps.links,
      store: this.store,
      http: this.http,
      isOurs: (userId) => this.isOurs(userId),
      botUserId: () => this.userId,
      ...(template !== undefined ? { mediaUrl: (mxc: string) => mediaUrl(template, mxc) } : {}),
      onInvite: (roomId) => this.joinRoom(roomId),
      onEncrypted: (roomId) => this.markEncrypted(roomId),
    });
  }

  // ---------------------------------------------------------------- lifecycle

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.stopping = false;
    // Started again after a stop (this replica won the connection lease back): what this instance
    // knew about its rooms may be stale — the bot may have been removed meanwhile — so learn it again.
    this.connected = false;
    this.connectFailures = 0;
    this.joined.clear();
    this.joinProblems.clear();
    if (this.server) {
      const as = this.config.appservice;
      const address = await this.server.listen(as?.listenHost ?? '0.0.0.0', as?.listenPort ?? 0);
      this.deps.log.info({ host: address.address, port: address.port }, 'Matrix application-service listener started');
    }
    this.unwatchLinks = this.deps.links.onChange(() => {
      if (this.connected) void this.joinLinked();
    });
    await this.connect();
    // The SDK only tells whether end-to-end encryption could be had (status, logs). Importing it
    // blocks the event loop for about a second: after a restart the listener, the connection, the
    // ping and the transactions the ping brings at once go first.
    void (this.pinging ?? Promise.resolve()).then(() => {
      if (!this.started) return;
      this.sdkTimer = setTimeout(() => void this.loadSdk(), SDK_LOAD_DELAY_MS);
      this.sdkTimer.unref();
    });
    // Appservice mode has no long-poll that would notice an unreachable homeserver: ask now and then.
    if (this.mode === 'appservice') {
      this.healthTimer = setInterval(() => {
        if (this.connected) this.http.request('GET', '/_matrix/client/versions', { auth: false, timeoutMs: 5_000 }).catch(() => undefined);
      }, this.config.healthCheckIntervalMs);
      this.healthTimer.unref();
    }
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    this.stopping = true;
    clearTimeout(this.connectTimer);
    clearInterval(this.healthTimer);
    clearTimeout(this.sdkTimer);
    this.unwatchLinks?.();
    await this.server?.close();
    await this.sync?.stop(this.config.stopGraceMs);
    this.sync = undefined;
    // A transaction still being appended: give it the grace period; it gets no 200 either way.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.txnChain, new Promise<void>((resolve) => (timer = setTimeout(resolve, this.config.stopGraceMs)))]);
    clearTimeout(timer);
    this.connected = false;
    this.deps.log.info('Matrix adapter stopped');
  }

  /** One attempt to reach the homeserver and join the linked rooms; on failure, again later in the background. */
  private async connect(): Promise<void> {
    try {
      const versions = await this.http.request('GET', '/_matrix/client/versions', { auth: false });
      if (this.mode === 'bot') await this.loginBot();
      const whoami = await this.http.request('GET', '/_matrix/client/v3/account/whoami');
      if (typeof whoami['user_id'] === 'string' && whoami['user_id'] !== this.userId) {
        this.deps.log.warn({ configured: this.userId, actual: whoami['user_id'] }, 'the Matrix token belongs to another user than configured; using the token\'s user');
        this.userId = whoami['user_id'];
      }
      const name = this.config.appservice?.botDisplayName;
      if (this.mode === 'appservice' && name !== undefined) {
        await this.http.request('PUT', mxPath`/_matrix/client/v3/profile/${this.userId}/displayname`, { body: { displayname: name } });
      }
      this.connected = true;
      this.connectFailures = 0;
      if (this.mode === 'appservice') this.pinging = this.ping(versions);
      await this.joinLinked();
      if (this.mode === 'bot' && !this.sync && !this.stopping) {
        const bot = this.config.bot;
        this.sync = new SyncLoop({
          http: this.http,
          userId: this.userId,
          tokens: this.store.syncToken(this.userId),
          inbound: this.inbound,
          log: this.deps.log,
          timeoutMs: bot?.syncTimeoutMs ?? 30_000,
          timelineLimit: bot?.timelineLimit ?? 50,
          isLinked: (roomId) => this.deps.links.roomsFor(this.name, roomId).length > 0,
          onInvite: (roomId) => this.joinRoom(roomId),
        });
        await this.sync.start();
      }
      this.deps.log.info({ mode: this.mode, userId: this.userId, joined: this.joined.size }, 'Matrix adapter connected');
    } catch (err) {
      if (this.stopping) return;
      this.connected = false;
      this.connectFailures++;
      const wait = Math.min(CONNECT_RETRY_MAX_MS, 1000 * 2 ** Math.min(this.connectFailures - 1, 6));
      this.deps.log.error({ err, retryInMs: wait }, 'Matrix homeserver not reachable or refused us; retrying');
      this.connectTimer = setTimeout(() => void this.connect(), wait);
      this.connectTimer.unref();
    }
  }

  private async loadSdk(): Promise<void> {
    try {
      this.sdk = await loadMatrixSdk(this.deps.log);
      this.deps.log.info({ sdkLoaded: this.sdk.sdk !== undefined, e2ee: this.sdk.e2ee }, 'matrix-bot-sdk load finished');
    } catch (err) {
      this.deps.log.warn({ err }, 'matrix-bot-sdk not loaded');
    }
  }

  private async loginBot(): Promise<void> {
    const bot = this.config.bot;
    if (!bot || bot.accessToken !== undefined) return;
    // Our own login (not the SDK's MatrixAuth) so the device id is fixed: txnIds are scoped per device.
    const res = await this.http.request('POST', '/_matrix/client/v3/login', {
      auth: false,
      body: {
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: bot.userId },
        password: bot.password,
        device_id: bot.deviceId,
        initial_device_display_name: 'syncgate',
      },
    });
    const token = res['access_token'];
    if (typeof token !== 'string') throw new MatrixApiError(200, 'M_BAD_JSON', 'login answer without access_token');
    this.http.setAccessToken(token);
  }

  private async joinLinked(): Promise<void> {
    const linked = new Set(this.deps.links.linksOf(this.name).map((l) => l.link.target));
    for (const roomId of linked) if (!this.joined.has(roomId)) await this.joinRoom(roomId);
    for (const roomId of [...this.joined]) if (!linked.has(roomId)) this.joined.delete(roomId);
  }

  /** The bot joins a linked room (errors are logged and shown in status, not thrown). */
  private async joinRoom(roomId: string): Promise<void> {
    if (!roomId.startsWith('!')) {
      this.joinProblems.set(roomId, 'link targets must be room ids (!room:server), not aliases');
      this.deps.log.error({ roomId }, 'Matrix link target is not a room id');
      return;
    }
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          await this.http.request('POST', mxPath`/_matrix/client/v3/join/${roomId}`, { body: {} });
          break;
        } catch (err) {
          if (!(err instanceof MatrixApiError) || !err.rateLimited || attempt >= 5 || this.stopping) throw err;
          await sleep(err.retryAfterMs ?? 1000);
        }
      }
      this.joined.add(roomId);
      this.joinProblems.delete(roomId);
      await this.checkEncryption(roomId);
      this.deps.log.info({ roomId }, 'joined linked Matrix room');
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      this.joinProblems.set(roomId, reason);
      this.deps.log.warn({ roomId, reason }, 'could not join linked Matrix room (invite the bot, or check the room id)');
    }
  }

  private async checkEncryption(roomId: string): Promise<void> {
    try {
      await this.http.request('GET', mxPath`/_matrix/client/v3/rooms/${roomId}/state/m.room.encryption/`);
      this.markEncrypted(roomId);
    } catch (err) {
      if (!isMatrixApiError(err, 'M_NOT_FOUND')) this.deps.log.debug({ err, roomId }, 'could not read the room encryption state');
    }
  }

  /**
   * Appservice mode, where the homeserver supports it (spec v1.7): asks the
   * homeserver to ping our listener, which proves at start that it reaches
   * us (the result is logged and in the status).
   */
  private async ping(versions: JsonObject): Promise<void> {
    const as = this.config.appservice;
    if (!as || !supportsVersion(versions, 1, 7)) {
      this.pingResult = { supported: false };
      return;
    }
    try {
      const res = await this.http.request('POST', mxPath`/_matrix/client/v1/appservice/${as.id}/ping`, { body: {} });
      this.pingResult = { supported: true, ok: true, ...(typeof res['duration_ms'] === 'number' ? { durationMs: res['duration_ms'] } : {}) };
      this.deps.log.info({ durationMs: res['duration_ms'] }, 'the homeserver reached our application-service listener (ping)');
    } catch (err) {
      this.pingResult = { supported: true, ok: false, error: err instanceof Error ? err.message : String(err) };
      this.deps.log.warn({ err }, 'the homeserver could not reach our application-service listener (ping): check appservice.url');
    }
  }

  /** The admin API asks before it links a room: an encrypted Matrix room cannot be bridged. */
  async checkLink(link: RoomLink): Promise<LinkRefusal | undefined> {
    const refusal: LinkRefusal = { reason: 'encrypted', detail: `Matrix room ${link.target} is end-to-end encrypted; the gateway cannot bridge encrypted rooms` };
    if (this.encrypted.has(link.target)) return refusal;
    try {
      // Readable when our user is in the room, or the room's history is public; otherwise we cannot tell yet.
      await this.http.request('GET', mxPath`/_matrix/client/v3/rooms/${link.target}/state/m.room.encryption/`, { timeoutMs: 5_000 });
      this.markEncrypted(link.target);
      return refusal;
    } catch {
      return undefined;
    }
  }

  private markEncrypted(roomId: string): void {
    if (this.encrypted.has(roomId)) return;
    this.encrypted.add(roomId);
    this.deps.log.warn(
      { roomId, e2eeBinding: this.sdk?.e2ee ?? false },
      'Matrix room is end-to-end encrypted: not bridged (unsupported); its encrypted events are dropped and nothing is sent to it',
    );
  }

  private isOurs(userId: string): boolean {
    return userId === this.userId || (this.ghostRegex?.test(userId) ?? false);
  }

  listenAddress(): { host: string; port: number } | undefined {
    const a = this.server?.address();
    return a ? { host: a.address, port: a.port } : undefined;
  }

  status(): AdapterStatus {
    const linked = this.deps.links.linksOf(this.name).map((l) => l.link.target);
    const unjoined = linked.filter((r) => !this.joined.has(r));
    const reachable = this.connected && !this.http.unreachable;
    const receiving = this.mode === 'appservice' ? (this.server?.listening ?? false) : this.sync !== undefined && !this.sync.failing;
    return {
      connected: reachable,
      ready: reachable && receiving && unjoined.length === 0,
      detail: {
        mode: this.mode,
        userId: this.userId,
        homeserverReachable: reachable,
        ...(this.http.lastError !== undefined ? { lastError: this.http.lastError } : {}),
        linkedRooms: linked.length,
        joinedRooms: linked.length - unjoined.length,
        unjoinedRooms: unjoined.slice(0, 20).map((r) => ({ roomId: r, reason: this.joinProblems.get(r) ?? 'not joined yet' })),
        // Linked rooms that are end-to-end encrypted: nothing is bridged to or from them (also a metric, via the count).
        encryptedRooms: linked.filter((r) => this.encrypted.has(r)).slice(0, 20),
        encryptedLinkedRooms: linked.filter((r) => this.encrypted.has(r)).length,
        e2ee: this.sdk?.e2ee ? 'binding-available-not-used' : 'unavailable',
        sdkLoaded: this.sdk?.sdk !== undefined,
        ...(this.pingResult ? { ping: { ...this.pingResult } } : {}),
        ...(this.server ? { listener: this.listenAddress(), lastTransactionAt: this.server.lastTransactionAt, transactions: { ...this.server.counters } } : {}),
        ...(this.sync ? { lastSyncAt: this.sync.lastSyncAt, sync: { ...this.sync.counters } } : {}),
        inbound: { ...this.inbound.counters, dropped: { ...this.inbound.counters.dropped }, changed: { ...this.inbound.counters.changed } },
        outbound: { ...this.delivery },
        http: { ...this.http.counters },
      },
    };
  }

  // ---------------------------------------------------------------- inbound (appservice mode)

  private transaction(txnId: string, body: JsonObject): Promise<void> {
    const running = this.inflight.get(txnId);
    if (running) return running;
    const run = this.txnChain.then(() => this.processTransaction(txnId, body));
    const tracked = run.finally(() => this.inflight.delete(txnId));
    this.inflight.set(txnId, tracked);
    // The chain continues after a failure; the failed transaction comes again from the homeserver.
    this.txnChain = tracked.catch(() => undefined);
    return tracked;
  }

  private async processTransaction(txnId: string, body: JsonObject): Promise<void> {
    // Dedupe rests on event ids (idempotency keys); the transaction record only spares the work of a
    // retransmission. A known id with another body is new content (the homeserver's ids restarted
    // after a database reset or restore): processed, and said so.
    const hash = createHash('sha256').update(JSON.stringify(body)).digest('base64url');
    const seen = await this.store.completed(txnId);
    if (seen !== undefined && (seen.hash === undefined || seen.hash === hash)) {
      this.deps.log.debug({ txnId }, 'transaction already processed; answering 200 again');
      return;
    }
    if (seen !== undefined) this.deps.log.warn({ txnId, completedAt: seen.at }, 'known transaction id with a different body (did the homeserver restart its ids?); processing it');
    const events = Array.isArray(body['events']) ? body['events'] : [];
    for (const ev of events) {
      if (this.stopping) throw new Error('stopping: the transaction will be sent again');
      await this.inbound.handleEvent(ev);
    }
    // Stable key (spec v1.13) or the MSC2409 one; a homeserver sending both sends the same EDUs twice.
    const stable = body['ephemeral'];
    const ephemeral = Array.isArray(stable) ? stable : body['de.sorunome.msc2409.ephemeral'];
    for (const edu of Array.isArray(ephemeral) ? ephemeral : []) {
      if (this.stopping) throw new Error('stopping: the transaction will be sent again');
      if (!isObject(edu) || edu['type'] !== 'm.receipt' || typeof edu['room_id'] !== 'string') continue;
      await this.inbound.handleReceipts(edu['room_id'], edu['content']);
    }
    await this.store.complete(txnId, hash);
    if (Date.now() - this.lastTxnPrune > TXN_PRUNE_EVERY_MS) {
      this.lastTxnPrune = Date.now();
      this.store.prune().then(
        (removed) => this.deps.log.debug({ removed }, 'expired transaction records removed'),
        (err: unknown) => this.deps.log.warn({ err }, 'expired transaction records not removed'),
      );
    }
  }

  // ---------------------------------------------------------------- outbound

  async deliver(event: LogEvent, target: DeliveryTarget, context: DeliveryContext): Promise<DeliveryResult> {
    const roomId = target.link.target;
    if (event.origin.via === this.name) return this.skipped('our own event');
    if (this.encrypted.has(roomId)) {
      this.delivery.rejected++;
      return { status: 'rejected', reason: `Matrix room ${roomId} is end-to-end encrypted; sending to encrypted rooms is not supported` };
    }
    try {
      const result = await this.deliverKind(event, roomId, context);
      if (result.status === 'delivered') this.delivery.delivered++;
      else if (result.status === 'skipped') this.delivery.skipped++;
      return result;
    } catch (err) {
      const result = deliveryFailure(err);
      if (result.status === 'retry') {
        this.delivery.retried++;
        if (err instanceof MatrixApiError && err.rateLimited) this.delivery.rateLimited++;
      } else if (result.status === 'rejected') {
        this.delivery.rejected++;
      }
      this.deps.log[result.status === 'rejected' ? 'warn' : 'info']({ roomId, eventId: event.eventId, kind: event.kind, attempt: context.attempt, result }, 'Matrix delivery failed');
      return result;
    }
  }

  private skipped(reason: string): DeliveryResult {
    this.delivery.skipped++;
    return { status: 'skipped', reason };
  }

  private deliverKind(event: LogEvent, roomId: string, context: DeliveryContext): Promise<DeliveryResult> {
    const refs = context.references;
    switch (event.kind) {
      case 'message':
        return this.sendMessage(event, roomId, { replyTo: refs.replyTo?.['mx.eventId'], thread: refs.thread?.['mx.eventId'] });
      case 'edit': {
        const original = refs.replaces?.['mx.eventId'];
        if (original === undefined) return Promise.resolve({ status: 'skipped', reason: 'the edited message never reached this Matrix room' });
        return this.sendEdit(event, roomId, original);
      }
      case 'reaction': {
        const targetId = refs.reactsTo?.['mx.eventId'];
        if (targetId === undefined) return Promise.resolve({ status: 'skipped', reason: 'the reacted-to message never reached this Matrix room' });
        return this.sendReaction(event, roomId, targetId);
      }
      case 'retraction':
        return this.sendRetraction(event, roomId, refs.redacts ?? {});
      case 'marker':
      case 'receipt': {
        if (event.kind === 'receipt' && event.receipt.type === 'delivered') return Promise.resolve({ status: 'skipped', reason: 'Matrix has no delivery receipts' });
        const upTo = refs.upTo?.['mx.eventId'];
        if (upTo === undefined) return Promise.resolve({ status: 'skipped', reason: 'the read event never reached this Matrix room' });
        return this.sendReceipt(event, roomId, upTo);
      }
      default:
        return Promise.resolve({ status: 'skipped', reason: `${event.kind} events are not sent to Matrix` });
    }
  }

  /** Who speaks: the sender's ghost (joined, named) in appservice mode, the bot otherwise. */
  private async speaker(event: LogEvent, roomId: string): Promise<Speaker> {
    if (this.ghosts) {
      try {
        const userId = await this.ghosts.ensure(event.sender.uid, event.sender.display, roomId);
        return { userId, asUser: userId };
      } catch (err) {
        // Cannot join: the room needs an invite and our bot is not in it (yet).
        if (isMatrixApiError(err, 'M_FORBIDDEN')) throw new MatrixNotJoinedError(roomId, this.ghosts.userIdFor(event.sender.uid), { cause: err });
        throw err;
      }
    }
    if (!this.joined.has(roomId)) await this.joinRoom(roomId);
    if (!this.joined.has(roomId)) throw new MatrixNotJoinedError(roomId, this.userId);
    return { userId: this.userId };
  }

  private renderOptions(event: LogEvent): RenderOptions {
    const mentions = this.mentionedUserIds(event);
    const bot = this.config.bot;
    if (this.mode !== 'bot' || !bot) return mentions.length > 0 ? { mentions } : {};
    return { prefix: expandPrefix(bot.senderPrefix, event.sender), emoteName: event.sender.display ?? event.sender.uid, ...(mentions.length > 0 ? { mentions } : {}) };
  }

  /** `content.mentions` as Matrix user ids: Matrix users as they are, others as their ghosts (appservice mode). */
  private mentionedUserIds(event: LogEvent): string[] {
    const uids = 'content' in event ? (event.content.mentions ?? []) : [];
    return uids.flatMap((uid) => {
      if (uid.startsWith('matrix:@')) return [uid.slice('matrix:'.length)];
      return this.ghosts ? [this.ghosts.userIdFor(uid)] : [];
    });
  }

  /** PUT /send/{type}/{txnId}; a ghost that lost its membership (kicked) joins again once. */
  private async send(roomId: string, type: string, txnId: string, content: JsonObject, speaker: Speaker): Promise<string> {
    const path = mxPath`/_matrix/client/v3/rooms/${roomId}/send/${type}/${txnId}`;
    const put = () => this.http.request('PUT', path, { body: content, ...(speaker.asUser !== undefined ? { asUser: speaker.asUser } : {}) });
    let res: JsonObject;
    try {
      res = await put();
    } catch (err) {
      if (!(isMatrixApiError(err, 'M_FORBIDDEN') && speaker.asUser !== undefined && this.ghosts?.forgetJoin(speaker.asUser, roomId))) throw err;
      await this.ghosts.ensureJoined(speaker.asUser, roomId);
      res = await put();
    }
    return eventIdOf(res);
  }

  private async redact(roomId: string, eventId: string, txnId: string, content: JsonObject, speaker: Speaker): Promise<string> {
    const path = mxPath`/_matrix/client/v3/rooms/${roomId}/redact/${eventId}/${txnId}`;
    try {
      return eventIdOf(await this.http.request('PUT', path, { body: content, ...(speaker.asUser !== undefined ? { asUser: speaker.asUser } : {}) }));
    } catch (err) {
      // A ghost may not redact others' events; our bot may (when it has the power level).
      if (!(isMatrixApiError(err, 'M_FORBIDDEN') && speaker.asUser !== undefined)) throw err;
      return eventIdOf(await this.http.request('PUT', path, { body: content }));
    }
  }

  private async sendMessage(event: Logged<'message'>, roomId: string, refs: { replyTo: string | undefined; thread: string | undefined }): Promise<DeliveryResult> {
    const speaker = await this.speaker(event, roomId);
    const messageRefs = { ...(refs.replyTo !== undefined ? { replyTo: refs.replyTo } : {}), ...(refs.thread !== undefined ? { thread: refs.thread } : {}) };
    const media = await this.mediaOf(event);
    if (media.length > 0) {
      // One media event per file; the message's native id is the first (it carries the caption and relations).
      const contents = renderMedia(event, media, messageRefs, this.renderOptions(event));
      let first: string | undefined;
      for (const [i, content] of contents.entries()) {
        const id = await this.send(roomId, 'm.room.message', mediaTxnId(event.eventId, i), content, speaker);
        first ??= id;
      }
      if (first !== undefined) return { status: 'delivered', nativeIds: { 'mx.eventId': first } };
    }
    const content = renderMessage(event, messageRefs, this.renderOptions(event));
    const id = await this.send(roomId, 'm.room.message', event.eventId, content, speaker);
    return { status: 'delivered', nativeIds: { 'mx.eventId': id } };
  }

  /**
   * The message's attachments that are, or now were put, in the media
   * repository: mxc:// URLs as they are; https ones (http with
   * `mediaUploadAllowHttp`) fetched and uploaded up to `mediaUploadMaxBytes`.
   * One that cannot be uploaded stays a text link (logged).
   */
  private async mediaOf(event: Logged<'message'>): Promise<MediaRef[]> {
    const out: MediaRef[] = [];
    for (const attachment of event.content.attachments ?? []) {
      if (/^mxc:\/\/[^/]+\/[^/]+$/.test(attachment.url)) {
        out.push({ attachment, mxc: attachment.url });
        continue;
      }
      const scheme = /^(https?):\/\//i.exec(attachment.url)?.[1]?.toLowerCase();
      if (this.config.mediaUploadMaxBytes === 0 || (scheme !== 'https' && !(scheme === 'http' && this.config.mediaUploadAllowHttp))) continue;
      const known = this.uploads.get(attachment.url);
      if (known) {
        out.push({ ...known, attachment });
        continue;
      }
      try {
        const uploaded = await this.upload(attachment);
        this.uploads.set(attachment.url, uploaded);
        if (this.uploads.size > MAX_REMEMBERED_UPLOADS) this.uploads.delete(this.uploads.keys().next().value ?? attachment.url);
        out.push(uploaded);
      } catch (err) {
        this.deps.log.warn({ err, eventId: event.eventId, url: attachment.url }, 'attachment not uploaded to the media repository; sent as a link');
      }
    }
    return out;
  }

  private async upload(attachment: Attachment): Promise<MediaRef> {
    const max = this.config.mediaUploadMaxBytes;
    const res = await fetch(attachment.url, { signal: AbortSignal.timeout(this.config.requestTimeoutMs), redirect: 'follow' });
    if (!res.ok || !res.body) throw new Error(`GET ${attachment.url}: HTTP ${res.status}`);
    const declared = Number(res.headers.get('content-length') ?? NaN);
    if (declared > max) {
      await res.body.cancel();
      throw new Error(`${attachment.url} has ${declared} bytes (mediaUploadMaxBytes ${max})`);
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of res.body) {
      size += chunk.length;
      if (size > max) throw new Error(`${attachment.url} is over mediaUploadMaxBytes (${max})`);
      chunks.push(chunk);
    }
    const mime = attachment.mime ?? res.headers.get('content-type')?.split(';')[0]?.trim() ?? 'application/octet-stream';
    const name = attachment.name ?? (decodeURIComponent(new URL(attachment.url).pathname.split('/').pop() ?? '') || 'file');
    const answer = await this.http.request('POST', '/_matrix/media/v3/upload', { raw: { data: Buffer.concat(chunks), contentType: mime }, query: { filename: name } });
    const mxc = answer['content_uri'];
    if (typeof mxc !== 'string' || !mxc.startsWith('mxc://')) throw new Error('the upload answered no content_uri');
    return { attachment, mxc, mime, size };
  }

  private async sendEdit(event: Logged<'edit'>, roomId: string, original: string): Promise<DeliveryResult> {
    const speaker = await this.speaker(event, roomId);
    const id = await this.send(roomId, 'm.room.message', event.eventId, renderEdit(event, original, this.renderOptions(event)), speaker);
    return { status: 'delivered', nativeIds: { 'mx.eventId': id } };
  }

  /**
   * The sender's key set → one annotation per key: send the added keys,
   * redact the removed ones. The annotation ids are kept in the adapter state
   * per (room, target, Matrix user, key): context.references carries only the
   * reacted-to message's ids, not those of the previous reaction event. In bot
   * mode one bot annotation stands for every remote sender holding the key
   * and is redacted when the last one lets go.
   */
  private async sendReaction(event: Logged<'reaction'>, roomId: string, targetId: string): Promise<DeliveryResult> {
    const speaker = await this.speaker(event, roomId);
    const uid = event.sender.uid;
    const before = await this.store.sentKeys(roomId, targetId, uid);
    const after = event.reaction.keys;
    const nativeIds: Record<string, string> = {};
    // Each key on its own: one that fails does not keep the others from going out.
    const held = new Set(before);
    let failure: unknown;
    for (const key of after.filter((k) => !before.includes(k))) {
      try {
        await this.addAnnotation(event, roomId, targetId, speaker, key, nativeIds);
        held.add(key);
      } catch (err) {
        failure ??= err;
        this.deps.log.warn({ err, roomId, eventId: event.eventId, key }, 'Matrix reaction key not sent');
      }
    }
    for (const key of before.filter((k) => !after.includes(k))) {
      try {
        await this.removeAnnotation(event, roomId, targetId, speaker, key, nativeIds);
        held.delete(key);
      } catch (err) {
        failure ??= err;
        this.deps.log.warn({ err, roomId, eventId: event.eventId, key }, 'Matrix reaction key not removed');
      }
    }
    // What is on the homeserver now: a retry sends only what is still missing.
    await this.store.setSentKeys(roomId, targetId, uid, failure === undefined ? after : [...held]);
    if (failure !== undefined) return deliveryFailure(failure);
    return { status: 'delivered', nativeIds };
  }

  private async addAnnotation(event: Logged<'reaction'>, roomId: string, targetId: string, speaker: Speaker, key: string, nativeIds: Record<string, string>): Promise<void> {
    const uid = event.sender.uid;
    const held = await this.store.sentAnnotation(roomId, targetId, speaker.userId, key);
    let id = held?.id;
    if (id === undefined) {
      try {
        id = await this.send(roomId, 'm.reaction', annotationTxnId(event.eventId, key), renderAnnotation(event.eventId, targetId, key), speaker);
      } catch (err) {
        // Our state was lost but the annotation exists: find it. Synapse answers M_DUPLICATE_ANNOTATION
        // since 1.80, and a 400 M_UNKNOWN before; a 400 M_UNKNOWN is a duplicate only if the annotation is there.
        const duplicate = isMatrixApiError(err, 'M_DUPLICATE_ANNOTATION') || (isMatrixApiError(err, 'M_UNKNOWN') && err.status === 400);
        if (!duplicate) throw err;
        id = await this.findAnnotation(roomId, targetId, speaker, key);
        if (id === undefined) throw err;
      }
    }
    const holders = [...new Set([...(held?.holders ?? []), uid])];
    await this.store.setSentAnnotation(roomId, targetId, speaker.userId, key, { id, holders });
    nativeIds[`mx.annotation.${key}`] = id;
    // A bot-mode annotation shared with another sender is not this event's own Matrix event
    // (one held by this sender alone is: an earlier attempt of this delivery sent it).
    if (held === undefined || held.holders.every((h) => h === uid)) nativeIds['mx.eventId'] ??= id;
  }

  private async removeAnnotation(event: Logged<'reaction'>, roomId: string, targetId: string, speaker: Speaker, key: string, nativeIds: Record<string, string>): Promise<void> {
    const uid = event.sender.uid;
    const held = await this.store.sentAnnotation(roomId, targetId, speaker.userId, key);
    const id = held?.id ?? (await this.findAnnotation(roomId, targetId, speaker, key));
    if (id === undefined) return;
    const holders = (held?.holders ?? [uid]).filter((h) => h !== uid);
    if (holders.length > 0) {
      await this.store.setSentAnnotation(roomId, targetId, speaker.userId, key, { id, holders });
      return;
    }
    const redaction = await this.redact(roomId, id, unannotateTxnId(event.eventId, key), renderRedaction(event.eventId), speaker);
    await this.store.setSentAnnotation(roomId, targetId, speaker.userId, key, undefined);
    nativeIds['mx.eventId'] ??= redaction;
  }

  /** Our user's annotation with `key` on `targetId`, from the homeserver's relations. */
  private async findAnnotation(roomId: string, targetId: string, speaker: Speaker, key: string): Promise<string | undefined> {
    let from: string | undefined;
    for (let page = 0; page < 20; page++) {
      const res = await this.http.request('GET', mxPath`/_matrix/client/v1/rooms/${roomId}/relations/${targetId}/m.annotation/m.reaction`, {
        query: { limit: 100, ...(from !== undefined ? { from } : {}) },
        ...(speaker.asUser !== undefined ? { asUser: speaker.asUser } : {}),
      });
      const chunk = Array.isArray(res['chunk']) ? res['chunk'] : [];
      for (const ev of chunk) {
        if (!isObject(ev) || ev['sender'] !== speaker.userId) continue;
        const rel = isObject(ev['content']) ? ev['content']['m.relates_to'] : undefined;
        if (isObject(rel) && rel['key'] === key && typeof ev['event_id'] === 'string') return ev['event_id'];
      }
      const next = res['next_batch'];
      if (typeof next !== 'string') return undefined;
      from = next;
    }
    return undefined;
  }

  private async sendRetraction(event: Logged<'retraction'>, roomId: string, ids: Readonly<Record<string, string>>): Promise<DeliveryResult> {
    // A retracted message has one Matrix event; a retracted reaction event one annotation per key.
    const main = ids['mx.eventId'];
    const targets = main !== undefined ? [main] : Object.entries(ids).filter(([k]) => k.startsWith('mx.annotation.')).map(([, v]) => v);
    if (targets.length === 0) return { status: 'skipped', reason: 'the retracted event never reached this Matrix room' };
    const speaker = await this.speaker(event, roomId);
    let first: string | undefined;
    for (const [i, id] of targets.entries()) {
      const redaction = await this.redact(roomId, id, i === 0 ? event.eventId : `${event.eventId}.${i}`, renderRedaction(event.eventId), speaker);
      first ??= redaction;
    }
    return { status: 'delivered', nativeIds: first !== undefined ? { 'mx.eventId': first } : {} };
  }

  private async sendReceipt(event: LogEvent, roomId: string, upTo: string): Promise<DeliveryResult> {
    const speaker = await this.speaker(event, roomId);
    await this.http.request('POST', mxPath`/_matrix/client/v3/rooms/${roomId}/receipt/m.read/${upTo}`, {
      body: {},
      ...(speaker.asUser !== undefined ? { asUser: speaker.asUser } : {}),
    });
    return { status: 'delivered', nativeIds: {} };
  }
}

function eventIdOf(res: JsonObject): string {
  const id = res['event_id'];
  if (typeof id !== 'string' || !id.startsWith('$')) throw new MatrixApiError(200, 'M_BAD_JSON', 'answer without event_id');
  return id;
}

function mediaUrl(template: string, mxc: string): string {
  const m = /^mxc:\/\/([^/]+)\/(.+)$/.exec(mxc);
  if (!m) return mxc;
  return template.replace(/\{server\}/g, encodeURIComponent(m[1] ?? '')).replace(/\{mediaId\}/g, encodeURIComponent(m[2] ?? ''));
}

/** Whether /versions lists spec version `major.minor` or later. */
function supportsVersion(versions: JsonObject, major: number, minor: number): boolean {
  const list = Array.isArray(versions['versions']) ? versions['versions'] : [];
  return list.some((v) => {
    const m = typeof v === 'string' ? /^v(\d+)\.(\d+)$/.exec(v) : null;
    return m !== null && (Number(m[1]) > major || (Number(m[1]) === major && Number(m[2]) >= minor));
  });
}
