/**
 * The `SealedStore` port on top of the log's state store: values are sealed
 * with AES-256-GCM under a key derived (HKDF-SHA-256) from the operator's
 * secret and the namespace, with the namespace and key as associated data.
 * Stored form: `s1:` + base64(iv[12] | tag[16] | ciphertext).
 * `blind()` names: base64url of HMAC-SHA-256 under a second derived key
 * (info `syncgate sealed names`), cut to 32 characters (192 bits).
 *
 * Fenced (given the adapter's LeaseFence): every write is a
 * StateStore.fencedUpdate under the token of the lease the supervisor holds,
 * and the first operation under a token claims the namespace with it before
 * anything is read, so once this holder read its state no former holder's
 * write lands. A refused write changes nothing, throws SG_ERR_STATE_FENCED
 * and tells the fence (the supervisor stops the session). With no token
 * held (the adapter is not running under the lease here) writes are refused.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { SyncgateError } from '../core/errors.js';
import { FENCE_FIELD, type SealedStore, type StateStore } from '../core/ports.js';
import type { LeaseFence } from './lease-fence.js';

const PREFIX = 's1:';
const IV = 12;
const TAG = 16;

export function createSealedStore(state: StateStore, ns: string, secret: string, fence?: LeaseFence): SealedStore {
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

  /** the token this store claimed the namespace with last */
  let claimed: number | undefined;
  const refusedHere = (err: unknown): never => {
    if (fence && err instanceof SyncgateError && err.code === 'SG_ERR_STATE_FENCED') fence.refused(err);
    throw err;
  };
  /** the token to write under, the namespace claimed with it first */
  const claim = async (forWrite: boolean): Promise<number | undefined> => {
    const token = fence?.current;
    if (token === undefined) {
      if (forWrite) throw new SyncgateError('SG_ERR_STATE_FENCED', `state write to ${ns} refused: this replica does not hold the adapter's connection lease now`);
      return undefined;
    }
    if (claimed !== token) {
      await state.fencedUpdate(ns, token, [], []).catch(refusedHere);
      claimed = token;
    }
    return token;
  };
  /** fenced: one fencedUpdate under the claimed token; returns how many of `del` existed */
  const fencedWrite = async (set: ReadonlyArray<readonly [string, string]>, del: readonly string[]): Promise<number> => {
    const token = await claim(true);
    if (token === undefined) return 0;
    return state.fencedUpdate(ns, token, set, del).catch(refusedHere);
  };

  return {
    async get(k) {
      if (fence) await claim(false);
      const stored = await state.get(ns, k);
      return stored === undefined ? undefined : open(k, stored);
    },
    async set(k, value) {
      if (fence) await fencedWrite([[k, seal(k, value)]], []);
      else await state.set(ns, k, seal(k, value));
    },
    delete: async (k) => (fence ? (await fencedWrite([], [k])) > 0 : state.delete(ns, k)),
    async update(set, del) {
      const sealed = set.map(([k, value]) => [k, seal(k, value)] as const);
      if (fence) await fencedWrite(sealed, del);
      else await state.update(ns, sealed, del);
    },
    blind: (label) => createHmac('sha256', nameKey).update(label, 'utf8').digest('base64url').slice(0, 32),
    async entries() {
      if (fence) await claim(false);
      const all = await state.entries(ns);
      // the fencing token is the store's, not a sealed value
      return all.filter(([k]) => k !== FENCE_FIELD).map(([k, stored]) => [k, open(k, stored)]);
    },
  };
}
