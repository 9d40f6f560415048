/**
 * The adapter's crypto through a session (session.ts calls these):
 * prepared at start() (the sealed store read: a wrong secret fails the
 * start with SG_ERR_STATE_SEALED_KEY), opened once the homeserver told us
 * our device, closed at stop(). A replica that takes the connection over
 * reads the store afresh at its start(), so it continues with the same
 * device and sessions.
 *
 * Crypto is on when `encryption.mode` is `optional` (the default) and a
 * `storeSecret` is configured, in bot mode; otherwise encrypted rooms are
 * refused as before, and the status says why.
 */
import { SyncgateError } from '../../../src/core/errors.js';
import type { MatrixAdapterState } from '../state.js';
import { HeldEvents } from './held.js';
import { readCryptoStore, type MatrixCrypto } from './machine.js';

/** Why crypto is off for this adapter (undefined: it is configured). */
export function cryptoUnavailable(s: MatrixAdapterState): string | undefined {
  const e = s.config.encryption;
  if (e?.mode === 'off') return 'encryption.mode is off';
  if (s.mode !== 'bot') return 'end-to-end encryption is implemented for bot mode only';
  if (e?.storeSecret === undefined) return 'encryption.storeSecret is not set (the crypto state must be encrypted at rest)';
  if (!s.deps.sealed) return 'no sealed state store was given to the adapter';
  return s.crypto.lost;
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
    s.crypto.prepared = await readCryptoStore({ http: s.http, log: s.log, sealed: sealed(`matrix-crypto:${s.name}`, secret), storeName: s.name });
  } catch (err) {
    if (err instanceof SyncgateError && err.code === 'SG_ERR_STATE_SEALED_KEY') {
      s.log.error({ err }, 'Matrix crypto store does not open with encryption.storeSecret: refusing to start rather than becoming a new device');
    }
    throw err;
  }
}

/** After login: the machine for our device, keys uploaded (again on a reconnect). */
export async function openCrypto(s: MatrixAdapterState, deviceId: string | undefined): Promise<void> {
  const prepared = s.crypto.prepared;
  if (!prepared) return;
  if (!s.crypto.machine) {
    if (deviceId === undefined) {
      s.crypto.problem = 'the homeserver did not tell our device id (whoami): encrypted rooms are refused';
      s.log.error(s.crypto.problem);
      return;
    }
    if (prepared.storedDevice?.deviceId !== deviceId || prepared.storedDevice.userId !== s.userId) {
      // No stored identity for this device: if the homeserver already has keys for it, our store was lost.
      const keys = await s.http.request('POST', '/_matrix/client/v3/keys/query', { body: { device_keys: { [s.userId]: [deviceId] } } });
      const mine = (keys['device_keys'] as Record<string, Record<string, unknown>> | undefined)?.[s.userId]?.[deviceId];
      if (mine !== undefined) {
        s.crypto.lost = `the crypto store for ${s.userId} device ${deviceId} is lost (nothing stored for it, or another secret's store was dropped) but the homeserver has that device's keys: delete the device (Element: Settings → Sessions, or the admin API) or set bot.deviceId to a new id, then restart; encrypted rooms are refused meanwhile`;
        s.crypto.problem = s.crypto.lost;
        s.log.error({ userId: s.userId, deviceId }, `Matrix crypto: ${s.crypto.lost}`);
        return;
      }
    }
    s.crypto.machine = await prepared.open(s.userId, deviceId);
    s.crypto.problem = undefined;
  }
  await s.crypto.machine.start();
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

/** After a /sync batch's to-device events: held events whose key may have come, before the batch's timeline. */
export async function afterCryptoSync(s: MatrixAdapterState): Promise<void> {
  await s.crypto.held?.retryAll();
}

export async function closeCrypto(s: MatrixAdapterState): Promise<void> {
  const machine = s.crypto.machine;
  s.crypto.machine = undefined;
  s.crypto.prepared = undefined;
  s.crypto.lost = undefined;
  clearInterval(s.crypto.heldTimer);
  s.crypto.heldTimer = undefined;
  s.crypto.held = undefined;
  await machine?.close();
}

/** The status entry: mode, whether encrypted rooms are bridged, our device and its keys (what an operator compares with a member's client). */
export function cryptoStatus(s: MatrixAdapterState): Record<string, unknown> {
  const m = s.crypto.machine;
  return {
    mode: s.config.encryption?.mode ?? 'optional',
    active: m !== undefined,
    ...(s.crypto.problem !== undefined ? { problem: s.crypto.problem } : {}),
    ...(m
      ? {
          device: { ...m.identity },
          counters: { ...m.counters, decryptFailures: { ...m.counters.decryptFailures } },
          held: s.crypto.held ? { waiting: s.crypto.held.size, ...s.crypto.held.counters } : undefined,
        }
      : {}),
  };
}
