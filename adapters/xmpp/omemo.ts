/**
 * The bridge account as an OMEMO 0.3 device (XEP-0384 v0.3,
 * `eu.siacs.conversations.axolotl`; issue 26), on the Signal protocol
 * implementation @privacyresearch/libsignal-protocol-typescript (X3DH and the
 * double ratchet with libsignal's wire format; README.md says why this one).
 *
 * - Device: identity key, signed pre-key and 100 one-time pre-keys are made
 *   once and kept in the sealed store (omemo-store.ts), committed before the
 *   bundle that lists them is published. Every new session publishes the
 *   device list (ours added) and the bundle through PEP with
 *   `pubsub#access_model=open`, as the XEP asks.
 * - In: an `<encrypted>` message with a key for our device is decrypted
 *   (`openEncrypted`); the message then goes through the normaliser as if it
 *   had come in clear (corrections, replies keep their clear elements), and
 *   the ratchet state is committed after the append, before the archive
 *   position moves (ingest.ts `settle`). Used one-time pre-keys are replaced
 *   and the bundle published again.
 * - Out: a message or correction to a conversation that speaks OMEMO is
 *   encrypted (`encryptStanza`) for every device of the contact and our
 *   account's other devices; sessions are built from their bundles.
 *   Reactions and retractions go in clear, as Conversations and Dino send them.
 * - MUCs: only members-only, non-anonymous rooms (XEP-0384 §5); the sender of
 *   a groupchat message is the occupant's real JID from its presence, and a
 *   message to the room is encrypted for every occupant (`roomRecipients`).
 * - Device lists: pushed by the server (our caps name `…devicelist+notify`,
 *   `onDeviceListEvent`) and fetched again after `omemoDeviceListTtlMs`.
 *
 * One OMEMO operation at a time per adapter (`OmemoDevice.lock`): a decrypt
 * holds it until its event is in the log, so the staged state of one message
 * is never committed with another's.
 */
import { createCipheriv, createDecipheriv, randomBytes, randomInt } from 'node:crypto';
import type * as SignalLibrary from '@privacyresearch/libsignal-protocol-typescript';
import { SyncgateError } from '../../src/core/errors.js';
import { stanzaErrorCondition } from './errors.js';
import { bareJid, resourceOf } from './normalise.js';
import { b64, fingerprintOf, unb64, type OmemoDevice, type OmemoStore, type OwnDevice } from './omemo-store.js';
import type { XmppAdapterState } from './state.js';
import { NS, xml, type XmlElement } from './xml.js';

/**
 * The Signal library, loaded on first use: an adapter without an OMEMO device (and every CLI
 * command, which imports the adapters) never loads it. It is GPL-3.0, so it is not a runtime
 * dependency of syncgate (Apache-2.0): an operator who sets `omemoSecret` installs it
 * (README, "Encrypted XMPP chats"); without it the device does not load and says why.
 */
export const OMEMO_LIBRARY = '@privacyresearch/libsignal-protocol-typescript';
let signal: Promise<typeof SignalLibrary> | undefined;
const signalLibrary = (): Promise<typeof SignalLibrary> => {
  signal ??= loadSignalLibrary(OMEMO_LIBRARY);
  signal.catch(() => (signal = undefined));
  return signal;
};

/** Imports the Signal library; a missing package is SG_ERR_CONFIG_INVALID naming what to install. */
export async function loadSignalLibrary(specifier: string): Promise<typeof SignalLibrary> {
  try {
    return (await import(specifier)) as typeof SignalLibrary;
  } catch (err) {
    const code = (err as { code?: unknown } | null)?.code;
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw err;
    throw new SyncgateError(
      'SG_ERR_CONFIG_INVALID',
      `omemoSecret is set but the OMEMO library ${specifier} (GPL-3.0, not installed with syncgate) is missing: install it beside syncgate (npm install ${specifier}@0.0.16, or build the image with --build-arg WITH_OMEMO=true), or unset omemoSecret`,
      undefined,
      { cause: err },
    );
  }
}

const OMEMO = NS.omemoLegacy;
export const DEVICE_LIST_NODE = `${OMEMO}.devicelist`;
const bundleNode = (deviceId: number): string => `${OMEMO}.bundles:${deviceId}`;
const PUBSUB = 'http://jabber.org/protocol/pubsub';
const PUBSUB_OWNER = 'http://jabber.org/protocol/pubsub#owner';
const PUBSUB_EVENT = 'http://jabber.org/protocol/pubsub#event';
const PRE_KEYS = 100;
/** What a client without OMEMO shows instead of the message (Conversations' wording). */
export const OMEMO_FALLBACK = 'I sent you an OMEMO encrypted message but your client doesn’t seem to support that.';

/** A message that came encrypted and was decrypted: what ingest commits, or forgets. */
export interface Opened {
  /** the message to normalise: the decrypted body in place of the fallback, or the original */
  readonly message: XmlElement;
  /** a message whose key was used before: it is in the log already (see omemo-store.ts) */
  readonly replayed?: boolean;
  /** commits the ratchet state (after the append); undefined when nothing was decrypted */
  readonly settle?: () => Promise<void>;
  /** forgets what was not committed and lets the next OMEMO operation run */
  release(): void;
}

/**
 * Loads our device from the sealed store, or makes one (its keys committed
 * before anything announces them). A wrong secret throws SG_ERR_STATE_SEALED_KEY.
 */
export async function loadDevice(s: XmppAdapterState, d: OmemoDevice): Promise<void> {
  const release = await d.lock();
  try {
    const own = await d.store.loadOwn();
    if (own) {
      d.own = own;
    } else {
      const previous = await s.stateStore?.get(s.omemoMarkerNamespace, 'device');
      d.own = await createDevice(d.store);
      // The marker says a device existed: its keys are gone (store lost or wiped), not a first start.
      if (previous !== undefined && Number(previous) !== d.own.deviceId) {
        d.lostDeviceId = Number(previous);
        s.log.error(
          { reason: 'omemo-store-lost', lostDeviceId: d.lostDeviceId, deviceId: d.own.deviceId },
          `the OMEMO store of this adapter is gone (device ${previous} was announced before): a new device ${d.own.deviceId} replaces it; contacts see a new fingerprint, and messages encrypted for the old device cannot be read` +
            (s.config.omemoRemoveLostDevice ? '; the old device is removed from the device list' : ' (omemoRemoveLostDevice removes it from the device list)'),
        );
      }
      await d.store.commit();
    }
    if (s.stateStore) await s.stateStore.set(s.omemoMarkerNamespace, 'device', String(d.own.deviceId));
    d.fingerprint = fingerprintOf(d.own.identity.pubKey);
    d.state = 'ready';
    s.log.info({ deviceId: d.own.deviceId, fingerprint: d.fingerprint, trust: s.config.omemoTrust }, 'OMEMO device loaded');
  } catch (err) {
    d.store.discard();
    d.state = 'failed';
    d.error = err instanceof Error ? err.message : String(err);
    throw err;
  } finally {
    release();
  }
}

async function createDevice(store: OmemoStore): Promise<OwnDevice> {
  const { KeyHelper } = await signalLibrary();
  const identity = await KeyHelper.generateIdentityKeyPair();
  const signedPreKeyId = 1;
  const signed = await KeyHelper.generateSignedPreKey(identity, signedPreKeyId);
  store.stageSignedPreKey(signedPreKeyId, signed.keyPair, signed.signature);
  const ids: number[] = [];
  for (let id = 1; id <= PRE_KEYS; id++) {
    const pk = await KeyHelper.generatePreKey(id);
    store.stagePreKey(id, pk.keyPair);
    ids.push(id);
  }
  store.stagePreKeyIds(ids);
  const now = Date.now();
  const own: OwnDevice = { deviceId: randomInt(1, 2 ** 31 - 1), registrationId: KeyHelper.generateRegistrationId(), identity, signedPreKeyId, signedPreKeyCreated: now, nextPreKeyId: PRE_KEYS + 1, created: now };
  store.stageOwn(own);
  return own;
}

// --- PEP (XEP-0163): device list and bundle

function publishOptions(): XmlElement {
  return xml(
    'publish-options',
    {},
    xml('x', { xmlns: NS.data, type: 'submit' }, xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, `${PUBSUB}#publish-options`)), xml('field', { var: 'pubsub#access_model' }, xml('value', {}, 'open'))),
  );
}

function publishIq(node: string, payload: XmlElement): XmlElement {
  return xml('iq', { type: 'set' }, xml('pubsub', { xmlns: PUBSUB }, xml('publish', { node }, xml('item', { id: 'current' }, payload)), publishOptions()));
}

/** Publishes with access model open; a node that exists with another model is reconfigured first (XEP-0060 §7.1.5). */
async function publish(s: XmppAdapterState, node: string, payload: XmlElement): Promise<void> {
  try {
    await s.connection.request(publishIq(node, payload), s.config.iqTimeoutMs);
  } catch (err) {
    if (stanzaErrorCondition(err) !== 'conflict' && !/precondition/.test(String((err as Error).message))) throw err;
    const form = xml('x', { xmlns: NS.data, type: 'submit' }, xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, `${PUBSUB}#node_config`)), xml('field', { var: 'pubsub#access_model' }, xml('value', {}, 'open')));
    await s.connection.request(xml('iq', { type: 'set' }, xml('pubsub', { xmlns: PUBSUB_OWNER }, xml('configure', { node }, form))), s.config.iqTimeoutMs);
    await s.connection.request(publishIq(node, payload), s.config.iqTimeoutMs);
  }
}

/** The payload of a PEP node's current item, undefined when the node or item does not exist. */
async function fetchItem(s: XmppAdapterState, jid: string | undefined, node: string): Promise<XmlElement | undefined> {
  try {
    const reply = await s.connection.request(xml('iq', { type: 'get', ...(jid ? { to: jid } : {}) }, xml('pubsub', { xmlns: PUBSUB }, xml('items', { node, max_items: '1' }))), s.config.iqTimeoutMs);
    const item = reply.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item').at(-1);
    return item?.getChildElements()[0];
  } catch (err) {
    if (stanzaErrorCondition(err) === 'item-not-found') return undefined;
    throw err;
  }
}

export function parseDeviceList(list: XmlElement | undefined): number[] {
  if (!list || !list.is('list', OMEMO)) return [];
  return list
    .getChildren('device')
    .map((d) => Number(d.attrs['id']))
    .filter((id) => Number.isInteger(id) && id > 0 && id < 2 ** 32);
}

function bundleElement(signed: { pub: ArrayBuffer; signature: ArrayBuffer }, signedId: number, identityKey: ArrayBuffer, preKeys: Array<{ keyId: number; pub: ArrayBuffer }>): XmlElement {
  return xml(
    'bundle',
    { xmlns: OMEMO },
    xml('signedPreKeyPublic', { signedPreKeyId: String(signedId) }, b64(signed.pub)),
    xml('signedPreKeySignature', {}, b64(signed.signature)),
    xml('identityKey', {}, b64(identityKey)),
    xml('prekeys', {}, ...preKeys.map((p) => xml('preKeyPublic', { preKeyId: String(p.keyId) }, b64(p.pub)))),
  );
}

/** Announces our device: the bundle first (so the device list never names a device without one), then the device list. */
export async function publishDevice(s: XmppAdapterState, d: OmemoDevice): Promise<void> {
  await rotateSignedPreKey(s, d);
  await publishBundle(s, d);
  const current = parseDeviceList(await fetchItem(s, undefined, DEVICE_LIST_NODE));
  let ids = current.includes(d.own.deviceId) ? current : [...current, d.own.deviceId];
  if (d.lostDeviceId !== undefined && s.config.omemoRemoveLostDevice) ids = ids.filter((id) => id !== d.lostDeviceId);
  if (ids.length !== current.length || ids.some((id, i) => current[i] !== id)) {
    await publish(s, DEVICE_LIST_NODE, xml('list', { xmlns: OMEMO }, ...ids.map((id) => xml('device', { id: String(id) }))));
  }
  d.deviceLists.set(s.account, { ids, at: Date.now() });
  d.state = 'published';
  s.log.info({ deviceId: d.own.deviceId, devices: ids }, 'OMEMO device list and bundle published');
}

/**
 * A new signed pre-key once the current one is older than omemoSignedPreKeyRotationMs, stored
 * before the bundle announces it. The previous one stays (a key exchange made from the old
 * bundle may still arrive, e.g. from the archive); the one before it is deleted.
 */
async function rotateSignedPreKey(s: XmppAdapterState, d: OmemoDevice): Promise<void> {
  if (Date.now() - d.own.signedPreKeyCreated < s.config.omemoSignedPreKeyRotationMs) return;
  const release = await d.lock();
  try {
    const { KeyHelper } = await signalLibrary();
    const id = d.own.signedPreKeyId + 1;
    const signed = await KeyHelper.generateSignedPreKey(d.own.identity, id);
    d.store.stageSignedPreKey(id, signed.keyPair, signed.signature);
    if (id > 2) d.store.stageDelete(`signed:${id - 2}`);
    const own = { ...d.own, signedPreKeyId: id, signedPreKeyCreated: Date.now() };
    d.store.stageOwn(own);
    await d.store.commit();
    d.own = own;
    s.log.info({ signedPreKeyId: id }, 'OMEMO signed pre-key rotated');
  } finally {
    d.store.discard();
    release();
  }
}

async function publishBundle(s: XmppAdapterState, d: OmemoDevice): Promise<void> {
  const signed = await d.store.signedPreKeyPublic(d.own.signedPreKeyId);
  if (!signed) throw new Error('the signed pre-key is missing from the OMEMO store');
  const preKeys = await d.store.preKeysOnOffer();
  await publish(s, bundleNode(d.own.deviceId), bundleElement(signed, d.own.signedPreKeyId, d.own.identity.pubKey, preKeys));
}

/** Replaces the one-time pre-keys a key exchange used: stored first, then the bundle published again. */
async function replaceUsedPreKeys(s: XmppAdapterState, d: OmemoDevice): Promise<boolean> {
  const used = d.store.usedPreKeys;
  if (used.length === 0) return false;
  d.store.usedPreKeys = [];
  const ids = (await d.store.preKeyIds()).filter((id) => !used.includes(id));
  let next = d.own.nextPreKeyId;
  const { KeyHelper } = await signalLibrary();
  while (ids.length < PRE_KEYS) {
    const pk = await KeyHelper.generatePreKey(next);
    d.store.stagePreKey(next, pk.keyPair);
    ids.push(next);
    next++;
  }
  d.store.stagePreKeyIds(ids);
  d.own = { ...d.own, nextPreKeyId: next };
  d.store.stageOwn(d.own);
  await d.store.commit();
  d.counters.preKeysReplaced += used.length;
  return true;
}

/** A contact's (or our own account's) device ids: fetched again when older than omemoDeviceListTtlMs. */
async function devicesOf(s: XmppAdapterState, d: OmemoDevice, jid: string): Promise<number[]> {
  const cached = d.deviceLists.get(jid);
  if (cached && Date.now() - cached.at < s.config.omemoDeviceListTtlMs) return cached.ids;
  try {
    const ids = parseDeviceList(await fetchItem(s, jid === s.account ? undefined : jid, DEVICE_LIST_NODE));
    d.deviceLists.set(jid, { ids, at: Date.now() });
    return ids;
  } catch (err) {
    s.log.warn({ err, jid }, 'could not fetch an OMEMO device list');
    return cached?.ids ?? [];
  }
}

/** A device list someone published (a PEP notification): taken as the current one. */
export function onDeviceListEvent(s: XmppAdapterState, stanza: XmlElement): boolean {
  const items = stanza.getChild('event', PUBSUB_EVENT)?.getChild('items');
  if (items?.attrs['node'] !== DEVICE_LIST_NODE) return false;
  const from = bareJid(stanza.attrs['from']) ?? s.account;
  const list = items.getChildren('item').at(-1)?.getChildElements()[0];
  s.omemo?.deviceLists.set(from, { ids: parseDeviceList(list), at: Date.now() });
  return true;
}

// --- in: decryption

const noop: Opened['release'] = () => undefined;

function aesGcmDecrypt(keyMaterial: Buffer, iv: Buffer, payload: Buffer): string {
  // 32 bytes: key and tag (OMEMO 0.3 today); 16: the key only, the tag after the ciphertext (older clients).
  const key = keyMaterial.subarray(0, 16);
  const tag = keyMaterial.length >= 32 ? keyMaterial.subarray(16, 32) : payload.subarray(payload.length - 16);
  const body = keyMaterial.length >= 32 ? payload : payload.subarray(0, payload.length - 16);
  const decipher = createDecipheriv('aes-128-gcm', key, iv);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8');
}

/** The message as if it had come in clear: the decrypted body instead of the fallback, the encryption markers gone. */
function withPlainBody(message: XmlElement, body: string): XmlElement {
  const keep = message.children.filter((c): c is XmlElement => typeof c !== 'string' && !c.is('body') && !c.is('encrypted', OMEMO) && !c.is('encryption', NS.eme) && !c.is('html'));
  return xml(message.name, { ...message.attrs }, ...keep, xml('body', {}, body));
}

/** Whether the library refused a message key because it was used already (a message we decrypted and bridged before). */
function isReplay(err: unknown): boolean {
  // The library has no error classes; its message is the only signal (session-cipher.js, fillMessageKeys / doDecryptWhisperMessage).
  return err instanceof Error && /counter was repeated|Message key not found/i.test(err.message);
}

/**
 * Decrypts a 1:1 OMEMO 0.3 message carrying a key for our device. Holds the
 * OMEMO lock until `release()`; `settle()` commits the ratchet state.
 * Messages it cannot decrypt come back unchanged (the undecryptable notice path).
 */
export async function openEncrypted(s: XmppAdapterState, message: XmlElement): Promise<Opened> {
  const d = s.omemo;
  const encrypted = message.getChild('encrypted', OMEMO);
  if (!d || d.state === 'loading' || d.state === 'failed' || !encrypted) return { message, release: noop };
  const header = encrypted.getChild('header');
  const sid = Number(header?.attrs['sid']);
  const key = header?.getChildren('key').find((k) => Number(k.attrs['rid']) === d.own.deviceId);
  const sender = senderOf(s, message);
  if (!header || !key || !Number.isInteger(sid) || sender === undefined) {
    if (header && !key) s.log.debug({ from: message.attrs['from'], sid }, 'an OMEMO message without a key for this device');
    return { message, release: noop };
  }
  const release = await d.lock();
  const finish = (): void => {
    d.store.discard();
    release();
  };
  try {
    const { SessionCipher, SignalProtocolAddress } = await signalLibrary();
    const address = new SignalProtocolAddress(sender, sid);
    const cipher = new SessionCipher(d.store, address);
    const data = unb64(key.getText());
    const preKey = key.attrs['prekey'] === 'true' || key.attrs['prekey'] === '1';
    const keyMaterial = Buffer.from(preKey ? await cipher.decryptPreKeyWhisperMessage(data, 'binary') : await cipher.decryptWhisperMessage(data, 'binary'));
    const identity = await d.store.knownIdentity(address.toString());
    if (identity && !d.store.trusts(sender, unb64(identity.key))) {
      d.counters.untrusted++;
      s.log.warn({ from: sender, device: sid, fingerprint: fingerprintOf(unb64(identity.key)) }, 'an OMEMO message from a device that is not trusted (omemoTrust / omemoTrusted): not decrypted');
      finish();
      return { message, release: noop };
    }
    rememberDevice(d, sender, sid);
    const payload = encrypted.getChildText('payload');
    const iv = header.getChildText('iv');
    if (payload === null || iv === null) {
      // A key transport message (session set-up or upkeep): nothing to append; its state is kept now.
      await d.store.commit();
      if (await replaceUsedPreKeys(s, d)) void publishBundle(s, d).catch((err: unknown) => s.log.warn({ err }, 'could not publish the OMEMO bundle'));
      release();
      return { message, release: noop };
    }
    const body = aesGcmDecrypt(keyMaterial, Buffer.from(iv, 'base64'), Buffer.from(payload, 'base64'));
    d.counters.decrypted++;
    return {
      message: withPlainBody(message, body),
      settle: async () => {
        await d.store.commit();
        if (await replaceUsedPreKeys(s, d)) void publishBundle(s, d).catch((err: unknown) => s.log.warn({ err }, 'could not publish the OMEMO bundle'));
      },
      release: finish,
    };
  } catch (err) {
    finish();
    if (isReplay(err)) {
      d.counters.replayed++;
      return { message, replayed: true, release: noop };
    }
    if (isUntrusted(err)) {
      d.counters.untrusted++;
      s.log.warn({ from: sender, device: sid }, 'an OMEMO message from a device that is not trusted (omemoTrust / omemoTrusted): not decrypted');
      return { message, release: noop };
    }
    d.counters.failures++;
    s.log.warn({ err: err instanceof Error ? err.message : String(err), from: message.attrs['from'], device: sid }, 'could not decrypt an OMEMO message');
    return { message, release: noop };
  }
}

/** The library refused the sender's identity key (our isTrustedIdentity said no). */
function isUntrusted(err: unknown): boolean {
  return err instanceof Error && /Identity key changed|Unknown identity key/.test(err.message);
}

/**
 * Whose device sent it: the bare JID in 1:1 (or our account, for carbons of our other
 * devices); in a MUC the occupant's real JID, known only in the members-only,
 * non-anonymous rooms XEP-0384 encrypts in.
 */
function senderOf(s: XmppAdapterState, message: XmlElement): string | undefined {
  const from = message.attrs['from'];
  if (message.attrs['type'] !== 'groupchat') return bareJid(from) ?? s.account;
  const room = s.rooms.get(bareJid(from) ?? '');
  const nick = resourceOf(from);
  if (!room?.facts?.omemo || nick === undefined || nick === room.nick) return undefined;
  return room.realJids.get(nick);
}

/** The real JIDs OMEMO in this room encrypts to (everyone but us); undefined when the room is not one OMEMO works in. */
export function roomRecipients(s: XmppAdapterState, room: string): string[] | undefined {
  const r = s.rooms.get(room);
  if (!r?.facts?.omemo) return undefined;
  return [...new Set(r.realJids.values())].filter((jid) => jid !== s.account);
}

function rememberDevice(d: OmemoDevice, jid: string, id: number): void {
  const cached = d.deviceLists.get(jid);
  if (cached && !cached.ids.includes(id)) cached.ids = [...cached.ids, id];
}

// --- out: encryption

/** The contact has no OMEMO device we can encrypt to (none published, or none trusted). */
export class OmemoNoDevicesError extends Error {
  constructor(jid: string) {
    super(`${jid} has no OMEMO device the bridge can encrypt to (none published, none trusted, or no bundle)`);
    this.name = 'OmemoNoDevicesError';
  }
}

async function fetchBundle(s: XmppAdapterState, jid: string, deviceId: number): Promise<{ identityKey: ArrayBuffer; signedPreKey: { keyId: number; publicKey: ArrayBuffer; signature: ArrayBuffer }; preKey?: { keyId: number; publicKey: ArrayBuffer } } | undefined> {
  const bundle = await fetchItem(s, jid === s.account ? undefined : jid, bundleNode(deviceId));
  if (!bundle || !bundle.is('bundle', OMEMO)) return undefined;
  const spk = bundle.getChild('signedPreKeyPublic');
  const sig = bundle.getChildText('signedPreKeySignature');
  const ik = bundle.getChildText('identityKey');
  if (!spk || sig === null || ik === null) return undefined;
  const preKeys = bundle.getChild('prekeys')?.getChildren('preKeyPublic') ?? [];
  const chosen = preKeys.length > 0 ? preKeys[randomInt(0, preKeys.length)] : undefined;
  return {
    identityKey: unb64(ik),
    signedPreKey: { keyId: Number(spk.attrs['signedPreKeyId']), publicKey: unb64(spk.getText()), signature: unb64(sig) },
    ...(chosen ? { preKey: { keyId: Number(chosen.attrs['preKeyId']), publicKey: unb64(chosen.getText()) } } : {}),
  };
}

/** One `<key>` for one device: a session built from its bundle when there is none. Undefined when that device cannot be reached. */
async function keyFor(s: XmppAdapterState, d: OmemoDevice, jid: string, deviceId: number, keyMaterial: Buffer): Promise<XmlElement | undefined> {
  const { SessionBuilder, SessionCipher, SignalProtocolAddress } = await signalLibrary();
  const address = new SignalProtocolAddress(jid, deviceId);
  try {
    const cipher = new SessionCipher(d.store, address);
    if (!(await cipher.hasOpenSession())) {
      const bundle = await fetchBundle(s, jid, deviceId);
      if (!bundle) return undefined;
      if (!d.store.trusts(jid, bundle.identityKey)) {
        d.counters.untrusted++;
        return undefined;
      }
      await new SessionBuilder(d.store, address).processPreKey(bundle);
      d.counters.sessionsBuilt++;
    }
    const out = await cipher.encrypt(keyMaterial.buffer.slice(keyMaterial.byteOffset, keyMaterial.byteOffset + keyMaterial.byteLength) as ArrayBuffer);
    if (out.body === undefined) return undefined;
    return xml('key', { rid: String(deviceId), ...(out.type === 3 ? { prekey: 'true' } : {}) }, Buffer.from(out.body, 'binary').toString('base64'));
  } catch (err) {
    s.log.warn({ err: err instanceof Error ? err.message : String(err), jid, deviceId }, 'could not encrypt for an OMEMO device; left out of this message');
    return undefined;
  }
}

/**
 * The stanza with its body encrypted for every device of `to` and our own other
 * devices: `<encrypted>`, the fallback body, XEP-0380 and a store hint. The
 * ratchet state is committed before it returns (before the send).
 */
export async function encryptStanza(s: XmppAdapterState, d: OmemoDevice, to: string, stanza: XmlElement, recipients: readonly string[] = [to]): Promise<XmlElement> {
  const body = stanza.getChildText('body');
  if (body === null) return stanza;
  const release = await d.lock();
  try {
    const ours = (await devicesOf(s, d, s.account)).filter((id) => id !== d.own.deviceId);
    const key = randomBytes(16);
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-128-gcm', key, iv);
    const payload = Buffer.concat([cipher.update(body, 'utf8'), cipher.final()]);
    const keyMaterial = Buffer.concat([key, cipher.getAuthTag()]);
    const keys: XmlElement[] = [];
    for (const jid of recipients) {
      for (const id of await devicesOf(s, d, jid)) {
        const k = await keyFor(s, d, jid, id, keyMaterial);
        if (k) keys.push(k);
      }
    }
    if (keys.length === 0) throw new OmemoNoDevicesError(to);
    for (const id of ours) {
      const k = await keyFor(s, d, s.account, id, keyMaterial);
      if (k) keys.push(k);
    }
    // Written before the send: a message key is never used twice, also after a crash.
    await d.store.commit();
    d.counters.encrypted++;
    const encrypted = xml('encrypted', { xmlns: OMEMO }, xml('header', { sid: String(d.own.deviceId) }, ...keys, xml('iv', {}, iv.toString('base64'))), xml('payload', {}, payload.toString('base64')));
    const keep = stanza.children.filter((c): c is XmlElement => typeof c !== 'string' && !c.is('body') && !c.is('html') && !c.is('x', NS.oob) && !c.is('unstyled', NS.styling) && !c.is('store', NS.hints));
    return xml(stanza.name, { ...stanza.attrs }, ...keep, encrypted, xml('encryption', { xmlns: NS.eme, namespace: OMEMO, name: 'OMEMO' }), xml('body', {}, OMEMO_FALLBACK), xml('store', { xmlns: NS.hints }));
  } finally {
    d.store.discard();
    release();
  }
}

/** What status() shows about the device (the fingerprint an operator compares with what contacts see). */
export function omemoStatus(d: OmemoDevice | undefined, s: Pick<XmppAdapterState, 'config'>): Record<string, unknown> {
  if (!d) return { state: 'off', mode: s.config.omemo };
  return {
    state: d.state,
    mode: s.config.omemo,
    trust: s.config.omemoTrust,
    ...(d.state === 'failed' ? { error: d.error } : {}),
    ...(d.state !== 'loading' && d.state !== 'failed' ? { deviceId: d.own.deviceId, fingerprint: d.fingerprint, signedPreKeyId: d.own.signedPreKeyId } : {}),
    ...(d.lostDeviceId !== undefined ? { lostDeviceId: d.lostDeviceId } : {}),
    ...d.counters,
  };
}
