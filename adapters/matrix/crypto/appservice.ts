/**
 * Appservice mode: the bridge bot's device is fed from the homeserver's
 * transactions instead of a /sync (there is none for an appservice):
 *
 * - MSC2409: to-device messages of the AS's users as
 *   `de.sorunome.msc2409.to_device`, each with `to_user_id` / `to_device_id`
 *   (Synapse `experimental_features: msc2409_to_device_messages_enabled`);
 * - MSC3202: `org.matrix.msc3202.device_lists` {changed, left},
 *   `org.matrix.msc3202.device_one_time_keys_count` (and the older
 *   `…device_one_time_key_counts`) and
 *   `org.matrix.msc3202.device_unused_fallback_key_types`, both per user and
 *   device (Synapse `msc3202_transaction_extensions`).
 *
 * Neither is advertised by the homeserver, so the adapter finds out: once
 * its keys are uploaded it sends one to-device message to its own device
 * (`PROBE_TYPE`) and waits for a transaction that carries it, and for its
 * own one-time-key counts. Until then encrypted rooms wait (deliveries are
 * retried); after `encryption.extensionsTimeoutMs` without them the status
 * says which setting is missing, encrypted rooms are refused as without
 * crypto, and the probe is sent again at that interval: one that arrives
 * later (the homeserver was reconfigured and restarted) turns the crypto on
 * then.
 */
import { randomBytes } from 'node:crypto';
import type { JsonObject } from '../client.js';
import { isObject } from '../normalise.js';

export const PROBE_TYPE = 'org.syncgate.crypto_probe';

/** Which settings the status names when the extensions do not come. */
export const MISSING_TO_DEVICE =
  'the homeserver does not push to-device messages in appservice transactions (MSC2409): in Synapse set experimental_features: {msc2409_to_device_messages_enabled: true, msc3202_transaction_extensions: true} and, in the registration, de.sorunome.msc2409.push_ephemeral: true and org.matrix.msc3202: true (syncgate matrix-registration writes both), then restart Synapse; encrypted rooms are refused meanwhile';
export const MISSING_KEY_COUNTS =
  'the homeserver pushes to-device messages but not the one-time-key counts and device lists in appservice transactions (MSC3202): in Synapse set experimental_features: {msc3202_transaction_extensions: true} and, in the registration, org.matrix.msc3202: true, then restart Synapse; encrypted rooms are refused meanwhile';

export interface TransactionCrypto {
  /** the parts as a /sync answer has them, for MatrixCrypto.receiveSync */
  readonly sync: JsonObject;
  /** the transaction carries anything for our device */
  readonly any: boolean;
  /** nonces of our probes it carries */
  readonly probes: readonly string[];
  /** it carries our device's one-time-key counts (MSC3202 works) */
  readonly counts: boolean;
}

const perDevice = (v: unknown, userId: string, deviceId: string): unknown => {
  const user = isObject(v) ? v[userId] : undefined;
  return isObject(user) ? user[deviceId] : undefined;
};

/** Our device's share of a transaction's MSC2409 / MSC3202 fields. */
export function transactionCrypto(body: JsonObject, userId: string, deviceId: string): TransactionCrypto {
  const rawToDevice = body['de.sorunome.msc2409.to_device'] ?? body['to_device'];
  const events: JsonObject[] = [];
  const probes: string[] = [];
  for (const e of Array.isArray(rawToDevice) ? rawToDevice : []) {
    if (!isObject(e) || e['to_user_id'] !== userId || e['to_device_id'] !== deviceId) continue;
    const { to_user_id: _u, to_device_id: _d, ...event } = e;
    if (event['type'] === PROBE_TYPE) {
      const nonce = isObject(event['content']) ? event['content']['nonce'] : undefined;
      if (event['sender'] === userId && typeof nonce === 'string') probes.push(nonce);
      continue;
    }
    events.push(event);
  }
  const lists = body['org.matrix.msc3202.device_lists'] ?? body['device_lists'];
  const counts = perDevice(body['org.matrix.msc3202.device_one_time_keys_count'] ?? body['org.matrix.msc3202.device_one_time_key_counts'] ?? body['device_one_time_keys_count'], userId, deviceId);
  const fallback = perDevice(body['org.matrix.msc3202.device_unused_fallback_key_types'] ?? body['device_unused_fallback_key_types'], userId, deviceId);
  const sync: JsonObject = { to_device: { events } };
  if (isObject(lists)) sync['device_lists'] = lists;
  if (isObject(counts)) sync['device_one_time_keys_count'] = counts;
  if (Array.isArray(fallback)) sync['device_unused_fallback_key_types'] = fallback;
  const listed = isObject(lists) && ((Array.isArray(lists['changed']) && lists['changed'].length > 0) || (Array.isArray(lists['left']) && lists['left'].length > 0));
  return { sync, any: events.length > 0 || listed || isObject(counts) || Array.isArray(fallback), probes, counts: isObject(counts) };
}

export function newProbeNonce(): string {
  return randomBytes(12).toString('base64url');
}
