/**
 * A Matrix homeserver fake for tests: a small HTTP server on 127.0.0.1 that
 * follows the Client-Server API (v1.11 era: r0 and v3 paths) and the
 * Application Service API for the endpoints a bridge uses. No Matrix
 * homeserver can be installed on the test machines, so this is what
 * matrix-bot-sdk talks to over real HTTP.
 *
 * Faithful where a bridge can tell the difference (spec sections in brackets):
 * - auth: 401 M_MISSING_TOKEN / M_UNKNOWN_TOKEN; AS identity assertion with
 *   `user_id` (and `device_id` or the SDK's `org.matrix.msc3202.device_id`)
 *   only inside the AS user namespaces, else 403 M_FORBIDDEN [AS API
 *   "Identity assertion"].
 * - transaction identifiers scoped per device and endpoint; a retransmission
 *   gets the original response even when the body differs [C-S "Transaction
 *   identifiers"]. AS users without a device are scoped per (AS, user).
 * - /sync with opaque `since` tokens, long-poll `timeout`, `limited`
 *   timelines with `prev_batch` and a state delta for the gap, ephemeral
 *   m.receipt / m.typing, invites, left rooms, account data,
 *   `unsigned.transaction_id` only for the sending device.
 * - /messages pagination with from/to/dir/limit over the same tokens.
 * - redaction per the room v11 algorithm, m.replace bundling, duplicate
 *   annotations rejected with M_DUPLICATE_ANNOTATION; relations otherwise
 *   stored exactly as sent.
 * - AS transaction push with `Authorization: Bearer <hs_token>`, in order,
 *   one transaction in flight, the same txnId and body retried with
 *   exponential backoff until a 200 [AS API "Pushing events"].
 * - as Synapse does: 429 M_LIMIT_EXCEEDED with `retry_after_ms` in the body
 *   and no Retry-After header (`retryAfterHeader` adds one); duplicate
 *   annotations as 400 M_UNKNOWN before 1.80 (`legacyDuplicateAnnotation`);
 *   /versions as an older Synapse lists it (`specVersions`, e.g.
 *   SYNAPSE_1_67_VERSIONS: up to v1.2) while v3 paths are served; the media
 *   repository (upload, authenticated download, `maxUploadBytes`; before
 *   authenticated media with `authenticatedMedia: false`); the AS
 *   ping (`POST /_matrix/client/v1/appservice/{id}/ping`), after which a
 *   transaction waiting out its backoff is retried at once (Synapse 1.132+;
 *   `pingRetriesTransactions: false` as before); receipts and
 *   typing that happen while the AS is down (its transaction failing) are
 *   dropped, not queued (`droppedEphemeral`); a client's event
 *   refused with 400 when an m.room.message has a non-string `body` or
 *   `msgtype`, an annotation has no `key`, or a relation names an unknown event.
 * - end-to-end encryption: /keys/upload, /keys/query, /keys/claim,
 *   /sendToDevice and the to-device, device-list and one-time-key parts of
 *   /sync, as Synapse serves them (fake-homeserver-e2ee.ts); m.room.encrypted
 *   events are stored and served like any other.
 *
 * Simplified (documented so nobody relies on it): one room version for all
 * rooms ("11", or "9" with `roomVersion`, which changes only where `redacts`
 * is served, not the redaction algorithm);
 * auth rules are a subset (membership, power levels for events, redactions,
 * kicks and bans); filters are stored but only `room.timeline.limit` is
 * honoured; history visibility is treated as `shared` and /messages needs a
 * current join; no federation, presence, cross-signing, push rules,
 * thread aggregation, /context or AS user/alias queries; the legacy AS push
 * (`legacyAppServicePush`) has no fallback between paths. Rate limiting happens only when a test asks for it
 * (`rateLimitNext`, which ignores the registration's `rate_limited`).
 *
 * Tokens (`next_batch`, `prev_batch`, `start`, `end`) are one global stream
 * position, so a /sync token is also a valid /messages `from`/`to`.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { E2eeError, FakeKeyServer, FakeUia } from './fake-homeserver-e2ee.js';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/** An event as the Client-Server API serves it (ClientEvent). */
export type ClientEvent = {
  event_id: string;
  type: string;
  sender: string;
  origin_server_ts: number;
  content: JsonObject;
  room_id?: string;
  state_key?: string;
  redacts?: string;
  unsigned: JsonObject;
};

export interface AppServiceNamespace {
  regex: string;
  exclusive: boolean;
}

/** The registration file of an application service (AS API "Registration"). */
export interface AppServiceRegistration {
  id: string;
  url: string | null;
  as_token: string;
  hs_token: string;
  sender_localpart: string;
  namespaces: {
    users?: AppServiceNamespace[];
    aliases?: AppServiceNamespace[];
    rooms?: AppServiceNamespace[];
  };
  rate_limited?: boolean;
  protocols?: string[];
  /** Stable ephemeral push (spec v1.13): sent as `ephemeral`. */
  receive_ephemeral?: boolean;
  /** MSC2409 flag that matrix-bot-sdk 0.7 needs: sent as `de.sorunome.msc2409.ephemeral`. */
  'de.sorunome.msc2409.push_ephemeral'?: boolean;
  /** MSC3202: key counts and device lists in transactions (with the homeserver's `msc3202TransactionExtensions`). */
  'org.matrix.msc3202'?: boolean;
  /** MSC4190: the AS deletes its users' devices without user-interactive auth. */
  'io.element.msc4190'?: boolean;
}

export type AppServiceAttemptOutcome =
  | { kind: 'status'; status: number }
  | { kind: 'network-error'; message: string }
  | { kind: 'injected-failure' }
  | { kind: 'ack-lost'; status: number };

export interface AppServiceTransactionRecord {
  txnId: string;
  /** Exactly what was sent on every attempt (frozen when the transaction was built). */
  body: JsonObject;
  attempts: AppServiceAttemptOutcome[];
  /** the wait before each retry, in order (Synapse: 2, 4, 8 … up to 512 s) */
  retryDelaysMs: number[];
  /**
   * what ended each wait, in the same order: the backoff ran out, or a
   * successful AS ping cut it short (Synapse 1.132+)
   */
  retriedBy: Array<'backoff' | 'ping'>;
  delivered: boolean;
}

export interface RequestLogEntry {
  method: string;
  path: string;
  /** 0 while the request is still being answered. */
  status: number;
  userId?: string;
}

export interface RegisteredUser {
  userId: string;
  accessToken: string;
  deviceId: string;
}

export interface CreateRoomOptions {
  /** Defaults to `public_chat` here (the HTTP API defaults to `private_chat`). */
  preset?: 'private_chat' | 'public_chat' | 'trusted_private_chat';
  name?: string;
  topic?: string;
  /** Localpart of the alias, as `room_alias_name`. */
  aliasName?: string;
  invite?: string[];
  isDirect?: boolean;
  initialState?: { type: string; state_key?: string; content: JsonObject }[];
  powerLevelContentOverride?: JsonObject;
}

export interface FakeHomeserverOptions {
  serverName?: string;
  /** Timeline limit of /sync when no filter sets one. */
  defaultTimelineLimit?: number;
  /** Backoff of AS transaction retries (doubles from initial up to max); default as Synapse: 2 s up to 512 s. */
  appServiceRetry?: { initialMs?: number; maxMs?: number };
  /** Timeout of one AS transaction request. */
  appServiceRequestTimeoutMs?: number;
  maxEventsPerTransaction?: number;
  /**
   * First AS transaction id. Defaults to the start time in ms: a real
   * homeserver never reuses a txnId, and an AS that outlives a restarted fake
   * would drop a reused one as already processed.
   */
  firstAppServiceTxnId?: number;
  /** The media repository's upload limit (Synapse `max_upload_size`, default 50 MiB). */
  maxUploadBytes?: number;
  /**
   * false: a homeserver from before authenticated media (spec v1.11, Synapse
   * 1.110): `/_matrix/client/v1/media/download` is unknown (404
   * M_UNRECOGNIZED) and `/_matrix/media/v3/download` serves without a token.
   * Default true: the authenticated endpoint, the old one frozen (404).
   */
  authenticatedMedia?: boolean;
  /**
   * Answer a duplicate annotation as Synapse before 1.80 did: 400 M_UNKNOWN
   * "Can't send same reaction twice" (1.80 brought M_DUPLICATE_ANNOTATION).
   */
  legacyDuplicateAnnotation?: boolean;
  /**
   * What /versions lists; v3 paths are served whatever it says (Synapse 1.67
   * listed up to v1.2 while serving v3). Default: up to v1.11.
   */
  specVersions?: readonly string[];
  /**
   * Send a Retry-After header with 429s. Synapse answers 429 with
   * `retry_after_ms` in the body and no header (the default here).
   */
  retryAfterHeader?: boolean;
  /**
   * Push AS transactions as Synapse before 1.81 did: to the unprefixed
   * `/transactions/{txnId}` with `?access_token=<hs_token>` and no
   * Authorization header.
   */
  legacyAppServicePush?: boolean;
  /**
   * Honour the stable `receive_ephemeral` and push `ephemeral` (spec v1.13).
   * Synapse reads only `de.sorunome.msc2409.push_ephemeral` and pushes
   * receipts and typing only under `de.sorunome.msc2409.ephemeral` (the
   * default here).
   */
  stableEphemeral?: boolean;
  /**
   * The version of every room: '11' (default) keeps `redacts` in a
   * redaction's content (and top-level for older clients); '9' — what many
   * existing Synapse rooms are — has it only at the top level.
   */
  roomVersion?: '9' | '11';
  /**
   * A successful AS ping ends the backoff of a failing transaction: it is
   * retried at once, as Synapse does since 1.132 (element-hq/synapse#18521).
   * `false`: as older Synapse, the retry waits for the backoff. Default true.
   */
  pingRetriesTransactions?: boolean;
  /**
   * Synapse `experimental_features: msc2409_to_device_messages_enabled`:
   * to-device messages for the AS's users go into its transactions as
   * `de.sorunome.msc2409.to_device` (each with `to_user_id`/`to_device_id`),
   * for a registration with `de.sorunome.msc2409.push_ephemeral`.
   */
  msc2409ToDevice?: boolean;
  /**
   * Synapse `experimental_features: msc3202_transaction_extensions`: for a
   * registration with `org.matrix.msc3202: true`, transactions carry the AS
   * users' one-time-key counts (`org.matrix.msc3202.device_one_time_keys_count`
   * and the older `…_key_counts`), unused fallback key types and
   * `org.matrix.msc3202.device_lists` {changed, left}.
   */
  msc3202TransactionExtensions?: boolean;
}

/** What Synapse 1.67 (2022) listed in /versions. */
export const SYNAPSE_1_67_VERSIONS: readonly string[] = ['r0.0.1', 'r0.1.0', 'r0.2.0', 'r0.3.0', 'r0.4.0', 'r0.5.0', 'r0.6.0', 'r0.6.1', 'v1.1', 'v1.2'];

/** A file in the media repository. */
export interface StoredMedia {
  readonly contentType: string;
  readonly filename: string | undefined;
  readonly data: Buffer;
  readonly uploader: string;
}

export interface FakeHomeserver {
  readonly url: string;
  readonly port: number;
  readonly serverName: string;
  registerUser(localpart: string, password?: string): RegisteredUser;
  createRoom(creatorUserId: string, opts?: CreateRoomOptions): string;
  joinRoom(userId: string, roomIdOrAlias: string): string;
  leaveRoom(userId: string, roomId: string): void;
  inviteUser(inviterUserId: string, roomId: string, inviteeUserId: string): void;
  sendAsUser(userId: string, roomId: string, type: string, content: JsonObject): string;
  sendStateAsUser(userId: string, roomId: string, type: string, stateKey: string, content: JsonObject): string;
  redactAsUser(userId: string, roomId: string, eventId: string, reason?: string): string;
  sendReceiptAsUser(userId: string, roomId: string, eventId: string, receiptType?: 'm.read' | 'm.read.private'): void;
  setTyping(userId: string, roomId: string, typing: boolean, timeoutMs?: number): void;
  /**
   * The room timeline in stream order, as a client with no transaction of its
   * own would see it; `includeTransactionIds` adds `unsigned.transaction_id`
   * to every event sent with one (to check which txnId a bridge used).
   */
  events(roomId: string, opts?: { includeTransactionIds?: boolean }): ClientEvent[];
  joinedMembers(roomId: string): string[];
  registerAppService(registration: AppServiceRegistration): void;
  /** Point the AS at a new URL (or null: no traffic); queued transactions go there. */
  setAppServiceUrl(appServiceId: string, url: string | null): void;
  appServiceTransactions(appServiceId: string): AppServiceTransactionRecord[];
  /** Ephemeral events (receipts, typing) dropped because the AS was down, as Synapse does. */
  droppedEphemeral(appServiceId: string): number;
  /**
   * The next `count` push attempts to the AS fail. `afterDelivery: true` sends
   * the request and then discards the answer (the AS processed it, the 200 is
   * "lost"), so the same txnId is retried — the spec's "AS ACK Lost" case.
   */
  failAppServiceNext(count: number, opts?: { afterDelivery?: boolean; appServiceId?: string }): void;
  /** The next `count` client requests whose path matches answer 429 M_LIMIT_EXCEEDED. */
  rateLimitNext(count: number, pathPattern?: string | RegExp, retryAfterMs?: number): void;
  /**
   * Client requests whose path matches wait, unanswered, until `release()`
   * (or stop()): a client held at one step of its start-up, as a slow
   * homeserver would. `arrived` counts the requests held so far.
   */
  holdRequests(pathPattern: string | RegExp): RequestHold;
  requests(): RequestLogEntry[];
  /** How many successful `POST /_matrix/client/v1/appservice/{id}/ping` the AS made. */
  appServicePings(appServiceId: string): number;
  /** A file uploaded to the media repository, by its mxc:// URI. */
  media(mxc: string): StoredMedia | undefined;
  /** Every download served (the path tells the endpoint), in order. */
  downloads(): Array<{ mxc: string; path: string }>;
  /** Every file of the media repository, in upload order. */
  mediaUploads(): Array<{ mxc: string; media: StoredMedia }>;
  /** Replaces a stored file's bytes (a media repository that serves another file than was uploaded). */
  replaceMedia(mxc: string, data: Buffer): void;
  /** The key server and to-device messages (fake-homeserver-e2ee.ts): what devices uploaded and sent. */
  readonly keys: FakeKeyServer;
  /** User-interactive auth of the device-deletion endpoints (fake-homeserver-e2ee.ts): its attempts. */
  readonly uia: FakeUia;
  /** A user's devices as GET /devices lists them. */
  listDevices(userId: string): JsonObject[];
  /** Devices deleted through the API, in order. */
  readonly deletedDevices: Array<{ userId: string; deviceId: string }>;
  stop(): Promise<void>;
}

/** An error as the Matrix API reports it (standard error response). */
export class FakeMatrixError extends Error {
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
    readonly extra: JsonObject = {},
  ) {
    super(message);
    this.name = 'FakeMatrixError';
  }
}

const ROOM_VERSION = '11';
const SPEC_VERSIONS = ['r0.5.0', 'r0.6.0', 'r0.6.1', 'v1.1', 'v1.2', 'v1.3', 'v1.4', 'v1.5', 'v1.6', 'v1.7', 'v1.8', 'v1.9', 'v1.10', 'v1.11'];
const MAX_BODY_BYTES = 1024 * 1024;
// Size limits: the complete event MUST NOT be larger than 65536 bytes.
const MAX_EVENT_BYTES = 65536;
const LOCALPART_RE = /^[a-z0-9._=\-/+]+$/;

interface StoredEvent {
  eventId: string;
  roomId: string;
  type: string;
  sender: string;
  ts: number;
  receivedAt: number;
  content: JsonObject;
  stateKey?: string;
  pos: number;
  txn?: { scope: string; txnId: string; appServiceId?: string };
  prevState?: StoredEvent;
  redactedBy?: StoredEvent;
}

interface Receipt {
  userId: string;
  type: 'm.read' | 'm.read.private';
  eventId: string;
  ts: number;
  threadId?: string;
  pos: number;
}

interface Room {
  roomId: string;
  events: StoredEvent[];
  byId: Map<string, StoredEvent>;
  state: Map<string, StoredEvent>;
  aliases: Set<string>;
  receipts: Map<string, Receipt>;
  typing: Map<string, NodeJS.Timeout>;
  typingPos: number;
}

interface AccountDataEntry {
  content: JsonObject;
  pos: number;
}

interface User {
  userId: string;
  password?: string;
  profile: Map<string, Json>;
  devices: Set<string>;
  accountData: Map<string, AccountDataEntry>;
  roomAccountData: Map<string, Map<string, AccountDataEntry>>;
  filters: JsonObject[];
}

/** Who an event is serialised for: decides whether unsigned.transaction_id is shown. */
interface Viewer {
  txnScope?: string;
  appServiceId?: string;
  allTransactionIds?: boolean;
}

interface AppendInput {
  type: string;
  sender: string;
  content: JsonObject;
  stateKey?: string;
  ts?: number;
  txn?: StoredEvent['txn'];
}

interface Requester {
  user: User;
  deviceId?: string;
  appService?: AppServiceState;
  txnScope: string;
}

interface CompiledNamespace {
  regex: RegExp;
  exclusive: boolean;
}

interface PendingTransaction {
  record: AppServiceTransactionRecord;
  payload: string;
}

interface AppServiceState {
  reg: AppServiceRegistration;
  senderUserId: string;
  url: string | null;
  users: CompiledNamespace[];
  aliases: CompiledNamespace[];
  rooms: CompiledNamespace[];
  pendingEvents: StoredEvent[];
  pendingEphemeral: JsonObject[];
  /** MSC2409 to-device messages for the AS's users */
  pendingToDevice: JsonObject[];
  /** MSC3202: keys changed since the last transaction; the stream position device lists were reported up to */
  keysDirty: boolean;
  keysReportedPos: number;
  /** ephemeral events not kept because the AS was down */
  droppedEphemeral: number;
  current?: PendingTransaction;
  nextTxnId: number;
  log: AppServiceTransactionRecord[];
  pumping: boolean;
  injectedFailures: { afterDelivery: boolean }[];
  /** set while the pump waits out a backoff: ends the wait early (a successful ping) */
  retryNow?: () => void;
}

export interface RequestHold {
  readonly arrived: number;
  release(): void;
}

interface HoldRule {
  readonly pattern: string | RegExp;
  arrived: number;
  released: boolean;
  readonly waiting: Array<() => void>;
}

interface RateLimitRule {
  remaining: number;
  pattern?: string | RegExp;
  retryAfterMs: number;
}

interface Reply {
  status?: number;
  body: Json;
}

interface Ctx {
  method: string;
  params: Map<string, string>;
  query: URLSearchParams;
  body: unknown;
  req: http.IncomingMessage;
  res: http.ServerResponse;
  /** Version-free path, the "same endpoint" key for transaction identifiers. */
  endpoint: string;
}

interface AuthedCtx extends Ctx {
  requester: Requester;
}

type Route =
  | { method: string; path: string[]; auth: false; handler: (ctx: Ctx) => Reply | Promise<Reply> }
  | { method: string; path: string[]; auth: true; handler: (ctx: AuthedCtx) => Reply | Promise<Reply> };

function randomId(bytes: number): string {
  return randomBytes(bytes).toString('base64url');
}

function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function cloneJson<T extends Json>(v: T): T {
  return structuredClone(v);
}

function stateKeyOf(type: string, stateKey: string): string {
  return `${type}\u0000${stateKey}`;
}

function str(v: Json | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function badJson(message: string): FakeMatrixError {
  return new FakeMatrixError(400, 'M_BAD_JSON', message);
}

function forbidden(message: string): FakeMatrixError {
  return new FakeMatrixError(403, 'M_FORBIDDEN', message);
}

function notFound(message: string): FakeMatrixError {
  return new FakeMatrixError(404, 'M_NOT_FOUND', message);
}

function invalidParam(message: string): FakeMatrixError {
  return new FakeMatrixError(400, 'M_INVALID_PARAM', message);
}

function membershipOf(ev: StoredEvent | undefined): string | undefined {
  return ev ? str(ev.content['membership']) : undefined;
}

function relatesTo(content: JsonObject): JsonObject | undefined {
  const rel = content['m.relates_to'];
  return isJsonObject(rel) ? rel : undefined;
}

/** Content keys kept by the room v11 redaction algorithm. */
function redactContent(type: string, content: JsonObject): JsonObject {
  const keep = (keys: string[]): JsonObject => {
    const out: JsonObject = {};
    for (const k of keys) {
      const v = content[k];
      if (v !== undefined) out[k] = v;
    }
    return out;
  };
  switch (type) {
    case 'm.room.member': {
      const out = keep(['membership', 'join_authorised_via_users_server']);
      const tpi = content['third_party_invite'];
      if (isJsonObject(tpi) && tpi['signed'] !== undefined) out['third_party_invite'] = { signed: tpi['signed'] };
      return out;
    }
    case 'm.room.create':
      return content;
    case 'm.room.join_rules':
      return keep(['join_rule', 'allow']);
    case 'm.room.power_levels':
      return keep(['ban', 'events', 'events_default', 'invite', 'kick', 'redact', 'state_default', 'users', 'users_default']);
    case 'm.room.history_visibility':
      return keep(['history_visibility']);
    case 'm.room.redaction':
      return keep(['redacts']);
    default:
      return {};
  }
}

function parseToken(token: string): number {
  const m = /^s(\d+)$/.exec(token);
  if (!m?.[1]) throw invalidParam(`Unknown token: ${token}`);
  return Number(m[1]);
}

function token(pos: number): string {
  return `s${pos}`;
}

class FakeHomeserverImpl implements FakeHomeserver {
  readonly serverName: string;
  url = '';
  port = 0;

  private readonly server: http.Server;
  private readonly agent = new http.Agent({ keepAlive: false });
  private readonly defaultTimelineLimit: number;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;
  private readonly asRequestTimeoutMs: number;
  private readonly maxEventsPerTransaction: number;
  private readonly firstTxnId: number;

  private pos = 0;
  private stopped = false;
  private readonly users = new Map<string, User>();
  private readonly sessions = new Map<string, { userId: string; deviceId: string }>();
  private readonly rooms = new Map<string, Room>();
  private readonly aliases = new Map<string, string>();
  private readonly appServices = new Map<string, AppServiceState>();
  private readonly appServicesByToken = new Map<string, AppServiceState>();
  private readonly txnResponses = new Map<string, Reply>();
  private readonly uiaSessions = new Set<string>();
  private readonly waiters = new Set<() => void>();
  private readonly sleepers = new Set<{ timer: NodeJS.Timeout; resolve: () => void }>();
  private readonly rateLimits: RateLimitRule[] = [];
  private readonly holds: HoldRule[] = [];
  private readonly requestLog: RequestLogEntry[] = [];
  private readonly mediaStore = new Map<string, StoredMedia>();
  private readonly pings: Array<{ appServiceId: string; at: number }> = [];
  private readonly maxUploadBytes: number;
  private readonly authenticatedMedia: boolean;
  private readonly mediaDownloads: Array<{ mxc: string; path: string }> = [];
  private readonly legacyDuplicateAnnotation: boolean;
  private readonly specVersions: readonly string[];
  private readonly retryAfterHeader: boolean;
  private readonly legacyAppServicePush: boolean;
  private readonly stableEphemeral: boolean;
  private readonly roomVersion: string;
  private readonly pingRetriesTransactions: boolean;
  private readonly msc2409ToDevice: boolean;
  private readonly msc3202: boolean;
  private readonly routes: Route[];
  readonly keys: FakeKeyServer;
  readonly uia = new FakeUia();
  readonly deletedDevices: Array<{ userId: string; deviceId: string }> = [];
  /** (user, device) → display name given at login (`initial_device_display_name`, kept only when the login created the device) */
  private readonly deviceNames = new Map<string, string>();

  constructor(opts: FakeHomeserverOptions) {
    this.serverName = opts.serverName ?? 'fake.test';
    this.defaultTimelineLimit = opts.defaultTimelineLimit ?? 10;
    // Synapse's recoverer: 2 s, doubling up to 512 s; no retry before the wait is over.
    this.retryInitialMs = opts.appServiceRetry?.initialMs ?? 2_000;
    this.retryMaxMs = opts.appServiceRetry?.maxMs ?? 512_000;
    this.asRequestTimeoutMs = opts.appServiceRequestTimeoutMs ?? 5000;
    this.maxEventsPerTransaction = opts.maxEventsPerTransaction ?? 100;
    this.firstTxnId = opts.firstAppServiceTxnId ?? Date.now();
    this.maxUploadBytes = opts.maxUploadBytes ?? 50 * 1024 * 1024;
    this.authenticatedMedia = opts.authenticatedMedia ?? true;
    this.legacyDuplicateAnnotation = opts.legacyDuplicateAnnotation ?? false;
    this.specVersions = opts.specVersions ?? SPEC_VERSIONS;
    this.retryAfterHeader = opts.retryAfterHeader ?? false;
    this.legacyAppServicePush = opts.legacyAppServicePush ?? false;
    this.stableEphemeral = opts.stableEphemeral ?? false;
    this.roomVersion = opts.roomVersion ?? ROOM_VERSION;
    this.pingRetriesTransactions = opts.pingRetriesTransactions ?? true;
    this.msc2409ToDevice = opts.msc2409ToDevice ?? false;
    this.msc3202 = opts.msc3202TransactionExtensions ?? false;
    this.keys = new FakeKeyServer({
      bump: () => this.bump(),
      sharesRoomWith: (userId, pos) => this.sharesRoomWith(userId, pos),
      newlyJoinedMembers: (userId, after, upTo) => this.newlyJoinedMembers(userId, after, upTo),
      devicesOf: (userId) => [...(this.users.get(userId)?.devices ?? [])],
      isLocal: (userId) => this.isLocal(userId),
      toDeviceQueued: (userId, deviceId, event) => {
        for (const as of this.appServices.values()) {
          if (!this.msc2409ToDevice || as.reg['de.sorunome.msc2409.push_ephemeral'] !== true || !this.isAppServiceUser(as, userId)) continue;
          as.pendingToDevice.push({ ...event, to_user_id: userId, to_device_id: deviceId });
          this.pump(as);
        }
      },
      keysChanged: () => {
        for (const as of this.appServices.values()) {
          if (!this.wantsKeyExtensions(as)) continue;
          as.keysDirty = true;
          this.pump(as);
        }
      },
    });
    this.routes = this.buildRoutes();
    this.server = http.createServer((req, res) => {
      void this.handle(req, res);
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const addr = this.server.address() as AddressInfo;
    this.port = addr.port;
    this.url = `http://127.0.0.1:${addr.port}`;
  }

  // ---------------------------------------------------------------- control API

  registerUser(localpart: string, password?: string): RegisteredUser {
    const userId = this.validateNewLocalpart(localpart, undefined);
    const user = this.createUser(userId, password);
    const session = this.newSession(user, undefined);
    return { userId, accessToken: session.accessToken, deviceId: session.deviceId };
  }

  createRoom(creatorUserId: string, opts: CreateRoomOptions = {}): string {
    const body: JsonObject = { preset: opts.preset ?? 'public_chat' };
    if (opts.name !== undefined) body['name'] = opts.name;
    if (opts.topic !== undefined) body['topic'] = opts.topic;
    if (opts.aliasName !== undefined) body['room_alias_name'] = opts.aliasName;
    if (opts.invite) body['invite'] = opts.invite;
    if (opts.isDirect !== undefined) body['is_direct'] = opts.isDirect;
    if (opts.initialState) {
      body['initial_state'] = opts.initialState.map((s) => ({ type: s.type, state_key: s.state_key ?? '', content: s.content }));
    }
    if (opts.powerLevelContentOverride) body['power_level_content_override'] = opts.powerLevelContentOverride;
    return this.doCreateRoom(this.controlRequester(creatorUserId), body);
  }

  joinRoom(userId: string, roomIdOrAlias: string): string {
    const room = this.resolveRoom(roomIdOrAlias);
    this.changeMembership(this.requireUser(userId).userId, room, userId, 'join', {});
    return room.roomId;
  }

  leaveRoom(userId: string, roomId: string): void {
    this.changeMembership(userId, this.requireRoom(roomId), userId, 'leave', {});
  }

  inviteUser(inviterUserId: string, roomId: string, inviteeUserId: string): void {
    this.changeMembership(inviterUserId, this.requireRoom(roomId), inviteeUserId, 'invite', {});
  }

  sendAsUser(userId: string, roomId: string, type: string, content: JsonObject): string {
    return this.sendEvent(this.controlRequester(userId), this.requireRoom(roomId), type, content, undefined, undefined).eventId;
  }

  sendStateAsUser(userId: string, roomId: string, type: string, stateKey: string, content: JsonObject): string {
    return this.setState(this.controlRequester(userId), this.requireRoom(roomId), type, stateKey, content, undefined).eventId;
  }

  redactAsUser(userId: string, roomId: string, eventId: string, reason?: string): string {
    const content: JsonObject = { redacts: eventId };
    if (reason !== undefined) content['reason'] = reason;
    return this.sendEvent(this.controlRequester(userId), this.requireRoom(roomId), 'm.room.redaction', content, undefined, undefined).eventId;
  }

  sendReceiptAsUser(userId: string, roomId: string, eventId: string, receiptType: 'm.read' | 'm.read.private' = 'm.read'): void {
    this.postReceipt(this.controlRequester(userId), this.requireRoom(roomId), receiptType, eventId, undefined);
  }

  setTyping(userId: string, roomId: string, typing: boolean, timeoutMs = 30000): void {
    const room = this.requireRoom(roomId);
    this.requireJoined(room, userId);
    this.applyTyping(room, userId, typing, timeoutMs);
  }

  events(roomId: string, opts: { includeTransactionIds?: boolean } = {}): ClientEvent[] {
    const room = this.requireRoom(roomId);
    return room.events.map((e) => this.toClientEvent(e, { allTransactionIds: opts.includeTransactionIds === true }, true));
  }

  joinedMembers(roomId: string): string[] {
    return this.joinedUserIds(this.requireRoom(roomId));
  }

  registerAppService(reg: AppServiceRegistration): void {
    if (this.appServices.has(reg.id)) throw new Error(`application service id ${reg.id} is already registered`);
    // AS API: each as_token and id MUST be unique; the homeserver MUST enforce this.
    if (this.appServicesByToken.has(reg.as_token)) throw new Error('as_token is already used by another application service');
    const compile = (list: AppServiceNamespace[] | undefined): CompiledNamespace[] =>
      // Start-anchored like the reference homeserver's re.match().
      (list ?? []).map((ns) => ({ regex: new RegExp(`^(?:${ns.regex})`), exclusive: ns.exclusive }));
    const state: AppServiceState = {
      reg: structuredClone(reg),
      senderUserId: `@${reg.sender_localpart}:${this.serverName}`,
      url: reg.url,
      users: compile(reg.namespaces.users),
      aliases: compile(reg.namespaces.aliases),
      rooms: compile(reg.namespaces.rooms),
      pendingEvents: [],
      pendingEphemeral: [],
      pendingToDevice: [],
      keysDirty: false,
      keysReportedPos: this.pos,
      droppedEphemeral: 0,
      nextTxnId: this.firstTxnId,
      log: [],
      pumping: false,
      injectedFailures: [],
    };
    this.appServices.set(reg.id, state);
    this.appServicesByToken.set(reg.as_token, state);
    // Homeservers create the sender_localpart user when they load the registration.
    if (!this.users.has(state.senderUserId)) this.createUser(state.senderUserId, undefined);
  }

  setAppServiceUrl(appServiceId: string, url: string | null): void {
    const as = this.requireAppService(appServiceId);
    as.url = url;
    this.pump(as);
  }

  appServiceTransactions(appServiceId: string): AppServiceTransactionRecord[] {
    return this.requireAppService(appServiceId).log.map((r) => structuredClone(r));
  }

  failAppServiceNext(count: number, opts: { afterDelivery?: boolean; appServiceId?: string } = {}): void {
    const targets = opts.appServiceId === undefined ? [...this.appServices.values()] : [this.requireAppService(opts.appServiceId)];
    for (const as of targets) {
      for (let i = 0; i < count; i++) as.injectedFailures.push({ afterDelivery: opts.afterDelivery ?? false });
    }
  }

  rateLimitNext(count: number, pathPattern?: string | RegExp, retryAfterMs = 1500): void {
    const rule: RateLimitRule = { remaining: count, retryAfterMs };
    if (pathPattern !== undefined) rule.pattern = pathPattern;
    this.rateLimits.push(rule);
  }

  holdRequests(pathPattern: string | RegExp): RequestHold {
    const rule: HoldRule = { pattern: pathPattern, arrived: 0, released: false, waiting: [] };
    this.holds.push(rule);
    return {
      get arrived() {
        return rule.arrived;
      },
      release: () => {
        rule.released = true;
        for (const go of rule.waiting.splice(0)) go();
      },
    };
  }

  requests(): RequestLogEntry[] {
    return this.requestLog.map((r) => ({ ...r }));
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const w of [...this.waiters]) w();
    for (const h of this.holds) {
      h.released = true;
      for (const go of h.waiting.splice(0)) go();
    }
    for (const s of [...this.sleepers]) {
      clearTimeout(s.timer);
      s.resolve();
    }
    this.sleepers.clear();
    for (const room of this.rooms.values()) {
      for (const t of room.typing.values()) clearTimeout(t);
      room.typing.clear();
    }
    this.agent.destroy();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  // ---------------------------------------------------------------- HTTP plumbing

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const method = req.method ?? 'GET';
    // Logged on arrival (status 0 until answered), so tests can see a pending long-poll.
    const entry: RequestLogEntry = { method, path: url.pathname, status: 0 };
    this.requestLog.push(entry);
    let reply: Reply;
    const headers: Record<string, string> = { 'Content-Type': 'application/json' };
    try {
      await this.applyHolds(url.pathname);
      if (url.pathname.startsWith('/_matrix/media/') || url.pathname.startsWith('/_matrix/client/v1/media/')) {
        const media = await this.handleMedia(method, url, req);
        if (media.file) {
          entry.status = 200;
          res.writeHead(200, { 'Content-Type': media.file.contentType, 'Content-Length': String(media.file.data.length) });
          res.end(media.file.data);
          return;
        }
        reply = media.reply;
      } else {
        const raw = await this.readBody(req);
        reply = await this.dispatch(method, url, raw, req, res, entry);
      }
    } catch (thrown) {
      const e = thrown instanceof E2eeError && !thrown.body ? new FakeMatrixError(thrown.status, thrown.errcode, thrown.message) : thrown;
      if (e instanceof E2eeError && e.body) {
        reply = { status: e.status, body: e.body };
      } else if (e instanceof FakeMatrixError) {
        reply = { status: e.status, body: { errcode: e.errcode, error: e.message, ...e.extra } };
        if (e.errcode === 'M_LIMIT_EXCEEDED' && this.retryAfterHeader) {
          const ms = e.extra['retry_after_ms'];
          if (typeof ms === 'number') headers['Retry-After'] = String(Math.ceil(ms / 1000));
        }
      } else {
        reply = { status: 500, body: { errcode: 'M_UNKNOWN', error: e instanceof Error ? e.message : String(e) } };
      }
    }
    entry.status = reply.status ?? 200;
    if (res.destroyed) return;
    const payload = JSON.stringify(reply.body);
    headers['Content-Length'] = String(Buffer.byteLength(payload));
    res.writeHead(entry.status, headers);
    res.end(payload);
  }

  /**
   * The media repository as Synapse serves it: `POST /_matrix/media/v3/upload`
   * (authenticated, up to `max_upload_size`, answering `content_uri`), and
   * authenticated download at `/_matrix/client/v1/media/download/{server}/{id}`
   * (spec v1.11); the unauthenticated `/_matrix/media/v3/download` is frozen
   * for new media (v1.12, Synapse's `enable_authenticated_media`): 404.
   */
  private async handleMedia(method: string, url: URL, req: http.IncomingMessage): Promise<{ reply: Reply; file?: StoredMedia }> {
    const parts = url.pathname.split('/').slice(1);
    if (method === 'POST' && url.pathname === '/_matrix/media/v3/upload') {
      const requester = this.authenticate(req, url.searchParams);
      const chunks: Buffer[] = [];
      let size = 0;
      const limit = this.maxUploadBytes;
      for await (const chunk of req) {
        size += (chunk as Buffer).length;
        if (size > limit) throw new FakeMatrixError(413, 'M_TOO_LARGE', 'Cannot upload files larger than the limit');
        chunks.push(chunk as Buffer);
      }
      const mediaId = randomId(18).replace(/[^A-Za-z0-9]/g, 'x');
      const mxc = `mxc://${this.serverName}/${mediaId}`;
      const filename = url.searchParams.get('filename') ?? undefined;
      this.mediaStore.set(mxc, { contentType: req.headers['content-type'] ?? 'application/octet-stream', filename, data: Buffer.concat(chunks), uploader: requester.user.userId });
      return { reply: { body: { content_uri: mxc } } };
    }
    if (method === 'GET' && parts[2] === 'v1' && parts[3] === 'media' && parts[4] === 'download' && parts.length >= 7) {
      if (!this.authenticatedMedia) throw new FakeMatrixError(404, 'M_UNRECOGNIZED', 'Unrecognized request');
      this.authenticate(req, url.searchParams);
      const mxc = `mxc://${decodeURIComponent(parts[5] ?? '')}/${decodeURIComponent(parts[6] ?? '')}`;
      const file = this.mediaStore.get(mxc);
      if (!file) throw new FakeMatrixError(404, 'M_NOT_FOUND', 'Not found');
      this.mediaDownloads.push({ mxc, path: url.pathname });
      return { reply: { body: {} }, file };
    }
    if (method === 'GET' && parts[1] === 'media' && parts[3] === 'download' && parts.length >= 6) {
      if (this.authenticatedMedia) throw new FakeMatrixError(404, 'M_NOT_FOUND', 'Not found');
      const mxc = `mxc://${decodeURIComponent(parts[4] ?? '')}/${decodeURIComponent(parts[5] ?? '')}`;
      const file = this.mediaStore.get(mxc);
      if (!file) throw new FakeMatrixError(404, 'M_NOT_FOUND', 'Not found');
      this.mediaDownloads.push({ mxc, path: url.pathname });
      return { reply: { body: {} }, file };
    }
    throw new FakeMatrixError(404, 'M_UNRECOGNIZED', 'Unrecognized request');
  }

  media(mxc: string): StoredMedia | undefined {
    return this.mediaStore.get(mxc);
  }

  downloads(): Array<{ mxc: string; path: string }> {
    return [...this.mediaDownloads];
  }

  mediaUploads(): Array<{ mxc: string; media: StoredMedia }> {
    return [...this.mediaStore.entries()].map(([mxc, media]) => ({ mxc, media }));
  }

  replaceMedia(mxc: string, data: Buffer): void {
    const file = this.mediaStore.get(mxc);
    if (!file) throw new Error(`no media ${mxc}`);
    this.mediaStore.set(mxc, { ...file, data });
  }

  appServicePings(appServiceId: string): number {
    return this.pings.filter((p) => p.appServiceId === appServiceId).length;
  }

  private readBody(req: http.IncomingMessage): Promise<string> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY_BYTES) {
          reject(new FakeMatrixError(413, 'M_TOO_LARGE', 'Request body too large'));
          req.destroy();
          return;
        }
        chunks.push(c);
      });
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.on('error', reject);
    });
  }

  private async dispatch(
    method: string,
    url: URL,
    raw: string,
    req: http.IncomingMessage,
    res: http.ServerResponse,
    entry: RequestLogEntry,
  ): Promise<Reply> {
    const parts = url.pathname.split('/');
    // ['', '_matrix', 'client', <version>, ...rest]
    if (parts[1] !== '_matrix' || parts[2] !== 'client') throw new FakeMatrixError(404, 'M_UNRECOGNIZED', 'Unrecognized request');
    this.applyRateLimit(url.pathname);
    if (parts[3] === 'versions' && parts.length === 4) {
      if (method !== 'GET') throw new FakeMatrixError(405, 'M_UNRECOGNIZED', 'Unrecognized request');
      return { body: { versions: [...this.specVersions], unstable_features: {} } };
    }
    const version = parts[3];
    let rest: string[];
    try {
      rest = parts.slice(4).map((s) => decodeURIComponent(s));
    } catch {
      throw invalidParam('Malformed path');
    }
    let methodMismatch = false;
    for (const route of this.routes) {
      const params = this.match(route.path, rest);
      if (!params) continue;
      const allowed = route.path[0] === 'v1:' ? version === 'v1' : version === 'v3' || version === 'r0';
      if (!allowed) continue;
      if (route.method !== method) {
        methodMismatch = true;
        continue;
      }
      let body: unknown = {};
      if (raw.length > 0) {
        try {
          body = JSON.parse(raw) as unknown;
        } catch {
          throw new FakeMatrixError(400, 'M_NOT_JSON', 'Content not JSON.');
        }
      }
      const ctx: Ctx = { method, params, query: url.searchParams, body, req, res, endpoint: `${method} ${rest.join('/')}` };
      if (!route.auth) return route.handler(ctx);
      const requester = this.authenticate(req, url.searchParams);
      entry.userId = requester.user.userId;
      return route.handler({ ...ctx, requester });
    }
    if (methodMismatch) throw new FakeMatrixError(405, 'M_UNRECOGNIZED', 'Unrecognized request');
    throw new FakeMatrixError(404, 'M_UNRECOGNIZED', 'Unrecognized request');
  }

  private match(pattern: string[], rest: string[]): Map<string, string> | undefined {
    const pat = pattern[0] === 'v1:' ? pattern.slice(1) : pattern;
    if (pat.length !== rest.length) return undefined;
    const params = new Map<string, string>();
    for (let i = 0; i < pat.length; i++) {
      const p = pat[i] ?? '';
      const r = rest[i] ?? '';
      if (p.startsWith(':')) params.set(p.slice(1), r);
      else if (p !== r) return undefined;
    }
    return params;
  }

  private async applyHolds(path: string): Promise<void> {
    for (const rule of this.holds) {
      if (rule.released || !(typeof rule.pattern === 'string' ? path.includes(rule.pattern) : rule.pattern.test(path))) continue;
      rule.arrived++;
      await new Promise<void>((resolve) => rule.waiting.push(resolve));
    }
  }

  private applyRateLimit(path: string): void {
    for (const rule of this.rateLimits) {
      if (rule.remaining <= 0) continue;
      const matches =
        rule.pattern === undefined ? true : typeof rule.pattern === 'string' ? path.includes(rule.pattern) : rule.pattern.test(path);
      if (!matches) continue;
      rule.remaining--;
      throw new FakeMatrixError(429, 'M_LIMIT_EXCEEDED', 'Too many requests', { retry_after_ms: rule.retryAfterMs });
    }
  }

  private bearer(req: http.IncomingMessage, query: URLSearchParams): string | undefined {
    const header = req.headers['authorization'];
    if (typeof header === 'string') {
      const m = /^Bearer (.+)$/.exec(header);
      return m?.[1];
    }
    // Query-string tokens were still allowed in the spec versions we advertise (removed in v1.20).
    return query.get('access_token') ?? undefined;
  }

  private authenticate(req: http.IncomingMessage, query: URLSearchParams): Requester {
    const tok = this.bearer(req, query);
    if (tok === undefined) throw new FakeMatrixError(401, 'M_MISSING_TOKEN', 'Missing access token');
    const as = this.appServicesByToken.get(tok);
    if (as) return this.appServiceRequester(as, query);
    const session = this.sessions.get(tok);
    const user = session ? this.users.get(session.userId) : undefined;
    if (!session || !user) throw new FakeMatrixError(401, 'M_UNKNOWN_TOKEN', 'Unrecognised access token', { soft_logout: false });
    return { user, deviceId: session.deviceId, txnScope: `d:${user.userId}:${session.deviceId}` };
  }

  private appServiceRequester(as: AppServiceState, query: URLSearchParams): Requester {
    const userId = query.get('user_id') ?? as.senderUserId;
    if (!this.isAppServiceUser(as, userId)) throw forbidden('Application service cannot masquerade as this user.');
    const user = this.users.get(userId);
    if (!user) throw forbidden('Application service has not registered this user.');
    // device_id is stable since v1.17; matrix-bot-sdk 0.7 sends the MSC3202 name.
    const deviceId = query.get('device_id') ?? query.get('org.matrix.msc3202.device_id') ?? undefined;
    if (deviceId !== undefined && !user.devices.has(deviceId)) {
      throw new FakeMatrixError(400, 'M_UNKNOWN_DEVICE', 'Device does not belong to the user');
    }
    const requester: Requester = {
      user,
      appService: as,
      txnScope: deviceId !== undefined ? `d:${userId}:${deviceId}` : `as:${as.reg.id}:${userId}`,
    };
    if (deviceId !== undefined) requester.deviceId = deviceId;
    return requester;
  }

  private controlRequester(userId: string): Requester {
    const user = this.requireUser(userId);
    return { user, txnScope: `control:${userId}` };
  }

  // ---------------------------------------------------------------- routes

  private buildRoutes(): Route[] {
    const r: Route[] = [];
    const open = (method: string, path: string, handler: (ctx: Ctx) => Reply | Promise<Reply>): void => {
      r.push({ method, path: path.split('/'), auth: false, handler });
    };
    const authed = (method: string, path: string, handler: (ctx: AuthedCtx) => Reply | Promise<Reply>): void => {
      r.push({ method, path: path.split('/'), auth: true, handler });
    };

    open('GET', 'login', () => ({ body: { flows: [{ type: 'm.login.password' }, { type: 'm.login.application_service' }] } }));
    open('POST', 'login', (ctx) => this.handleLogin(ctx));
    open('POST', 'register', (ctx) => this.handleRegister(ctx));
    open('GET', 'register/available', (ctx) => {
      const username = ctx.query.get('username') ?? '';
      this.validateNewLocalpart(username, undefined);
      return { body: { available: true } };
    });
    authed('POST', 'logout', (ctx) => {
      const tok = this.bearer(ctx.req, ctx.query);
      if (tok !== undefined) this.sessions.delete(tok);
      return { body: {} };
    });
    authed('GET', 'account/whoami', (ctx) => {
      const body: JsonObject = { user_id: ctx.requester.user.userId, is_guest: false };
      if (ctx.requester.deviceId !== undefined) body['device_id'] = ctx.requester.deviceId;
      return { body };
    });
    authed('GET', 'capabilities', () => ({
      body: { capabilities: { 'm.room_versions': { default: this.roomVersion, available: { [this.roomVersion]: 'stable' } } } },
    }));

    // Spec v1.7 (MSC2659), as Synapse serves it: the homeserver POSTs /_matrix/app/v1/ping to the AS.
    r.push({
      method: 'POST',
      path: ['v1:', 'appservice', ':appserviceId', 'ping'],
      auth: true,
      handler: async (ctx) => {
        const as = (ctx as AuthedCtx).requester.appService;
        if (!as) throw new FakeMatrixError(403, 'M_FORBIDDEN', 'Only application services can use the /appservice/ping endpoint');
        if (as.reg.id !== this.param(ctx, 'appserviceId')) throw new FakeMatrixError(403, 'M_FORBIDDEN', 'Mismatching application service ID in path');
        if (!as.url) throw new FakeMatrixError(400, 'M_URL_NOT_SET', 'The application service does not have a URL set');
        const body: JsonObject = isJsonObject(ctx.body) ? ctx.body : {};
        const started = Date.now();
        let status: number;
        try {
          const res = await fetch(`${as.url.replace(/\/+$/, '')}/_matrix/app/v1/ping`, {
            method: 'POST',
            headers: { Authorization: `Bearer ${as.reg.hs_token}`, 'Content-Type': 'application/json' },
            body: JSON.stringify(typeof body['transaction_id'] === 'string' ? { transaction_id: body['transaction_id'] } : {}),
            signal: AbortSignal.timeout(this.asRequestTimeoutMs),
          });
          status = res.status;
        } catch (e) {
          throw new FakeMatrixError(502, 'M_CONNECTION_FAILED', e instanceof Error ? e.message : String(e));
        }
        if (status !== 200) throw new FakeMatrixError(502, 'M_BAD_STATUS', `HTTP ${status}`, { status });
        this.pings.push({ appServiceId: as.reg.id, at: Date.now() });
        // Synapse 1.132+: the AS answered, so a transaction waiting out its backoff goes now.
        if (this.pingRetriesTransactions) as.retryNow?.();
        return { body: { duration_ms: Date.now() - started } };
      },
    });

    authed('POST', 'createRoom', (ctx) => ({ body: { room_id: this.doCreateRoom(ctx.requester, this.objectBody(ctx)) } }));
    authed('POST', 'join/:roomIdOrAlias', (ctx) => {
      const room = this.resolveRoom(this.param(ctx, 'roomIdOrAlias'));
      this.changeMembership(ctx.requester.user.userId, room, ctx.requester.user.userId, 'join', this.reasonOf(ctx));
      return { body: { room_id: room.roomId } };
    });
    authed('POST', 'rooms/:roomId/join', (ctx) => {
      const room = this.requireRoom(this.param(ctx, 'roomId'));
      this.changeMembership(ctx.requester.user.userId, room, ctx.requester.user.userId, 'join', this.reasonOf(ctx));
      return { body: { room_id: room.roomId } };
    });
    authed('POST', 'rooms/:roomId/leave', (ctx) => {
      const room = this.requireRoom(this.param(ctx, 'roomId'));
      this.changeMembership(ctx.requester.user.userId, room, ctx.requester.user.userId, 'leave', this.reasonOf(ctx));
      return { body: {} };
    });
    for (const [action, membership] of [
      ['invite', 'invite'],
      ['kick', 'leave'],
      ['ban', 'ban'],
      ['unban', 'leave'],
    ] as const) {
      authed('POST', `rooms/:roomId/${action}`, (ctx) => {
        const room = this.requireRoom(this.param(ctx, 'roomId'));
        const body = this.objectBody(ctx);
        const target = str(body['user_id']);
        if (target === undefined) throw new FakeMatrixError(400, 'M_MISSING_PARAM', 'Missing user_id');
        if (action === 'unban' && membershipOf(room.state.get(stateKeyOf('m.room.member', target))) !== 'ban') {
          throw forbidden('The user is not banned');
        }
        if (action === 'kick' && target === ctx.requester.user.userId) throw forbidden('Use leave to leave a room');
        this.changeMembership(ctx.requester.user.userId, room, target, membership, this.reasonOf(ctx));
        return { body: {} };
      });
    }
    authed('GET', 'joined_rooms', (ctx) => ({
      body: {
        joined_rooms: [...this.rooms.values()]
          .filter((room) => membershipOf(room.state.get(stateKeyOf('m.room.member', ctx.requester.user.userId))) === 'join')
          .map((room) => room.roomId),
      },
    }));
    authed('GET', 'rooms/:roomId/joined_members', (ctx) => {
      const room = this.requireRoom(this.param(ctx, 'roomId'));
      this.requireJoined(room, ctx.requester.user.userId);
      const joined: JsonObject = {};
      for (const uid of this.joinedUserIds(room)) {
        const ev = room.state.get(stateKeyOf('m.room.member', uid));
        const info: JsonObject = {};
        const dn = ev ? str(ev.content['displayname']) : undefined;
        const av = ev ? str(ev.content['avatar_url']) : undefined;
        if (dn !== undefined) info['display_name'] = dn;
        if (av !== undefined) info['avatar_url'] = av;
        joined[uid] = info;
      }
      return { body: { joined } };
    });
    authed('GET', 'rooms/:roomId/members', (ctx) => {
      const room = this.requireRoom(this.param(ctx, 'roomId'));
      this.requireJoined(room, ctx.requester.user.userId);
      const only = ctx.query.get('membership');
      const not = ctx.query.get('not_membership');
      const chunk = [...room.state.values()]
        .filter((e) => e.type === 'm.room.member')
        .filter((e) => (only === null || membershipOf(e) === only) && (not === null || membershipOf(e) !== not))
        .sort((a, b) => a.pos - b.pos)
        .map((e) => this.toClientEvent(e, this.viewerOf(ctx.requester), true));
      return { body: { chunk } };
    });
    authed('GET', 'rooms/:roomId/state', (ctx) => {
      const room = this.requireRoom(this.param(ctx, 'roomId'));
      this.requireJoined(room, ctx.requester.user.userId);
      return {
        body: [...room.state.values()].sort((a, b) => a.pos - b.pos).map((e) => this.toClientEvent(e, this.viewerOf(ctx.requester), true)),
      };
    });
    const getState = (ctx: AuthedCtx, stateKey: string): Reply => {
      const room = this.requireRoom(this.param(ctx, 'roomId'));
      this.requireJoined(room, ctx.requester.user.userId);
      const ev = room.state.get(stateKeyOf(this.param(ctx, 'eventType'), stateKey));
      if (!ev) throw notFound('Event not found.');
      if (ctx.query.get('format') === 'event') return { body: this.toClientEvent(ev, this.viewerOf(ctx.requester), true) };
      return { body: cloneJson(ev.content) };
    };
    const putState = (ctx: AuthedCtx, stateKey: string): Reply => {
      const room = this.requireRoom(this.param(ctx, 'roomId'));
      const ev = this.setState(ctx.requester, room, this.param(ctx, 'eventType'), stateKey, this.objectBody(ctx), this.tsOf(ctx));
      return { body: { event_id: ev.eventId } };
    };
    authed('GET', 'rooms/:roomId/state/:eventType', (ctx) => getState(ctx, ''));
    authed('GET', 'rooms/:roomId/state/:eventType/:stateKey', (ctx) => getState(ctx, this.param(ctx, 'stateKey')));
    authed('PUT', 'rooms/:roomId/state/:eventType', (ctx) => putState(ctx, ''));
    authed('PUT', 'rooms/:roomId/state/:eventType/:stateKey', (ctx) => putState(ctx, this.param(ctx, 'stateKey')));
    authed('PUT', 'rooms/:roomId/send/:eventType/:txnId', (ctx) =>
      this.withTxn(ctx, () => {
        const room = this.requireRoom(this.param(ctx, 'roomId'));
        const content = this.objectBody(ctx);
        this.validateContent(room, this.param(ctx, 'eventType'), content);
        const ev = this.sendEvent(ctx.requester, room, this.param(ctx, 'eventType'), content, this.param(ctx, 'txnId'), this.tsOf(ctx));
        return { body: { event_id: ev.eventId } };
      }),
    );
    authed('PUT', 'rooms/:roomId/redact/:eventId/:txnId', (ctx) =>
      this.withTxn(ctx, () => {
        const room = this.requireRoom(this.param(ctx, 'roomId'));
        const content: JsonObject = { ...this.objectBody(ctx), redacts: this.param(ctx, 'eventId') };
        const ev = this.sendEvent(ctx.requester, room, 'm.room.redaction', content, this.param(ctx, 'txnId'), undefined);
        return { body: { event_id: ev.eventId } };
      }),
    );
    authed('GET', 'rooms/:roomId/event/:eventId', (ctx) => {
      const room = this.requireRoom(this.param(ctx, 'roomId'));
      const ev = room.byId.get(this.param(ctx, 'eventId'));
      // 404 also when the requester may not see it, as the spec allows.
      if (!ev || !this.isJoined(room, ctx.requester.user.userId)) throw notFound('Event not found.');
      return { body: this.toClientEvent(ev, this.viewerOf(ctx.requester), true) };
    });
    authed('GET', 'rooms/:roomId/messages', (ctx) => this.handleMessages(ctx));
    authed('GET', 'v1:/rooms/:roomId/relations/:eventId', (ctx) => this.handleRelations(ctx));
    authed('GET', 'v1:/rooms/:roomId/relations/:eventId/:relType', (ctx) => this.handleRelations(ctx));
    authed('GET', 'v1:/rooms/:roomId/relations/:eventId/:relType/:eventType', (ctx) => this.handleRelations(ctx));
    authed('POST', 'rooms/:roomId/receipt/:receiptType/:eventId', (ctx) => {
      const room = this.requireRoom(this.param(ctx, 'roomId'));
      const body = this.objectBody(ctx);
      const threadId = body['thread_id'];
      if (threadId !== undefined && (typeof threadId !== 'string' || threadId === '')) {
        throw invalidParam('thread_id field must be a non-empty string');
      }
      this.postReceipt(ctx.requester, room, this.param(ctx, 'receiptType'), this.param(ctx, 'eventId'), threadId);
      return { body: {} };
    });
    authed('POST', 'rooms/:roomId/read_markers', (ctx) => {
      const room = this.requireRoom(this.param(ctx, 'roomId'));
      const body = this.objectBody(ctx);
      for (const type of ['m.fully_read', 'm.read', 'm.read.private']) {
        const eventId = str(body[type]);
        if (eventId !== undefined) this.postReceipt(ctx.requester, room, type, eventId, undefined);
      }
      return { body: {} };
    });
    authed('PUT', 'rooms/:roomId/typing/:userId', (ctx) => {
      const room = this.requireRoom(this.param(ctx, 'roomId'));
      if (this.param(ctx, 'userId') !== ctx.requester.user.userId) throw forbidden('Cannot set typing for another user');
      this.requireJoined(room, ctx.requester.user.userId);
      const body = this.objectBody(ctx);
      const typing = body['typing'];
      if (typeof typing !== 'boolean') throw badJson('typing must be a boolean');
      const timeout = body['timeout'];
      this.applyTyping(room, ctx.requester.user.userId, typing, typeof timeout === 'number' ? timeout : 30000);
      return { body: {} };
    });
    authed('GET', 'sync', (ctx) => this.handleSync(ctx));
    // End-to-end encryption (fake-homeserver-e2ee.ts): the key server and to-device messages.
    authed('POST', 'keys/upload', (ctx) => ({ body: this.keys.upload(ctx.requester.user.userId, this.requireDevice(ctx), this.objectBody(ctx)) }));
    authed('POST', 'keys/query', (ctx) => ({ body: this.keys.query(this.objectBody(ctx), ctx.requester.user.userId) }));
    authed('POST', 'keys/device_signing/upload', (ctx) => {
      const body = this.objectBody(ctx);
      const user = ctx.requester.user;
      return { body: this.keys.uploadSigningKeys(user.userId, body, ctx.requester.appService !== undefined, () => this.uia.check(user.userId, user.password, body)) };
    });
    authed('POST', 'keys/signatures/upload', (ctx) => ({ body: this.keys.uploadSignatures(this.objectBody(ctx)) }));
    authed('POST', 'keys/claim', (ctx) => ({ body: this.keys.claim(this.objectBody(ctx)) }));
    authed('PUT', 'sendToDevice/:eventType/:txnId', (ctx) =>
      this.withTxn(ctx, () => {
        this.keys.sendToDevice(ctx.requester.user.userId, this.param(ctx, 'eventType'), this.objectBody(ctx));
        return { body: {} };
      }),
    );
    // Devices (Synapse rest/client/devices.py): listing; deletion behind user-interactive auth (fake-homeserver-e2ee.ts
    // FakeUia), which an appservice with `io.element.msc4190: true` in its registration skips (MSC4190).
    authed('GET', 'devices', (ctx) => ({ body: { devices: this.listDevices(ctx.requester.user.userId) } }));
    authed('GET', 'devices/:deviceId', (ctx) => {
      const device = this.listDevices(ctx.requester.user.userId).find((d) => d['device_id'] === this.param(ctx, 'deviceId'));
      if (!device) throw notFound('No device found');
      return { body: device };
    });
    const deleteDevices = (ctx: AuthedCtx, ids: string[]): Reply => {
      const body = isJsonObject(ctx.body) ? ctx.body : {};
      if (!(ctx.requester.appService && ctx.requester.appService.reg['io.element.msc4190'] === true)) {
        this.uia.check(ctx.requester.user.userId, ctx.requester.appService ? undefined : ctx.requester.user.password, body);
      }
      for (const id of ids) this.deleteDevice(ctx.requester.user, id);
      return { body: {} };
    };
    authed('DELETE', 'devices/:deviceId', (ctx) => deleteDevices(ctx, [this.param(ctx, 'deviceId')]));
    authed('POST', 'delete_devices', (ctx) => {
      const list = this.objectBody(ctx)['devices'];
      if (!Array.isArray(list) || !list.every((d): d is string => typeof d === 'string')) throw badJson('devices must be a list of strings');
      return deleteDevices(ctx, list);
    });
    authed('POST', 'user/:userId/filter', (ctx) => {
      const user = this.ownUser(ctx);
      user.filters.push(this.objectBody(ctx));
      return { body: { filter_id: String(user.filters.length - 1) } };
    });
    authed('GET', 'user/:userId/filter/:filterId', (ctx) => {
      const f = this.ownUser(ctx).filters[Number(this.param(ctx, 'filterId'))];
      if (!f) throw notFound('No such filter');
      return { body: f };
    });
    authed('GET', 'user/:userId/account_data/:type', (ctx) => {
      const entry = this.ownUser(ctx).accountData.get(this.param(ctx, 'type'));
      if (!entry) throw notFound('Account data not found');
      return { body: entry.content };
    });
    authed('PUT', 'user/:userId/account_data/:type', (ctx) => {
      this.ownUser(ctx).accountData.set(this.param(ctx, 'type'), { content: this.objectBody(ctx), pos: this.bump() });
      return { body: {} };
    });
    authed('GET', 'user/:userId/rooms/:roomId/account_data/:type', (ctx) => {
      const entry = this.ownUser(ctx).roomAccountData.get(this.param(ctx, 'roomId'))?.get(this.param(ctx, 'type'));
      if (!entry) throw notFound('Room account data not found');
      return { body: entry.content };
    });
    authed('PUT', 'user/:userId/rooms/:roomId/account_data/:type', (ctx) => {
      this.setRoomAccountData(this.ownUser(ctx), this.param(ctx, 'roomId'), this.param(ctx, 'type'), this.objectBody(ctx));
      return { body: {} };
    });
    open('GET', 'profile/:userId', (ctx) => {
      const user = this.users.get(this.param(ctx, 'userId'));
      if (!user) throw notFound('Profile not found');
      return { body: Object.fromEntries(user.profile) };
    });
    open('GET', 'profile/:userId/:key', (ctx) => {
      const user = this.users.get(this.param(ctx, 'userId'));
      const key = this.param(ctx, 'key');
      const value = user?.profile.get(key);
      if (value === undefined) throw notFound('Profile field not found');
      return { body: { [key]: value } };
    });
    authed('PUT', 'profile/:userId/:key', (ctx) => {
      if (this.param(ctx, 'userId') !== ctx.requester.user.userId) throw forbidden("Cannot set another user's profile");
      const key = this.param(ctx, 'key');
      const body = this.objectBody(ctx);
      const value = body[key];
      if (value === undefined) throw new FakeMatrixError(400, 'M_MISSING_PARAM', `Missing key '${key}'`);
      if ((key === 'displayname' || key === 'avatar_url') && typeof value !== 'string') throw badJson(`${key} must be a string`);
      this.setProfileField(ctx.requester.user, key, value);
      return { body: {} };
    });
    authed('DELETE', 'profile/:userId/:key', (ctx) => {
      if (this.param(ctx, 'userId') !== ctx.requester.user.userId) throw forbidden("Cannot set another user's profile");
      this.setProfileField(ctx.requester.user, this.param(ctx, 'key'), undefined);
      return { body: {} };
    });
    authed('GET', 'directory/room/:alias', (ctx) => {
      const roomId = this.aliases.get(this.param(ctx, 'alias'));
      if (!roomId) throw notFound('Room alias not found');
      return { body: { room_id: roomId, servers: [this.serverName] } };
    });
    authed('PUT', 'directory/room/:alias', (ctx) => {
      const alias = this.param(ctx, 'alias');
      const roomId = str(this.objectBody(ctx)['room_id']);
      if (roomId === undefined) throw new FakeMatrixError(400, 'M_MISSING_PARAM', 'Missing room_id');
      const room = this.requireRoom(roomId);
      this.checkAliasAllowed(ctx.requester, alias);
      if (this.aliases.has(alias)) throw new FakeMatrixError(409, 'M_UNKNOWN', 'Room alias already exists');
      this.aliases.set(alias, room.roomId);
      room.aliases.add(alias);
      return { body: {} };
    });
    authed('DELETE', 'directory/room/:alias', (ctx) => {
      const alias = this.param(ctx, 'alias');
      const roomId = this.aliases.get(alias);
      if (!roomId) throw notFound('Room alias not found');
      this.checkAliasAllowed(ctx.requester, alias);
      this.aliases.delete(alias);
      this.rooms.get(roomId)?.aliases.delete(alias);
      return { body: {} };
    });
    return r;
  }

  /** The key endpoints act for the requester's device (an AS user without `device_id` has none). */
  private requireDevice(ctx: AuthedCtx): string {
    const deviceId = ctx.requester.deviceId;
    if (deviceId === undefined) throw new FakeMatrixError(400, 'M_MISSING_PARAM', 'Keys can only be uploaded by a device');
    return deviceId;
  }

  /** Users with a join in a room `userId` is joined to, at `pos` (`userId` included when it is joined anywhere). */
  private sharesRoomWith(userId: string, pos: number): Set<string> {
    const out = new Set<string>();
    for (const room of this.rooms.values()) {
      if (membershipOf(this.memberEventAt(room, userId, pos)) !== 'join') continue;
      for (const ev of this.stateAt(room, pos)) if (ev.type === 'm.room.member' && membershipOf(ev) === 'join' && ev.stateKey !== undefined) out.add(ev.stateKey);
    }
    return out;
  }

  /** The members (at upTo) of the rooms `userId` joined in (after, upTo]. */
  private newlyJoinedMembers(userId: string, after: number, upTo: number): Set<string> {
    const out = new Set<string>();
    for (const room of this.rooms.values()) {
      if (membershipOf(this.memberEventAt(room, userId, upTo)) !== 'join' || membershipOf(this.memberEventAt(room, userId, after)) === 'join') continue;
      for (const ev of this.stateAt(room, upTo)) if (ev.type === 'm.room.member' && membershipOf(ev) === 'join' && ev.stateKey !== undefined) out.add(ev.stateKey);
    }
    return out;
  }

  private param(ctx: Ctx, name: string): string {
    const v = ctx.params.get(name);
    if (v === undefined) throw new Error(`route has no parameter ${name}`);
    return v;
  }

  private objectBody(ctx: Ctx): JsonObject {
    if (!isJsonObject(ctx.body)) throw badJson('Request body must be a JSON object');
    return ctx.body;
  }

  private reasonOf(ctx: Ctx): JsonObject {
    const reason = isJsonObject(ctx.body) ? str(ctx.body['reason']) : undefined;
    return reason === undefined ? {} : { reason };
  }

  private tsOf(ctx: AuthedCtx): number | undefined {
    const ts = ctx.query.get('ts');
    // Timestamp massaging is for application services only; others are ignored.
    if (ts === null || !ctx.requester.appService) return undefined;
    if (!/^\d+$/.test(ts)) throw invalidParam('ts must be a non-negative integer');
    return Number(ts);
  }

  private ownUser(ctx: AuthedCtx): User {
    if (this.param(ctx, 'userId') !== ctx.requester.user.userId) throw forbidden('Cannot access data of another user');
    return ctx.requester.user;
  }

  private withTxn(ctx: AuthedCtx, run: () => Reply): Reply {
    const key = `${ctx.requester.txnScope}\u0000${ctx.endpoint}`;
    const previous = this.txnResponses.get(key);
    if (previous) return { status: previous.status ?? 200, body: cloneJson(previous.body) };
    const reply = run();
    // Failed requests are not remembered, so a retry after e.g. joining can succeed.
    this.txnResponses.set(key, { status: reply.status ?? 200, body: cloneJson(reply.body) });
    return reply;
  }

  // ---------------------------------------------------------------- accounts

  listDevices(userId: string): JsonObject[] {
    const user = this.users.get(userId);
    return [...(user?.devices ?? [])].map((deviceId) => {
      const name = this.deviceNames.get(`${userId}\u0000${deviceId}`);
      return { device_id: deviceId, ...(name !== undefined ? { display_name: name } : {}), last_seen_ip: null, last_seen_ts: null };
    });
  }

  /** Synapse's DeviceHandler.delete_devices: the device, its access tokens and its keys go; an unknown id is ignored. */
  private deleteDevice(user: User, deviceId: string): void {
    if (!user.devices.delete(deviceId)) return;
    for (const [tok, s] of this.sessions) if (s.userId === user.userId && s.deviceId === deviceId) this.sessions.delete(tok);
    this.deviceNames.delete(`${user.userId}\u0000${deviceId}`);
    this.keys.deleteDevice(user.userId, deviceId);
    this.deletedDevices.push({ userId: user.userId, deviceId });
  }

  private createUser(userId: string, password: string | undefined): User {
    const user: User = {
      userId,
      profile: new Map(),
      devices: new Set(),
      accountData: new Map(),
      roomAccountData: new Map(),
      filters: [],
    };
    if (password !== undefined) user.password = password;
    user.profile.set('displayname', userId.slice(1).split(':')[0] ?? userId);
    this.users.set(userId, user);
    return user;
  }

  private newSession(user: User, deviceId: string | undefined): { accessToken: string; deviceId: string } {
    const device = deviceId ?? randomId(6).toUpperCase().replace(/[^A-Z0-9]/g, 'X');
    if (deviceId !== undefined) {
      // A client-chosen existing device_id invalidates that device's older tokens.
      for (const [tok, s] of this.sessions) if (s.userId === user.userId && s.deviceId === deviceId) this.sessions.delete(tok);
    }
    user.devices.add(device);
    const accessToken = `syt_${randomId(24)}`;
    this.sessions.set(accessToken, { userId: user.userId, deviceId: device });
    return { accessToken, deviceId: device };
  }

  /** Checks a localpart for registration; `as` is the registering AS, if any. */
  private validateNewLocalpart(localpart: string, as: AppServiceState | undefined): string {
    if (localpart === '' || !LOCALPART_RE.test(localpart)) {
      throw new FakeMatrixError(400, 'M_INVALID_USERNAME', 'User ID can only contain characters a-z, 0-9, or =_-./+');
    }
    const userId = `@${localpart}:${this.serverName}`;
    if (userId.length > 255) throw new FakeMatrixError(400, 'M_INVALID_USERNAME', 'User ID is too long');
    if (as) {
      if (!this.isAppServiceUser(as, userId)) {
        throw new FakeMatrixError(400, 'M_EXCLUSIVE', "User ID is not in the application service's namespace");
      }
    } else {
      for (const other of this.appServices.values()) {
        if (other.users.some((ns) => ns.exclusive && ns.regex.test(userId))) {
          throw new FakeMatrixError(400, 'M_EXCLUSIVE', 'User ID is reserved by an application service');
        }
      }
    }
    if (this.users.has(userId)) throw new FakeMatrixError(400, 'M_USER_IN_USE', 'User ID already taken.');
    return userId;
  }

  private handleRegister(ctx: Ctx): Reply {
    const body = this.objectBody(ctx);
    if (ctx.query.get('kind') === 'guest') throw forbidden('Guest access is disabled');
    const auth = body['auth'];
    const type = str(body['type']) ?? (isJsonObject(auth) ? str(auth['type']) : undefined);
    const deviceId = str(body['device_id']);
    const inhibit = body['inhibit_login'] === true;
    const finish = (user: User): Reply => {
      if (inhibit) return { body: { user_id: user.userId } };
      const s = this.newSession(user, deviceId);
      return { body: { user_id: user.userId, access_token: s.accessToken, device_id: s.deviceId, home_server: this.serverName } };
    };
    if (type === 'm.login.application_service') {
      // Only the as_token counts here: identity assertion does not apply to account management.
      const tok = this.bearer(ctx.req, ctx.query);
      if (tok === undefined) throw new FakeMatrixError(401, 'M_MISSING_TOKEN', 'Missing access token');
      const as = this.appServicesByToken.get(tok);
      if (!as) throw new FakeMatrixError(401, 'M_UNKNOWN_TOKEN', 'Unrecognised access token', { soft_logout: false });
      const username = str(body['username']) ?? randomId(8).toLowerCase();
      const userId = this.validateNewLocalpart(username, as);
      return finish(this.createUser(userId, undefined));
    }
    // Plain registration: User-Interactive Auth with a single m.login.dummy stage.
    const username = str(body['username']) ?? randomId(8).toLowerCase();
    const userId = this.validateNewLocalpart(username, undefined);
    const session = isJsonObject(auth) ? str(auth['session']) : undefined;
    if (type !== 'm.login.dummy' || session === undefined || !this.uiaSessions.has(session)) {
      const newSession = randomId(12);
      this.uiaSessions.add(newSession);
      throw new FakeMatrixError(401, 'M_UNAUTHORIZED', 'Additional authentication required', {
        flows: [{ stages: ['m.login.dummy'] }],
        params: {},
        session: newSession,
      });
    }
    this.uiaSessions.delete(session);
    const password = str(body['password']);
    return finish(this.createUser(userId, password));
  }

  private handleLogin(ctx: Ctx): Reply {
    const body = this.objectBody(ctx);
    const type = str(body['type']);
    const identifier = body['identifier'];
    if (type === 'm.login.application_service') {
      // As Synapse's _do_appservice_login: only `identifier` of type m.id.user (no legacy `user`).
      if (!isJsonObject(identifier)) throw new FakeMatrixError(400, 'M_INVALID_PARAM', 'Invalid identifier in login submission');
      if (identifier['type'] !== 'm.id.user') throw new FakeMatrixError(400, 'M_INVALID_PARAM', 'Unknown login identifier type');
      if (str(identifier['user']) === undefined) throw new FakeMatrixError(400, 'M_INVALID_PARAM', 'Invalid user in identifier');
    }
    let who = isJsonObject(identifier) && identifier['type'] === 'm.id.user' ? str(identifier['user']) : str(body['user']);
    if (who === undefined) throw badJson('Missing identifier');
    if (!who.startsWith('@')) who = `@${who}:${this.serverName}`;
    const deviceId = str(body['device_id']);
    const displayName = str(body['initial_device_display_name']);
    const named = (userId: string, device: string, created: boolean): void => {
      if (created && displayName !== undefined) this.deviceNames.set(`${userId}\u0000${device}`, displayName);
    };
    if (type === 'm.login.password') {
      const user = this.users.get(who);
      if (!user || user.password === undefined || user.password !== body['password']) throw forbidden('Invalid username or password');
      const created = deviceId === undefined || !user.devices.has(deviceId);
      const s = this.newSession(user, deviceId);
      named(user.userId, s.deviceId, created);
      return { body: { user_id: user.userId, access_token: s.accessToken, device_id: s.deviceId, home_server: this.serverName } };
    }
    if (type === 'm.login.application_service') {
      const tok = this.bearer(ctx.req, ctx.query);
      if (tok === undefined) throw new FakeMatrixError(401, 'M_MISSING_TOKEN', 'Missing access token');
      const as = this.appServicesByToken.get(tok);
      if (!as) throw new FakeMatrixError(401, 'M_UNKNOWN_TOKEN', 'Unrecognised access token', { soft_logout: false });
      if (!this.isAppServiceUser(as, who)) throw new FakeMatrixError(403, 'M_FORBIDDEN', 'Invalid access_token');
      const user = this.users.get(who);
      if (!user) throw forbidden('Invalid username');
      const created = deviceId === undefined || !user.devices.has(deviceId);
      const s = this.newSession(user, deviceId);
      named(user.userId, s.deviceId, created);
      return { body: { user_id: user.userId, access_token: s.accessToken, device_id: s.deviceId, home_server: this.serverName } };
    }
    throw new FakeMatrixError(400, 'M_UNKNOWN', 'Unknown login type');
  }

  private setProfileField(user: User, key: string, value: Json | undefined): void {
    if (value === undefined) user.profile.delete(key);
    else user.profile.set(key, value);
    if (key !== 'displayname' && key !== 'avatar_url') return;
    // Profile changes propagate as a new join event in every joined room.
    for (const room of this.rooms.values()) {
      const member = room.state.get(stateKeyOf('m.room.member', user.userId));
      if (membershipOf(member) !== 'join' || !member) continue;
      const content: JsonObject = { ...member.content };
      if (value === undefined) delete content[key];
      else content[key] = value;
      this.appendEvent(room, { type: 'm.room.member', sender: user.userId, stateKey: user.userId, content });
    }
  }

  private setRoomAccountData(user: User, roomId: string, type: string, content: JsonObject): void {
    let perRoom = user.roomAccountData.get(roomId);
    if (!perRoom) {
      perRoom = new Map();
      user.roomAccountData.set(roomId, perRoom);
    }
    perRoom.set(type, { content, pos: this.bump() });
  }

  // ---------------------------------------------------------------- application services

  private requireAppService(id: string): AppServiceState {
    const as = this.appServices.get(id);
    if (!as) throw new Error(`unknown application service ${id}`);
    return as;
  }

  private isLocal(userId: string): boolean {
    return userId.endsWith(`:${this.serverName}`);
  }

  private isAppServiceUser(as: AppServiceState, userId: string): boolean {
    // User namespaces only cover local users (AS API "Registration").
    return userId === as.senderUserId || (this.isLocal(userId) && as.users.some((ns) => ns.regex.test(userId)));
  }

  private isInterestedInRoom(as: AppServiceState, room: Room): boolean {
    if (as.rooms.some((ns) => ns.regex.test(room.roomId))) return true;
    for (const alias of room.aliases) if (as.aliases.some((ns) => ns.regex.test(alias))) return true;
    return this.joinedUserIds(room).some((uid) => this.isAppServiceUser(as, uid));
  }

  private isInterestedInEvent(as: AppServiceState, room: Room, ev: StoredEvent): boolean {
    if (this.isAppServiceUser(as, ev.sender)) return true;
    if (ev.type === 'm.room.member' && ev.stateKey !== undefined && this.isAppServiceUser(as, ev.stateKey)) return true;
    return this.isInterestedInRoom(as, room);
  }

  /** The AS's current transaction failed its last attempt: Synapse marks it down until one succeeds. */
  private isDown(as: AppServiceState): boolean {
    const last = as.current?.record.attempts.at(-1);
    return last !== undefined && !(last.kind === 'status' && last.status === 200);
  }

  droppedEphemeral(appServiceId: string): number {
    return this.requireAppService(appServiceId).droppedEphemeral;
  }

  private wantsKeyExtensions(as: AppServiceState): boolean {
    return this.msc3202 && as.reg['org.matrix.msc3202'] === true;
  }

  /** MSC3202 fields for a transaction (only the non-empty ones, as Synapse sends them). */
  private keyExtensions(as: AppServiceState): JsonObject {
    const out: JsonObject = {};
    const counts: { [user: string]: JsonObject } = {};
    const fallback: { [user: string]: JsonObject } = {};
    for (const { userId, deviceId } of this.keys.keyedDevices()) {
      if (!this.isAppServiceUser(as, userId)) continue;
      (counts[userId] ??= {})[deviceId] = this.keys.counts(userId, deviceId);
      (fallback[userId] ??= {})[deviceId] = this.keys.unusedFallbackTypes(userId, deviceId);
    }
    if (Object.keys(counts).length > 0) {
      out['org.matrix.msc3202.device_one_time_keys_count'] = counts;
      // the name Synapse used first, still sent alongside
      out['org.matrix.msc3202.device_one_time_key_counts'] = cloneJson(counts);
      out['org.matrix.msc3202.device_unused_fallback_key_types'] = fallback;
    }
    // Device-list changes of users sharing a room with one of the AS's users since the last report.
    const upTo = this.pos;
    const shared = new Set<string>();
    const sharedBefore = new Set<string>();
    for (const user of this.users.keys()) {
      if (!this.isAppServiceUser(as, user)) continue;
      for (const u of this.sharesRoomWith(user, upTo)) shared.add(u);
      for (const u of this.sharesRoomWith(user, as.keysReportedPos)) sharedBefore.add(u);
    }
    const changed = this.keys.changedBetween(as.keysReportedPos, upTo).filter((u) => shared.has(u));
    for (const u of shared) if (!sharedBefore.has(u) && !changed.includes(u)) changed.push(u);
    const left = [...sharedBefore].filter((u) => !shared.has(u));
    if (changed.length > 0 || left.length > 0) out['org.matrix.msc3202.device_lists'] = { changed, left };
    as.keysReportedPos = upTo;
    as.keysDirty = false;
    return out;
  }

  private wantsEphemeral(as: AppServiceState): boolean {
    return (this.stableEphemeral && as.reg.receive_ephemeral === true) || as.reg['de.sorunome.msc2409.push_ephemeral'] === true;
  }

  private pushEphemeral(room: Room, edu: JsonObject, privateFor?: string): void {
    for (const as of this.appServices.values()) {
      if (!this.wantsEphemeral(as) || !this.isInterestedInRoom(as, room)) continue;
      // Private read receipts only go to the AS that owns the user.
      if (privateFor !== undefined && !this.isAppServiceUser(as, privateFor)) continue;
      // Like Synapse: while the AS is down (its transaction is failing), ephemeral data is not kept for it.
      if (this.isDown(as)) {
        as.droppedEphemeral++;
        continue;
      }
      as.pendingEphemeral.push(cloneJson(edu));
      this.pump(as);
    }
  }

  private pump(as: AppServiceState): void {
    if (as.pumping || this.stopped || as.url === null) return;
    as.pumping = true;
    const restartIfWorkLeft = (): void => {
      as.pumping = false;
      const more = as.current !== undefined || as.pendingEvents.length > 0 || as.pendingEphemeral.length > 0 || as.pendingToDevice.length > 0 || as.keysDirty;
      if (more && !this.stopped && as.url !== null) this.pump(as);
    };
    // A failure inside the loop is a bug in the fake: stop pushing rather than spin.
    this.runPump(as).then(restartIfWorkLeft, () => undefined);
  }

  private async runPump(as: AppServiceState): Promise<void> {
    let delay = this.retryInitialMs;
    while (!this.stopped && as.url !== null) {
      if (!as.current) {
        if (as.pendingEvents.length === 0 && as.pendingEphemeral.length === 0 && as.pendingToDevice.length === 0 && !as.keysDirty) return;
        const events = as.pendingEvents
          .splice(0, this.maxEventsPerTransaction)
          .map((e) => this.toClientEvent(e, { appServiceId: as.reg.id }, true));
        const ephemeral = as.pendingEphemeral.splice(0);
        const body: JsonObject = { events };
        if (ephemeral.length > 0) {
          if (this.stableEphemeral && as.reg.receive_ephemeral === true) body['ephemeral'] = ephemeral;
          if (as.reg['de.sorunome.msc2409.push_ephemeral'] === true) body['de.sorunome.msc2409.ephemeral'] = ephemeral;
        }
        const toDevice = as.pendingToDevice.splice(0);
        if (toDevice.length > 0) body['de.sorunome.msc2409.to_device'] = toDevice;
        // Synapse (appservice/scheduler.py) computes the counts for every transaction it sends (the AS
        // sender always among the users); a change of keys alone also makes one here.
        if (this.wantsKeyExtensions(as) && (as.keysDirty || events.length > 0 || ephemeral.length > 0 || toDevice.length > 0)) Object.assign(body, this.keyExtensions(as));
        // Nothing for this AS after all (another user's keys changed): no empty transaction.
        if (events.length === 0 && Object.keys(body).length === 1) continue;
        // The body is frozen here: retries MUST NOT alter a transaction.
        const record: AppServiceTransactionRecord = { txnId: String(as.nextTxnId++), body, attempts: [], retryDelaysMs: [], retriedBy: [], delivered: false };
        as.log.push(record);
        as.current = { record, payload: JSON.stringify(body) };
      }
      const txn = as.current;
      const outcome = await this.attemptTransaction(as, as.url, txn);
      txn.record.attempts.push(outcome);
      if (outcome.kind === 'status' && outcome.status === 200) {
        txn.record.delivered = true;
        as.current = undefined;
        delay = this.retryInitialMs;
        continue;
      }
      txn.record.retryDelaysMs.push(delay);
      txn.record.retriedBy.push(await this.backoff(as, delay));
      delay = Math.min(delay * 2, this.retryMaxMs);
    }
  }

  private attemptTransaction(as: AppServiceState, baseUrl: string, txn: PendingTransaction): Promise<AppServiceAttemptOutcome> {
    const injected = as.injectedFailures.shift();
    if (injected && !injected.afterDelivery) return Promise.resolve({ kind: 'injected-failure' });
    let target: URL;
    try {
      target = this.legacyAppServicePush
        ? new URL(`${baseUrl.replace(/\/+$/, '')}/transactions/${encodeURIComponent(txn.record.txnId)}?access_token=${encodeURIComponent(as.reg.hs_token)}`)
        : new URL(`${baseUrl.replace(/\/+$/, '')}/_matrix/app/v1/transactions/${encodeURIComponent(txn.record.txnId)}`);
    } catch {
      // A bad URL is an unreachable AS: keep the transaction and back off.
      return Promise.resolve({ kind: 'network-error', message: `invalid application service URL ${baseUrl}` });
    }
    return new Promise((resolve) => {
      let settled = false;
      const settle = (o: AppServiceAttemptOutcome): void => {
        if (settled) return;
        settled = true;
        resolve(o);
      };
      const req = http.request(
        target,
        {
          method: 'PUT',
          agent: this.agent,
          timeout: this.asRequestTimeoutMs,
          headers: {
            ...(this.legacyAppServicePush ? {} : { Authorization: `Bearer ${as.reg.hs_token}` }),
            'Content-Type': 'application/json',
            'Content-Length': String(Buffer.byteLength(txn.payload)),
          },
        },
        (res) => {
          res.resume();
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            settle(injected ? { kind: 'ack-lost', status } : { kind: 'status', status });
          });
          res.on('error', (e) => settle({ kind: 'network-error', message: e.message }));
        },
      );
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e) => settle({ kind: 'network-error', message: e.message }));
      req.end(txn.payload);
    });
  }

  /** Waits out a retry backoff, unless a successful ping ends it first; says which. */
  private backoff(as: AppServiceState, ms: number): Promise<'backoff' | 'ping'> {
    return new Promise((resolve) => {
      const finish = (cause: 'backoff' | 'ping'): void => {
        clearTimeout(entry.timer);
        this.sleepers.delete(entry);
        as.retryNow = undefined;
        resolve(cause);
      };
      const entry = { timer: setTimeout(() => finish('backoff'), ms), resolve: () => finish('backoff') };
      this.sleepers.add(entry);
      as.retryNow = () => finish('ping');
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const entry = {
        timer: setTimeout(() => {
          this.sleepers.delete(entry);
          resolve();
        }, ms),
        resolve,
      };
      this.sleepers.add(entry);
    });
  }

  // ---------------------------------------------------------------- rooms and events

  private bump(): number {
    this.pos++;
    for (const w of [...this.waiters]) w();
    return this.pos;
  }

  private requireUser(userId: string): User {
    const user = this.users.get(userId);
    if (!user) throw notFound(`Unknown user ${userId}`);
    return user;
  }

  private requireRoom(roomId: string): Room {
    const room = this.rooms.get(roomId);
    if (!room) throw notFound('Unknown room');
    return room;
  }

  private resolveRoom(roomIdOrAlias: string): Room {
    if (roomIdOrAlias.startsWith('#')) {
      const roomId = this.aliases.get(roomIdOrAlias);
      if (!roomId) throw notFound('Room alias not found');
      return this.requireRoom(roomId);
    }
    if (!roomIdOrAlias.startsWith('!')) throw invalidParam(`${roomIdOrAlias} was not legal room ID or room alias`);
    return this.requireRoom(roomIdOrAlias);
  }

  private isJoined(room: Room, userId: string): boolean {
    return membershipOf(room.state.get(stateKeyOf('m.room.member', userId))) === 'join';
  }

  private requireJoined(room: Room, userId: string): void {
    if (!this.isJoined(room, userId)) throw forbidden(`User ${userId} not in room ${room.roomId}`);
  }

  private joinedUserIds(room: Room): string[] {
    return [...room.state.values()]
      .filter((e) => e.type === 'm.room.member' && membershipOf(e) === 'join' && e.stateKey !== undefined)
      .map((e) => e.stateKey ?? '');
  }

  private powerLevels(room: Room): JsonObject | undefined {
    return room.state.get(stateKeyOf('m.room.power_levels', ''))?.content;
  }

  private userLevel(room: Room, userId: string): number {
    const pl = this.powerLevels(room);
    if (!pl) {
      const create = room.state.get(stateKeyOf('m.room.create', ''));
      return create?.sender === userId ? 100 : 0;
    }
    const users = pl['users'];
    const level = isJsonObject(users) ? users[userId] : undefined;
    if (typeof level === 'number') return level;
    const def = pl['users_default'];
    return typeof def === 'number' ? def : 0;
  }

  private levelFor(room: Room, key: 'ban' | 'kick' | 'redact' | 'invite'): number {
    const v = this.powerLevels(room)?.[key];
    if (typeof v === 'number') return v;
    return key === 'invite' ? 0 : 50;
  }

  private eventLevel(room: Room, type: string, isState: boolean): number {
    const pl = this.powerLevels(room);
    if (!pl) return 0;
    const events = pl['events'];
    const specific = isJsonObject(events) ? events[type] : undefined;
    if (typeof specific === 'number') return specific;
    const def = pl[isState ? 'state_default' : 'events_default'];
    return typeof def === 'number' ? def : isState ? 50 : 0;
  }

  private appendEvent(room: Room, partial: AppendInput): StoredEvent {
    const now = Date.now();
    const ev: StoredEvent = {
      eventId: `$${randomId(32)}`,
      roomId: room.roomId,
      type: partial.type,
      sender: partial.sender,
      ts: partial.ts ?? now,
      receivedAt: now,
      content: cloneJson(partial.content),
      pos: 0,
    };
    if (partial.stateKey !== undefined) ev.stateKey = partial.stateKey;
    if (partial.txn) ev.txn = partial.txn;
    const size = Buffer.byteLength(JSON.stringify(this.toClientEvent(ev, {}, true, false)));
    if (size > MAX_EVENT_BYTES) throw new FakeMatrixError(413, 'M_TOO_LARGE', 'Event too large');
    ev.pos = this.pos + 1;
    if (ev.stateKey !== undefined) {
      const key = stateKeyOf(ev.type, ev.stateKey);
      const prev = room.state.get(key);
      if (prev) ev.prevState = prev;
      room.state.set(key, ev);
    }
    room.events.push(ev);
    room.byId.set(ev.eventId, ev);
    if (ev.type === 'm.room.redaction') {
      const target = room.byId.get(str(ev.content['redacts']) ?? '');
      if (target && !target.redactedBy) {
        target.redactedBy = ev;
        target.content = redactContent(target.type, target.content);
      }
    }
    for (const as of this.appServices.values()) {
      if (!this.isInterestedInEvent(as, room, ev)) continue;
      as.pendingEvents.push(ev);
    }
    this.bump();
    for (const as of this.appServices.values()) if (as.pendingEvents.length > 0) this.pump(as);
    return ev;
  }

  private doCreateRoom(requester: Requester, body: JsonObject): string {
    const creator = requester.user.userId;
    const version = body['room_version'];
    if (version !== undefined && version !== this.roomVersion) {
      throw new FakeMatrixError(400, 'M_UNSUPPORTED_ROOM_VERSION', `Room version ${String(version)} is not supported`);
    }
    const visibility = str(body['visibility']) ?? 'private';
    const preset = str(body['preset']) ?? (visibility === 'public' ? 'public_chat' : 'private_chat');
    if (!['private_chat', 'public_chat', 'trusted_private_chat'].includes(preset)) throw invalidParam(`Unknown preset ${preset}`);
    const aliasName = str(body['room_alias_name']);
    let alias: string | undefined;
    if (aliasName !== undefined) {
      if (aliasName === '' || /[:\s]/.test(aliasName)) throw invalidParam('Invalid characters in room alias');
      alias = `#${aliasName}:${this.serverName}`;
      this.checkAliasAllowed(requester, alias);
      if (this.aliases.has(alias)) throw new FakeMatrixError(400, 'M_ROOM_IN_USE', 'Room alias already taken');
    }
    const invites = Array.isArray(body['invite']) ? body['invite'].filter((x): x is string => typeof x === 'string') : [];
    const roomId = `!${randomId(18)}:${this.serverName}`;
    const room: Room = {
      roomId,
      events: [],
      byId: new Map(),
      state: new Map(),
      aliases: new Set(),
      receipts: new Map(),
      typing: new Map(),
      typingPos: 0,
    };
    this.rooms.set(roomId, room);
    const state = (type: string, content: JsonObject, stateKey = ''): void => {
      this.appendEvent(room, { type, sender: creator, stateKey, content });
    };
    const creation = isJsonObject(body['creation_content']) ? body['creation_content'] : {};
    state('m.room.create', { ...creation, room_version: this.roomVersion });
    state('m.room.member', this.memberContent(requester.user, 'join'), creator);
    const users: JsonObject = { [creator]: 100 };
    if (preset === 'trusted_private_chat') for (const i of invites) users[i] = 100;
    const powerLevels: JsonObject = {
      users,
      users_default: 0,
      events: {
        'm.room.name': 50,
        'm.room.power_levels': 100,
        'm.room.history_visibility': 100,
        'm.room.canonical_alias': 50,
        'm.room.avatar': 50,
        'm.room.tombstone': 100,
        'm.room.server_acl': 100,
        'm.room.encryption': 100,
      },
      events_default: 0,
      state_default: 50,
      ban: 50,
      kick: 50,
      redact: 50,
      invite: 0,
    };
    const override = body['power_level_content_override'];
    state('m.room.power_levels', isJsonObject(override) ? { ...powerLevels, ...override } : powerLevels);
    if (alias !== undefined) {
      this.aliases.set(alias, roomId);
      room.aliases.add(alias);
      state('m.room.canonical_alias', { alias });
    }
    state('m.room.join_rules', { join_rule: preset === 'public_chat' ? 'public' : 'invite' });
    state('m.room.history_visibility', { history_visibility: 'shared' });
    state('m.room.guest_access', { guest_access: preset === 'public_chat' ? 'forbidden' : 'can_join' });
    const initial = Array.isArray(body['initial_state']) ? body['initial_state'] : [];
    for (const s of initial) {
      if (!isJsonObject(s) || typeof s['type'] !== 'string' || !isJsonObject(s['content'])) {
        throw new FakeMatrixError(400, 'M_INVALID_ROOM_STATE', 'Invalid initial_state entry');
      }
      state(s['type'], s['content'], str(s['state_key']) ?? '');
    }
    const name = str(body['name']);
    if (name !== undefined) state('m.room.name', { name });
    const topic = str(body['topic']);
    if (topic !== undefined) state('m.room.topic', { topic });
    for (const invitee of invites) {
      const content: JsonObject = { membership: 'invite' };
      if (body['is_direct'] === true) content['is_direct'] = true;
      this.appendEvent(room, { type: 'm.room.member', sender: creator, stateKey: invitee, content });
    }
    return roomId;
  }

  private checkAliasAllowed(requester: Requester, alias: string): void {
    if (requester.appService) {
      if (!requester.appService.aliases.some((ns) => ns.regex.test(alias))) {
        throw new FakeMatrixError(400, 'M_EXCLUSIVE', "Room alias is not in the application service's namespace");
      }
      return;
    }
    for (const as of this.appServices.values()) {
      if (as.aliases.some((ns) => ns.exclusive && ns.regex.test(alias))) {
        throw new FakeMatrixError(400, 'M_EXCLUSIVE', 'Room alias is reserved by an application service');
      }
    }
  }

  private memberContent(user: User, membership: string): JsonObject {
    const content: JsonObject = { membership };
    const dn = user.profile.get('displayname');
    const av = user.profile.get('avatar_url');
    if (typeof dn === 'string') content['displayname'] = dn;
    if (typeof av === 'string') content['avatar_url'] = av;
    return content;
  }

  /** Membership changes with the room's auth rules (simplified from room v11). */
  private changeMembership(actorId: string, room: Room, targetId: string, membership: string, extra: JsonObject): StoredEvent | undefined {
    const current = membershipOf(room.state.get(stateKeyOf('m.room.member', targetId)));
    const actorJoined = this.isJoined(room, actorId);
    const actorLevel = this.userLevel(room, actorId);
    let content: JsonObject;
    switch (membership) {
      case 'join': {
        if (actorId !== targetId) throw forbidden('Cannot force another user to join');
        if (current === 'ban') throw forbidden('You are banned from this room');
        const joinRule = str(room.state.get(stateKeyOf('m.room.join_rules', ''))?.content['join_rule']);
        if (current !== 'join' && current !== 'invite' && joinRule !== 'public') throw forbidden('You are not invited to this room.');
        const user = this.users.get(targetId);
        content = user ? this.memberContent(user, 'join') : { membership: 'join' };
        const existing = room.state.get(stateKeyOf('m.room.member', targetId));
        // Re-joining with nothing new is a no-op, as on real servers.
        if (current === 'join' && existing && JSON.stringify(existing.content) === JSON.stringify({ ...content, ...extra })) return undefined;
        break;
      }
      case 'invite': {
        if (!actorJoined) throw forbidden(`User ${actorId} not in room ${room.roomId}`);
        if (current === 'join') throw forbidden(`${targetId} is already in the room.`);
        if (current === 'ban') throw forbidden(`${targetId} is banned from the room`);
        if (actorLevel < this.levelFor(room, 'invite')) throw forbidden('You do not have permission to invite');
        if (current === 'invite') return undefined;
        const user = this.users.get(targetId);
        content = user ? this.memberContent(user, 'invite') : { membership: 'invite' };
        break;
      }
      case 'leave': {
        if (actorId === targetId) {
          if (current === 'leave') return undefined;
          if (current !== 'join' && current !== 'invite' && current !== 'knock') throw forbidden(`User ${actorId} not in room ${room.roomId}`);
        } else {
          if (!actorJoined) throw forbidden(`User ${actorId} not in room ${room.roomId}`);
          if (current === 'ban') {
            if (actorLevel < this.levelFor(room, 'ban')) throw forbidden('You do not have permission to unban');
          } else if (current === 'join' || current === 'invite') {
            if (actorLevel < this.levelFor(room, 'kick') || actorLevel <= this.userLevel(room, targetId)) {
              throw forbidden('You do not have permission to kick');
            }
          } else {
            throw forbidden(`${targetId} is not in the room`);
          }
        }
        content = { membership: 'leave' };
        break;
      }
      case 'ban': {
        if (!actorJoined) throw forbidden(`User ${actorId} not in room ${room.roomId}`);
        if (actorLevel < this.levelFor(room, 'ban') || actorLevel <= this.userLevel(room, targetId)) {
          throw forbidden('You do not have permission to ban');
        }
        content = { membership: 'ban' };
        break;
      }
      default:
        throw badJson(`Unknown membership ${membership}`);
    }
    const ev = this.appendEvent(room, { type: 'm.room.member', sender: actorId, stateKey: targetId, content: { ...content, ...extra } });
    if (membership !== 'join') this.clearTyping(room, targetId);
    return ev;
  }

  private setState(requester: Requester, room: Room, type: string, stateKey: string, content: JsonObject, ts: number | undefined): StoredEvent {
    const sender = requester.user.userId;
    if (type === 'm.room.member') {
      const membership = str(content['membership']);
      if (membership === undefined) throw badJson('membership is required');
      const { membership: _ignored, ...extra } = content;
      void _ignored;
      const ev = this.changeMembership(sender, room, stateKey, membership, extra) ?? room.state.get(stateKeyOf('m.room.member', stateKey));
      // A no-op change answers with the current membership event.
      if (!ev) throw new Error('membership change produced no event');
      return ev;
    }
    this.requireJoined(room, sender);
    // State keys starting with @ are reserved for the user they name.
    if (stateKey.startsWith('@') && stateKey !== sender) throw forbidden('You are not allowed to set others state');
    if (this.userLevel(room, sender) < this.eventLevel(room, type, true)) {
      throw forbidden(`You don't have permission to post that to the room. user_level (${this.userLevel(room, sender)}) < send_level (${this.eventLevel(room, type, true)})`);
    }
    if (type === 'm.room.create') throw forbidden('Cannot replace m.room.create');
    const partial: AppendInput = { type, sender, stateKey, content };
    if (ts !== undefined) partial.ts = ts;
    return this.appendEvent(room, partial);
  }

  /**
   * What Synapse refuses with 400 before it stores a client's event: an
   * m.room.message whose `body` or `msgtype` is not a string, an annotation
   * without a string `key`, a relation to an event the room does not have.
   */
  private validateContent(room: Room, type: string, content: JsonObject): void {
    if (type === 'm.room.message') {
      if (typeof content['body'] !== 'string') throw new FakeMatrixError(400, 'M_BAD_JSON', "'body' not a string type");
      if (typeof content['msgtype'] !== 'string') throw new FakeMatrixError(400, 'M_BAD_JSON', "'msgtype' not a string type");
    }
    const rel = relatesTo(content);
    if (rel === undefined) return;
    if (rel['rel_type'] === 'm.annotation' && typeof rel['key'] !== 'string') throw new FakeMatrixError(400, 'M_BAD_JSON', 'Annotation without a key');
    const target = str(rel['event_id']);
    if (target !== undefined && !room.byId.has(target)) throw new FakeMatrixError(400, 'M_UNKNOWN', "Can't send relation to unknown event");
  }

  private sendEvent(requester: Requester, room: Room, type: string, content: JsonObject, txnId: string | undefined, ts: number | undefined): StoredEvent {
    const sender = requester.user.userId;
    this.requireJoined(room, sender);
    if (this.userLevel(room, sender) < this.eventLevel(room, type, false)) {
      throw forbidden(`You don't have permission to post that to the room. user_level (${this.userLevel(room, sender)}) < send_level (${this.eventLevel(room, type, false)})`);
    }
    if (type === 'm.room.redaction') {
      const targetId = str(content['redacts']);
      if (targetId === undefined) throw badJson('redacts is required');
      const target = room.byId.get(targetId);
      if (!target) throw notFound('Event not found.');
      if (target.sender !== sender && this.userLevel(room, sender) < this.levelFor(room, 'redact')) {
        throw forbidden('You do not have permission to redact events of other users');
      }
    }
    const rel = relatesTo(content);
    if (rel && rel['rel_type'] === 'm.annotation') {
      const target = str(rel['event_id']);
      const key = str(rel['key']);
      const dup = room.events.some((e) => {
        if (e.sender !== sender || e.type !== type || e.redactedBy) return false;
        const r = relatesTo(e.content);
        return r !== undefined && r['rel_type'] === 'm.annotation' && r['event_id'] === target && r['key'] === key;
      });
      if (dup) throw new FakeMatrixError(400, this.legacyDuplicateAnnotation ? 'M_UNKNOWN' : 'M_DUPLICATE_ANNOTATION', "Can't send same reaction twice");
    }
    const partial: AppendInput = { type, sender, content };
    if (txnId !== undefined) {
      partial.txn = { scope: requester.txnScope, txnId };
      if (requester.appService) partial.txn.appServiceId = requester.appService.reg.id;
    }
    if (ts !== undefined) partial.ts = ts;
    return this.appendEvent(room, partial);
  }

  private postReceipt(requester: Requester, room: Room, receiptType: string, eventId: string, threadId: string | undefined): void {
    const userId = requester.user.userId;
    this.requireJoined(room, userId);
    const target = room.byId.get(eventId);
    if (!target) throw notFound('Event not found.');
    if (receiptType === 'm.fully_read') {
      if (threadId !== undefined) throw invalidParam('thread_id is not allowed for m.fully_read');
      this.setRoomAccountData(requester.user, room.roomId, 'm.fully_read', { event_id: eventId });
      return;
    }
    if (receiptType !== 'm.read' && receiptType !== 'm.read.private') throw invalidParam(`Unknown receipt type ${receiptType}`);
    const key = `${receiptType}\u0000${userId}\u0000${threadId ?? ''}`;
    const existing = room.receipts.get(key);
    // Receipts mean "read up to": never move one backwards.
    const existingPos = existing ? room.byId.get(existing.eventId)?.pos ?? 0 : 0;
    if (existing && existingPos >= target.pos) return;
    const receipt: Receipt = { userId, type: receiptType, eventId, ts: Date.now(), pos: 0 };
    if (threadId !== undefined) receipt.threadId = threadId;
    room.receipts.set(key, receipt);
    receipt.pos = this.bump();
    this.pushEphemeral(room, { type: 'm.receipt', room_id: room.roomId, content: this.receiptContent([receipt]) }, receiptType === 'm.read.private' ? userId : undefined);
  }

  private receiptContent(receipts: Receipt[]): JsonObject {
    const content: { [eventId: string]: { [type: string]: JsonObject } } = {};
    for (const r of receipts) {
      const byType = (content[r.eventId] ??= {});
      const byUser = (byType[r.type] ??= {});
      const info: JsonObject = { ts: r.ts };
      if (r.threadId !== undefined) info['thread_id'] = r.threadId;
      byUser[r.userId] = info;
    }
    return content;
  }

  private applyTyping(room: Room, userId: string, typing: boolean, timeoutMs: number): void {
    const existing = room.typing.get(userId);
    if (existing) clearTimeout(existing);
    if (typing) {
      room.typing.set(
        userId,
        setTimeout(() => this.clearTyping(room, userId), Math.max(0, timeoutMs)),
      );
    } else {
      room.typing.delete(userId);
      if (!existing) return;
    }
    this.typingChanged(room);
  }

  private clearTyping(room: Room, userId: string): void {
    const t = room.typing.get(userId);
    if (!t) return;
    clearTimeout(t);
    room.typing.delete(userId);
    this.typingChanged(room);
  }

  private typingChanged(room: Room): void {
    room.typingPos = this.bump();
    this.pushEphemeral(room, { type: 'm.typing', room_id: room.roomId, content: { user_ids: [...room.typing.keys()] } });
  }

  // ---------------------------------------------------------------- serialisation

  private viewerOf(requester: Requester): Viewer {
    return { txnScope: requester.txnScope };
  }

  private latestEdit(room: Room, original: StoredEvent): StoredEvent | undefined {
    if (original.stateKey !== undefined || relatesTo(original.content)?.['rel_type'] === 'm.replace') return undefined;
    let best: StoredEvent | undefined;
    for (const e of room.events) {
      const rel = relatesTo(e.content);
      if (!rel || rel['rel_type'] !== 'm.replace' || rel['event_id'] !== original.eventId) continue;
      // Validity of replacement events: same sender and type, not state, has m.new_content.
      if (e.sender !== original.sender || e.type !== original.type || e.stateKey !== undefined || !isJsonObject(e.content['m.new_content'])) continue;
      if (!best || e.ts > best.ts || (e.ts === best.ts && e.eventId > best.eventId)) best = e;
    }
    return best;
  }

  private toClientEvent(ev: StoredEvent, viewer: Viewer, withRoomId: boolean, bundle = true): ClientEvent {
    const out: ClientEvent = {
      event_id: ev.eventId,
      type: ev.type,
      sender: ev.sender,
      origin_server_ts: ev.ts,
      content: cloneJson(ev.content),
      unsigned: { age: Math.max(0, Date.now() - ev.receivedAt) },
    };
    // Before room v11 `redacts` is a top-level key only.
    if (ev.type === 'm.room.redaction' && this.roomVersion !== '11' && isJsonObject(out.content)) delete out.content['redacts'];
    if (withRoomId) out.room_id = ev.roomId;
    if (ev.stateKey !== undefined) out.state_key = ev.stateKey;
    if (ev.type === 'm.room.redaction') {
      // Room v11 keeps redacts in content; servers also serve it top-level for older clients.
      const redacts = str(ev.content['redacts']);
      if (redacts !== undefined) out.redacts = redacts;
    }
    const txn = ev.txn;
    const sameSender =
      viewer.allTransactionIds === true ||
      (viewer.txnScope !== undefined && txn?.scope === viewer.txnScope) ||
      (viewer.appServiceId !== undefined && txn?.appServiceId === viewer.appServiceId);
    // transaction_id goes only to the client that sent the event (its device, or its AS).
    if (txn && sameSender) {
      out.unsigned['transaction_id'] = txn.txnId;
    }
    if (ev.prevState) {
      out.unsigned['prev_content'] = cloneJson(ev.prevState.content);
      out.unsigned['replaces_state'] = ev.prevState.eventId;
    }
    if (ev.redactedBy) {
      out.unsigned['redacted_because'] = this.toClientEvent(ev.redactedBy, viewer, withRoomId, false);
    } else if (bundle) {
      const room = this.rooms.get(ev.roomId);
      const edit = room ? this.latestEdit(room, ev) : undefined;
      if (edit) out.unsigned['m.relations'] = { 'm.replace': this.toClientEvent(edit, viewer, withRoomId, false) };
    }
    return out;
  }

  // ---------------------------------------------------------------- /sync and /messages

  private timelineLimit(ctx: AuthedCtx): number {
    const raw = ctx.query.get('filter');
    if (raw === null) return this.defaultTimelineLimit;
    let filter: unknown;
    if (raw.startsWith('{')) {
      try {
        filter = JSON.parse(raw) as unknown;
      } catch {
        throw invalidParam('filter is not valid JSON');
      }
    } else {
      filter = ctx.requester.user.filters[Number(raw)];
      if (filter === undefined) throw invalidParam(`No such filter ${raw}`);
    }
    const room = isJsonObject(filter) ? filter['room'] : undefined;
    const timeline = isJsonObject(room) ? room['timeline'] : undefined;
    const limit = isJsonObject(timeline) ? timeline['limit'] : undefined;
    return typeof limit === 'number' && limit >= 1 ? Math.floor(limit) : this.defaultTimelineLimit;
  }

  private async handleSync(ctx: AuthedCtx): Promise<Reply> {
    const sinceRaw = ctx.query.get('since');
    const since = sinceRaw === null ? undefined : parseToken(sinceRaw);
    const timeoutRaw = Number(ctx.query.get('timeout') ?? '0');
    const timeout = Number.isFinite(timeoutRaw) && timeoutRaw > 0 ? timeoutRaw : 0;
    const fullState = ctx.query.get('full_state') === 'true';
    const limit = this.timelineLimit(ctx);
    const deadline = Date.now() + timeout;
    for (;;) {
      const upTo = this.pos;
      const { body, empty } = this.buildSync(ctx.requester, since, upTo, limit, fullState);
      // An initial or full_state sync returns at once; otherwise hold until something happens.
      if (!empty || since === undefined || fullState || this.stopped || ctx.res.destroyed || Date.now() >= deadline) return { body };
      await this.waitForChange(upTo, deadline - Date.now(), ctx.res);
    }
  }

  private waitForChange(afterPos: number, ms: number, res: http.ServerResponse): Promise<void> {
    return new Promise((resolve) => {
      if (this.pos > afterPos || this.stopped) {
        resolve();
        return;
      }
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        res.off('close', done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.waiters.add(done);
      res.on('close', done);
    });
  }

  private memberEventAt(room: Room, userId: string, pos: number): StoredEvent | undefined {
    for (let i = room.events.length - 1; i >= 0; i--) {
      const e = room.events[i];
      if (e && e.pos <= pos && e.type === 'm.room.member' && e.stateKey === userId) return e;
    }
    return undefined;
  }

  private stateAt(room: Room, pos: number): StoredEvent[] {
    const state = new Map<string, StoredEvent>();
    for (const e of room.events) {
      if (e.pos > pos) break;
      if (e.stateKey !== undefined) state.set(stateKeyOf(e.type, e.stateKey), e);
    }
    return [...state.values()].sort((a, b) => a.pos - b.pos);
  }

  private strippedState(room: Room, invite: StoredEvent): JsonObject[] {
    const types = ['m.room.create', 'm.room.name', 'm.room.avatar', 'm.room.topic', 'm.room.join_rules', 'm.room.canonical_alias', 'm.room.encryption'];
    const out: JsonObject[] = [];
    for (const t of types) {
      const e = room.state.get(stateKeyOf(t, ''));
      if (e) out.push({ type: e.type, state_key: '', sender: e.sender, content: cloneJson(e.content) });
    }
    out.push({ type: invite.type, state_key: invite.stateKey ?? '', sender: invite.sender, content: cloneJson(invite.content) });
    return out;
  }

  private buildSync(requester: Requester, since: number | undefined, upTo: number, limit: number, fullState: boolean): { body: JsonObject; empty: boolean } {
    const userId = requester.user.userId;
    const viewer = this.viewerOf(requester);
    const join: JsonObject = {};
    const invite: JsonObject = {};
    const leave: JsonObject = {};
    let empty = true;
    const after = since ?? -1;
    for (const room of this.rooms.values()) {
      const current = this.memberEventAt(room, userId, upTo);
      const membership = membershipOf(current);
      if (!current || membership === undefined) continue;
      const before = since === undefined ? undefined : membershipOf(this.memberEventAt(room, userId, since));
      if (membership === 'join') {
        const fresh = before !== 'join';
        const candidates = room.events.filter((e) => e.pos <= upTo && (fresh || e.pos > after));
        const timeline = candidates.slice(-limit);
        const limited = candidates.length > timeline.length;
        const firstPos = timeline[0]?.pos ?? upTo + 1;
        let stateEvents: StoredEvent[];
        if (fresh || fullState) {
          stateEvents = this.stateAt(room, firstPos - 1);
        } else {
          // The delta between `since` and the start of the timeline: state changed in the gap.
          const gap = new Map<string, StoredEvent>();
          for (const e of candidates) {
            if (e.pos >= firstPos) break;
            if (e.stateKey !== undefined) gap.set(stateKeyOf(e.type, e.stateKey), e);
          }
          stateEvents = [...gap.values()];
        }
        const sinceForRoom = fresh ? -1 : after;
        const visibleReceipts = [...room.receipts.values()].filter(
          (r) => r.pos > sinceForRoom && r.pos <= upTo && (r.type === 'm.read' || r.userId === userId),
        );
        const ephemeral: JsonObject[] = [];
        if (visibleReceipts.length > 0) ephemeral.push({ type: 'm.receipt', content: this.receiptContent(visibleReceipts) });
        if ((fresh && room.typing.size > 0) || (!fresh && room.typingPos > after)) {
          ephemeral.push({ type: 'm.typing', content: { user_ids: [...room.typing.keys()] } });
        }
        const roomAccountData = [...(requester.user.roomAccountData.get(room.roomId) ?? new Map<string, AccountDataEntry>())]
          .filter(([, v]) => v.pos > sinceForRoom && v.pos <= upTo)
          .map(([type, v]) => ({ type, content: cloneJson(v.content) }));
        if (!fresh && timeline.length === 0 && ephemeral.length === 0 && roomAccountData.length === 0 && stateEvents.length === 0) continue;
        const joined = this.joinedUserIds(room);
        const invited = [...room.state.values()].filter((e) => e.type === 'm.room.member' && membershipOf(e) === 'invite');
        const entry: JsonObject = {
          summary: {
            'm.heroes': [...joined, ...invited.map((e) => e.stateKey ?? '')].filter((u) => u !== userId).slice(0, 5),
            'm.joined_member_count': joined.length,
            'm.invited_member_count': invited.length,
          },
          state: { events: stateEvents.map((e) => this.toClientEvent(e, viewer, false)) },
          timeline: {
            events: timeline.map((e) => this.toClientEvent(e, viewer, false)),
            limited,
            prev_batch: token(firstPos - 1),
          },
          ephemeral: { events: ephemeral },
          account_data: { events: roomAccountData },
          unread_notifications: { notification_count: 0, highlight_count: 0 },
        };
        join[room.roomId] = entry;
        empty = false;
      } else if (membership === 'invite') {
        if (current.pos <= after) continue;
        invite[room.roomId] = { invite_state: { events: this.strippedState(room, current) } };
        empty = false;
      } else if (membership === 'leave' || membership === 'ban') {
        // Left rooms only appear in incremental syncs, up to the leave itself.
        if (since === undefined || current.pos <= after || (before !== 'join' && before !== 'invite')) continue;
        const candidates = room.events.filter((e) => e.pos > after && e.pos <= current.pos);
        const timeline = candidates.slice(-limit);
        leave[room.roomId] = {
          state: { events: [] },
          timeline: {
            events: timeline.map((e) => this.toClientEvent(e, viewer, false)),
            limited: candidates.length > timeline.length,
            prev_batch: token((timeline[0]?.pos ?? current.pos) - 1),
          },
          account_data: { events: [] },
        };
        empty = false;
      }
    }
    const accountData = [...requester.user.accountData]
      .filter(([, v]) => v.pos > after && v.pos <= upTo)
      .map(([type, v]) => ({ type, content: cloneJson(v.content) }));
    if (accountData.length > 0) empty = false;
    const e2ee = this.keys.syncParts(userId, requester.deviceId, since, upTo);
    if (!e2ee.empty) empty = false;
    return {
      body: {
        next_batch: token(upTo),
        rooms: { join, invite, leave, knock: {} },
        account_data: { events: accountData },
        presence: { events: [] },
        ...e2ee.parts,
      },
      empty,
    };
  }

  private handleMessages(ctx: AuthedCtx): Reply {
    const room = this.requireRoom(this.param(ctx, 'roomId'));
    this.requireJoined(room, ctx.requester.user.userId);
    const dir = ctx.query.get('dir');
    if (dir === null) throw new FakeMatrixError(400, 'M_MISSING_PARAM', 'Missing dir parameter');
    if (dir !== 'b' && dir !== 'f') throw invalidParam("dir must be 'b' or 'f'");
    const limitRaw = ctx.query.get('limit');
    const limit = limitRaw === null ? 10 : Number(limitRaw);
    if (!Number.isInteger(limit) || limit < 0) throw invalidParam('limit must be a non-negative integer');
    const fromRaw = ctx.query.get('from');
    const toRaw = ctx.query.get('to');
    const from = fromRaw === null ? (dir === 'b' ? this.pos : 0) : parseToken(fromRaw);
    const to = toRaw === null ? undefined : parseToken(toRaw);
    // A token is a stream position: events at or before it are "behind" it.
    const inRange =
      dir === 'b'
        ? room.events.filter((e) => e.pos <= from && (to === undefined || e.pos > to)).reverse()
        : room.events.filter((e) => e.pos > from && (to === undefined || e.pos <= to));
    const chunk = inRange.slice(0, limit);
    const body: JsonObject = {
      start: token(from),
      chunk: chunk.map((e) => this.toClientEvent(e, this.viewerOf(ctx.requester), true)),
    };
    const last = chunk[chunk.length - 1];
    // `end` is omitted when no further events are available in that direction.
    if (last && inRange.length > chunk.length) body['end'] = token(dir === 'b' ? last.pos - 1 : last.pos);
    return { body };
  }

  private handleRelations(ctx: AuthedCtx): Reply {
    const room = this.requireRoom(this.param(ctx, 'roomId'));
    this.requireJoined(room, ctx.requester.user.userId);
    const eventId = this.param(ctx, 'eventId');
    if (!room.byId.has(eventId)) throw notFound('Event not found.');
    const relType = ctx.params.get('relType');
    const eventType = ctx.params.get('eventType');
    const forward = ctx.query.get('dir') === 'f';
    const limit = Number(ctx.query.get('limit') ?? '1000');
    const related = room.events.filter((e) => {
      const rel = relatesTo(e.content);
      return rel !== undefined && rel['event_id'] === eventId && (relType === undefined || rel['rel_type'] === relType) && (eventType === undefined || e.type === eventType);
    });
    const ordered = forward ? related : related.reverse();
    return { body: { chunk: ordered.slice(0, limit).map((e) => this.toClientEvent(e, this.viewerOf(ctx.requester), true)) } };
  }
}

/** Starts a fake homeserver on a free port of 127.0.0.1. */
export async function createFakeHomeserver(opts: FakeHomeserverOptions = {}): Promise<FakeHomeserver> {
  const hs = new FakeHomeserverImpl(opts);
  await hs.listen();
  return hs;
}
