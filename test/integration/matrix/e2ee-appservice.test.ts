/**
 * End-to-end encrypted rooms in appservice mode: the bridge bot's device
 * (logged in with m.login.application_service, the wasm OlmMachine, state
 * sealed in the log's state store) fed from the fake homeserver's
 * transactions (MSC2409 to-device, MSC3202 device lists and key counts, as
 * Synapse sends them with its experimental features on), with a member whose
 * client is an independent Rust-crypto peer (test/harness/matrix-e2ee-peer.ts).
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import type { LogEvent } from '../../../src/core/event.js';
import type { MatrixAdapterConfig } from '../../../adapters/matrix/config.js';
import type { FakeHomeserverOptions } from '../../harness/fake-homeserver.js';
import { getFreePort, waitFor } from '../../harness/free-port.js';
import type { E2eePeer } from '../../harness/matrix-e2ee-peer.js';
import { AS_EXTENSIONS, createE2eeAdapter, encryptRoom, memberPeer, pointHomeserverAt, registerOwnAppservice, STORE_SECRET } from './e2ee-room.js';
import { appendApi, appserviceConfig, createEnv, Driver, matrixLink, waitForEvents, type Env } from './helpers.js';

const BOT = '@syncgate:fake.test';
const SECRET = STORE_SECRET;
const EXTENSIONS: FakeHomeserverOptions = AS_EXTENSIONS;

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

async function setup(hs: FakeHomeserverOptions, encrypted = true): Promise<{ env: Env; peer: E2eePeer }> {
  const e = await createEnv({ hs });
  env = e;
  if (encrypted) encryptRoom(e);
  const p = await memberPeer(e);
  peer = p;
  return { env: e, peer: p };
}

function encConfig(e: Env, encryption: Record<string, unknown> = {}, appservice: Record<string, unknown> = {}): MatrixAdapterConfig {
  return appserviceConfig(e, appservice, { encryption: { storeSecret: SECRET, ...encryption } });
}

async function start(e: Env, config: MatrixAdapterConfig, register = true, pointHomeserver = true): Promise<MatrixAdapter> {
  if (register) registerOwnAppservice(e, config);
  const adapter = createE2eeAdapter(e, config);
  adapters.push(adapter);
  await adapter.start();
  if (pointHomeserver) pointAt(e, adapter);
  return adapter;
}

const pointAt = pointHomeserverAt;

interface Encryption {
  active: boolean;
  problem?: string;
  device?: { deviceId: string; curve25519: string; ed25519: string; fresh: boolean };
}

function encryptionOf(adapter: MatrixAdapter): Encryption {
  return adapter.status().detail?.['encryption'] as Encryption;
}

async function bridgeActive(e: Env, p: E2eePeer, adapter: MatrixAdapter): Promise<void> {
  await waitFor(() => encryptionOf(adapter).active && adapter.status().ready, { timeoutMs: 20_000, what: 'the bridge device active (extensions seen) and the adapter ready' }).catch((err: unknown) => {
    throw new Error(`${String(err)}; status: ${JSON.stringify(adapter.status())}; errors: ${JSON.stringify(e.lines.filter((l) => l.level >= 40).slice(-5))}`);
  });
  expect(e.hs.keys.keysOf(BOT, 'SYNCGATE')).toBeDefined();
  await p.sync();
}

function texts(events: LogEvent[]): string[] {
  return events.filter((ev) => ev.kind === 'message').map((ev) => ('content' in ev ? ev.content.body : ''));
}

describe('Matrix adapter, appservice mode, encrypted room', () => {
  it('bridges a member\'s Megolm messages into the log, and relays ghosts\' messages through the bridge bot encrypted for the member\'s devices', async () => {
    const { env: e, peer: p } = await setup(EXTENSIONS);
    const adapter = await start(e, encConfig(e));
    await bridgeActive(e, p, adapter);
    // The bridge device came from an m.login.application_service login, its keys with its own token.
    expect(e.hs.keys.uploads.some((u) => u.userId === BOT && u.deviceId === 'SYNCGATE')).toBe(true);

    await p.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'hello from an encrypted room' });
    const events = await waitForEvents(e.log, (evs) => texts(evs).includes('hello from an encrypted room'), 'the decrypted message bridged');
    const got = events.find((ev) => ev.kind === 'message');
    expect(got?.sender.uid).toBe(`matrix:${e.alice.userId}`);

    const out = await appendApi(e.log, { kind: 'message', content: { body: 'relayed secretly' } });
    const result = await new Driver(adapter, e.log, matrixLink(e)).deliver(out);
    expect(result.status).toBe('delivered');
    // Sent by the bridge bot (relay mode), only as m.room.encrypted; no ghost speaks in the encrypted room.
    const ours = e.hs.events(e.roomId).filter((ev) => (ev.sender === BOT || ev.sender.startsWith('@_sg_')) && ev.type !== 'm.room.member');
    expect(ours.map((ev) => [ev.sender, ev.type])).toEqual([[BOT, 'm.room.encrypted']]);
    expect(JSON.stringify(ours)).not.toContain('relayed secretly');
    const read = await p.waitFor((m) => m.sender === BOT);
    expect(read.error).toBeUndefined();
    expect(read.content?.['body']).toBe('<Carol> relayed secretly');
    expect(read.senderDevice).toBe('SYNCGATE');
    expect(read.senderCurve25519).toBe(encryptionOf(adapter).device?.curve25519);
    // The bot's own encrypted event comes back in a transaction: recognised, not bridged back.
    await p.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'after the relay' });
    const after = await waitForEvents(e.log, (evs) => texts(evs).includes('after the relay'), 'the next member message');
    expect(texts(after).filter((t) => t.includes('relayed secretly'))).toEqual(['relayed secretly']);
  });

  it('keeps the bridge device over a restart and bridges what a member sent while it was down', async () => {
    const { env: e, peer: p } = await setup(EXTENSIONS);
    const config = encConfig(e);
    const first = await start(e, config);
    await bridgeActive(e, p, first);
    const device = encryptionOf(first).device;
    expect(device?.fresh).toBe(true);
    await first.stop();
    adapters.splice(adapters.indexOf(first), 1);

    await p.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'sent while the gateway was down' });
    const second = await start(e, config, false);
    await bridgeActive(e, p, second);
    const again = encryptionOf(second).device;
    expect(again).toMatchObject({ deviceId: 'SYNCGATE', curve25519: device?.curve25519, ed25519: device?.ed25519, fresh: false });
    await waitForEvents(e.log, (evs) => texts(evs).includes('sent while the gateway was down'), 'the message sent while down, decrypted after the restart');
    // One device for the bridge bot, its identity keys announced once.
    const announced = new Set(e.hs.keys.uploads.filter((u) => u.userId === BOT && u.body['device_keys'] !== undefined).map((u) => JSON.stringify(u.body['device_keys'])));
    expect(announced.size).toBe(1);
  });

  it('without the homeserver\'s transaction extensions: the status names the Synapse settings and the encrypted room is refused, nothing sent in clear', async () => {
    const { env: e } = await setup({});
    const adapter = await start(e, encConfig(e, { extensionsTimeoutMs: 300 }));
    await waitFor(() => encryptionOf(adapter).problem?.includes('msc2409_to_device_messages_enabled') === true, { timeoutMs: 20_000, what: 'the missing extensions in the status' });
    const enc = encryptionOf(adapter);
    expect(enc.active).toBe(false);
    expect(enc.problem).toContain('msc3202_transaction_extensions');

    const out = await appendApi(e.log, { kind: 'message', content: { body: 'must not leak' } });
    const result = await new Driver(adapter, e.log, matrixLink(e)).deliver(out);
    expect(result).toMatchObject({ status: 'rejected' });
    expect(result.status === 'rejected' ? result.reason : '').toContain('msc2409_to_device_messages_enabled');
    expect(JSON.stringify(e.hs.events(e.roomId))).not.toContain('must not leak');
  });

  it('a second replica taking over (the first never stopped, as after a kill -9) continues with the same device and sessions', async () => {
    const { env: e, peer: p } = await setup(EXTENSIONS);
    const config = encConfig(e);
    const first = await start(e, config);
    await bridgeActive(e, p, first);
    await p.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'to the first replica' });
    await waitForEvents(e.log, (evs) => texts(evs).includes('to the first replica'), 'the first replica bridging');
    const device = encryptionOf(first).device;

    // The takeover: the homeserver's pushes go to the successor's address (the first replica no longer
    // answers, as after a kill -9); its login with the same device id drops the first one's device token.
    const port = await getFreePort();
    e.hs.setAppServiceUrl('syncgate', `http://127.0.0.1:${port}`);
    const second = await start(e, encConfig(e, {}, { listenPort: port }), false);
    await bridgeActive(e, p, second);
    expect(encryptionOf(second).device).toMatchObject({ deviceId: 'SYNCGATE', curve25519: device?.curve25519, fresh: false });
    // The member's Megolm session from before the takeover still decrypts.
    await p.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'to the second replica' });
    await waitForEvents(e.log, (evs) => texts(evs).includes('to the second replica'), 'the second replica bridging');
    const out = await appendApi(e.log, { kind: 'message', content: { body: 'from the second replica' } });
    expect((await new Driver(second, e.log, matrixLink(e)).deliver(out)).status).toBe('delivered');
    const read = await p.waitFor((m) => m.sender === BOT);
    expect([read.error, read.content?.['body'], read.senderCurve25519]).toEqual([undefined, '<Carol> from the second replica', device?.curve25519]);
  });

  it('a room that turns encrypted while bridged: ghosts spoke in clear before, the bridge bot encrypts after, no ghost message after the m.room.encryption event', async () => {
    const { env: e, peer: p } = await setup(EXTENSIONS, false);
    const adapter = await start(e, encConfig(e));
    await bridgeActive(e, p, adapter);
    const driver = new Driver(adapter, e.log, matrixLink(e));
    expect((await driver.deliver(await appendApi(e.log, { kind: 'message', content: { body: 'before, in clear' } }))).status).toBe('delivered');
    const clear = e.hs.events(e.roomId).filter((ev) => ev.type === 'm.room.message');
    expect(clear.map((ev) => [ev.sender, ev.content['body']])).toEqual([['@_sg_api=3acarol:fake.test', 'before, in clear']]);

    encryptRoom(e);
    expect((await driver.deliver(await appendApi(e.log, { kind: 'message', content: { body: 'after, encrypted' } }))).status).toBe('delivered');
    const all = e.hs.events(e.roomId);
    const from = all.findIndex((ev) => ev.type === 'm.room.encryption');
    const after = all.slice(from + 1).filter((ev) => ev.type !== 'm.room.member');
    expect(after.map((ev) => [ev.sender, ev.type])).toEqual([[BOT, 'm.room.encrypted']]);
    expect(JSON.stringify(after)).not.toContain('after, encrypted');
    await p.sync();
    const read = await p.waitFor((m) => m.sender === BOT);
    expect([read.error, read.content?.['body']]).toEqual([undefined, '<Carol> after, encrypted']);
  });

  it('with to-device messages but without the key counts (only msc2409_to_device_messages_enabled): the status names msc3202_transaction_extensions', async () => {
    const { env: e } = await setup({ msc2409ToDevice: true });
    const adapter = await start(e, encConfig(e, { extensionsTimeoutMs: 300 }));
    await waitFor(() => encryptionOf(adapter).problem?.includes('msc3202_transaction_extensions') === true, { timeoutMs: 20_000, what: 'the missing MSC3202 extensions in the status' });
    expect(encryptionOf(adapter)).toMatchObject({ active: false, problem: expect.stringContaining('msc3202_transaction_extensions: true') as unknown });
    expect(encryptionOf(adapter).problem).not.toContain('msc2409_to_device_messages_enabled');
  });

  it('a probe that is lost (pushed to the replica that still had the homeserver\'s URL) is sent again, and the crypto turns on when one comes back', async () => {
    const { env: e, peer: p } = await setup(EXTENSIONS);
    const first = await start(e, encConfig(e));
    await bridgeActive(e, p, first);
    // The successor's first probe goes to the first replica's listener, which answers 200: lost for the successor.
    const second = await start(e, encConfig(e, { extensionsTimeoutMs: 400 }), false, false);
    const probeTxns = (): number =>
      e.hs.appServiceTransactions('syncgate').filter((t) => t.delivered && JSON.stringify(t.body).includes('org.syncgate.crypto_probe')).length;
    await waitFor(() => probeTxns() >= 2, { timeoutMs: 20_000, what: 'the successor\'s first probe delivered to the first replica' });
    await waitFor(() => encryptionOf(second).problem?.includes('msc2409_to_device_messages_enabled') === true, { timeoutMs: 20_000, what: 'the successor saying the extensions did not come' });
    pointAt(e, second);
    await bridgeActive(e, p, second);
    expect(probeTxns()).toBeGreaterThanOrEqual(3);
    await p.sendEncrypted(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'to the successor' });
    await waitForEvents(e.log, (evs) => texts(evs).includes('to the successor'), 'the successor bridging');
  });
});
