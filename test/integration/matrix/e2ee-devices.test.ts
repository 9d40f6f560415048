/**
 * A lost crypto store (the homeserver has keys for the bridge device, the
 * sealed store has nothing for it): a new device `<deviceId>_<suffix>` is
 * created and an error (SG_ERR_CRYPTO_STORE_LOST) says so; with
 * `encryption.deleteOldDevices` the bridge user's older syncgate devices are
 * deleted — in bot mode through Synapse's user-interactive auth with
 * `bot.password`, in appservice mode with the AS token, which Synapse lets
 * skip UIA when the registration has `io.element.msc4190: true` (MSC4190).
 * The member is an independent Rust-crypto peer.
 */
import { parse } from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import type { LogEvent } from '../../../src/core/event.js';
import { registrationYaml } from '../../../adapters/matrix/index.js';
import { parseMatrixConfig, type MatrixAdapterConfig } from '../../../adapters/matrix/config.js';
import type { AppServiceRegistration } from '../../harness/fake-homeserver.js';
import { waitFor } from '../../harness/free-port.js';
import { E2eePeer } from '../../harness/matrix-e2ee-peer.js';
import { appendApi, appserviceConfig, botConfig, createEnv, Driver, matrixLink, roomEvents, type Env } from './helpers.js';
import { createE2eeAdapter } from './e2ee-room.js';

const RELAY = '@relay:fake.test';
const BOT = '@syncgate:fake.test';
const SECRET = 'a store secret of some length';

let env: Env | undefined;
let peer: E2eePeer | undefined;
const adapters: MatrixAdapter[] = [];

afterEach(async () => {
  for (const a of adapters.splice(0)) await a.stop();
  peer?.close();
  peer = undefined;
  await env?.close();
  env = undefined;
});

async function setup(appservice: boolean): Promise<{ env: Env; peer: E2eePeer }> {
  const e = await createEnv(appservice ? { hs: { msc2409ToDevice: true, msc3202TransactionExtensions: true } } : {});
  env = e;
  e.hs.registerUser('relay', 'relay-pw');
  e.hs.sendStateAsUser(e.alice.userId, e.roomId, 'm.room.encryption', '', { algorithm: 'm.megolm.v1.aes-sha2' });
  peer = await E2eePeer.login(e.hs.url, e.alice.userId, 'pw', 'ALICEPHONE');
  return { env: e, peer };
}

async function start(e: Env, config: MatrixAdapterConfig): Promise<MatrixAdapter> {
  const adapter = createE2eeAdapter(e, config);
  adapters.push(adapter);
  await adapter.start();
  if (config.mode === 'appservice') {
    const address = adapter.listenAddress();
    if (!address) throw new Error('no listener');
    e.hs.setAppServiceUrl('syncgate', `http://127.0.0.1:${address.port}`);
  }
  return adapter;
}

async function stop(adapter: MatrixAdapter): Promise<void> {
  adapters.splice(adapters.indexOf(adapter), 1);
  await adapter.stop();
}

interface Encryption {
  active: boolean;
  problem?: string;
  device?: { deviceId: string; curve25519: string; ed25519: string; fresh: boolean; replaced?: string };
  oldDevices?: { deleted: string[]; problem?: string };
}

const encryptionOf = (adapter: MatrixAdapter): Encryption => adapter.status().detail?.['encryption'] as Encryption;

async function active(e: Env, adapter: MatrixAdapter): Promise<Encryption> {
  await waitFor(() => encryptionOf(adapter).active && adapter.status().ready, { timeoutMs: 20_000, what: 'the bridge device active and the adapter ready' }).catch((err: unknown) => {
    throw new Error(`${String(err)}; status: ${JSON.stringify(adapter.status().detail?.['encryption'])}; errors: ${JSON.stringify(e.lines.filter((l) => l.level >= 50).slice(-5))}`);
  });
  return encryptionOf(adapter);
}

/** Logs in `userId` as another device with a display name (an operator's Element session). */
async function loginDevice(e: Env, user: string, password: string, deviceId: string, name: string): Promise<void> {
  const res = await fetch(`${e.hs.url}/_matrix/client/v3/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user }, password, device_id: deviceId, initial_device_display_name: name }),
  });
  if (!res.ok) throw new Error(`login failed: ${res.status}`);
}

function texts(events: LogEvent[]): string[] {
  return events.filter((ev) => ev.kind === 'message' && ev.origin.via === 'matrix').map((ev) => ('content' in ev ? ev.content.body : ''));
}

const deviceIds = (e: Env, user: string): string[] => e.hs.listDevices(user).map((d) => String(d['device_id'])).sort();
/** The user's devices syncgate made (the user's registration made another one, which is not ours). */
const syncgateDevices = (e: Env, user: string): string[] => deviceIds(e, user).filter((d) => d.startsWith('SYNCGATE'));

/** The lost store: the sealed crypto state dropped while the gateway was down. */
async function loseStore(e: Env): Promise<void> {
  // every record of the crypto namespace gone (records, meta)
  const stored = await e.log.state.entries('matrix-crypto:matrix');
  expect(stored.map(([k]) => k)).toContain('meta');
  await e.log.state.update('matrix-crypto:matrix', [], stored.map(([k]) => k));
}

/** The new device works both ways with the member's client. */
async function bridgesWith(e: Env, p: E2eePeer, adapter: MatrixAdapter, user: string, deviceId: string, tag: string): Promise<void> {
  await p.sync();
  await p.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: `to the new device ${tag}` });
  await waitFor(async () => texts(await roomEvents(e.log)).includes(`to the new device ${tag}`), { timeoutMs: 20_000, what: 'the member\'s message decrypted by the new device' });
  expect((await new Driver(adapter, e.log, matrixLink(e)).deliver(await appendApi(e.log, { kind: 'message', content: { body: `from the new device ${tag}` } }), 10)).status).toBe('delivered');
  const got = await p.waitFor((m) => m.sender === user && String(m.content?.['body']).includes(`from the new device ${tag}`));
  expect(got.senderDevice).toBe(deviceId);
}

describe('Matrix adapter, a lost crypto store', () => {
  it('bot mode: creates a new device and says so; keeps the old one unless deleteOldDevices; a restart keeps the new device', async () => {
    const { env: e, peer: p } = await setup(false);
    const first = await start(e, botConfig(e, {}, { encryption: { storeSecret: SECRET } }));
    expect((await active(e, first)).device?.deviceId).toBe('SYNCGATE');
    await stop(first);
    await loseStore(e);

    const second = await start(e, botConfig(e, {}, { encryption: { storeSecret: SECRET } }));
    const enc = await active(e, second);
    const newId = enc.device?.deviceId ?? '';
    expect(newId).toMatch(/^SYNCGATE_[0-9A-F]{8}$/);
    expect(enc.device?.fresh).toBe(true);
    expect(enc.device?.replaced).toMatch(/SYNCGATE is lost .*new device SYNCGATE_/);
    expect(e.lines.some((l) => l.level === 50 && (l as { code?: string }).code === 'SG_ERR_CRYPTO_STORE_LOST')).toBe(true);
    // Not configured to clean up: the old device stays, nothing deleted, no auth asked.
    expect(syncgateDevices(e, RELAY)).toEqual(['SYNCGATE', newId].sort());
    expect(e.hs.deletedDevices).toEqual([]);
    expect(e.hs.uia.attempts).toEqual([]);
    await bridgesWith(e, p, second, RELAY, newId, 'bot');
    await stop(second);

    const third = await start(e, botConfig(e, {}, { encryption: { storeSecret: SECRET } }));
    const again = await active(e, third);
    expect(again.device).toMatchObject({ deviceId: newId, fresh: false });
    expect(again.device?.replaced).toBeUndefined();
    expect(syncgateDevices(e, RELAY)).toEqual(['SYNCGATE', newId].sort());
  });

  it('bot mode with deleteOldDevices: deletes the older syncgate devices through user-interactive auth with bot.password, and no other device', async () => {
    const { env: e, peer: p } = await setup(false);
    const config = botConfig(e, {}, { encryption: { storeSecret: SECRET, deleteOldDevices: true } });
    const first = await start(e, config);
    await active(e, first);
    await stop(first);
    // The operator's own session of the bot user, and an older replacement syncgate made before.
    await loginDevice(e, RELAY, 'relay-pw', 'OPERATOR', 'Element Desktop');
    await loginDevice(e, RELAY, 'relay-pw', 'SYNCGATE_0000AAAA', 'syncgate');
    await loseStore(e);

    const second = await start(e, config);
    const enc = await active(e, second);
    const newId = enc.device?.deviceId ?? '';
    expect(newId).toMatch(/^SYNCGATE_[0-9A-F]{8}$/);
    expect(enc.oldDevices).toEqual({ deleted: expect.arrayContaining(['SYNCGATE', 'SYNCGATE_0000AAAA']) as string[] });
    expect(e.hs.deletedDevices.map((d) => `${d.userId} ${d.deviceId}`).sort()).toEqual([`${RELAY} SYNCGATE`, `${RELAY} SYNCGATE_0000AAAA`]);
    const before = deviceIds(e, RELAY);
    expect(syncgateDevices(e, RELAY)).toEqual([newId]);
    // The operator's session and the device of the user's registration stay.
    expect(before).toContain('OPERATOR');
    expect(before).toHaveLength(3);
    // Synapse asked for the password (a 401 with the m.login.password flow first), which the adapter gave.
    expect(e.hs.uia.attempts).toEqual([{ userId: RELAY, ok: true, type: 'm.login.password' }]);
    expect(e.hs.keys.keysOf(RELAY, 'SYNCGATE')).toBeUndefined();
    await bridgesWith(e, p, second, RELAY, newId, 'bot cleaned');
  });

  it('bot mode with an access token only: no new device can be logged in, so the error says what to do and encrypted rooms are refused', async () => {
    const { env: e } = await setup(false);
    const res = await fetch(`${e.hs.url}/_matrix/client/v3/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: RELAY }, password: 'relay-pw', device_id: 'TOKENDEV', initial_device_display_name: 'syncgate' }),
    });
    const token = String(((await res.json()) as Record<string, unknown>)['access_token']);
    const config = parseMatrixConfig({
      mode: 'bot',
      homeserverUrl: e.hs.url,
      serverName: e.hs.serverName,
      requestTimeoutMs: 10_000,
      stopGraceMs: 300,
      bot: { userId: RELAY, accessToken: token, deviceId: 'TOKENDEV', syncTimeoutMs: 2_000 },
      encryption: { storeSecret: SECRET, deleteOldDevices: true },
    });
    const first = await start(e, config);
    expect((await active(e, first)).device?.deviceId).toBe('TOKENDEV');
    await stop(first);
    await loseStore(e);
    const second = await start(e, config);
    await waitFor(() => second.status().ready, { timeoutMs: 20_000, what: 'the adapter ready' });
    const enc = encryptionOf(second);
    expect(enc.active).toBe(false);
    expect(enc.problem).toMatch(/is lost .*needs bot\.password/);
    expect(e.lines.some((l) => l.level === 50 && (l as { code?: string }).code === 'SG_ERR_CRYPTO_STORE_LOST')).toBe(true);
    expect(deviceIds(e, RELAY)).toContain('TOKENDEV');
    expect(e.hs.deletedDevices).toEqual([]);
  });

  it('appservice mode with deleteOldDevices: the registration asks for MSC4190, the old bridge device is deleted with the AS token, without user-interactive auth', async () => {
    const { env: e, peer: p } = await setup(true);
    const config = appserviceConfig(e, {}, { encryption: { storeSecret: SECRET, deleteOldDevices: true } });
    const reg = parse(registrationYaml(config)) as AppServiceRegistration;
    expect(reg['io.element.msc4190']).toBe(true);
    e.hs.registerAppService({ ...reg, url: null });
    const first = await start(e, config);
    expect((await active(e, first)).device?.deviceId).toBe('SYNCGATE');
    await stop(first);
    await loseStore(e);

    const second = await start(e, config);
    const enc = await active(e, second);
    const newId = enc.device?.deviceId ?? '';
    expect(newId).toMatch(/^SYNCGATE_[0-9A-F]{8}$/);
    expect(enc.oldDevices).toEqual({ deleted: ['SYNCGATE'] });
    expect(e.hs.deletedDevices).toEqual([{ userId: BOT, deviceId: 'SYNCGATE' }]);
    expect(deviceIds(e, BOT)).toEqual([newId]);
    expect(e.hs.uia.attempts).toEqual([]);
    await bridgesWith(e, p, second, BOT, newId, 'appservice');
  });

  it('appservice mode with deleteOldDevices on a registration without MSC4190: Synapse asks for user-interactive auth, which an appservice user cannot answer; the status says which setting is missing', async () => {
    const { env: e } = await setup(true);
    const config = appserviceConfig(e, {}, { encryption: { storeSecret: SECRET, deleteOldDevices: true } });
    const { 'io.element.msc4190': _msc4190, ...reg } = parse(registrationYaml(config)) as AppServiceRegistration;
    e.hs.registerAppService({ ...reg, url: null });
    const first = await start(e, config);
    await active(e, first);
    await stop(first);
    await loseStore(e);

    const second = await start(e, config);
    const enc = await active(e, second);
    expect(enc.device?.deviceId).toMatch(/^SYNCGATE_/);
    expect(enc.oldDevices?.deleted).toEqual([]);
    expect(enc.oldDevices?.problem).toMatch(/io\.element\.msc4190/);
    expect(e.hs.deletedDevices).toEqual([]);
    expect(deviceIds(e, BOT)).toContain('SYNCGATE');
  });
});
