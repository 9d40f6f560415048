/**
 * Encrypted attachments (adapters/matrix/crypto/attachments.ts) against the
 * spec's rules ("Sending encrypted attachments") and an independent AES-CTR
 * decryption with Node's crypto.
 */
import { createDecipheriv, createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { AttachmentHashMismatchError, decryptAttachment, encryptAttachment, parseEncryptedFile } from '../../../adapters/matrix/crypto/attachments.js';

const plain = Buffer.from('a file of more than one sixteen-byte block, to move the counter');

describe('encrypted attachments', () => {
  it('encrypts with a fresh 256-bit key and a counter block whose low 64 bits are zero; the hash is of the ciphertext', () => {
    const a = encryptAttachment(plain);
    const b = encryptAttachment(plain);
    expect(a.file.key.k).not.toBe(b.file.key.k);
    expect(a.ciphertext.equals(plain)).toBe(false);
    const iv = Buffer.from(a.file.iv, 'base64');
    expect(iv).toHaveLength(16);
    expect(iv.subarray(8).equals(Buffer.alloc(8))).toBe(true);
    expect(a.file.iv).not.toContain('=');
    expect(a.file.hashes.sha256).toBe(createHash('sha256').update(a.ciphertext).digest('base64').replace(/=+$/, ''));
    expect(a.file).toMatchObject({ v: 'v2', key: { kty: 'oct', alg: 'A256CTR', ext: true, key_ops: ['encrypt', 'decrypt'] } });
    const independent = createDecipheriv('aes-256-ctr', Buffer.from(a.file.key.k, 'base64url'), iv);
    expect(Buffer.concat([independent.update(a.ciphertext), independent.final()]).equals(plain)).toBe(true);
  });

  it('decrypts what it encrypted, and refuses a ciphertext whose hash does not match', () => {
    const { ciphertext, file } = encryptAttachment(plain);
    const full = { ...file, url: 'mxc://example.org/abc' };
    expect(decryptAttachment(ciphertext, full).equals(plain)).toBe(true);
    const altered = Buffer.from(ciphertext);
    altered[0] = (altered[0] ?? 0) ^ 1;
    expect(() => decryptAttachment(altered, full)).toThrow(AttachmentHashMismatchError);
  });

  it('takes only a v2 file with an mxc:// URL, a 256-bit A256CTR key that may decrypt, a 16-byte IV and a SHA-256', () => {
    const { file } = encryptAttachment(plain);
    const good = { ...file, url: 'mxc://example.org/abc' };
    expect(parseEncryptedFile(good)).toEqual({ file: good });
    expect(parseEncryptedFile({ ...good, v: 'v1' })).toEqual({ problem: 'file.v is "v1", not v2' });
    expect(parseEncryptedFile({ ...good, url: 'https://example.org/abc' })).toEqual({ problem: 'file.url is not an mxc:// URL' });
    expect(parseEncryptedFile({ ...good, key: { ...good.key, alg: 'A128CTR' } })).toEqual({ problem: 'file.key is not an A256CTR JWK' });
    expect(parseEncryptedFile({ ...good, key: { ...good.key, key_ops: ['encrypt'] } })).toEqual({ problem: 'file.key.key_ops has no decrypt' });
    expect(parseEncryptedFile({ ...good, key: { ...good.key, k: 'c2hvcnQ' } })).toEqual({ problem: 'file.key.k is not a 256-bit key' });
    expect(parseEncryptedFile({ ...good, iv: 'AAAA' })).toEqual({ problem: 'file.iv is not 16 bytes' });
    expect(parseEncryptedFile({ ...good, hashes: {} })).toEqual({ problem: 'file.hashes.sha256 is not a SHA-256' });
    expect(parseEncryptedFile('x')).toEqual({ problem: 'file is not an object' });
  });
});
