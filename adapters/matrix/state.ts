/**
 * What one Matrix adapter instance knows and changes while it runs, in one
 * typed object that index.ts builds and passes to every module (session,
 * rooms, transactions, outbound, status) instead of closure variables.
 * Everything here is plain data or a handle; the behaviour is in the modules.
 */
import type { Logger } from 'pino';
import type { Adapter, AdapterDeps } from '../../src/core/adapter.js';
import type { SealedStore } from '../../src/core/ports.js';
import type { AppserviceServer } from './appservice.js';
import type { MatrixHttp } from './client.js';
import type { MatrixAdapterConfig } from './config.js';
import type { HeldEvents } from './crypto/held.js';
import type { EncryptedMedia } from './crypto/media.js';
import type { MatrixCrypto, PreparedCrypto, RoomEncryptionSettings } from './crypto/machine.js';
import type { Ghosts } from './ghosts.js';
import type { InboundPort } from './inbound/dispatch.js';
import type { MediaRef } from './render.js';
import type { AdapterStore, MatrixState, TxnStore } from './store.js';
import type { SyncLoop } from './sync.js';

export interface MatrixAdapterDeps extends AdapterDeps<MatrixAdapterConfig> {
  /**
   * Where completed transaction ids, the bot's sync token and the reaction
   * maps live. The runtime passes `log.state` (Redis); absent: in memory, with
   * a warning (a restart then replays or loses that state).
   */
  readonly state?: MatrixState;
  /**
   * A namespace of the state store encrypted at rest with a secret (the
   * runtime's sealed store): where the end-to-end-encryption state lives.
   * Absent: encrypted rooms are refused.
   */
  readonly sealed?: (ns: string, secret: string) => SealedStore;
}

export interface MatrixAdapter extends Adapter {
  readonly mode: 'appservice' | 'bot';
  /** where the application-service listener is bound (after start; appservice mode) */
  listenAddress(): { host: string; port: number } | undefined;
  /** the transaction store, for tests and operations */
  readonly txns: TxnStore;
}

export interface PingResult {
  readonly supported: boolean;
  readonly ok?: boolean;
  readonly durationMs?: number;
  readonly error?: string;
}

/** The connection: started or not, reachable or not, and its timers (session.ts). */
export interface SessionState {
  started: boolean;
  stopping: boolean;
  connected: boolean;
  connectFailures: number;
  connectTimer: NodeJS.Timeout | undefined;
  healthTimer: NodeJS.Timeout | undefined;
  unwatchLinks: (() => void) | undefined;
  /** bot mode: the /sync loop, once connected */
  sync: SyncLoop | undefined;
  /** the last appservice ping at start */
  pingResult: PingResult | undefined;
  /** the ping at start, while it runs (it never rejects) */
  pinging: Promise<void> | undefined;
  /** a ping asked for while one runs: sent once that one is answered */
  pingAgain: boolean;
}

/** The linked Matrix rooms as the bot knows them (rooms.ts). */
export interface RoomsState {
  readonly joined: Set<string>;
  /** why a linked room is not joined */
  readonly joinProblems: Map<string, string>;
  /** rooms known to be end-to-end encrypted: bridged only while crypto is active, never in clear */
  readonly encrypted: Set<string>;
}

/** End-to-end encryption (crypto/session.ts). */
export interface CryptoState {
  /** the sealed store read at start() */
  prepared: PreparedCrypto | undefined;
  /**
   * Appservice mode: set at start() when the crypto is configured, settled
   * once the bridge device is open (or known unusable) or at stop():
   * transactions pushed meanwhile wait for it (transactions.ts).
   */
  opening: { readonly done: Promise<void>; settle(): void } | undefined;
  /** the machine for our device, once connected: encrypted rooms are bridged */
  machine: MatrixCrypto | undefined;
  /** why encrypted rooms are refused */
  problem: string | undefined;
  /** the store for our device was lost while the homeserver has its keys: refused until an operator acts */
  lost: string | undefined;
  /**
   * Appservice mode: the open machine of the bridge device, fed from the
   * transactions (crypto/appservice.ts); `machine` too once the homeserver
   * proved it sends the extensions.
   */
  feed: MatrixCrypto | undefined;
  /** appservice mode: the extensions probe in progress (or its result) */
  probe: { nonces: string[]; toDevice: boolean; counts: boolean; timer: NodeJS.Timeout | undefined } | undefined;
  /** appservice mode: the homeserver did not send the extensions in time: which settings are missing */
  extensionsMissing: string | undefined;
  /** encrypted events waiting for their room key */
  held: HeldEvents | undefined;
  /** each encrypted room's rotation settings (its m.room.encryption content), read once, dropped when that state changes */
  readonly roomSettings: Map<string, RoomEncryptionSettings>;
  heldTimer: NodeJS.Timeout | undefined;
  /** encryption.deleteOldDevices: what the last clean-up of the bridge user's older syncgate devices did */
  oldDevices: { deleted: string[]; problem?: string } | undefined;
  /** encryption.crossSigning: what setting it up did (or why it failed) */
  crossSigning: { state: 'signed' | 'skipped' | 'failed'; masterKey?: string; detail?: string } | undefined;
}

/** Application-service transactions (transactions.ts). */
export interface TransactionsState {
  /** transactions in order, one at a time */
  chain: Promise<void>;
  /** a repeated txnId joins the one in flight */
  readonly inflight: Map<string, Promise<void>>;
  /** 0: the first completed transaction prunes the expired records */
  lastPrune: number;
}

export interface OutboundCounters {
  delivered: number;
  retried: number;
  rejected: number;
  skipped: number;
  rateLimited: number;
}

/** Deliveries (outbound/). */
export interface OutboundState {
  /** attachment URL → its upload, so a retried delivery does not upload again */
  readonly uploads: Map<string, MediaRef>;
  readonly counters: OutboundCounters;
}

export interface MatrixAdapterState {
  readonly name: string;
  readonly mode: 'appservice' | 'bot';
  readonly config: MatrixAdapterConfig;
  readonly deps: MatrixAdapterDeps;
  readonly log: Logger;
  readonly http: MatrixHttp;
  readonly store: AdapterStore;
  /** the state store the AdapterStore writes to (also for held encrypted events) */
  readonly kv: MatrixState;
  /** appservice mode: the senders' ghost users */
  readonly ghosts: Ghosts | undefined;
  /** appservice mode: matches our ghosts' user ids */
  readonly ghostRegex: RegExp | undefined;
  /** appservice mode: the listener the homeserver pushes transactions to */
  readonly server: AppserviceServer | undefined;
  /** Matrix → log, shared by both modes */
  readonly inbound: InboundPort;
  /** encrypted attachments coming in: checked, kept sealed, served through the gateway (crypto/media.ts) */
  readonly media: EncryptedMedia;
  /** our bot's user id: configured, then the one the homeserver says the token belongs to */
  userId: string;
  readonly session: SessionState;
  readonly rooms: RoomsState;
  readonly crypto: CryptoState;
  readonly txns: TransactionsState;
  readonly outbound: OutboundState;
}

/** The session of a new adapter instance (start() resets what a new session must learn again). */
export function newSession(): SessionState {
  return {
    started: false,
    stopping: false,
    connected: false,
    connectFailures: 0,
    connectTimer: undefined,
    healthTimer: undefined,
    unwatchLinks: undefined,
    sync: undefined,
    pingResult: undefined,
    pinging: undefined,
    pingAgain: false,
  };
}
