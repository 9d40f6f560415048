/**
 * Everything the XMPP adapter remembers between two stanzas, in one object
 * that each concern's module takes as its first argument: the connection and
 * session generation, the archives it follows (account and rooms), the links,
 * what inbound and outbound share (reflections, ids we sent), and the counters.
 * No module keeps state of its own; the factory in index.ts makes one of these.
 */
import type { Logger } from 'pino';
import type { AdapterDeps, IngestSink, LinkView } from '../../src/core/adapter.js';
import type { Undecryptable, UndecryptableReason } from '../../src/core/event.js';
import type { RoomLink, SealedStore, StateStore } from '../../src/core/ports.js';
import { memoryCatchupStore, type CatchupStore } from './catchup.js';
import type { XmppConnection } from './client.js';
import { parseXmppConfig, type LinkOptions, type RoomCreation, type XmppAdapterConfig } from './config.js';
import { DROP_REASONS, XmppConfigError, type DropReason } from './errors.js';
import { OmemoDevice, trustPolicy } from './omemo-store.js';
import { ArchiveTrack, Lru } from './track.js';
import type { XmlElement } from './xml.js';

export interface XmppAdapterDeps extends AdapterDeps<XmppAdapterConfig> {
  /**
   * The last handled archive id per archive. The runtime passes
   * `stateCatchupStore(log.state, 'xmpp-catchup:<name>')`; absent: in memory
   * (a restarted gateway then starts from each archive's newest entry).
   */
  readonly catchup?: CatchupStore;
  /**
   * Where the bridge's reaction set per message is kept (namespace
   * `xmpp-reactions:<name>`), so a reaction after a restart adds to what XMPP
   * users saw. The runtime passes the log's state store; absent: in memory.
   */
  readonly state?: Pick<StateStore, 'get' | 'set'>;
  /**
   * Sealed namespaces of the log's state store (the runtime's `sealed`): the
   * OMEMO device keeps its keys and sessions in `xmpp-omemo:<name>` under
   * `omemoSecret`. Absent (or no secret): no OMEMO device.
   */
  readonly sealed?: (ns: string, secret: string) => SealedStore;
}

export interface XmppCounters {
  /** message stanzas received (live, carbons, archive results) */
  received: number;
  appended: number;
  duplicate: number;
  echo: number;
  ignored: number;
  /** archive results handled by catch-ups */
  archived: number;
  /** live messages left to a catch-up after an append failed */
  deferred: number;
  catchups: number;
  catchupFailures: number;
  delivered: number;
  deliveryRetries: number;
  reflectionTimeouts: number;
  joins: number;
  rejoins: number;
  selfPings: number;
  selfPingDropouts: number;
  ingestErrors: number;
  /** notices sent to senders of encrypted messages */
  encryptedNotices: number;
  /** deliveries refused because the conversation sent encrypted messages (dead letters) */
  plaintextRefused: number;
}

/** The outcome of a MUC join, as the presence handler or a timeout reports it. */
export interface JoinResult {
  readonly ok: boolean;
  readonly condition?: string | undefined;
}

export interface MucState {
  readonly jid: string;
  readonly configuredNick: string;
  nick: string;
  password: string | undefined;
  /** the link's configuration for the room, should we be the one creating it */
  create: RoomCreation;
  joined: boolean;
  /** a join on its way: `gen` is the session that sent it */
  joining: { readonly gen: number; resolve(p: JoinResult): void } | undefined;
  occupantId: string | undefined;
  /** `omemo`: members-only and non-anonymous, the rooms XEP-0384 encrypts in */
  facts: { stanzaIds: boolean; occupantIds: boolean; mam: boolean; omemo: boolean } | undefined;
  readonly track: ArchiveTrack;
  rejoinTimer: NodeJS.Timeout | undefined;
  rejoinAttempts: number;
  lastSelfPing: number | undefined;
  /** banned: do not rejoin on our own */
  gaveUp: string | undefined;
  /**
   * Nick history, for rooms without XEP-0421 occupant ids (ejabberd 23.01): a nick an
   * occupant took with a status-303 change → the nick its sender key stays on (its first
   * nick seen), so its corrections, retractions and reactions after the change resolve to
   * what it sent before. A newcomer on a nick that is someone's key gets a key of its own.
   */
  nickKeys: Map<string, string>;
  nickKeySeq: number;
  /** new nicks of 303 changes whose available presence has not come yet */
  renamedTo: Set<string>;
  /** nicks of the other occupants in the room now */
  present: Set<string>;
  /** nick → the occupant's real bare JID, in rooms that show them (OMEMO in MUCs encrypts to these) */
  realJids: Map<string, string>;
}

/** A room link to an XMPP conversation (a MUC or a 1:1 JID). */
export interface Target {
  readonly room: string;
  readonly link: RoomLink;
  readonly options: LinkOptions;
}

/** A MAM query on its way: the results collected until its `<fin/>`. */
export interface PendingQuery {
  readonly archive: string;
  readonly results: Array<{ message: XmlElement; resultId: string; stamp: number | undefined }>;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

function zeroCounters(): XmppCounters {
  return {
    received: 0,
    appended: 0,
    duplicate: 0,
    echo: 0,
    ignored: 0,
    archived: 0,
    deferred: 0,
    catchups: 0,
    catchupFailures: 0,
    delivered: 0,
    deliveryRetries: 0,
    reflectionTimeouts: 0,
    joins: 0,
    rejoins: 0,
    selfPings: 0,
    selfPingDropouts: 0,
    ingestErrors: 0,
    encryptedNotices: 0,
    plaintextRefused: 0,
  };
}

export class XmppAdapterState {
  // --- what the adapter was given
  readonly name: string;
  /** the runtime binds `adapter` to deps.log already: binding it again would print the key twice */
  readonly log: Logger;
  readonly config: XmppAdapterConfig;
  /** our account, bare */
  readonly account: string;
  readonly sink: IngestSink;
  readonly links: LinkView;
  /** archive positions */
  readonly store: CatchupStore;
  /** the log's state store (reaction sets, encrypted conversations); absent: in memory only */
  readonly stateStore: Pick<StateStore, 'get' | 'set'> | undefined;

  // --- session (session.ts)
  /** per session: a connection is not reused after its stop() */
  connection: XmppConnection;
  /** between start() and the end of stop(); start() after stop() begins a new session (the lease came back) */
  started = false;
  stopping = false;
  /** bumped on every new session: work of an older session stops */
  generation = 0;
  unwatch: (() => void) | undefined;
  pingTimer: NodeJS.Timeout | undefined;
  /** deliveries under way: stop() waits for them */
  readonly inFlight = new Set<Promise<unknown>>();

  // --- archives and rooms (mam.ts, muc.ts)
  accountFacts = { stanzaIds: false, mam: false };
  readonly accountTrack: ArchiveTrack;
  readonly rooms = new Map<string, MucState>();
  /** conversation (lower-case JID) → the room links naming it (links.ts) */
  targets = new Map<string, Target[]>();
  /** MAM queries on their way, by query id */
  readonly pendingQueries = new Map<string, PendingQuery>();

  // --- what inbound tells outbound
  /** deliveries waiting for their MUC reflection: `${room}\0${eventId}` → resolve(native ids) */
  readonly reflectionWaiters = new Map<string, (ids: Record<string, string>) => void>();
  /** our messages seen coming back (reflections, archive copies): a retry needs no resend */
  readonly reflected = new Lru<string, Record<string, string>>(10_000);
  /**
   * `${room}\0${lookup key}` → our event id, for the 1:1 ids we chose, recorded before sending: a
   * client may refer to the message before the delivery (and its id map entry) is confirmed.
   */
  readonly sentIds = new Lru<string, string>(10_000);
  /** the bridge's reaction set per target, combined over remote senders (XEP-0444 keeps one set per sender) */
  readonly reactionSets = new Lru<string, Map<string, readonly string[]>>(10_000);
  readonly reactionNamespace: string;

  // --- encrypted conversations (encryption.ts)
  /** conversation → the encryption it used (null: none seen), cached from the state store */
  readonly encryptedConversations = new Map<string, Undecryptable | null>();
  readonly encryptedNamespace: string;
  /** conversation → when we last sent it the notice (in memory: a restart may tell a sender once more) */
  readonly noticeSentAt = new Map<string, number>();

  // --- the OMEMO device (omemo.ts); undefined: omemo off, or no secret / sealed store
  readonly omemo: OmemoDevice | undefined;
  /** plain (not sealed) marker of the device id we announced, to tell a lost store from a first start */
  readonly omemoMarkerNamespace: string;

  // --- status (status.ts)
  readonly counters: XmppCounters = zeroCounters();
  /** encrypted messages appended, by reason (the metric `syncgate_adapter_stat{stat="encrypted.<reason>"}`) */
  readonly encrypted: Partial<Record<UndecryptableReason, number>> = {};
  readonly dropped = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>;
  readonly dropLog = new Map<DropReason, { windowStart: number; logged: number; suppressed: number }>();

  /**
   * @param openConnection makes a connection whose callbacks reach this state (session.ts);
   *   called now and again for each start() after a stop()
   */
  constructor(
    deps: XmppAdapterDeps,
    private readonly openConnection: (state: XmppAdapterState) => XmppConnection,
  ) {
    this.name = deps.name;
    this.log = deps.log;
    this.config = parseXmppConfig(deps.config);
    this.account = this.config.jid;
    this.sink = deps.sink;
    this.links = deps.links;
    if (!deps.catchup) this.log.warn('no catch-up store given: archive positions are kept in memory only; a restart starts from each archive’s newest entry');
    this.store = deps.catchup ?? memoryCatchupStore();
    this.stateStore = deps.state;
    this.reactionNamespace = `xmpp-reactions:${this.name}`;
    this.encryptedNamespace = `xmpp-encrypted:${this.name}`;
    this.omemoMarkerNamespace = `xmpp-omemo-device:${this.name}`;
    const { omemo, omemoSecret } = this.config;
    if (omemo !== 'off' && omemoSecret !== undefined && deps.sealed) {
      this.omemo = new OmemoDevice(deps.sealed(`xmpp-omemo:${this.name}`, omemoSecret), trustPolicy(this));
    } else if (omemo === 'required') {
      throw new XmppConfigError(['/omemo: required, but the adapter was given no sealed state store for the OMEMO keys']);
    } else if (omemo !== 'off') {
      this.log.info({ omemo }, omemoSecret === undefined ? 'no omemoSecret configured: the bridge is no OMEMO device; encrypted messages are bridged as undecryptable' : 'no sealed state store: the bridge is no OMEMO device');
    }
    this.accountTrack = new ArchiveTrack(this.account, this.store, this.log);
    this.connection = openConnection(this);
  }

  /** A new connection for a new session (a connection is not reused after its stop()). */
  reconnect(): void {
    this.connection = this.openConnection(this);
  }

  /** The account's archive and every room's. */
  tracks(): ArchiveTrack[] {
    return [this.accountTrack, ...[...this.rooms.values()].map((r) => r.track)];
  }
}
