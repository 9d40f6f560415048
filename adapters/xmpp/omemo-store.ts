/**
 * The OMEMO device's keys and sessions (issue 26), in the adapter's sealed
 * namespace of the log's state store (`xmpp-omemo:<name>`, AES-256-GCM under
 * the configured `omemoSecret`): identity, signed pre-key, one-time pre-keys,
 * sessions, the identity keys seen per contact device with their trust, and
 * the device lists of contacts.
 *
 * The Signal library writes through the `StorageType` interface; those writes
 * are staged (`pending`) and reach the sealed store only on `commit()`. Each
 * decryption commits after the event is in the log and before the archive
 * position moves (ingest.ts): a kill -9 before the commit decrypts the message
 * again from the old state (the append is idempotent); one after it finds the
 * position behind and the message key used, which omemo.ts reads as a
 * message already bridged. An encryption commits before the stanza is sent,
 * so a message key is never used twice. Each operation reads afresh from the
 * sealed store (`OmemoDevice.lock`): another replica may have held the lease.
 */
import type { SealedStore } from '../../src/core/ports.js';
import type { XmppAdapterConfig } from './config.js';
import type { Direction, KeyPairType, StorageType } from '@privacyresearch/libsignal-protocol-typescript';

const enc = new TextEncoder();
const dec = new TextDecoder();

export type TrustLevel = 'blind' | 'verified' | 'untrusted';

/** One contact device's identity as we saw it first (and how far we trust it). */
export interface KnownIdentity {
  /** the 33-byte identity key (0x05 + Curve25519), base64 */
  readonly key: string;
  readonly trust: TrustLevel;
  readonly firstSeen: number;
}

/** Our device: what the bundle publishes, created once and kept. */
export interface OwnDevice {
  readonly deviceId: number;
  readonly registrationId: number;
  readonly identity: KeyPairType;
  readonly signedPreKeyId: number;
  /** when the current signed pre-key was made (rotation) */
  readonly signedPreKeyCreated: number;
  /** the next one-time pre-key id to hand out */
  readonly nextPreKeyId: number;
  readonly created: number;
}

export const b64 = (b: ArrayBuffer | Uint8Array): string => Buffer.from(b instanceof ArrayBuffer ? new Uint8Array(b) : b).toString('base64');
export const unb64 = (s: string): ArrayBuffer => {
  const buf = Buffer.from(s, 'base64');
  return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
};

function keyPairToJson(kp: KeyPairType): { pub: string; priv: string } {
  return { pub: b64(kp.pubKey), priv: b64(kp.privKey) };
}
function keyPairFromJson(v: unknown): KeyPairType | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const { pub, priv } = v as { pub?: unknown; priv?: unknown };
  return typeof pub === 'string' && typeof priv === 'string' ? { pubKey: unb64(pub), privKey: unb64(priv) } : undefined;
}

/** The fingerprint clients show: the identity key's 32 Curve25519 bytes in hex, in groups of 8. */
export function fingerprintOf(identityKey: ArrayBuffer | Uint8Array): string {
  const bytes = identityKey instanceof ArrayBuffer ? new Uint8Array(identityKey) : identityKey;
  const raw = bytes.length === 33 ? bytes.subarray(1) : bytes;
  return (Buffer.from(raw).toString('hex').match(/.{8}/g) ?? []).join(' ');
}

/** A fingerprint as an operator may write it (spaces, colons, upper case, the 05 prefix): 64 hex digits. */
export function normaliseFingerprint(text: string): string {
  const hex = text.replace(/[\s:]/g, '').toLowerCase();
  return hex.length === 66 && hex.startsWith('05') ? hex.slice(2) : hex;
}

export interface TrustPolicy {
  readonly mode: 'blind' | 'manual';
  /** bare JID → fingerprints (normalised) the operator verified */
  readonly verified: ReadonlyMap<string, ReadonlySet<string>>;
}

export class OmemoStore implements StorageType {
  /** what the sealed store holds, as far as read (null: known absent) */
  private readonly cache = new Map<string, Uint8Array | null>();
  /** the library's writes not yet committed (null: a deletion) */
  private readonly pending = new Map<string, Uint8Array | null>();
  /** pre-keys the library removed (used by a key exchange) since the last commit */
  usedPreKeys: number[] = [];
  own: OwnDevice | undefined;

  constructor(
    private readonly sealed: SealedStore,
    private readonly trust: TrustPolicy,
  ) {}

  // --- raw access, staged

  async read(key: string): Promise<Uint8Array | undefined> {
    if (this.pending.has(key)) return this.pending.get(key) ?? undefined;
    if (this.cache.has(key)) return this.cache.get(key) ?? undefined;
    const value = await this.sealed.get(key);
    this.cache.set(key, value ?? null);
    return value;
  }

  async readJson(key: string): Promise<unknown> {
    const raw = await this.read(key);
    if (raw === undefined) return undefined;
    return JSON.parse(dec.decode(raw)) as unknown;
  }

  stage(key: string, value: unknown): void {
    this.pending.set(key, enc.encode(JSON.stringify(value)));
  }

  stageDelete(key: string): void {
    this.pending.set(key, null);
  }

  /** Writes every staged change to the sealed store; resolves once all are durable. */
  async commit(): Promise<void> {
    const entries = [...this.pending];
    for (const [key, value] of entries) {
      if (value === null) await this.sealed.delete(key);
      else await this.sealed.set(key, value);
      this.cache.set(key, value);
    }
    for (const [key, value] of entries) if (this.pending.get(key) === value) this.pending.delete(key);
  }

  /** Forgets staged changes (the message they came with was not appended): the durable state stays as it was. */
  discard(): void {
    this.pending.clear();
    this.usedPreKeys = [];
  }

  /** Forgets what was read (not what is staged): the next reads come from the sealed store. */
  forgetReads(): void {
    this.cache.clear();
  }

  get dirty(): boolean {
    return this.pending.size > 0;
  }

  // --- our device

  async loadOwn(): Promise<OwnDevice | undefined> {
    const v = (await this.readJson('own')) as
      | { deviceId?: unknown; registrationId?: unknown; identity?: unknown; signedPreKeyId?: unknown; signedPreKeyCreated?: unknown; nextPreKeyId?: unknown; created?: unknown }
      | undefined;
    if (v === undefined) return undefined;
    const identity = keyPairFromJson(v.identity);
    if (identity === undefined || typeof v.deviceId !== 'number' || typeof v.registrationId !== 'number' || typeof v.signedPreKeyId !== 'number' || typeof v.nextPreKeyId !== 'number') {
      throw new Error('the stored OMEMO device record is not readable');
    }
    const created = typeof v.created === 'number' ? v.created : 0;
    this.own = {
      deviceId: v.deviceId,
      registrationId: v.registrationId,
      identity,
      signedPreKeyId: v.signedPreKeyId,
      signedPreKeyCreated: typeof v.signedPreKeyCreated === 'number' ? v.signedPreKeyCreated : created,
      nextPreKeyId: v.nextPreKeyId,
      created,
    };
    return this.own;
  }

  stageOwn(own: OwnDevice): void {
    this.own = own;
    this.stage('own', {
      deviceId: own.deviceId,
      registrationId: own.registrationId,
      identity: keyPairToJson(own.identity),
      signedPreKeyId: own.signedPreKeyId,
      signedPreKeyCreated: own.signedPreKeyCreated,
      nextPreKeyId: own.nextPreKeyId,
      created: own.created,
    });
  }

  async signedPreKeyPublic(keyId: number): Promise<{ pub: ArrayBuffer; signature: ArrayBuffer } | undefined> {
    const v = (await this.readJson(`signed:${keyId}`)) as { pub?: string; signature?: string } | undefined;
    return v?.pub !== undefined && v.signature !== undefined ? { pub: unb64(v.pub), signature: unb64(v.signature) } : undefined;
  }

  stageSignedPreKey(keyId: number, kp: KeyPairType, signature: ArrayBuffer): void {
    this.stage(`signed:${keyId}`, { ...keyPairToJson(kp), signature: b64(signature) });
  }

  stagePreKey(keyId: number, kp: KeyPairType): void {
    this.stage(`prekey:${keyId}`, keyPairToJson(kp));
  }

  /** The public halves of the pre-keys on offer, by id (listed in `prekeys`). */
  async preKeysOnOffer(): Promise<Array<{ keyId: number; pub: ArrayBuffer }>> {
    const ids = ((await this.readJson('prekeys')) as number[] | undefined) ?? [];
    const out: Array<{ keyId: number; pub: ArrayBuffer }> = [];
    for (const keyId of ids) {
      const kp = keyPairFromJson(await this.readJson(`prekey:${keyId}`));
      if (kp) out.push({ keyId, pub: kp.pubKey });
    }
    return out;
  }

  async preKeyIds(): Promise<number[]> {
    return ((await this.readJson('prekeys')) as number[] | undefined) ?? [];
  }

  stagePreKeyIds(ids: readonly number[]): void {
    this.stage('prekeys', ids);
  }

  // --- contacts' device lists and identities

  async deviceList(jid: string): Promise<number[] | undefined> {
    return (await this.readJson(`devices:${jid}`)) as number[] | undefined;
  }

  stageDeviceList(jid: string, ids: readonly number[]): void {
    this.stage(`devices:${jid}`, ids);
  }

  async knownIdentity(address: string): Promise<KnownIdentity | undefined> {
    return (await this.readJson(`identity:${address}`)) as KnownIdentity | undefined;
  }

  /** Whether we trust this identity key for `jid` under the configured policy (blind trust before verification, or manual). */
  trusts(jid: string, identityKey: ArrayBuffer): boolean {
    const verified = this.trust.verified.get(jid);
    const fp = normaliseFingerprint(fingerprintOf(identityKey));
    if (verified?.has(fp)) return true;
    // Blind trust before verification: until one key of the contact is verified, trust what we see.
    return this.trust.mode === 'blind' && (verified === undefined || verified.size === 0);
  }

  // --- StorageType (the Signal library)

  async getIdentityKeyPair(): Promise<KeyPairType | undefined> {
    return this.own?.identity;
  }

  async getLocalRegistrationId(): Promise<number | undefined> {
    return this.own?.registrationId;
  }

  async isTrustedIdentity(identifier: string, identityKey: ArrayBuffer, _direction: Direction): Promise<boolean> {
    return this.trusts(identifier, identityKey);
  }

  async saveIdentity(encodedAddress: string, publicKey: ArrayBuffer): Promise<boolean> {
    const known = await this.knownIdentity(encodedAddress);
    const key = b64(publicKey);
    if (known?.key === key) return false;
    const jid = encodedAddress.slice(0, encodedAddress.lastIndexOf('.'));
    this.stage(`identity:${encodedAddress}`, { key, trust: this.trusts(jid, publicKey) ? (this.trust.verified.get(jid)?.size ? 'verified' : 'blind') : 'untrusted', firstSeen: Date.now() } satisfies KnownIdentity);
    return known !== undefined;
  }

  async loadPreKey(keyId: string | number): Promise<KeyPairType | undefined> {
    return keyPairFromJson(await this.readJson(`prekey:${keyId}`));
  }

  async storePreKey(keyId: number | string, keyPair: KeyPairType): Promise<void> {
    this.stage(`prekey:${keyId}`, keyPairToJson(keyPair));
  }

  async removePreKey(keyId: number | string): Promise<void> {
    this.stageDelete(`prekey:${keyId}`);
    this.usedPreKeys.push(Number(keyId));
  }

  async storeSession(encodedAddress: string, record: string): Promise<void> {
    this.pending.set(`session:${encodedAddress}`, enc.encode(record));
  }

  async loadSession(encodedAddress: string): Promise<string | undefined> {
    const raw = await this.read(`session:${encodedAddress}`);
    return raw === undefined ? undefined : dec.decode(raw);
  }

  async loadSignedPreKey(keyId: number | string): Promise<KeyPairType | undefined> {
    return keyPairFromJson(await this.readJson(`signed:${keyId}`));
  }

  async storeSignedPreKey(keyId: number | string, keyPair: KeyPairType): Promise<void> {
    const existing = (await this.readJson(`signed:${keyId}`)) as { signature?: string } | undefined;
    this.stage(`signed:${keyId}`, { ...keyPairToJson(keyPair), signature: existing?.signature });
  }

  async removeSignedPreKey(keyId: number | string): Promise<void> {
    this.stageDelete(`signed:${keyId}`);
  }
}

export class OmemoDevice {
  readonly store: OmemoStore;
  own!: OwnDevice;
  fingerprint = '';
  /** `ready` once the device is loaded; `published` once this session announced it */
  state: 'loading' | 'ready' | 'published' | 'failed' = 'loading';
  error: string | undefined;
  /** a stored device id whose keys are gone (a lost store): the new device replaced it */
  lostDeviceId: number | undefined;
  /** bare JID → device ids and when they were fetched */
  readonly deviceLists = new Map<string, { ids: number[]; at: number }>();
  readonly counters = { decrypted: 0, encrypted: 0, replayed: 0, failures: 0, sessionsBuilt: 0, preKeysReplaced: 0, untrusted: 0 };
  private tail: Promise<void> = Promise.resolve();

  constructor(sealed: SealedStore, trust: TrustPolicy) {
    this.store = new OmemoStore(sealed, trust);
  }

  /** Waits for the previous OMEMO operation; resolves with the function that lets the next one run. */
  async lock(): Promise<() => void> {
    let release!: () => void;
    const next = new Promise<void>((resolve) => {
      release = resolve;
    });
    const before = this.tail;
    this.tail = before.then(() => next);
    await before;
    let released = false;
    const done = (): void => {
      if (released) return;
      released = true;
      release();
    };
    try {
      await this.reread();
    } catch (err) {
      done();
      throw err;
    }
    return done;
  }

  /**
   * Every operation starts from the sealed store, not from what this process read
   * before: another replica may have held the connection lease meanwhile (this one
   * paused past its lease, or resumed before noticing) and moved the ratchets, used
   * pre-keys or rotated the signed pre-key. A stale session decrypts nothing (Bad MAC)
   * and would encrypt with message keys already used.
   */
  private async reread(): Promise<void> {
    if (this.store.dirty) return;
    this.store.forgetReads();
    if (this.store.own === undefined) return;
    const own = await this.store.loadOwn();
    if (own !== undefined && own.deviceId === this.own.deviceId) this.own = own;
  }
}

/** The trust policy from the config: blind trust before verification, or manual. */
export function trustPolicy(s: { readonly config: XmppAdapterConfig }): TrustPolicy {
  const verified = new Map<string, Set<string>>();
  for (const t of s.config.omemoTrusted) {
    const jid = t.jid.toLowerCase();
    const set = verified.get(jid) ?? new Set<string>();
    set.add(normaliseFingerprint(t.fingerprint));
    verified.set(jid, set);
  }
  return { mode: s.config.omemoTrust, verified };
}

