/**
 * A room member's end-to-end-encrypting client for tests: its own OlmMachine
 * (@matrix-org/matrix-sdk-crypto-wasm, the Rust crypto Element uses, with an
 * in-memory store) driven over real HTTP against the fake homeserver. It
 * logs in as a device, uploads its keys, tracks the room's members, shares
 * its Megolm room key with their devices, sends m.room.encrypted events and
 * decrypts what the others send, and its encrypted attachments (the spec's
 * AES-256-CTR files, written here with Node's crypto on their own). Nothing
 * here is shared with the adapter's crypto (adapters/matrix/crypto/): the
 * two ends of a test are independent.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import * as wasm from '@matrix-org/matrix-sdk-crypto-wasm';

type Json = Record<string, unknown>;

export interface PeerMessage {
  readonly eventId: string;
  readonly roomId: string;
  readonly sender: string;
  /** the decrypted event type and content (undefined when it could not be decrypted) */
  readonly type?: string;
  readonly content?: Json;
  /** why decryption failed */
  readonly error?: string;
  /** the device the sender used, as the Megolm session tells */
  readonly senderDevice?: string;
  readonly senderCurve25519?: string;
}

export interface EncryptOptions {
  /** share the room key with verified devices only; the Rust crypto sends the others m.room_key.withheld (m.unverified) */
  readonly onlyTrustedDevices?: boolean;
}

let wasmReady: Promise<void> | undefined;

/** Loads the wasm module once per process. */
export function loadCryptoWasm(): Promise<void> {
  wasmReady ??= wasm.initAsync();
  return wasmReady;
}

export class E2eePeer {
  readonly received: PeerMessage[] = [];
  private since: string | undefined;
  private txn = 0;

  private constructor(
    private readonly baseUrl: string,
    private readonly token: string,
    readonly userId: string,
    readonly deviceId: string,
    readonly machine: wasm.OlmMachine,
  ) {}

  /** Logs in with a password as `deviceId` and uploads the device's keys. */
  static login(baseUrl: string, userId: string, password: string, deviceId: string): Promise<E2eePeer> {
    return E2eePeer.loginWith(baseUrl, userId, deviceId, { type: 'm.login.password', identifier: { type: 'm.id.user', user: userId }, password, device_id: deviceId });
  }

  /** Logs an application service's user in as `deviceId` (m.login.application_service with the AS token) and uploads the device's keys. */
  static loginAppService(baseUrl: string, asToken: string, userId: string, deviceId: string): Promise<E2eePeer> {
    return E2eePeer.loginWith(baseUrl, userId, deviceId, { type: 'm.login.application_service', identifier: { type: 'm.id.user', user: userId }, device_id: deviceId }, asToken);
  }

  private static async loginWith(baseUrl: string, userId: string, deviceId: string, login: Json, bearer?: string): Promise<E2eePeer> {
    await loadCryptoWasm();
    const res = await fetch(`${baseUrl}/_matrix/client/v3/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...(bearer !== undefined ? { Authorization: `Bearer ${bearer}` } : {}) },
      body: JSON.stringify(login),
    });
    const body = (await res.json()) as Json;
    if (!res.ok || typeof body['access_token'] !== 'string') throw new Error(`peer login failed: ${res.status} ${JSON.stringify(body)}`);
    const machine = await wasm.OlmMachine.initialize(new wasm.UserId(userId), new wasm.DeviceId(deviceId));
    const peer = new E2eePeer(baseUrl, body['access_token'], userId, deviceId, machine);
    await peer.flush();
    return peer;
  }

  get curve25519(): string {
    return this.machine.identityKeys.curve25519.toBase64();
  }

  async request(method: string, path: string, body?: unknown): Promise<Json> {
    const res = await fetch(this.baseUrl + path, {
      method,
      headers: { Authorization: `Bearer ${this.token}`, 'Content-Type': 'application/json' },
      ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
    });
    const json = (await res.json()) as Json;
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  }

  /** Sends every outgoing request of the machine and marks it sent, until none is left. */
  async flush(): Promise<void> {
    for (let round = 0; round < 10; round++) {
      const requests = await this.machine.outgoingRequests();
      if (requests.length === 0) return;
      for (const r of requests) await this.send(r);
    }
  }

  private async send(r: wasm.KeysUploadRequest | wasm.KeysQueryRequest | wasm.KeysClaimRequest | wasm.ToDeviceRequest | wasm.SignatureUploadRequest | wasm.RoomMessageRequest | wasm.KeysBackupRequest): Promise<void> {
    let res: Json;
    if (r instanceof wasm.KeysUploadRequest) res = await this.request('POST', '/_matrix/client/v3/keys/upload', r.body);
    else if (r instanceof wasm.KeysQueryRequest) res = await this.request('POST', '/_matrix/client/v3/keys/query', r.body);
    else if (r instanceof wasm.KeysClaimRequest) res = await this.request('POST', '/_matrix/client/v3/keys/claim', r.body);
    else if (r instanceof wasm.ToDeviceRequest) {
      res = await this.request('PUT', `/_matrix/client/v3/sendToDevice/${encodeURIComponent(r.event_type)}/${encodeURIComponent(r.txn_id)}`, r.body);
    } else if (r instanceof wasm.SignatureUploadRequest) {
      res = await this.request('POST', '/_matrix/client/v3/keys/signatures/upload', r.body);
    } else if (r instanceof wasm.RoomMessageRequest) {
      res = await this.request('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(r.room_id)}/send/${encodeURIComponent(r.event_type)}/${encodeURIComponent(r.txn_id)}`, r.body);
    } else {
      // key backups are not used by the tests
      res = {};
    }
    if (r.id !== undefined) await this.machine.markRequestAsSent(r.id, r.type, JSON.stringify(res));
  }

  /** One /sync (no wait): to-device, device lists and key counts into the machine, timeline events decrypted into `received`. */
  async sync(): Promise<void> {
    const query = this.since === undefined ? '?timeout=0' : `?timeout=0&since=${encodeURIComponent(this.since)}`;
    const res = await this.request('GET', `/_matrix/client/v3/sync${query}`);
    const toDevice = ((res['to_device'] as Json | undefined)?.['events'] as unknown[] | undefined) ?? [];
    const lists = (res['device_lists'] as Json | undefined) ?? {};
    const ids = (v: unknown): wasm.UserId[] => (Array.isArray(v) ? v.filter((u): u is string => typeof u === 'string').map((u) => new wasm.UserId(u)) : []);
    const counts = new Map<string, number>(Object.entries((res['device_one_time_keys_count'] as Record<string, number> | undefined) ?? {}));
    const fallback = new Set<string>((res['device_unused_fallback_key_types'] as string[] | undefined) ?? []);
    await this.machine.receiveSyncChanges(JSON.stringify(toDevice), new wasm.DeviceLists(ids(lists['changed']), ids(lists['left'])), counts, fallback);
    await this.flush();
    const join = ((res['rooms'] as Json | undefined)?.['join'] as Record<string, Json> | undefined) ?? {};
    for (const [roomId, room] of Object.entries(join)) {
      const events = ((room['timeline'] as Json | undefined)?.['events'] as Json[] | undefined) ?? [];
      for (const ev of events) {
        if (ev['type'] !== 'm.room.encrypted' || ev['sender'] === this.userId) continue;
        this.received.push(await this.decrypt(ev, roomId));
      }
    }
    this.since = typeof res['next_batch'] === 'string' ? res['next_batch'] : this.since;
  }

  async decrypt(ev: Json, roomId: string): Promise<PeerMessage> {
    const base = { eventId: String(ev['event_id']), roomId, sender: String(ev['sender']) };
    try {
      const d = await this.machine.decryptRoomEvent(JSON.stringify({ ...ev, room_id: roomId }), new wasm.RoomId(roomId), new wasm.DecryptionSettings(wasm.TrustRequirement.Untrusted));
      const clear = JSON.parse(d.event) as Json;
      return {
        ...base,
        type: String(clear['type']),
        content: (clear['content'] as Json | undefined) ?? {},
        ...(d.senderDevice ? { senderDevice: d.senderDevice.toString() } : {}),
        senderCurve25519: d.senderCurve25519Key,
      };
    } catch (err) {
      const description = typeof err === 'object' && err !== null && 'description' in err ? String((err as { description: unknown }).description) : undefined;
      return { ...base, error: description ?? (err instanceof Error ? err.message : String(err)) };
    }
  }

  /** Syncs until `predicate` holds for a received message; throws after `timeoutMs`. */
  async waitFor(predicate: (m: PeerMessage) => boolean, timeoutMs = 30_000): Promise<PeerMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.received.find(predicate);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`peer ${this.userId}/${this.deviceId}: no matching message within ${timeoutMs} ms; received ${JSON.stringify(this.received)}`);
      await this.sync();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Encrypts `content` for every joined member's devices (sharing the room key first) and sends it; returns the event id. */
  async sendEncrypted(roomId: string, type: string, content: Json, opts: EncryptOptions = {}): Promise<string> {
    return this.putEncrypted(roomId, await this.encrypt(roomId, type, content, opts));
  }

  /** PUTs an m.room.encrypted content made by encrypt(); returns the event id. */
  async putEncrypted(roomId: string, encrypted: Json): Promise<string> {
    const res = await this.request('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.encrypted/peer-${Date.now()}-${this.txn++}`, encrypted);
    return String(res['event_id']);
  }

  /**
   * The m.room.encrypted content for `content`, the room key shared with
   * every joined member's devices first (which also replaces a session past
   * its rotation period: encrypting with an expired one panics in the wasm).
   */
  async encrypt(roomId: string, type: string, content: Json, opts: EncryptOptions = {}): Promise<Json> {
    const joined = (await this.request('GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/joined_members`))['joined'] as Json;
    const members = Object.keys(joined);
    await this.machine.updateTrackedUsers(members.map((u) => new wasm.UserId(u)));
    await this.flush();
    const claim = await this.machine.getMissingSessions(members.map((u) => new wasm.UserId(u)));
    if (claim) await this.send(claim);
    const settings = new wasm.EncryptionSettings();
    // A test's bridge device is not verified: share with it as Element does by default
    // (or, as Element's "only send to verified sessions", withhold the key from it: m.room_key.withheld, code m.unverified).
    settings.sharingStrategy = opts.onlyTrustedDevices === true ? wasm.CollectStrategy.onlyTrustedDevices() : wasm.CollectStrategy.allDevices();
    const shares = await this.machine.shareRoomKey(new wasm.RoomId(roomId), members.map((u) => new wasm.UserId(u)), settings);
    for (const r of shares) await this.send(r);
    return JSON.parse(await this.machine.encryptRoomEvent(new wasm.RoomId(roomId), type, JSON.stringify(content))) as Json;
  }

  /** Encrypts a file as a client does (spec "Sending encrypted attachments") and uploads the ciphertext; the EncryptedFile. */
  async uploadEncrypted(plain: Uint8Array): Promise<{ file: Json; ciphertext: Buffer }> {
    const key = randomBytes(32);
    const iv = Buffer.concat([randomBytes(8), Buffer.alloc(8)]);
    const cipher = createCipheriv('aes-256-ctr', key, iv);
    const ciphertext = Buffer.concat([cipher.update(plain), cipher.final()]);
    const res = await fetch(`${this.baseUrl}/_matrix/media/v3/upload`, { method: 'POST', headers: { Authorization: `Bearer ${this.token}`, 'Content-Type': 'application/octet-stream' }, body: ciphertext });
    const body = (await res.json()) as Json;
    if (!res.ok) throw new Error(`upload: ${res.status} ${JSON.stringify(body)}`);
    const b64 = (b: Buffer): string => b.toString('base64').replace(/=+$/, '');
    const file = {
      url: String(body['content_uri']),
      key: { kty: 'oct', key_ops: ['encrypt', 'decrypt'], alg: 'A256CTR', k: key.toString('base64url'), ext: true },
      iv: b64(iv),
      hashes: { sha256: b64(createHash('sha256').update(ciphertext).digest()) },
      v: 'v2',
    };
    return { file, ciphertext };
  }

  /** Downloads a file of the media repository through the authenticated endpoint (spec v1.11). */
  async download(mxc: string): Promise<Buffer> {
    const m = /^mxc:\/\/([^/]+)\/([^/]+)$/.exec(mxc);
    if (!m) throw new Error(`not an mxc URI: ${mxc}`);
    const res = await fetch(`${this.baseUrl}/_matrix/client/v1/media/download/${m[1] ?? ''}/${m[2] ?? ''}`, { headers: { Authorization: `Bearer ${this.token}` } });
    if (!res.ok) throw new Error(`download ${mxc}: ${res.status}`);
    return Buffer.from(await res.arrayBuffer());
  }

  /** Downloads, checks and decrypts the file an event's `file` describes, as a member's client does. */
  async downloadEncrypted(file: Json): Promise<Buffer> {
    const ciphertext = await this.download(String(file['url']));
    return decryptFile(ciphertext, file);
  }

  /**
   * Marks another device as verified on this device (what a user does in
   * Element after comparing the device's fingerprint): the Rust crypto then
   * answers that device's room key requests if it is one of our own.
   * Throws when this device does not know it yet (sync first).
   */
  async verifyDevice(userId: string, deviceId: string): Promise<void> {
    const device = await this.machine.getDevice(new wasm.UserId(userId), new wasm.DeviceId(deviceId));
    if (!device) throw new Error(`peer ${this.userId}/${this.deviceId} does not know ${userId}/${deviceId}`);
    await device.setLocalTrust(wasm.LocalTrust.Verified);
  }

  /** Sets up this user's cross-signing as Element does at first login (first upload: no user-interactive auth). */
  async setUpCrossSigning(): Promise<void> {
    const r = await this.machine.bootstrapCrossSigning(true);
    if (r.uploadKeysRequest instanceof wasm.KeysUploadRequest) await this.send(r.uploadKeysRequest);
    await this.request('POST', '/_matrix/client/v3/keys/device_signing/upload', r.uploadSigningKeysRequest.body);
    await this.send(r.uploadSignaturesRequest);
  }

  /**
   * Verifies another user (what "Verify user" in Element ends with): their
   * master key signed with this user's user-signing key and uploaded. Their
   * devices signed by their own self-signing key are then trusted here.
   */
  async verifyUser(userId: string): Promise<void> {
    await this.machine.updateTrackedUsers([new wasm.UserId(userId)]);
    await this.send(this.machine.queryKeysForUsers([new wasm.UserId(userId)]));
    const identity = await this.machine.getIdentity(new wasm.UserId(userId));
    if (!(identity instanceof wasm.OtherUserIdentity)) throw new Error(`no cross-signing identity known for ${userId}`);
    await this.send(await identity.verify());
  }

  /**
   * Deletes one of this user's devices as Element's "Sign out" of a session
   * does: DELETE /devices/{id}, answering the user-interactive auth with the
   * password (Synapse then drops its keys and tells the device-list change).
   */
  async deleteDevice(deviceId: string, password: string): Promise<void> {
    const path = `/_matrix/client/v3/devices/${encodeURIComponent(deviceId)}`;
    const first = await fetch(this.baseUrl + path, { method: 'DELETE', headers: { Authorization: `Bearer ${this.token}`, 'Content-Type': 'application/json' }, body: '{}' });
    const uia = (await first.json()) as Json;
    if (first.ok) return;
    if (first.status !== 401 || typeof uia['session'] !== 'string') throw new Error(`DELETE ${path}: ${first.status} ${JSON.stringify(uia)}`);
    await this.request('DELETE', path, { auth: { type: 'm.login.password', identifier: { type: 'm.id.user', user: this.userId }, password, session: uia['session'] } });
  }

  close(): void {
    this.machine.close();
  }
}

/** The client side of an encrypted attachment: SHA-256 of the ciphertext checked, then AES-256-CTR with the JWK's key. */
export function decryptFile(ciphertext: Buffer, file: Json): Buffer {
  const hashes = file['hashes'] as Json | undefined;
  const key = file['key'] as Json | undefined;
  if (file['v'] !== 'v2' || key?.['alg'] !== 'A256CTR') throw new Error(`not a v2 A256CTR file: ${JSON.stringify(file)}`);
  const hash = createHash('sha256').update(ciphertext).digest('base64').replace(/=+$/, '');
  if (hash !== String(hashes?.['sha256']).replace(/=+$/, '')) throw new Error('attachment hash mismatch');
  const iv = Buffer.from(String(file['iv']), 'base64');
  const decipher = createDecipheriv('aes-256-ctr', Buffer.from(String(key['k']), 'base64url'), iv);
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
}
