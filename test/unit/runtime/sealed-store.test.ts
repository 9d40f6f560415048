import { describe, expect, it } from 'vitest';
import { isSyncgateError } from '../../../src/core/errors.js';
import { createEventLog } from '../../../src/eventlog/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { createSealedStore } from '../../../src/runtime/sealed-store.js';

function world() {
  const log = createEventLog({ partitions: 1, log: silentLogger() });
  return { state: log.state, close: () => log.close() };
}

const bytes = (text: string) => new Uint8Array(Buffer.from(text, 'utf8'));

async function sealedKeyError(run: () => Promise<unknown>): Promise<boolean> {
  try {
    await run();
    return false;
  } catch (err) {
    return isSyncgateError(err, 'SG_ERR_STATE_SEALED_KEY');
  }
}

describe('sealed store', () => {
  it('gives back what was set, and stores no plaintext', async () => {
    const w = world();
    const store = createSealedStore(w.state, 'crypto:m1', 'a long operator secret');
    await store.set('account', bytes('pickled-identity-key'));
    expect(Buffer.from((await store.get('account'))!).toString()).toBe('pickled-identity-key');
    const raw = await w.state.get('crypto:m1', 'account');
    expect(raw).toMatch(/^s1:/);
    expect(Buffer.from(raw!.slice(3), 'base64').toString('latin1')).not.toContain('pickled-identity-key');
    expect((await store.entries()).map(([k, v]) => [k, Buffer.from(v).toString()])).toEqual([['account', 'pickled-identity-key']]);
    expect(await store.get('absent')).toBeUndefined();
    expect(await store.delete('account')).toBe(true);
    expect(await store.get('account')).toBeUndefined();
    await w.close();
  });

  it('two seals of the same value differ (fresh IV)', async () => {
    const w = world();
    const store = createSealedStore(w.state, 'ns', 'secret');
    await store.set('a', bytes('same'));
    const first = await w.state.get('ns', 'a');
    await store.set('a', bytes('same'));
    expect(await w.state.get('ns', 'a')).not.toBe(first);
    await w.close();
  });

  it('refuses another secret, a value moved to another key or namespace, and altered data', async () => {
    const w = world();
    const store = createSealedStore(w.state, 'ns', 'secret one');
    await store.set('a', bytes('value'));
    const raw = (await w.state.get('ns', 'a'))!;

    expect(await sealedKeyError(() => createSealedStore(w.state, 'ns', 'secret two').get('a'))).toBe(true);
    expect(await sealedKeyError(() => createSealedStore(w.state, 'ns', 'secret two').entries())).toBe(true);

    await w.state.set('ns', 'b', raw);
    expect(await sealedKeyError(() => store.get('b'))).toBe(true);
    await w.state.set('other', 'a', raw);
    expect(await sealedKeyError(() => createSealedStore(w.state, 'other', 'secret one').get('a'))).toBe(true);

    const body = Buffer.from(raw.slice(3), 'base64');
    body.writeUInt8(body.readUInt8(body.length - 1) ^ 1, body.length - 1);
    await w.state.set('ns', 'a', 's1:' + body.toString('base64'));
    expect(await sealedKeyError(() => store.get('a'))).toBe(true);
    await w.state.set('ns', 'a', 'plain text');
    expect(await sealedKeyError(() => store.get('a'))).toBe(true);
    await w.close();
  });

  it('refuses an empty secret', () => {
    const w = world();
    expect(() => createSealedStore(w.state, 'ns', '')).toThrow(/secret sealing ns is empty/);
    return w.close();
  });

  it('update seals each value under its own key and deletes in the same write; blind names depend on the secret and namespace', async () => {
    const w = world();
    const store = createSealedStore(w.state, 'crypto:m2', 'a long operator secret');
    await store.set('old', bytes('gone soon'));
    await store.update([['a', bytes('first')], ['b', bytes('second')]], ['old']);
    expect((await store.entries()).map(([k, v]) => [k, Buffer.from(v).toString()]).sort()).toEqual([['a', 'first'], ['b', 'second']]);
    // Bound to its key: a value copied under another key does not open.
    await w.state.set('crypto:m2', 'c', (await w.state.get('crypto:m2', 'a')) ?? '');
    expect(await sealedKeyError(() => store.get('c'))).toBe(true);
    const name = store.blind('!room:x|session');
    expect(name).toBe(store.blind('!room:x|session'));
    expect(name).toMatch(/^[A-Za-z0-9_-]{32}$/);
    expect(name).not.toBe(store.blind('!room:x|session2'));
    expect(name).not.toBe(createSealedStore(w.state, 'crypto:m2', 'another operator secret').blind('!room:x|session'));
    expect(name).not.toBe(createSealedStore(w.state, 'crypto:m3', 'a long operator secret').blind('!room:x|session'));
    await w.close();
  });
});

