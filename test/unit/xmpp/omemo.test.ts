// The XMPP adapter's OMEMO settings and pure helpers (issue 26): config rules, fingerprints,
// the trust policy, device lists, the staged store, and the server snippets.
import { describe, expect, it } from 'vitest';
import { parseXmppConfig } from '../../../adapters/xmpp/config.js';
import { XmppConfigError } from '../../../adapters/xmpp/errors.js';
import { ejabberdConfigSnippet } from '../../../adapters/xmpp/ejabberd-config.js';
import { OMEMO_LIBRARY, loadSignalLibrary, parseDeviceList } from '../../../adapters/xmpp/omemo.js';
import { OmemoStore, fingerprintOf, normaliseFingerprint, trustPolicy } from '../../../adapters/xmpp/omemo-store.js';
import { prosodyConfigSnippet } from '../../../adapters/xmpp/prosody-config.js';
import { capsElement, capsVer } from '../../../adapters/xmpp/protocol.js';
import { parseXml } from '../../../adapters/xmpp/xml.js';
import type { SealedStore } from '../../../src/core/ports.js';
import { isSyncgateError } from '../../../src/core/errors.js';

const minimal = { service: 'xmpp://127.0.0.1:5222', jid: 'bridge@example.org', password: 'secret' };
const SECRET = 'a-secret-of-sixteen-or-more';
const KEY_HEX = '1c62155a473637b5af9609794724ab2b65936c0b2c62a2e7d6b8f9a0a1b2c3d4';

function problemsOf(input: Record<string, unknown>): string[] {
  try {
    parseXmppConfig({ ...minimal, ...input });
    return [];
  } catch (err) {
    if (err instanceof XmppConfigError) return [...err.problems];
    throw err;
  }
}

/** A sealed store in memory that counts its writes. */
function memorySealed(): SealedStore & { writes: number; data: Map<string, Uint8Array> } {
  const data = new Map<string, Uint8Array>();
  const store = {
    writes: 0,
    data,
    get: async (k: string) => data.get(k),
    set: async (k: string, v: Uint8Array) => {
      store.writes++;
      data.set(k, v);
    },
    delete: async (k: string) => data.delete(k),
    entries: async () => [...data],
    update: async (set: ReadonlyArray<readonly [string, Uint8Array]>, del: readonly string[]) => {
      store.writes++;
      for (const k of del) data.delete(k);
      for (const [k, v] of set) data.set(k, v);
    },
    blind: (label: string) => `blind:${label}`,
  };
  return store;
}

describe('OMEMO config', () => {
  it('defaults to optional with blind trust; required needs the secret; fingerprints are checked', () => {
    expect(parseXmppConfig(minimal)).toMatchObject({ omemo: 'optional', omemoTrust: 'blind', omemoTrusted: [], omemoDeviceListTtlMs: 60_000, omemoRemoveLostDevice: false });
    expect(problemsOf({ omemo: 'required' }).join('\n')).toMatch(/omemoSecret: omemo: required needs the secret/);
    expect(problemsOf({ omemo: 'required', omemoSecret: SECRET })).toEqual([]);
    expect(problemsOf({ omemoSecret: 'short' }).join('\n')).toMatch(/omemoSecret/);
    expect(problemsOf({ omemo: 'sometimes' }).join('\n')).toMatch(/omemo/);
    const grouped = (KEY_HEX.toUpperCase().match(/.{8}/g) ?? []).join(' ');
    expect(problemsOf({ omemoTrusted: [{ jid: 'alice@example.org', fingerprint: grouped }, { jid: 'bob@example.org', fingerprint: `05${KEY_HEX}` }] })).toEqual([]);
    expect(problemsOf({ omemoTrusted: [{ jid: 'alice@example.org', fingerprint: `${KEY_HEX}00` }] }).join('\n')).toMatch(/omemoTrusted\/0\/fingerprint/);
    expect(problemsOf({ omemoTrusted: [{ jid: 'not a jid', fingerprint: KEY_HEX }] }).join('\n')).toMatch(/omemoTrusted/);
  });
});

describe('fingerprints and trust', () => {
  const key = new Uint8Array([5, ...Buffer.from(KEY_HEX, 'hex')]);
  const other = new Uint8Array([5, ...Buffer.from(KEY_HEX.replace(/^1c/, '2d'), 'hex')]);

  it('shows the 32 key bytes in groups of 8 hex digits, and reads what operators paste', () => {
    expect(fingerprintOf(key)).toBe((KEY_HEX.match(/.{8}/g) ?? []).join(' '));
    expect(normaliseFingerprint(`05:${KEY_HEX.toUpperCase()}`)).toBe(KEY_HEX);
    expect(normaliseFingerprint(fingerprintOf(key))).toBe(KEY_HEX);
  });

  it('blind trust before verification: anything until a key of the contact is listed, then only listed keys; manual: only listed', () => {
    const config = (omemoTrust: 'blind' | 'manual') => parseXmppConfig({ ...minimal, omemoTrust, omemoTrusted: [{ jid: 'Alice@Example.org', fingerprint: fingerprintOf(key) }] });
    const blind = new OmemoStore(memorySealed(), trustPolicy({ config: config('blind') }));
    expect(blind.trusts('alice@example.org', key.buffer)).toBe(true);
    expect(blind.trusts('alice@example.org', other.buffer)).toBe(false);
    expect(blind.trusts('bob@example.org', other.buffer)).toBe(true);
    const manual = new OmemoStore(memorySealed(), trustPolicy({ config: config('manual') }));
    expect(manual.trusts('alice@example.org', key.buffer)).toBe(true);
    expect(manual.trusts('bob@example.org', other.buffer)).toBe(false);
  });
});

describe('the staged store', () => {
  it('keeps the library writes in memory until commit; discard forgets them; reads see staged values first', async () => {
    const sealed = memorySealed();
    const store = new OmemoStore(sealed, trustPolicy({ config: parseXmppConfig(minimal) }));
    await store.storeSession('alice@example.org.7', 'session-1');
    await store.removePreKey(3);
    expect(await store.loadSession('alice@example.org.7')).toBe('session-1');
    expect(sealed.writes).toBe(0);
    expect(store.usedPreKeys).toEqual([3]);
    store.discard();
    expect(await store.loadSession('alice@example.org.7')).toBeUndefined();
    expect(store.usedPreKeys).toEqual([]);
    await store.storeSession('alice@example.org.7', 'session-2');
    await store.commit();
    expect(sealed.writes).toBe(1);
    expect(store.dirty).toBe(false);
    expect(new TextDecoder().decode(sealed.data.get('session:alice@example.org.7'))).toBe('session-2');
    // A fresh store over the same sealed values reads what was committed.
    const again = new OmemoStore(sealed, trustPolicy({ config: parseXmppConfig(minimal) }));
    expect(await again.loadSession('alice@example.org.7')).toBe('session-2');
  });
});

describe('stanzas', () => {
  it('reads device ids from a device list and ignores what is not one', () => {
    const list = parseXml('<list xmlns="eu.siacs.conversations.axolotl"><device id="12"/><device id="x"/><device id="-1"/><device id="4294967296"/><device id="99"/></list>');
    expect(parseDeviceList(list)).toEqual([12, 99]);
    expect(parseDeviceList(parseXml('<list xmlns="urn:xmpp:omemo:2"><device id="1"/></list>'))).toEqual([]);
    expect(parseDeviceList(undefined)).toEqual([]);
  });

  it('computes the XEP-0115 verification string hash (the XEP’s own example), independent of feature order', () => {
    const features = ['http://jabber.org/protocol/caps', 'http://jabber.org/protocol/disco#info', 'http://jabber.org/protocol/disco#items', 'http://jabber.org/protocol/muc'];
    expect(capsVer({ category: 'client', type: 'pc', name: 'Exodus 0.9.1' }, features)).toBe('QgayPKawpkPSDYmwT/WM94uAlu0=');
    expect(capsVer({ category: 'client', type: 'pc', name: 'Exodus 0.9.1' }, [...features].reverse())).toBe('QgayPKawpkPSDYmwT/WM94uAlu0=');
    expect(capsElement(['urn:xmpp:ping']).attrs).toMatchObject({ hash: 'sha-1', ver: capsVer({ category: 'client', type: 'bot', name: 'syncgate' }, ['urn:xmpp:ping']) });
  });

  it('the server snippets turn PEP on once the bridge is an OMEMO device', () => {
    expect(prosodyConfigSnippet({ jid: 'b@x.org' })).toMatch(/^ {2}-- "pep";/m);
    expect(prosodyConfigSnippet({ jid: 'b@x.org', omemo: 'optional', omemoSecret: SECRET })).toMatch(/^ {2}"pep";/m);
    expect(ejabberdConfigSnippet({ jid: 'b@x.org' }, { mucDomains: ['c.x.org'] })).toMatch(/^ {2}# mod_pubsub:/m);
    expect(ejabberdConfigSnippet({ jid: 'b@x.org', omemo: 'optional', omemoSecret: SECRET }, { mucDomains: ['c.x.org'] })).toMatch(/^ {2}mod_pubsub: .*\n {4}plugins: \["flat", "pep"\]/m);
  });
});

describe('the OMEMO library is opt-in', () => {
  it('a missing Signal library is SG_ERR_CONFIG_INVALID naming the package to install', async () => {
    const err: unknown = await loadSignalLibrary('@privacyresearch/not-installed-signal-library').catch((e: unknown) => e);
    expect(isSyncgateError(err, 'SG_ERR_CONFIG_INVALID')).toBe(true);
    expect(String((err as Error).message)).toMatch(/npm install @privacyresearch\/not-installed-signal-library@0\.0\.16.*WITH_OMEMO=true.*unset omemoSecret/);
  });

  it('the installed one loads', async () => {
    const lib = await loadSignalLibrary(OMEMO_LIBRARY);
    expect(typeof lib.KeyHelper.generateIdentityKeyPair).toBe('function');
  });
});
