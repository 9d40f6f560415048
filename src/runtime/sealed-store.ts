/**
 * The `SealedStore` port on top of the log's state store: values are sealed
 * with AES-256-GCM under a key derived (HKDF-SHA-256) from the operator's
 * secret and the namespace, with the namespace and key as associated data.
 * Stored form: `s1:` + base64(iv[12] | tag[16] | ciphertext).
 * `blind()` names: base64url of HMAC-SHA-256 under a second derived key
 * (info `syncgate sealed names`), cut to 32 characters (192 bits).
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { SyncgateError } from '../core/errors.js';
import type { SealedStore, StateStore } from '../core/ports.js';

const PREFIX = 's1:';
const IV = 12;
const TAG = 16;

export function createSealedStore(state: StateStore, ns: string, secret: string): SealedStore {
  if (secret.length === 0) throw new SyncgateError('SG_ERR_CONFIG_INVALID', `the secret sealing ${ns} is empty`);
  const key = Buffer.from(hkdfSync('sha256', secret, 'syncgate sealed state', ns, 32));
  const nameKey = Buffer.from(hkdfSync('sha256', secret, 'syncgate sealed names', ns, 32));
  const aad = (k: string): Buffer => Buffer.from(`${ns}\u0000${k}`, 'utf8');

  const seal = (k: string, value: Uint8Array): string => {
    const iv = randomBytes(IV);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(aad(k));
    const body = Buffer.concat([cipher.update(value), cipher.final()]);
    return PREFIX + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
  };

  const open = (k: string, stored: string): Uint8Array => {
    const raw = stored.startsWith(PREFIX) ? Buffer.from(stored.slice(PREFIX.length), 'base64') : undefined;
    if (raw === undefined || raw.length < IV + TAG) {
      throw new SyncgateError('SG_ERR_STATE_SEALED_KEY', `${ns}/${k} is not a sealed value`);
    }
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV));
      decipher.setAAD(aad(k));
      decipher.setAuthTag(raw.subarray(IV, IV + TAG));
      return new Uint8Array(Buffer.concat([decipher.update(raw.subarray(IV + TAG)), decipher.final()]));
    } catch {
      throw new SyncgateError('SG_ERR_STATE_SEALED_KEY', `${ns}/${k} does not open with the configured secret`);
    }
  };

  return {
    async get(k) {
      const stored = await state.get(ns, k);
      return stored === undefined ? undefined : open(k, stored);
    },
    async set(k, value) {
      await state.set(ns, k, seal(k, value));
    },
    delete: (k) => state.delete(ns, k),
    update: (set, del) => state.update(ns, set.map(([k, value]) => [k, seal(k, value)] as const), del),
    blind: (label) => createHmac('sha256', nameKey).update(label, 'utf8').digest('base64url').slice(0, 32),
    async entries() {
      const all = await state.entries(ns);
      return all.map(([k, stored]) => [k, open(k, stored)]);
    },
  };
}
