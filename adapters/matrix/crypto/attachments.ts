/**
 * Encrypted attachments (spec "Sending encrypted attachments"): in an
 * end-to-end encrypted room a file is AES-256-CTR encrypted by the sender
 * with a fresh key, uploaded as ciphertext, and the event carries `file` — an
 * EncryptedFile with the mxc:// URL, the key as a JWK, the IV and the SHA-256
 * of the ciphertext — instead of `url`. Node's crypto does the work; the
 * OlmMachine is not involved (the event that carries the key is Megolm
 * encrypted like any other).
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** The EncryptedFile of the spec (`v2`). */
export interface EncryptedFile {
  readonly url: string;
  readonly key: { readonly kty: 'oct'; readonly key_ops: readonly string[]; readonly alg: 'A256CTR'; readonly k: string; readonly ext: true };
  readonly iv: string;
  readonly hashes: { readonly sha256: string };
  readonly v: 'v2';
}

/** The hash of the downloaded ciphertext is not the one the event gave: the file was altered or is another one. */
export class AttachmentHashMismatchError extends Error {
  constructor(readonly mxc: string) {
    super(`the SHA-256 of ${mxc} is not the one its event gives: not decrypted`);
    this.name = 'AttachmentHashMismatchError';
  }
}

const MXC = /^mxc:\/\/[^/]+\/[^/]+$/;

/** Unpadded base64 (the spec's encoding of iv and hashes). */
function unpadded(b: Buffer): string {
  return b.toString('base64').replace(/=+$/, '');
}

/** Decodes base64 or base64url, padded or not; undefined when it is neither. */
function decode(text: string): Buffer | undefined {
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(text)) return undefined;
  return Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * `content.file` as the spec defines it, or why not: an A256CTR octet key of
 * 32 bytes that may decrypt, a 16-byte IV, a 32-byte SHA-256, version v2
 * and an mxc:// URL. Anything else is not decrypted.
 */
export function parseEncryptedFile(v: unknown): { file: EncryptedFile } | { problem: string } {
  if (!isObject(v)) return { problem: 'file is not an object' };
  const { url, key, iv, hashes } = v;
  if (v['v'] !== 'v2') return { problem: `file.v is ${JSON.stringify(v['v'])}, not v2` };
  if (typeof url !== 'string' || url.length > 1024 || !MXC.test(url)) return { problem: 'file.url is not an mxc:// URL' };
  if (!isObject(key) || key['kty'] !== 'oct' || key['alg'] !== 'A256CTR' || key['ext'] !== true || typeof key['k'] !== 'string') return { problem: 'file.key is not an A256CTR JWK' };
  const ops = key['key_ops'];
  if (!Array.isArray(ops) || !ops.includes('decrypt')) return { problem: 'file.key.key_ops has no decrypt' };
  if (decode(key['k'])?.length !== 32) return { problem: 'file.key.k is not a 256-bit key' };
  if (typeof iv !== 'string' || decode(iv)?.length !== 16) return { problem: 'file.iv is not 16 bytes' };
  if (!isObject(hashes) || typeof hashes['sha256'] !== 'string' || decode(hashes['sha256'])?.length !== 32) return { problem: 'file.hashes.sha256 is not a SHA-256' };
  return {
    file: {
      url,
      key: { kty: 'oct', key_ops: ops.filter((o): o is string => typeof o === 'string'), alg: 'A256CTR', k: key['k'], ext: true },
      iv,
      hashes: { sha256: hashes['sha256'] },
      v: 'v2',
    },
  };
}

/**
 * Encrypts a file for an encrypted room: a random 256-bit key, a 128-bit
 * counter block whose high 64 bits are random and low 64 bits zero (so the
 * counter never wraps, as the spec asks), AES-CTR, and the SHA-256 of the
 * ciphertext. The EncryptedFile gets its `url` once the ciphertext is
 * uploaded.
 */
export function encryptAttachment(plain: Uint8Array): { ciphertext: Buffer; file: Omit<EncryptedFile, 'url'> } {
  const key = randomBytes(32);
  const iv = Buffer.concat([randomBytes(8), Buffer.alloc(8)]);
  const cipher = createCipheriv('aes-256-ctr', key, iv);
  const ciphertext = Buffer.concat([cipher.update(plain), cipher.final()]);
  return {
    ciphertext,
    file: {
      key: { kty: 'oct', key_ops: ['encrypt', 'decrypt'], alg: 'A256CTR', k: key.toString('base64url'), ext: true },
      iv: unpadded(iv),
      hashes: { sha256: unpadded(createHash('sha256').update(ciphertext).digest()) },
      v: 'v2',
    },
  };
}

/** Checks the ciphertext's SHA-256 against the event's (throws AttachmentHashMismatchError), then decrypts it. */
export function decryptAttachment(ciphertext: Uint8Array, file: EncryptedFile): Buffer {
  const expected = decode(file.hashes.sha256);
  const actual = createHash('sha256').update(ciphertext).digest();
  if (!expected || expected.length !== actual.length || !timingSafeEqual(expected, actual)) throw new AttachmentHashMismatchError(file.url);
  const key = decode(file.key.k);
  const iv = decode(file.iv);
  if (!key || !iv) throw new AttachmentHashMismatchError(file.url);
  const decipher = createDecipheriv('aes-256-ctr', key, iv);
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
}
