import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { pino, type Logger } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { CRYPTO_BINDING, loadMatrixSdk, mxPath, parseRetryAfter, probeCryptoBinding, retryAfterMs, type MatrixSdk } from '../../../adapters/matrix/client.js';
import { escapeLocalpart, ghostUserId, localpartOf } from '../../../adapters/matrix/ghosts.js';

interface LogLine {
  level: number;
  msg: string;
}

function capture(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  return { log, lines };
}

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** A module tree shaped like the real one: an SDK whose index requires the crypto binding. */
async function fakeTree(bindingLoads: boolean): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'sg-mx-sdk-'));
  dirs.push(root);
  const sdk = join(root, 'node_modules', 'fake-sdk');
  const binding = join(root, 'node_modules', ...CRYPTO_BINDING.split('/'));
  await mkdir(sdk, { recursive: true });
  await mkdir(binding, { recursive: true });
  await writeFile(join(sdk, 'package.json'), JSON.stringify({ name: 'fake-sdk', main: 'index.js' }));
  await writeFile(join(sdk, 'index.js'), `const b = require('${CRYPTO_BINDING}'); module.exports = { loaded: true, bindingIsReal: b.real === true };`);
  await writeFile(join(binding, 'package.json'), JSON.stringify({ name: CRYPTO_BINDING, main: 'index.js' }));
  await writeFile(
    join(binding, 'index.js'),
    bindingLoads ? 'module.exports = { real: true };' : `throw new Error("Cannot find module '${CRYPTO_BINDING}-linux-x64-gnu'");`,
  );
  return join(sdk, 'index.js');
}

async function loadFake(bindingLoads: boolean) {
  const entry = await fakeTree(bindingLoads);
  const { log, lines } = capture();
  const load = await loadMatrixSdk(log, { sdkEntry: entry, importSdk: async () => (await import(pathToFileURL(entry).href)) as MatrixSdk });
  return { load, lines, entry };
}

describe('Matrix SDK loading', () => {
  it('without the native binding: stubs it, loads the SDK and warns once that E2EE is unavailable', async () => {
    const { load, lines, entry } = await loadFake(false);
    expect(load.e2ee).toBe(false);
    expect(load.sdk).toMatchObject({ loaded: true, bindingIsReal: false });
    const warnings = lines.filter((l) => l.level === 40);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.msg).toMatch(/end-to-end encryption unavailable/);
    // The stub is in the CommonJS cache under the binding's real path.
    const bindingPath = createRequire(entry).resolve(CRYPTO_BINDING);
    expect(createRequire(import.meta.url).cache[bindingPath]?.exports).toEqual({});
  });

  it('with the native binding: stubs nothing and reports E2EE as available', async () => {
    const { load, lines } = await loadFake(true);
    expect(load.e2ee).toBe(true);
    expect(load.sdk).toMatchObject({ loaded: true, bindingIsReal: true });
    expect(lines.filter((l) => l.level >= 40)).toEqual([]);
    expect(lines.some((l) => /binding loaded/.test(l.msg))).toBe(true);
  });

  it('loads the real matrix-bot-sdk on this machine, once per process', async () => {
    const { log, lines } = capture();
    const probe = probeCryptoBinding(createRequire(import.meta.url).resolve('matrix-bot-sdk'));
    const first = await loadMatrixSdk(log);
    const second = await loadMatrixSdk(log);
    expect(second).toBe(first);
    expect(first.sdk?.MatrixClient).toBeTypeOf('function');
    expect(first.e2ee).toBe(probe.available);
    const e2eeLines = lines.filter((l) => /end-to-end encryption/.test(l.msg));
    expect(e2eeLines).toHaveLength(1);
    expect(e2eeLines[0]?.level).toBe(probe.available ? 30 : 40);
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
