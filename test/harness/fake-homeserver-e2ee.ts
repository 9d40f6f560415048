/**
 * The end-to-end-encryption part of the fake homeserver (fake-homeserver.ts
 * wires it in): the key server and to-device messaging of the Client-Server
 * API, as Synapse implements them (synapse/handlers/e2e_keys.py,
 * synapse/storage/databases/main/end_to_end_keys.py, handlers/devicemessage.py,
 * handlers/sync.py):
 *
 * - POST /keys/upload: device keys stored for the requester's device (a
 *   change is a device-list update for everyone sharing a room with the
 *   user); one-time keys added, a key id uploaded again with other content
 *   refused with 400 ("One time key … already exists"), with the same content
 *   ignored; fallback keys replace the previous one of their algorithm.
 *   Answers `one_time_key_counts` with `signed_curve25519: 0` always present
 *   (Synapse's `count_e2e_one_time_keys` sets that default).
 * - POST /keys/query: the devices with keys of each user asked (all of them
 *   for `[]`), with `unsigned.device_display_name`; unknown users answer `{}`.
 * - POST /keys/claim: one one-time key per device, removed; when none is
 *   left the device's fallback key, which stays and is marked used.
 * - PUT /sendToDevice/{type}/{txnId}: per device or `*` (all of the user's
 *   devices); a retransmission of the txnId is answered without sending again.
 * - /sync: `to_device.events` (a message is deleted once the device syncs
 *   with a token past it, so an unacknowledged batch comes again),
 *   `device_lists.changed` / `left` on incremental syncs (users whose keys
 *   changed and who share a room with the syncing user, the user
 *   themself included; everyone in a room the user newly shares with them;
 *   users who no longer share any room), `device_one_time_keys_count` and
 *   `device_unused_fallback_key_types` (also under its MSC2732 name).
 *
 * - appservice transactions (fake-homeserver.ts, with Synapse's
 *   experimental features switched on by options): to-device messages for
 *   the AS's users as `de.sorunome.msc2409.to_device` (MSC2409, with
 *   `to_user_id`/`to_device_id`), their one-time-key counts and unused
 *   fallback key types and `org.matrix.msc3202.device_lists` (MSC3202).
 *
 * - cross-signing (synapse/rest/client/keys.py SigningKeyUploadServlet,
 *   handlers/e2e_keys.py): POST /keys/device_signing/upload stores a user's
 *   master / self-signing / user-signing keys — the first upload without
 *   user-interactive auth (MSC3967), the same keys again answered 200, other
 *   keys only after UIA (or with an application service's token);
 *   POST /keys/signatures/upload merges signatures into the signed device
 *   keys or master key (a device-list change of their owner); /keys/query
 *   answers `master_keys` and `self_signing_keys` of every user asked and
 *   `user_signing_keys` of the requester's own user. Signatures are stored
 *   as given (Synapse checks them; the clients here check them too).
 *
 * Simplified: no federation, no limit on to-device messages per sync.
 */
import { randomBytes } from 'node:crypto';
import type { Json, JsonObject } from './fake-homeserver.js';

/**
 * A user-visible error of the key endpoints (the fake turns it into a Matrix
 * error response); `body`: the whole response body instead of
 * {errcode, error} (a user-interactive-auth 401, which has none).
 */
export class E2eeError extends Error {
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
    readonly body?: JsonObject,
  ) {
    super(message);
    this.name = 'E2eeError';
  }
}

/**
 * User-interactive authentication (Client-Server API "User-interactive
 * authentication API") as Synapse's AuthHandler.validate_user_via_ui_auth
 * does it for the device-deletion endpoints: a request without `auth`
 * answers 401 `{flows, params, session}` (no errcode); `auth` of type
 * `m.login.password` with the user's password and that session passes (the
 * session is then done); a wrong password answers 401 with `errcode`
 * M_FORBIDDEN and the flows again; an unknown session 400. A user without a
 * password (an appservice user) is offered no flow it can complete.
 * Synapse lets an application service whose registration has
 * `io.element.msc4190: true` skip this for its users (MSC4190); the caller
 * decides that.
 */
export class FakeUia {
  private readonly sessions = new Map<string, string>();
  /** completed and failed attempts, for tests */
  readonly attempts: Array<{ userId: string; ok: boolean; type: string | undefined }> = [];

  check(userId: string, password: string | undefined, body: JsonObject): void {
    const flows: Json[] = password !== undefined ? [{ stages: ['m.login.password'] }] : [];
    const auth = body['auth'];
    if (!isObject(auth)) {
      const session = randomBytes(12).toString('base64url');
      this.sessions.set(session, userId);
      throw new E2eeError(401, '', 'user-interactive auth required', { flows, params: {}, session });
    }
    const session = auth['session'];
    if (typeof session !== 'string' || this.sessions.get(session) !== userId) throw new E2eeError(400, 'M_UNKNOWN', 'Unknown session ID');
    const type = typeof auth['type'] === 'string' ? auth['type'] : undefined;
    const identifier = auth['identifier'];
    const who = isObject(identifier) && identifier['type'] === 'm.id.user' ? identifier['user'] : auth['user'];
    const ok = type === 'm.login.password' && password !== undefined && auth['password'] === password && (who === userId || who === userId.slice(1).split(':')[0]);
    this.attempts.push({ userId, ok, type });
    if (type !== 'm.login.password' || password === undefined) throw new E2eeError(400, 'M_UNRECOGNIZED', `Unrecognised login type ${type ?? ''}`);
    if (!ok) throw new E2eeError(401, 'M_FORBIDDEN', 'Invalid username or password', { errcode: 'M_FORBIDDEN', error: 'Invalid username or password', completed: [], flows, params: {}, session });
    this.sessions.delete(session);
  }
}

interface DeviceKeys {
  keys: JsonObject;
  displayName: string | undefined;
}

interface FallbackKey {
  keyId: string;
  key: Json;
  used: boolean;
}

interface ToDeviceEntry {
  pos: number;
  event: JsonObject;
  /** returned by a /sync (only then can a later token acknowledge it) */
  returned: boolean;
}

/** What the fake tells the key server about rooms and positions. */
export interface E2eeHost {
  /** the next stream position (wakes long-polls) */
  bump(): number;
  /** users who share at least one joined room with `userId` at `pos` (itself included) */
  sharesRoomWith(userId: string, pos: number): Set<string>;
  /** the rooms `userId` joined in (after, upTo] with their members at upTo */
  newlyJoinedMembers(userId: string, after: number, upTo: number): Set<string>;
  /** the user's devices */
  devicesOf(userId: string): readonly string[];
  isLocal(userId: string): boolean;
  /** a to-device message was queued for a device (appservice transactions may carry it) */
  toDeviceQueued?(userId: string, deviceId: string, event: JsonObject): void;
  /** one-time keys, fallback keys or device keys changed (appservice transactions may carry counts and lists) */
  keysChanged?(): void;
}

const devKey = (userId: string, deviceId: string): string => `${userId}\u0000${deviceId}`;

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Canonical-enough JSON for "same key" comparisons (keys sorted). */
function canonical(v: Json): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(v[k] ?? null)}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** {signer: {keyId: sig}} maps merged, per signer. */
function mergeSignatures(a: JsonObject, b: JsonObject): JsonObject {
  const out: JsonObject = { ...a };
  for (const [signer, bySigner] of Object.entries(b)) {
    if (isObject(bySigner)) out[signer] = { ...(isObject(out[signer]) ? out[signer] : {}), ...bySigner };
  }
  return out;
}

export class FakeKeyServer {
  private readonly deviceKeys = new Map<string, DeviceKeys>();
  private readonly oneTimeKeys = new Map<string, Map<string, Json>>();
  private readonly fallbackKeys = new Map<string, Map<string, FallbackKey>>();
  private readonly inbox = new Map<string, ToDeviceEntry[]>();
  /** (user, pos) of every device-list change */
  private readonly changes: Array<{ userId: string; pos: number }> = [];
  /** devices whose to-device messages are held back (a slow federation link, for tests) */
  private readonly delayed = new Set<string>();
  /** (device, sender) pairs whose to-device messages are lost on the way (a federation failure, for tests) */
  private readonly lost = new Set<string>();
  /** every to-device message sent, for tests */
  readonly sent: Array<{ sender: string; type: string; recipient: string; deviceId: string; content: JsonObject; lost?: true }> = [];
  /** every /keys/upload body, for tests (what keys a device announced, in order) */
  readonly uploads: Array<{ userId: string; deviceId: string; body: JsonObject }> = [];

  /**
   * Signatures uploaded through /keys/signatures/upload, kept apart from the
   * keys they sign and merged in at query time (Synapse's
   * e2e_cross_signing_signatures): a device re-uploading its keys keeps them.
   * Key: devKey(user, device) or devKey(user, 'master').
   */
  private readonly signatures = new Map<string, JsonObject>();
  /** a user's cross-signing keys as uploaded */
  private readonly crossSigning = new Map<string, { master?: JsonObject; self_signing?: JsonObject; user_signing?: JsonObject }>();

  constructor(private readonly host: E2eeHost) {}

  /** A user's cross-signing key of one kind (undefined: none), for tests. */
  crossSigningKey(userId: string, kind: 'master' | 'self_signing' | 'user_signing'): JsonObject | undefined {
    return this.crossSigning.get(userId)?.[kind];
  }

  /**
   * POST /keys/device_signing/upload. `authenticate` runs the user-interactive
   * auth; it is called only when the user has cross-signing set up and the
   * keys differ (Synapse, MSC3967), unless `appService` (the AS token).
   */
  uploadSigningKeys(userId: string, body: JsonObject, appService: boolean, authenticate: () => void): JsonObject {
    const current = this.crossSigning.get(userId) ?? {};
    const kinds = ['master', 'self_signing', 'user_signing'] as const;
    const given = (k: (typeof kinds)[number]): JsonObject | undefined => {
      const v = body[`${k}_key`];
      return isObject(v) ? v : undefined;
    };
    const differs = kinds.some((k) => {
      const g = given(k);
      const c = current[k];
      return g !== undefined && (c === undefined || canonical({ ...g, signatures: null }) !== canonical({ ...c, signatures: null }));
    });
    if (!differs) return {};
    if (current.master !== undefined && !appService) authenticate();
    const next = { ...current };
    for (const k of kinds) {
      const g = given(k);
      if (g !== undefined) next[k] = g;
    }
    this.crossSigning.set(userId, next);
    this.changes.push({ userId, pos: this.host.bump() });
    queueMicrotask(() => this.host.keysChanged?.());
    return {};
  }

  /** POST /keys/signatures/upload: signatures merged into the device keys or master key they sign. */
  uploadSignatures(body: JsonObject): JsonObject {
    const failures: JsonObject = {};
    for (const [userId, byKey] of Object.entries(body)) {
      if (!isObject(byKey)) continue;
      for (const [keyId, signed] of Object.entries(byKey)) {
        if (!isObject(signed) || !isObject(signed['signatures'])) continue;
        const device = this.deviceKeys.get(devKey(userId, keyId));
        const master = this.crossSigning.get(userId)?.master;
        const masterKeyId = master && isObject(master['keys']) ? Object.keys(master['keys'])[0]?.split(':')[1] : undefined;
        const target = device ? devKey(userId, keyId) : keyId === masterKeyId ? devKey(userId, 'master') : undefined;
        if (target === undefined) {
          failures[userId] = { ...(isObject(failures[userId]) ? failures[userId] : {}), [keyId]: { errcode: 'M_NOT_FOUND', error: 'Unknown key' } };
          continue;
        }
        this.signatures.set(target, mergeSignatures(this.signatures.get(target) ?? {}, signed['signatures']));
        this.changes.push({ userId, pos: this.host.bump() });
      }
    }
    queueMicrotask(() => this.host.keysChanged?.());
    return { failures };
  }

  upload(userId: string, deviceId: string, body: JsonObject): JsonObject {
    this.uploads.push({ userId, deviceId, body });
    const k = devKey(userId, deviceId);
    const deviceKeys = body['device_keys'];
    if (isObject(deviceKeys)) {
      // Synapse takes the device from the access token, whatever the body says.
      const previous = this.deviceKeys.get(k);
      if (!previous || canonical(previous.keys) !== canonical(deviceKeys)) {
        this.deviceKeys.set(k, { keys: deviceKeys, displayName: previous?.displayName });
        this.changes.push({ userId, pos: this.host.bump() });
      }
    }
    // counts (and maybe device lists) changed: after the body is applied
    queueMicrotask(() => this.host.keysChanged?.());
    const otks = body['one_time_keys'];
    if (isObject(otks)) {
      const mine = this.oneTimeKeys.get(k) ?? new Map<string, Json>();
      // Checked first, so a refused upload adds nothing.
      for (const [keyId, key] of Object.entries(otks)) {
        const existing = mine.get(keyId);
        if (existing !== undefined && canonical(existing) !== canonical(key)) {
          throw new E2eeError(400, 'M_UNKNOWN', `One time key ${keyId} already exists. Old key: ${canonical(existing)}; new key: ${canonical(key)}`);
        }
      }
      for (const [keyId, key] of Object.entries(otks)) mine.set(keyId, key);
      this.oneTimeKeys.set(k, mine);
    }
    const fallback = body['fallback_keys'] ?? body['org.matrix.msc2732.fallback_keys'];
    if (isObject(fallback)) {
      const mine = this.fallbackKeys.get(k) ?? new Map<string, FallbackKey>();
      for (const [keyId, key] of Object.entries(fallback)) {
        const algorithm = keyId.split(':')[0] ?? keyId;
        const old = mine.get(algorithm);
        if (old && old.keyId === keyId && canonical(old.key) === canonical(key)) continue;
        mine.set(algorithm, { keyId, key, used: false });
      }
      this.fallbackKeys.set(k, mine);
    }
    return { one_time_key_counts: this.counts(userId, deviceId) };
  }

  counts(userId: string, deviceId: string): JsonObject {
    const counts: JsonObject = { signed_curve25519: 0 };
    for (const keyId of this.oneTimeKeys.get(devKey(userId, deviceId))?.keys() ?? []) {
      const algorithm = keyId.split(':')[0] ?? keyId;
      counts[algorithm] = ((counts[algorithm] as number | undefined) ?? 0) + 1;
    }
    return counts;
  }

  unusedFallbackTypes(userId: string, deviceId: string): string[] {
    return [...(this.fallbackKeys.get(devKey(userId, deviceId)) ?? new Map<string, FallbackKey>())].filter(([, f]) => !f.used).map(([alg]) => alg);
  }

  query(body: JsonObject, requester?: string): JsonObject {
    const wanted = body['device_keys'];
    if (!isObject(wanted)) throw new E2eeError(400, 'M_BAD_JSON', 'device_keys must be an object');
    const out: JsonObject = {};
    for (const [userId, list] of Object.entries(wanted)) {
      if (!Array.isArray(list)) throw new E2eeError(400, 'M_BAD_JSON', `device_keys.${userId} must be a list`);
      const devices = list.length === 0 ? this.host.devicesOf(userId) : list.filter((d): d is string => typeof d === 'string');
      const perUser: JsonObject = {};
      for (const deviceId of devices) {
        const stored = this.deviceKeys.get(devKey(userId, deviceId));
        if (!stored) continue;
        const unsigned: JsonObject = stored.displayName !== undefined ? { device_display_name: stored.displayName } : {};
        perUser[deviceId] = this.withSignatures({ ...stored.keys, unsigned }, devKey(userId, deviceId));
      }
      out[userId] = perUser;
    }
    const masters: JsonObject = {};
    const selfSigning: JsonObject = {};
    const userSigning: JsonObject = {};
    for (const userId of Object.keys(wanted)) {
      const cs = this.crossSigning.get(userId);
      if (cs?.master) masters[userId] = this.withSignatures({ ...cs.master }, devKey(userId, 'master'));
      if (cs?.self_signing) selfSigning[userId] = cs.self_signing;
      if (cs?.user_signing && userId === requester) userSigning[userId] = cs.user_signing;
    }
    return { device_keys: out, failures: {}, master_keys: masters, self_signing_keys: selfSigning, user_signing_keys: userSigning };
  }

  private withSignatures(keys: JsonObject, target: string): JsonObject {
    const extra = this.signatures.get(target);
    if (extra === undefined) return keys;
    return { ...keys, signatures: mergeSignatures(isObject(keys['signatures']) ? keys['signatures'] : {}, extra) };
  }

  claim(body: JsonObject): JsonObject {
    const wanted = body['one_time_keys'];
    if (!isObject(wanted)) throw new E2eeError(400, 'M_BAD_JSON', 'one_time_keys must be an object');
    const out: JsonObject = {};
    for (const [userId, devices] of Object.entries(wanted)) {
      if (!isObject(devices)) continue;
      const perUser: JsonObject = {};
      for (const [deviceId, algorithm] of Object.entries(devices)) {
        if (typeof algorithm !== 'string') continue;
        const k = devKey(userId, deviceId);
        const mine = this.oneTimeKeys.get(k);
        const keyId = [...(mine?.keys() ?? [])].sort().find((id) => id.startsWith(`${algorithm}:`));
        if (mine && keyId !== undefined) {
          perUser[deviceId] = { [keyId]: mine.get(keyId) ?? null };
          mine.delete(keyId);
          queueMicrotask(() => this.host.keysChanged?.());
          continue;
        }
        const fallback = this.fallbackKeys.get(k)?.get(algorithm);
        if (fallback) {
          fallback.used = true;
          perUser[deviceId] = { [fallback.keyId]: fallback.key };
        }
      }
      out[userId] = perUser;
    }
    return { one_time_keys: out, failures: {} };
  }

  sendToDevice(sender: string, type: string, body: JsonObject): void {
    const messages = body['messages'];
    if (!isObject(messages)) throw new E2eeError(400, 'M_BAD_JSON', 'messages must be an object');
    for (const [userId, byDevice] of Object.entries(messages)) {
      if (!isObject(byDevice) || !this.host.isLocal(userId)) continue;
      for (const [target, content] of Object.entries(byDevice)) {
        if (!isObject(content)) continue;
        const devices = target === '*' ? this.host.devicesOf(userId) : [target];
        for (const deviceId of devices) {
          const k = devKey(userId, deviceId);
          if (this.lost.has(`${k}\u0000${sender}`)) {
            this.sent.push({ sender, type, recipient: userId, deviceId, content, lost: true });
            continue;
          }
          const list = this.inbox.get(k) ?? [];
          list.push({ pos: this.host.bump(), event: { type, sender, content }, returned: false });
          this.inbox.set(k, list);
          this.sent.push({ sender, type, recipient: userId, deviceId, content });
          this.host.toDeviceQueued?.(userId, deviceId, { type, sender, content });
        }
      }
    }
  }

  /** The E2EE parts of a /sync answer for one device; `since` acknowledges (deletes) what came before it. */
  syncParts(userId: string, deviceId: string | undefined, since: number | undefined, upTo: number): { parts: JsonObject; empty: boolean } {
    let empty = true;
    const toDevice: JsonObject[] = [];
    if (deviceId !== undefined) {
      const k = devKey(userId, deviceId);
      const kept = (this.inbox.get(k) ?? []).filter((e) => since === undefined || e.pos > since || !e.returned);
      this.inbox.set(k, kept);
      if (!this.delayed.has(k)) {
        for (const e of kept) {
          if (e.pos > upTo) continue;
          e.returned = true;
          toDevice.push(e.event);
        }
      }
    }
    if (toDevice.length > 0) empty = false;
    const changed = new Set<string>();
    const left = new Set<string>();
    if (since !== undefined) {
      const sharedNow = this.host.sharesRoomWith(userId, upTo);
      for (const c of this.changes) if (c.pos > since && c.pos <= upTo && sharedNow.has(c.userId)) changed.add(c.userId);
      for (const u of this.host.newlyJoinedMembers(userId, since, upTo)) changed.add(u);
      // someone joined a room we are in
      const sharedBefore = this.host.sharesRoomWith(userId, since);
      for (const u of sharedNow) if (!sharedBefore.has(u)) changed.add(u);
      for (const u of sharedBefore) if (!sharedNow.has(u)) left.add(u);
    }
    if (changed.size > 0 || left.size > 0) empty = false;
    const parts: JsonObject = {
      to_device: { events: toDevice },
      device_lists: { changed: [...changed], left: [...left] },
      device_one_time_keys_count: deviceId !== undefined ? this.counts(userId, deviceId) : {},
    };
    if (deviceId !== undefined) {
      const unused = this.unusedFallbackTypes(userId, deviceId);
      parts['device_unused_fallback_key_types'] = unused;
      parts['org.matrix.msc2732.device_unused_fallback_key_types'] = unused;
    }
    return { parts, empty };
  }

  /**
   * Holds back (true) or releases (false) the to-device messages for a
   * device: while held they stay queued, undelivered, as when they come
   * over a slow federation link. Releasing wakes the device's long-poll.
   */
  delayToDevice(userId: string, deviceId: string, delayed: boolean): void {
    const k = devKey(userId, deviceId);
    if (delayed) this.delayed.add(k);
    else if (this.delayed.delete(k)) this.host.bump();
  }

  /**
   * Loses (true) or delivers again (false) the to-device messages `sender`
   * sends to a device from now on: a lost one is recorded in `sent` with
   * `lost: true` and never delivered, as when a room key share does not
   * make it over federation.
   */
  loseToDevice(userId: string, deviceId: string, sender: string, lost: boolean): void {
    const k = `${devKey(userId, deviceId)}\u0000${sender}`;
    if (lost) this.lost.add(k);
    else this.lost.delete(k);
  }

  /**
   * A device was deleted (Synapse's delete_devices): its keys, one-time and
   * fallback keys and queued to-device messages go, and its user's device
   * list changed for everyone sharing a room with them.
   */
  deleteDevice(userId: string, deviceId: string): void {
    const k = devKey(userId, deviceId);
    const had = this.deviceKeys.delete(k);
    this.oneTimeKeys.delete(k);
    this.fallbackKeys.delete(k);
    this.inbox.delete(k);
    if (had) this.changes.push({ userId, pos: this.host.bump() });
    queueMicrotask(() => this.host.keysChanged?.());
  }

  /** The devices that uploaded any key, for MSC3202 counts in appservice transactions. */
  keyedDevices(): Array<{ userId: string; deviceId: string }> {
    const keys = new Set([...this.deviceKeys.keys(), ...this.oneTimeKeys.keys(), ...this.fallbackKeys.keys()]);
    return [...keys].map((k) => {
      const [userId = '', deviceId = ''] = k.split('\u0000');
      return { userId, deviceId };
    });
  }

  /** Users whose device keys changed in (after, upTo]. */
  changedBetween(after: number, upTo: number): string[] {
    return [...new Set(this.changes.filter((c) => c.pos > after && c.pos <= upTo).map((c) => c.userId))];
  }

  /** Device keys a device uploaded (undefined: none yet). */
  keysOf(userId: string, deviceId: string): JsonObject | undefined {
    return this.deviceKeys.get(devKey(userId, deviceId))?.keys;
  }

  /** One-time keys a device has on the server now. */
  oneTimeKeyCount(userId: string, deviceId: string): number {
    return this.oneTimeKeys.get(devKey(userId, deviceId))?.size ?? 0;
  }

  /** Messages waiting for a device (not yet acknowledged by a later sync). */
  pendingToDevice(userId: string, deviceId: string): number {
    return this.inbox.get(devKey(userId, deviceId))?.length ?? 0;
  }
}
