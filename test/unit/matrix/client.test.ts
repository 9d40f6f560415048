import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { mxPath, parseRetryAfter, retryAfterMs } from '../../../adapters/matrix/client.js';
import { escapeLocalpart, ghostUserId, localpartOf } from '../../../adapters/matrix/ghosts.js';

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sources(path)));
    else if (entry.name.endsWith('.ts')) out.push(path);
  }
  return out;
}

describe('Matrix adapter dependencies', () => {
  it('never loads matrix-bot-sdk or the native crypto binding (its binary is downloaded at install time): the crypto is the wasm build', async () => {
    const root = fileURLToPath(new URL('../../../', import.meta.url));
    const files = [...(await sources(join(root, 'adapters', 'matrix'))), ...(await sources(join(root, 'src')))];
    expect(files.length).toBeGreaterThan(20);
    const offending: string[] = [];
    for (const file of files) {
      const text = await readFile(file, 'utf8');
      if (/(?:from|import\(|require\()\s*['"](?:matrix-bot-sdk|@matrix-org\/matrix-sdk-crypto-nodejs)['"]/.test(text)) offending.push(file);
    }
    expect(offending).toEqual([]);
    const machine = await readFile(join(root, 'adapters', 'matrix', 'crypto', 'machine.ts'), 'utf8');
    expect(machine).toContain("import('@matrix-org/matrix-sdk-crypto-wasm')");
  });
});

describe('Matrix client helpers', () => {
  it('encodes path parameters', () => {
    expect(mxPath`/rooms/${'!a:b.c'}/send/${'m.room.message'}/${'t/1 2'}`).toBe('/rooms/!a%3Ab.c/send/m.room.message/t%2F1%202');
  });

  it('reads Retry-After as seconds or a date, and takes the longer of header and retry_after_ms', () => {
    expect(parseRetryAfter('3')).toBe(3000);
    expect(parseRetryAfter(new Date(Date.now() + 5000).toUTCString())).toBeGreaterThan(3000);
    expect(parseRetryAfter(null)).toBeUndefined();
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(retryAfterMs('2', { retry_after_ms: 1500 })).toBe(2000);
    expect(retryAfterMs('1', { retry_after_ms: 2500 })).toBe(2500);
    expect(retryAfterMs(null, { retry_after_ms: 700 })).toBe(700);
    expect(retryAfterMs(null, {})).toBeUndefined();
  });
});

describe('Matrix ghost naming', () => {
  it('escapes uids reversibly into the localpart alphabet (spec appendix)', () => {
    expect(escapeLocalpart('xmpp:Carol_x@example.net')).toBe('xmpp=3a_carol__x=40example.net');
    expect(escapeLocalpart('mqtt:pump-7/a')).toBe('mqtt=3apump-7/a');
    expect(escapeLocalpart('ü')).toBe('=c3=bc');
    const id = ghostUserId('_sg_', 'api:Alice', 'example.org');
    expect(id).toBe('@_sg_api=3a_alice:example.org');
    expect(localpartOf(id)).toBe('_sg_api=3a_alice');
    expect(/^[a-z0-9._=\-/+]+$/.test(localpartOf(id))).toBe(true);
  });

  it('keeps long ids within 255 bytes and distinct', () => {
    const a = ghostUserId('_sg_', `api:${'x'.repeat(300)}a`, 'example.org');
    const b = ghostUserId('_sg_', `api:${'x'.repeat(300)}b`, 'example.org');
    expect(Buffer.byteLength(a)).toBeLessThanOrEqual(255);
    expect(a).not.toBe(b);
    expect(a.startsWith('@_sg_api=3axxx')).toBe(true);
  });
});
