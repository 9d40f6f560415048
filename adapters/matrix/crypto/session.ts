/**
 * The adapter's crypto through a session (session.ts calls these):
 * prepared at start() (the sealed store read: a wrong secret fails the
 * start with SG_ERR_STATE_SEALED_KEY), opened once the homeserver told us
 * our device, closed at stop(). A replica that takes the connection over
 * reads the store afresh at its start(), so it continues with the same
 * device and sessions.
 *
 * Crypto is on when `encryption.mode` is `optional` (the default) and a
 * `storeSecret` is configured; otherwise encrypted rooms are refused as
 * before, and the status says why. In appservice mode the device is the
 * bridge bot's, logged in with `m.login.application_service`, and the
 * crypto turns on once the homeserver proved it pushes the transaction
 * extensions (crypto/appservice.ts).
 */
import { randomBytes } from 'node:crypto';
import { SyncgateError } from '../../../src/core/errors.js';
import { MatrixHttp, type JsonObject } from '../client.js';
import { MatrixApiError } from '../errors.js';
import type { MatrixAdapterState } from '../state.js';
import { MISSING_KEY_COUNTS, MISSING_TO_DEVICE, newProbeNonce, PROBE_TYPE, transactionCrypto } from './appservice.js';
import { HeldEvents } from './held.js';
import { readCryptoStore, type MatrixCrypto } from './machine.js';

/** Why crypto is off for this adapter (undefined: it is configured). */
export function cryptoUnavailable(s: MatrixAdapterState): string | undefined {
  const e = s.config.encryption;
  if (e?.mode === 'off') return 'encryption.mode is off';
  if (e?.storeSecret === undefined) return 'encryption.storeSecret is not set (the crypto state must be encrypted at rest)';
  if (!s.deps.sealed) return 'no sealed state store was given to the adapter';
  return s.crypto.lost ?? s.crypto.extensionsMissing;
}

/** The open machine, when encrypted rooms can be bridged now. */
export function activeCrypto(s: MatrixAdapterState): MatrixCrypto | undefined {
  return s.crypto.machine;
}

/** start(): reads the sealed crypto store (throws SyncgateError SG_ERR_STATE_SEALED_KEY on a wrong secret). */
export async function prepareCrypto(s: MatrixAdapterState): Promise<void> {
  s.crypto.lost = undefined;
  s.crypto.problem = cryptoUnavailable(s);
  if (s.crypto.problem !== undefined) return;
  const secret = s.config.encryption?.storeSecret;
  const sealed = s.deps.sealed;
  if (secret === undefined || !sealed) return;
  try {
    s.crypto.prepared = await readCryptoStore({
      http: s.http,
      log: s.log,
      sealed: sealed(`matrix-crypto:${s.name}`, secret),
      storeName: s.name,
      trustedDevices: s.config.encryption?.trustedDevices ?? [],
    });
    if (s.mode === 'appservice') s.crypto.opening = newOpening();
  } catch (err) {
    if (err instanceof SyncgateError && err.code === 'SG_ERR_STATE_SEALED_KEY') {
      s.log.error({ err }, 'Matrix crypto store does not open with encryption.storeSecret: refusing to start rather than becoming a new device');
    }
    throw err;
  }
}

function newOpening(): NonNullable<MatrixAdapterState['crypto']['opening']> {
  let settle = (): void => undefined;
  const done = new Promise<void>((resolve) => (settle = resolve));
  return { done, settle };
}

/**
 * Appservice mode: our listener is up before the bridge device is open
 * (login, crypto store, keys), so the homeserver can push a transaction
 * into that gap — typically the one that waited while the gateway was down.
 * Its encrypted events need the device: the transaction waits here until
 * the device is open (or known unusable: then the room is refused as
 * without crypto) and is answered once handled, so nothing is dropped and
 * the homeserver's retry backoff does not grow meanwhile.
 */
export async function untilCryptoOpen(s: MatrixAdapterState): Promise<void> {
  const opening = s.crypto.opening;
  if (!opening) return;
  await opening.done;
}

/** The bridge device is open (or known unusable): transactions waiting for it go on. */
function settleOpening(s: MatrixAdapterState): void {
  s.crypto.opening?.settle();
}

/** The display name of every device syncgate creates (with the device-id prefix, how deleteOldDevices recognises them). */
export const DEVICE_DISPLAY_NAME = 'syncgate';

/** The configured device id (`bot.deviceId` / `appservice.deviceId`): ours, and `<it>_<suffix>` the replacements of a lost store. */
export function configuredDeviceId(s: MatrixAdapterState): string {
  return (s.mode === 'appservice' ? s.config.appservice?.deviceId : s.config.bot?.deviceId) ?? 'SYNCGATE';
}

/** A device syncgate created for this adapter: the configured id or a replacement of it. */
function isOurDevice(s: MatrixAdapterState, deviceId: string): boolean {
  const base = configuredDeviceId(s);
  return deviceId === base || deviceId.startsWith(`${base}_`);
}

/**
 * The device to log in as: the configured one, or the replacement a lost
 * store made us create earlier (its id is in the sealed store), so a restart
 * keeps the replacement.
 */
export function deviceIdToUse(s: MatrixAdapterState): string {
  const stored = s.crypto.prepared?.storedDevice;
  if (stored && stored.userId === s.userId && stored.deviceId.startsWith(`${configuredDeviceId(s)}_`)) return stored.deviceId;
  return configuredDeviceId(s);
}

/**
 * The store for our device is lost but the homeserver has the device's keys:
 * a new device `<deviceId>_<random>` is logged in (bot mode: needs
 * `bot.password`; appservice mode: `m.login.application_service`).
 * Undefined when none can be created (a bot with an access token only).
 */
async function newDevice(s: MatrixAdapterState): Promise<{ deviceId: string; http: MatrixHttp } | undefined> {
  const deviceId = `${configuredDeviceId(s)}_${randomBytes(4).toString('hex').toUpperCase()}`;
  if (s.mode === 'appservice') return loginBridgeDevice(s, deviceId);
  const bot = s.config.bot;
  if (bot?.password === undefined) return undefined;
  const res = await s.http.request('POST', '/_matrix/client/v3/login', {
    auth: false,
    body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: bot.userId }, password: bot.password, device_id: deviceId, initial_device_display_name: DEVICE_DISPLAY_NAME },
  });
  const token = res['access_token'];
  if (typeof token !== 'string') throw new MatrixApiError(200, 'M_BAD_JSON', 'login answer without access_token');
  s.http.setAccessToken(token);
  return { deviceId, http: s.http };
}

/**
 * encryption.deleteOldDevices: deletes the bridge user's devices that
 * syncgate created (the configured device id or a replacement of it, named
 * "syncgate…") other than `current`. POST /delete_devices: Synapse asks for
 * user-interactive auth, answered with `bot.password` (m.login.password) in
 * bot mode; in appservice mode the request goes with the AS token, which
 * Synapse lets skip it when the registration has `io.element.msc4190: true`.
 * Failures are logged and shown in the status, never thrown.
 */
export async function deleteOldDevices(s: MatrixAdapterState, current: string): Promise<void> {
  try {
    const listed = await s.http.request('GET', '/_matrix/client/v3/devices');
    const devices = Array.isArray(listed['devices']) ? listed['devices'] : [];
    const old = devices
      .filter((d): d is JsonObject => typeof d === 'object' && d !== null && !Array.isArray(d))
      .filter((d) => typeof d['device_id'] === 'string' && d['device_id'] !== current && isOurDevice(s, d['device_id']))
      .filter((d) => typeof d['display_name'] === 'string' && d['display_name'].startsWith(DEVICE_DISPLAY_NAME))
      .map((d) => String(d['device_id']));
    if (old.length === 0) {
      s.crypto.oldDevices = { deleted: [] };
      return;
    }
    try {
      await s.http.request('POST', '/_matrix/client/v3/delete_devices', { body: { devices: old } });
    } catch (err) {
      const uia = err instanceof MatrixApiError && err.status === 401 && Array.isArray(err.body['flows']) ? err.body : undefined;
      if (!uia) throw err;
      const password = s.mode === 'bot' ? s.config.bot?.password : undefined;
      const offered = (uia['flows'] as unknown[]).some((f) => typeof f === 'object' && f !== null && Array.isArray((f as JsonObject)['stages']) && ((f as JsonObject)['stages'] as unknown[]).length === 1 && ((f as JsonObject)['stages'] as unknown[])[0] === 'm.login.password');
      if (password === undefined || !offered || typeof uia['session'] !== 'string') {
        const fix = s.mode === 'appservice' ? 'add io.element.msc4190: true to the registration (syncgate matrix-registration writes it with encryption.deleteOldDevices) and restart Synapse' : 'configure bot.password (Synapse asks for the password to delete devices)';
        throw new Error(`the homeserver asks for user-interactive auth to delete devices: ${fix}`, { cause: err });
      }
      await s.http.request('POST', '/_matrix/client/v3/delete_devices', {
        body: { devices: old, auth: { type: 'm.login.password', identifier: { type: 'm.id.user', user: s.userId }, password, session: uia['session'] } },
      });
    }
    s.crypto.oldDevices = { deleted: old };
    s.log.warn({ deleted: old, current }, 'Matrix crypto: older syncgate devices of the bridge user deleted (encryption.deleteOldDevices)');
  } catch (err) {
    const problem = err instanceof Error ? err.message : String(err);
    s.crypto.oldDevices = { deleted: [], problem };
    s.log.error({ err, current }, `Matrix crypto: the older syncgate devices could not be deleted: ${problem}`);
  }
}

/**
 * Appservice mode: the bridge bot's device, from an `m.login.application_service`
 * login with the AS token under `appservice.deviceId` (the same id at every
 * start: a restart keeps the device; Synapse keeps an existing device's keys
 * and drops its older tokens). Returns the device and a client with its
 * token, which the key requests use (no device masquerading needed).
 */
export async function loginBridgeDevice(s: MatrixAdapterState, wanted = deviceIdToUse(s)): Promise<{ deviceId: string; http: MatrixHttp }> {
  const res = await s.http.request('POST', '/_matrix/client/v3/login', {
    body: {
      type: 'm.login.application_service',
      identifier: { type: 'm.id.user', user: s.userId },
      device_id: wanted,
      initial_device_display_name: DEVICE_DISPLAY_NAME,
    },
  });
  const token = res['access_token'];
  const deviceId = res['device_id'];
  if (typeof token !== 'string' || typeof deviceId !== 'string') throw new MatrixApiError(200, 'M_BAD_JSON', 'login answer without access_token or device_id');
  return { deviceId, http: new MatrixHttp({ baseUrl: s.config.homeserverUrl, accessToken: token, timeoutMs: s.config.requestTimeoutMs }) };
}

/**
 * After login: the machine for our device, keys uploaded (again on a reconnect). `http`: the device's own session (appservice mode).
 * Transactions waiting for the device (untilCryptoOpen) go on once it returns; not when it throws (the next connect attempt opens it).
 */
export async function openCrypto(s: MatrixAdapterState, deviceId: string | undefined, http = s.http): Promise<void> {
  await openDevice(s, deviceId, http);
  settleOpening(s);
}

async function openDevice(s: MatrixAdapterState, deviceId: string | undefined, http: MatrixHttp): Promise<void> {
  const prepared = s.crypto.prepared;
  if (!prepared) return;
  let opened = s.crypto.machine ?? s.crypto.feed;
  if (!opened) {
    if (deviceId === undefined) {
      s.crypto.problem = 'the homeserver did not tell our device id (whoami): encrypted rooms are refused';
      s.log.error(s.crypto.problem);
      return;
    }
    let lost: string | undefined;
    if (prepared.storedDevice?.deviceId !== deviceId || prepared.storedDevice.userId !== s.userId) {
      // No stored identity for this device: if the homeserver already has keys for it, our store was lost.
      const keys = await http.request('POST', '/_matrix/client/v3/keys/query', { body: { device_keys: { [s.userId]: [deviceId] } } });
      const mine = (keys['device_keys'] as Record<string, Record<string, unknown>> | undefined)?.[s.userId]?.[deviceId];
      if (mine !== undefined) {
        const why = `the crypto store for ${s.userId} device ${deviceId} is lost (nothing stored for it, or another secret's store was dropped) but the homeserver has that device's keys`;
        const replacement = await newDevice(s);
        if (!replacement) {
          s.crypto.lost = `${why}: a new device needs bot.password (a bot with an access token only cannot log in as one); delete the device (Element: Settings → Sessions, or the admin API) or log in anew with another device, then restart; encrypted rooms are refused meanwhile`;
          s.crypto.problem = s.crypto.lost;
          s.log.error({ userId: s.userId, deviceId, code: 'SG_ERR_CRYPTO_STORE_LOST' }, `Matrix crypto: ${s.crypto.lost}`);
          return;
        }
        lost = `${why}: new device ${replacement.deviceId} created (members' clients show it as a new device of ${s.userId}; its messages from before cannot be decrypted)`;
        s.log.error({ userId: s.userId, lostDevice: deviceId, newDevice: replacement.deviceId, code: 'SG_ERR_CRYPTO_STORE_LOST' }, `Matrix crypto: ${lost}`);
        deviceId = replacement.deviceId;
        http = replacement.http;
      }
    }
    opened = await prepared.open(s.userId, deviceId, http, lost);
    if (opened.identity.fresh && s.config.encryption?.deleteOldDevices === true) await deleteOldDevices(s, deviceId);
    if (s.mode === 'appservice') {
      s.crypto.feed = opened;
      s.crypto.problem = 'waiting for the homeserver to push our to-device messages and key counts in transactions (MSC2409/MSC3202)';
    } else {
      s.crypto.machine = opened;
      s.crypto.problem = undefined;
    }
  }
  await opened.start();
  if (s.config.encryption?.crossSigning !== false && s.crypto.crossSigning?.state !== 'signed') await crossSignBridge(s, opened);
  if (s.mode === 'appservice' && !s.crypto.machine) await startProbe(s, opened);
  if (!s.crypto.held) {
    const holdMs = s.config.encryption?.undecryptableHoldMs ?? 120_000;
    const held = new HeldEvents({
      state: s.kv,
      ns: `matrix-held:${s.name}`,
      log: s.log,
      holdMs,
      retry: (h, final) => s.inbound.retryHeld(h.event, h.roomId, final),
    });
    await held.load();
    s.crypto.held = held;
    // The bound runs out between /sync batches too.
    s.crypto.heldTimer = setInterval(() => void held.retryAll(), Math.max(500, Math.min(30_000, Math.round(holdMs / 4))));
    s.crypto.heldTimer.unref();
    void held.retryAll();
  }
}

/** encryption.crossSigning: sets it up (crypto/machine.ts crossSign); a failure is logged and shown, the crypto works regardless. */
async function crossSignBridge(s: MatrixAdapterState, crypto: MatrixCrypto): Promise<void> {
  try {
    s.crypto.crossSigning = { ...(await crypto.crossSign()) };
    if (s.crypto.crossSigning.state === 'skipped') s.log.warn({ masterKey: s.crypto.crossSigning.masterKey }, `Matrix crypto: ${s.crypto.crossSigning.detail ?? 'cross-signing skipped'}`);
  } catch (err) {
    const detail = err instanceof Error ? err.message : String(err);
    s.crypto.crossSigning = { state: 'failed', detail };
    s.log.error({ err }, 'Matrix crypto: setting up cross-signing failed; the bridge device works, unsigned (verify it manually)');
  }
}

/**
 * Appservice mode: a to-device message to our own device; the transaction
 * that brings it back proves MSC2409 (crypto/appservice.ts). Sent again
 * every `extensionsTimeoutMs` until it comes back (a probe can be lost: the
 * homeserver fixed and restarted, a replica that pushed its transactions
 * elsewhere), the status naming the missing settings meanwhile.
 */
async function startProbe(s: MatrixAdapterState, crypto: MatrixCrypto): Promise<void> {
  if (s.crypto.probe) return;
  const timeoutMs = s.config.encryption?.extensionsTimeoutMs ?? 30_000;
  const probe: NonNullable<MatrixAdapterState['crypto']['probe']> = { nonces: [], toDevice: false, counts: false, timer: undefined };
  s.crypto.probe = probe;
  const send = async (): Promise<void> => {
    const nonce = newProbeNonce();
    // Known before it is sent: its transaction may come before the send's answer.
    probe.nonces = [...probe.nonces.slice(-9), nonce];
    await crypto.sendToSelf(PROBE_TYPE, { nonce });
  };
  const arm = (): void => {
    probe.timer = setTimeout(() => {
      if (s.crypto.machine || s.crypto.probe !== probe) return;
      if (s.crypto.extensionsMissing === undefined) {
        s.crypto.extensionsMissing = probe.toDevice ? MISSING_KEY_COUNTS : MISSING_TO_DEVICE;
        s.crypto.problem = s.crypto.extensionsMissing;
        s.log.error({ waitedMs: timeoutMs }, `Matrix crypto: ${s.crypto.extensionsMissing}`);
      }
      send().catch((err: unknown) => s.log.warn({ err }, 'Matrix crypto: the extensions probe could not be sent; trying again later'));
      arm();
    }, timeoutMs);
    probe.timer.unref();
  };
  try {
    await send();
  } catch (err) {
    // Sent again at the next connect attempt.
    s.crypto.probe = undefined;
    throw err;
  }
  arm();
}

/**
 * Appservice mode: a transaction's MSC2409/MSC3202 parts for our device into
 * the machine (durable before the transaction is answered 200), before its
 * events; the probe checked.
 */
export async function onTransactionCrypto(s: MatrixAdapterState, body: JsonObject): Promise<void> {
  const feed = s.crypto.feed;
  if (!feed) return;
  const parts = transactionCrypto(body, feed.identity.userId, feed.identity.deviceId);
  if (parts.any) await feed.receiveSync(parts.sync);
  const probe = s.crypto.probe;
  if (probe && !s.crypto.machine) {
    if (parts.probes.some((n) => probe.nonces.includes(n))) probe.toDevice = true;
    if (parts.counts) probe.counts = true;
    if (probe.toDevice && probe.counts) {
      clearTimeout(probe.timer);
      s.crypto.machine = feed;
      s.crypto.extensionsMissing = undefined;
      s.crypto.problem = undefined;
      s.log.info({ deviceId: feed.identity.deviceId }, 'Matrix crypto: the homeserver pushes to-device messages and key counts in transactions; encrypted rooms are bridged');
    }
  }
  await afterCryptoSync(s);
}

/** After a /sync batch's to-device events: held events whose key may have come, before the batch's timeline. */
export async function afterCryptoSync(s: MatrixAdapterState): Promise<void> {
  await s.crypto.held?.retryAll();
}

export async function closeCrypto(s: MatrixAdapterState): Promise<void> {
  // Transactions still waiting for the device go on, and find the adapter stopping (transactions.ts).
  settleOpening(s);
  s.crypto.opening = undefined;
  const machine = s.crypto.machine ?? s.crypto.feed;
  s.crypto.machine = undefined;
  s.crypto.feed = undefined;
  clearTimeout(s.crypto.probe?.timer);
  s.crypto.probe = undefined;
  s.crypto.extensionsMissing = undefined;
  s.crypto.prepared = undefined;
  s.crypto.lost = undefined;
  s.crypto.crossSigning = undefined;
  clearInterval(s.crypto.heldTimer);
  s.crypto.heldTimer = undefined;
  s.crypto.held = undefined;
  await machine?.close();
}

/** The status entry: mode, whether encrypted rooms are bridged, our device and its keys (what an operator compares with a member's client). */
export function cryptoStatus(s: MatrixAdapterState): Record<string, unknown> {
  const m = s.crypto.machine ?? s.crypto.feed;
  return {
    mode: s.config.encryption?.mode ?? 'optional',
    active: s.crypto.machine !== undefined,
    ...(s.crypto.problem !== undefined ? { problem: s.crypto.problem } : {}),
    ...(s.crypto.oldDevices ? { oldDevices: { ...s.crypto.oldDevices } } : {}),
    ...(s.crypto.crossSigning ? { crossSigning: { ...s.crypto.crossSigning } } : {}),
    ...(m
      ? {
          device: { ...m.identity },
          counters: { ...m.counters, decryptFailures: { ...m.counters.decryptFailures } },
          held: s.crypto.held ? { waiting: s.crypto.held.size, ...s.crypto.held.counters } : undefined,
        }
      : {}),
  };
}
