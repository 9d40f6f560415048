/**
 * End-to-end encryption for the adapter's own device, on the OlmMachine of
 * @matrix-org/matrix-sdk-crypto-wasm (the Rust crypto, as WebAssembly inside
 * its npm package: no native binary, nothing downloaded at install).
 *
 * - open(): the sealed snapshot is read first (a wrong secret throws
 *   SG_ERR_STATE_SEALED_KEY before anything else happens), restored into
 *   fake-indexeddb under a fresh prefix (durable-idb.ts), the machine opened
 *   on it for our user and device, and its keys uploaded.
 * - receiveSync(): a /sync answer's to-device events, device-list changes
 *   and key counts go into the machine; then its outgoing requests
 *   (keys/upload, keys/query, keys/claim, sendToDevice) are sent and marked.
 * - decrypt() / encrypt(): Megolm room events; before encrypting, the room's
 *   members (joined, and invited unless the history is joined-only) are
 *   read afresh and tracked, Olm sessions claimed where missing and the
 *   room key shared with every device (rotated by the machine when a
 *   member or device is gone or the history visibility changed).
 *
 * Durability: after every machine call that may change the store, and before
 * sending anything the call produced, the store is persisted (one sealed
 * value, written only when it changed). So keys the homeserver was told about
 * and room keys other devices were given are never missing after a kill -9,
 * and to-device messages (room keys) are durable before the /sync token that
 * acknowledges them is saved (sync.ts saves it after the batch).
 *
 * Calls are serialised (one at a time): the sync loop and deliveries share
 * the machine.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type * as Wasm from '@matrix-org/matrix-sdk-crypto-wasm';
import type { SealedStore } from '../../../src/core/ports.js';
import type { UndecryptableReason } from '../../../src/core/event.js';
import { mxPath, type JsonObject, type MatrixHttp } from '../client.js';
import { isObject } from '../normalise.js';
import { MatrixApiError } from '../errors.js';
import { DurableIdb, type Snapshot } from './durable-idb.js';
import type { IdbFactory } from './idb-types.js';

type WasmModule = typeof Wasm;
type OutgoingRequest = Awaited<ReturnType<Wasm.OlmMachine['outgoingRequests']>>[number];

export const MEGOLM = 'm.megolm.v1.aes-sha2';

let loaded: Promise<{ wasm: WasmModule; idb: IdbFactory; writes: (() => number) | undefined }> | undefined;

/**
 * Counts the writes made through fake-indexeddb (every method that can
 * change a database), so a snapshot is taken only when something changed.
 */
async function countFakeIdbWrites(): Promise<() => number> {
  const fake = (await import('fake-indexeddb')) as unknown as Record<string, { prototype: Record<string, unknown> } | undefined>;
  let count = 0;
  const hooks: Array<[string, string[]]> = [
    ['IDBObjectStore', ['put', 'add', 'delete', 'clear', 'createIndex', 'deleteIndex']],
    ['IDBCursor', ['update', 'delete']],
    ['IDBDatabase', ['createObjectStore', 'deleteObjectStore']],
    // open() itself changes nothing: an upgrade goes through createObjectStore/createIndex.
    ['IDBFactory', ['deleteDatabase']],
  ];
  for (const [cls, methods] of hooks) {
    const proto = fake[cls]?.prototype;
    if (!proto) throw new Error(`fake-indexeddb has no ${cls}`);
    for (const m of methods) {
      const original = proto[m];
      if (typeof original !== 'function') throw new Error(`fake-indexeddb ${cls} has no ${m}()`);
      proto[m] = function counted(this: unknown, ...args: unknown[]): unknown {
        count++;
        return (original as (...a: unknown[]) => unknown).apply(this, args);
      };
    }
  }
  return () => count;
}

/** The wasm module and an IndexedDB (fake-indexeddb when the process has none), once per process. */
function loadCrypto(): Promise<{ wasm: WasmModule; idb: IdbFactory; writes: (() => number) | undefined }> {
  loaded ??= (async () => {
    const scope = globalThis as { indexedDB?: IdbFactory };
    let writes: (() => number) | undefined;
    if (scope.indexedDB === undefined) {
      writes = await countFakeIdbWrites();
      await import('fake-indexeddb/auto');
    }
    const wasm = await import('@matrix-org/matrix-sdk-crypto-wasm');
    await wasm.initAsync();
    if (scope.indexedDB === undefined) throw new Error('no IndexedDB after loading fake-indexeddb');
    return { wasm, idb: scope.indexedDB, writes };
  })();
  return loaded;
}

export interface CryptoCounters {
  /** sealed snapshots written */
  persisted: number;
  requestsSent: number;
  requestFailures: number;
  decrypted: number;
  encrypted: number;
  /** decryption attempts that failed, by reason (a held event counts once per attempt) */
  decryptFailures: Record<string, number>;
  roomKeysShared: number;
  /** m.room_key_request to-device messages sent (requests and their cancellations) */
  keyRequestsSent: number;
}

export type Decrypted =
  | { readonly ok: true; readonly type: string; readonly content: JsonObject; readonly senderDevice?: string }
  | { readonly ok: false; readonly reason: UndecryptableReason; readonly detail: string };

export interface MatrixCryptoOptions {
  readonly http: MatrixHttp;
  readonly log: Logger;
  readonly sealed: SealedStore;
  /** names the IndexedDB databases (the adapter's name) */
  readonly storeName: string;
  /** other devices of our own user we trust (encryption.trustedDevices): forwarded keys are accepted from them */
  readonly trustedDevices?: ReadonlyArray<{ readonly deviceId: string; readonly ed25519: string }>;
}

/** What the status shows about our device. */
export interface CryptoIdentity {
  readonly userId: string;
  readonly deviceId: string;
  readonly curve25519: string;
  readonly ed25519: string;
  /** a new crypto identity was set up at this start (none was stored, or it belonged to another device) */
  readonly fresh: boolean;
  /** why the stored identity was not used, when it was not */
  readonly replaced?: string;
}

/** Reads and checks the sealed store (throws SG_ERR_STATE_SEALED_KEY on a wrong secret); the machine opens later, once the device is known. */
export async function readCryptoStore(options: MatrixCryptoOptions): Promise<PreparedCrypto> {
  const { wasm, idb, writes } = await loadCrypto();
  const durable = new DurableIdb({ sealed: options.sealed, idb, prefix: `syncgate-${options.storeName}-${randomBytes(6).toString('hex')}`, ...(writes ? { writes } : {}) });
  const snapshot = await durable.read();
  return new PreparedCrypto(options, wasm, durable, snapshot);
}

export class PreparedCrypto {
  constructor(
    private readonly options: MatrixCryptoOptions,
    private readonly wasm: WasmModule,
    private readonly durable: DurableIdb,
    private readonly snapshot: Snapshot | undefined,
  ) {}

  /** The stored device, if any. */
  get storedDevice(): { userId: string; deviceId: string } | undefined {
    return this.snapshot ? { userId: this.snapshot.userId, deviceId: this.snapshot.deviceId } : undefined;
  }

  /**
   * Opens the machine for our device: the stored state when it is this
   * device's, else a new identity (logged as an error). `http`: the device's
   * own session for the key requests (appservice mode: the token of the
   * bridge device's login), else the adapter's. `lost`: why the caller
   * replaced a device whose store was lost (shown in the identity).
   */
  async open(userId: string, deviceId: string, http?: MatrixHttp, lost?: string): Promise<MatrixCrypto> {
    const { wasm, durable } = this;
    const options = http ? { ...this.options, http } : this.options;
    // `lost`: the caller found the store lost and created this new device (crypto/session.ts).
    let replaced: string | undefined = lost;
    let snapshot = this.snapshot;
    if (snapshot && (snapshot.userId !== userId || snapshot.deviceId !== deviceId)) {
      replaced = `the stored crypto state belongs to ${snapshot.userId} device ${snapshot.deviceId}, the homeserver session is ${userId} device ${deviceId}`;
      options.log.error({ stored: { userId: snapshot.userId, deviceId: snapshot.deviceId }, current: { userId, deviceId } }, `Matrix crypto store mismatch: ${replaced}; a new crypto identity is set up for the current device (members' clients will show it as a new device)`);
      snapshot = undefined;
    }
    await durable.restore(snapshot);
    const machine = await wasm.OlmMachine.initialize(new wasm.UserId(userId), new wasm.DeviceId(deviceId), durable.prefix);
    const crypto = new MatrixCrypto(options, wasm, durable, machine, snapshot === undefined, replaced);
    // The new account exists only in memory until persisted: before its keys are announced.
    await crypto.persist();
    if (snapshot === undefined) options.log.warn({ userId, deviceId, curve25519: crypto.identity.curve25519 }, 'Matrix crypto: new device identity created');
    else options.log.info({ userId, deviceId, curve25519: crypto.identity.curve25519 }, 'Matrix crypto: device identity restored');
    return crypto;
  }
}

export class MatrixCrypto {
  readonly counters: CryptoCounters = { persisted: 0, requestsSent: 0, requestFailures: 0, decrypted: 0, encrypted: 0, decryptFailures: {}, roomKeysShared: 0, keyRequestsSent: 0 };
  readonly identity: CryptoIdentity;
  private chain: Promise<unknown> = Promise.resolve();
  private closed = false;
  private txn = 0;
  /** trusted devices (encryption.trustedDevices) already marked verified, or refused for a fingerprint mismatch */
  private readonly trustSettled = new Set<string>();

  constructor(
    private readonly options: MatrixCryptoOptions,
    private readonly wasm: WasmModule,
    private readonly durable: DurableIdb,
    private readonly machine: Wasm.OlmMachine,
    fresh: boolean,
    replaced: string | undefined,
  ) {
    this.identity = {
      userId: machine.userId.toString(),
      deviceId: machine.deviceId.toString(),
      curve25519: machine.identityKeys.curve25519.toBase64(),
      ed25519: machine.identityKeys.ed25519.toBase64(),
      fresh,
      ...(replaced !== undefined ? { replaced } : {}),
    };
  }

  /** One call at a time on the machine. */
  private exclusive<T>(run: () => Promise<T>): Promise<T> {
    const next = this.chain.then(run, run);
    this.chain = next.catch(() => undefined);
    return next;
  }

  /** Writes the store to the sealed store when it changed; resolves once durable. */
  async persist(): Promise<void> {
    if (await this.durable.persist(this.identity.userId, this.identity.deviceId)) this.counters.persisted++;
  }

  /** Uploads keys and sends whatever else the machine has queued. */
  start(): Promise<void> {
    return this.exclusive(() => this.flush());
  }

  /** A /sync answer's E2EE parts into the machine, persisted, then its requests sent. */
  receiveSync(res: JsonObject): Promise<void> {
    return this.exclusive(async () => {
      const w = this.wasm;
      const toDevice = isObject(res['to_device']) && Array.isArray(res['to_device']['events']) ? res['to_device']['events'] : [];
      const lists = isObject(res['device_lists']) ? res['device_lists'] : {};
      const ids = (v: unknown): Wasm.UserId[] => (Array.isArray(v) ? v.filter((u): u is string => typeof u === 'string').map((u) => new w.UserId(u)) : []);
      const countsRaw = isObject(res['device_one_time_keys_count']) ? res['device_one_time_keys_count'] : {};
      const counts = new Map<string, number>(Object.entries(countsRaw).filter((e): e is [string, number] => typeof e[1] === 'number'));
      const fallbackRaw = res['device_unused_fallback_key_types'] ?? res['org.matrix.msc2732.device_unused_fallback_key_types'];
      // Absent means the homeserver does not support fallback keys: undefined, not an empty set (which means "used").
      const fallback = Array.isArray(fallbackRaw) ? new Set(fallbackRaw.filter((t): t is string => typeof t === 'string')) : undefined;
      await this.machine.receiveSyncChanges(JSON.stringify(toDevice), new w.DeviceLists(ids(lists['changed']), ids(lists['left'])), counts, fallback);
      await this.persist();
      await this.flush();
      await this.trustOwnDevices();
    });
  }

  /**
   * encryption.trustedDevices: our own user's other devices, marked verified
   * once their keys are known and their Ed25519 key is the pinned one (a
   * device with another key under that id is refused and logged). The Rust
   * crypto sends room key requests to our own devices only, answers only
   * verified ones, and accepts forwarded keys only from verified ones.
   */
  private async trustOwnDevices(): Promise<void> {
    const w = this.wasm;
    for (const t of this.options.trustedDevices ?? []) {
      if (this.trustSettled.has(t.deviceId) || t.deviceId === this.identity.deviceId) continue;
      const device = await this.machine.getDevice(new w.UserId(this.identity.userId), new w.DeviceId(t.deviceId));
      if (!device) continue;
      this.trustSettled.add(t.deviceId);
      const ed25519 = device.ed25519Key?.toBase64();
      if (ed25519 !== t.ed25519) {
        this.options.log.error({ deviceId: t.deviceId, configured: t.ed25519, actual: ed25519 }, 'Matrix crypto: a device in encryption.trustedDevices has another Ed25519 key than configured: not trusted');
        continue;
      }
      if (!device.isLocallyTrusted()) {
        await device.setLocalTrust(w.LocalTrust.Verified);
        await this.persist();
        this.options.log.info({ deviceId: t.deviceId, ed25519 }, 'Matrix crypto: own device trusted (encryption.trustedDevices)');
      }
    }
  }

  /** Decrypts one m.room.encrypted event. */
  decrypt(event: JsonObject, roomId: string): Promise<Decrypted> {
    return this.exclusive(async () => {
      const w = this.wasm;
      try {
        const d = await this.machine.decryptRoomEvent(JSON.stringify({ ...event, room_id: roomId }), new w.RoomId(roomId), new w.DecryptionSettings(w.TrustRequirement.Untrusted));
        const clear = JSON.parse(d.event) as unknown;
        if (!isObject(clear) || typeof clear['type'] !== 'string' || !isObject(clear['content'])) {
          return this.undecryptable('unknown-encryption', 'the decrypted payload is not an event');
        }
        const content: JsonObject = { ...clear['content'] };
        // Relations stay in clear on the encrypted event (spec "Mixing relations and encryption").
        const outer = isObject(event['content']) ? event['content']['m.relates_to'] : undefined;
        if (content['m.relates_to'] === undefined && isObject(outer)) content['m.relates_to'] = outer;
        this.counters.decrypted++;
        const device = d.senderDevice?.toString();
        return { ok: true, type: clear['type'], content, ...(device !== undefined ? { senderDevice: device } : {}) };
      } catch (err) {
        const failed = this.undecryptableFrom(err);
        // The machine queued an m.room_key_request to our other devices for a missing key: out now, not at the next sync.
        if (!failed.ok && failed.reason === 'keys-missing') await this.sendQueued();
        return failed;
      }
    });
  }

  /** Persists and sends what the machine queued; a failure is logged, the next sync sends it again. */
  private async sendQueued(): Promise<void> {
    try {
      await this.persist();
      await this.flush();
    } catch (err) {
      this.options.log.warn({ err }, 'Matrix crypto: sending the queued requests failed; sent again after the next sync');
    }
  }

  private undecryptableFrom(err: unknown): Decrypted {
    const w = this.wasm;
    if (err instanceof w.MegolmDecryptionError) {
      if (err.withheldCode !== undefined) return this.undecryptable('keys-withheld', `${err.withheldCode}: ${err.description}`);
      if (err.code === w.DecryptionErrorCode.UnknownSenderDevice || err.code === w.DecryptionErrorCode.MismatchedIdentityKeys) return this.undecryptable('unknown-device', err.description);
      return this.undecryptable('keys-missing', err.description);
    }
    return this.undecryptable('keys-missing', err instanceof Error ? err.message : String(err));
  }

  private undecryptable(reason: UndecryptableReason, detail: string): Decrypted {
    this.counters.decryptFailures[reason] = (this.counters.decryptFailures[reason] ?? 0) + 1;
    return { ok: false, reason, detail };
  }

  /**
   * The content of an m.room.encrypted event carrying `type`/`content`,
   * readable by every device of the room's members (recipients()): their devices
   * are queried, Olm sessions claimed where missing and the room key shared
   * first (persisted before it leaves).
   */
  encrypt(roomId: string, type: string, content: JsonObject, settings: RoomEncryptionSettings = {}): Promise<JsonObject> {
    return this.exclusive(async () => {
      const w = this.wasm;
      const { members, visibility } = await this.recipients(roomId);
      const users = (): Wasm.UserId[] => members.map((u) => new w.UserId(u));
      await this.machine.updateTrackedUsers(users());
      await this.persist();
      await this.flush();
      const claim = await this.machine.getMissingSessions(users());
      if (claim) {
        await this.persist();
        await this.sendRequest(claim);
      }
      const es = new w.EncryptionSettings();
      // The bridge cannot verify members' devices: every device of a member gets the key, as Element does by default.
      es.sharingStrategy = w.CollectStrategy.allDevices();
      // A change of the room's history visibility rotates the session (the Rust crypto compares it with the session's).
      es.historyVisibility = { invited: w.HistoryVisibility.Invited, joined: w.HistoryVisibility.Joined, world_readable: w.HistoryVisibility.WorldReadable }[visibility] ?? w.HistoryVisibility.Shared;
      if (settings.rotationPeriodMs !== undefined) es.rotationPeriod = BigInt(settings.rotationPeriodMs) * 1000n;
      if (settings.rotationPeriodMsgs !== undefined) es.rotationPeriodMessages = BigInt(settings.rotationPeriodMsgs);
      const shares = await this.machine.shareRoomKey(new w.RoomId(roomId), users(), es);
      await this.persist();
      for (const r of shares) {
        await this.sendRequest(r);
        this.counters.roomKeysShared++;
      }
      const encrypted = await this.machine.encryptRoomEvent(new w.RoomId(roomId), type, JSON.stringify(content));
      await this.persist();
      this.counters.encrypted++;
      return JSON.parse(encrypted) as JsonObject;
    });
  }

  /**
   * Who gets the room key, read from the room's state at every send (never
   * cached, so a leave or a kick is never missed): the joined members, and
   * the invited ones unless the history is visible to joined members only —
   * as Element (matrix-js-sdk's getEncryptionTargetMembers, the Rust SDK)
   * does, so an invited member reads what is sent before their join.
   */
  private async recipients(roomId: string): Promise<{ members: string[]; visibility: string }> {
    const http = this.options.http;
    // both asked at once: the send waits for one round trip, not two
    const [hv, res] = await Promise.all([
      http.request('GET', mxPath`/_matrix/client/v3/rooms/${roomId}/state/m.room.history_visibility/`).catch((err: unknown) => {
        // No such state event: the spec's default, shared.
        if (err instanceof MatrixApiError && err.errcode === 'M_NOT_FOUND') return undefined;
        throw err;
      }),
      http.request('GET', mxPath`/_matrix/client/v3/rooms/${roomId}/members`, { query: { not_membership: 'leave' } }),
    ]);
    const visibility = typeof hv?.['history_visibility'] === 'string' ? hv['history_visibility'] : 'shared';
    const wanted = new Set(visibility === 'joined' ? ['join'] : ['join', 'invite']);
    const chunk = Array.isArray(res['chunk']) ? res['chunk'].filter(isObject) : [];
    const members = chunk
      .filter((e) => e['type'] === 'm.room.member' && typeof e['state_key'] === 'string' && isObject(e['content']) && wanted.has(String(e['content']['membership'])))
      .map((e) => String(e['state_key']));
    return { members, visibility };
  }

  /** The machine's queued requests, sent and marked until none is left (bounded). */
  private async flush(): Promise<void> {
    for (let round = 0; round < 20 && !this.closed; round++) {
      const requests = await this.machine.outgoingRequests();
      // One-time keys are generated by outgoingRequests(): durable before they are uploaded.
      await this.persist();
      if (requests.length === 0) return;
      for (const r of requests) await this.sendRequest(r);
    }
  }

  private async sendRequest(r: OutgoingRequest): Promise<void> {
    const w = this.wasm;
    const http = this.options.http;
    let res: JsonObject;
    try {
      if (r instanceof w.KeysUploadRequest) res = await http.request('POST', '/_matrix/client/v3/keys/upload', { body: JSON.parse(r.body) as unknown });
      else if (r instanceof w.KeysQueryRequest) res = await http.request('POST', '/_matrix/client/v3/keys/query', { body: JSON.parse(r.body) as unknown });
      else if (r instanceof w.KeysClaimRequest) res = await http.request('POST', '/_matrix/client/v3/keys/claim', { body: JSON.parse(r.body) as unknown });
      else if (r instanceof w.ToDeviceRequest) {
        res = await http.request('PUT', mxPath`/_matrix/client/v3/sendToDevice/${r.event_type}/${r.txn_id}`, { body: JSON.parse(r.body) as unknown });
        if (r.event_type === 'm.room_key_request') this.counters.keyRequestsSent++;
      }
      else if (r instanceof w.SignatureUploadRequest) res = await http.request('POST', '/_matrix/client/v3/keys/signatures/upload', { body: JSON.parse(r.body) as unknown });
      else if (r instanceof w.RoomMessageRequest) res = await http.request('PUT', mxPath`/_matrix/client/v3/rooms/${r.room_id}/send/${r.event_type}/${r.txn_id}`, { body: JSON.parse(r.body) as unknown });
      else return; // key backups are not used
    } catch (err) {
      this.counters.requestFailures++;
      throw err;
    }
    this.counters.requestsSent++;
    if (r.id !== undefined) {
      await this.machine.markRequestAsSent(r.id, r.type, JSON.stringify(res));
      await this.persist();
    }
  }

  /**
   * Cross-signing of our user, so a member who verifies the bot user once
   * sees the bridge device as verified: a master key, a self-signing key
   * that signs our device, a user-signing key (private parts in the store,
   * persisted before the public ones are announced). Set up only when the
   * homeserver has no master key for our user (Synapse then needs no
   * user-interactive auth, MSC3967); one made elsewhere (the operator's
   * Element on the bot account) is never replaced. Idempotent.
   */
  crossSign(): Promise<CrossSigning> {
    return this.exclusive(async () => {
      const w = this.wasm;
      const { userId } = this.identity;
      const status = await this.machine.crossSigningStatus();
      const res = await this.options.http.request('POST', '/_matrix/client/v3/keys/query', { body: { device_keys: { [userId]: [] } } });
      const published = masterKeyOf(isObject(res['master_keys']) ? res['master_keys'][userId] : undefined);
      if (published !== undefined && status.hasMaster && status.hasSelfSigning) return { state: 'signed', masterKey: published };
      if (published !== undefined) {
        return { state: 'skipped', masterKey: published, detail: 'the bot user has cross-signing keys made elsewhere (not in this store): the bridge device is not signed by them; verify it manually, or sign it from a session that holds them' };
      }
      // Nothing published: a fresh identity, or ours again when a crash came between persisting and uploading it.
      const req = await this.machine.bootstrapCrossSigning(!(status.hasMaster && status.hasSelfSigning));
      await this.persist();
      if (req.uploadKeysRequest instanceof w.KeysUploadRequest) await this.sendRequest(req.uploadKeysRequest);
      const signingKeys = JSON.parse(req.uploadSigningKeysRequest.body) as JsonObject;
      await this.options.http.request('POST', '/_matrix/client/v3/keys/device_signing/upload', { body: signingKeys });
      await this.sendRequest(req.uploadSignaturesRequest);
      await this.persist();
      const masterKey = masterKeyOf(signingKeys['master_key']);
      this.options.log.info({ userId, masterKey, deviceId: this.identity.deviceId }, 'Matrix crypto: cross-signing set up for the bot user; the bridge device is signed by it');
      return { state: 'signed', ...(masterKey !== undefined ? { masterKey } : {}) };
    });
  }

  /** A to-device message from our device to our own device (appservice mode: the extensions probe). */
  sendToSelf(type: string, content: JsonObject): Promise<void> {
    const { userId, deviceId } = this.identity;
    return this.exclusive(async () => {
      await this.options.http.request('PUT', mxPath`/_matrix/client/v3/sendToDevice/${type}/${this.nextTxnId()}`, { body: { messages: { [userId]: { [deviceId]: content } } } });
      this.counters.requestsSent++;
    });
  }

  /** A fresh transaction id for requests we build ourselves. */
  nextTxnId(): string {
    return `sgc-${Date.now()}-${this.txn++}`;
  }

  /** Waits for the call in progress, then closes the machine (the sealed snapshot stays). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.exclusive(() => Promise.resolve());
    this.machine.close();
    // This process's in-memory copy: the next start restores from the sealed store under a new prefix.
    // Not awaited: a connection the wasm still holds would block the deletion, never the stop.
    void this.durable.clear().catch(() => undefined);
  }
}

/** What crossSign() did: `signed` (our device is signed by our user's self-signing key), `skipped` (keys made elsewhere). */
export interface CrossSigning {
  readonly state: 'signed' | 'skipped';
  /** the master key's Ed25519 public key (what Element shows as the user's cross-signing key) */
  readonly masterKey?: string;
  readonly detail?: string;
}

function masterKeyOf(key: unknown): string | undefined {
  const keys = isObject(key) && isObject(key['keys']) ? key['keys'] : undefined;
  const first = keys ? Object.values(keys)[0] : undefined;
  return typeof first === 'string' ? first : undefined;
}

/** A room's m.room.encryption rotation settings. */
export interface RoomEncryptionSettings {
  readonly rotationPeriodMs?: number;
  readonly rotationPeriodMsgs?: number;
}
