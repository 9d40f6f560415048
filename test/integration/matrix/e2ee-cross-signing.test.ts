/**
 * Cross-signing of the bridge bot (bot mode): the adapter sets up the bot
 * user's master / self-signing / user-signing keys (first upload, no
 * user-interactive auth, as Synapse allows since MSC3967) and signs its own
 * device, so a member who verifies the bot user once sees the bridge device
 * as verified — checked by the member's independent Rust crypto, which
 * verifies the signatures itself. Keys made elsewhere are never replaced.
 */
import * as wasm from '@matrix-org/matrix-sdk-crypto-wasm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import type { MatrixAdapterConfig } from '../../../adapters/matrix/config.js';
import { waitFor } from '../../harness/free-port.js';
import { E2eePeer } from '../../harness/matrix-e2ee-peer.js';
import { appendApi, appserviceConfig, botConfig, createEnv, Driver, matrixLink, type Env } from './helpers.js';
import { closeWorld, createE2eeAdapter, pointHomeserverAt, registerOwnAppservice, relayWorld, startKept } from './e2ee-room.js';

const RELAY = '@relay:fake.test';
const BOT = '@syncgate:fake.test';
const SECRET = 'a store secret of some length';

let env: Env;
let alice: E2eePeer;
const peers: E2eePeer[] = [];
const adapters: MatrixAdapter[] = [];

beforeEach(async () => {
  ({ env, alice } = await relayWorld());
  peers.push(alice);
});

afterEach(() => closeWorld(env, adapters, peers));

const start = (config: MatrixAdapterConfig): Promise<MatrixAdapter> => startKept(env, adapters, config);

interface Encryption {
  active: boolean;
  device?: { deviceId: string; ed25519: string };
  crossSigning?: { state: string; masterKey?: string; detail?: string };
}

const encryptionOf = (adapter: MatrixAdapter): Encryption => adapter.status().detail?.['encryption'] as Encryption;

async function ready(adapter: MatrixAdapter): Promise<Encryption> {
  await waitFor(() => encryptionOf(adapter).active && adapter.status().ready && encryptionOf(adapter).crossSigning !== undefined, { timeoutMs: 20_000, what: 'the bridge active with its cross-signing settled' });
  return encryptionOf(adapter);
}

async function bridgeDevice(peer: E2eePeer): Promise<wasm.Device> {
  await peer.machine.updateTrackedUsers([new wasm.UserId(RELAY)]);
  await peer.flush();
  const device = await peer.machine.getDevice(new wasm.UserId(RELAY), new wasm.DeviceId('SYNCGATE'));
  if (!device) throw new Error('the member does not know the bridge device');
  return device;
}

describe('Matrix adapter, cross-signing of the bridge bot', () => {
  it('signs the bridge device with the bot user\'s cross-signing keys: a member who verifies the bot user sees the device verified', async () => {
    const adapter = await start(botConfig(env, {}, { encryption: { storeSecret: SECRET } }));
    const enc = await ready(adapter);
    expect(enc.crossSigning?.state).toBe('signed');
    const master = env.hs.keys.crossSigningKey(RELAY, 'master');
    expect(master).toBeDefined();
    expect(Object.values(master?.['keys'] as Record<string, string>)).toEqual([enc.crossSigning?.masterKey]);
    expect(env.hs.keys.crossSigningKey(RELAY, 'self_signing')).toBeDefined();
    // First upload: Synapse asks for no user-interactive auth (MSC3967).
    expect(env.hs.uia.attempts).toEqual([]);

    // The member's client (running, synced) checks the signature chain itself.
    await alice.sync();
    const before = await bridgeDevice(alice);
    expect(before.isCrossSignedByOwner()).toBe(true);
    expect(before.isCrossSigningTrusted()).toBe(false);
    await alice.setUpCrossSigning();
    await alice.verifyUser(RELAY);
    // The signature is the homeserver's now: the member's next sync brings the change, its client queries again.
    await alice.sync();
    const after = await bridgeDevice(alice);
    expect(after.isCrossSigningTrusted()).toBe(true);
    expect(after.isVerified()).toBe(true);

    // What the bridge relays now shows without a warning on the member's client.
    await alice.sync();
    expect((await new Driver(adapter, env.log, matrixLink(env)).deliver(await appendApi(env.log, { kind: 'message', content: { body: 'from a verified device' } }), 10)).status).toBe('delivered');
    const relayed = env.hs.events(env.roomId).find((e) => e.sender === RELAY && e.type === 'm.room.encrypted');
    if (!relayed) throw new Error('nothing relayed');
    await alice.sync();
    const decrypted = await alice.machine.decryptRoomEvent(JSON.stringify({ ...relayed, room_id: env.roomId }), new wasm.RoomId(env.roomId), new wasm.DecryptionSettings(wasm.TrustRequirement.Untrusted));
    expect(decrypted.shieldState(true).color).toBe(wasm.ShieldColor.None);

    // A restart keeps the identity (private keys in the sealed store): nothing uploaded again.
    const uploadsBefore = env.hs.requests().filter((r) => r.path.includes('/keys/device_signing/upload')).length;
    await adapter.stop();
    adapters.splice(adapters.indexOf(adapter), 1);
    const again = await start(botConfig(env, {}, { encryption: { storeSecret: SECRET } }));
    expect((await ready(again)).crossSigning).toEqual({ state: 'signed', masterKey: enc.crossSigning?.masterKey });
    expect(env.hs.requests().filter((r) => r.path.includes('/keys/device_signing/upload')).length).toBe(uploadsBefore);
  });

  it('never replaces cross-signing keys the bot user already has from elsewhere: the device stays unsigned and the status says why', async () => {
    // The operator logged in as the bot in Element first, which set up cross-signing.
    const operator = await E2eePeer.login(env.hs.url, RELAY, 'relay-pw', 'OPERATOR');
    peers.push(operator);
    await operator.setUpCrossSigning();
    const master = env.hs.keys.crossSigningKey(RELAY, 'master');
    const adapter = await start(botConfig(env, {}, { encryption: { storeSecret: SECRET } }));
    const enc = await ready(adapter);
    expect(enc.crossSigning?.state).toBe('skipped');
    expect(enc.crossSigning?.detail).toMatch(/made elsewhere/);
    expect(env.hs.keys.crossSigningKey(RELAY, 'master')).toEqual(master);
    expect((await bridgeDevice(alice)).isCrossSignedByOwner()).toBe(false);
  });

  it('appservice mode: the bridge bot\'s device is signed the same way (its login token, first upload without user-interactive auth)', async () => {
    const e = await createEnv({ hs: { msc2409ToDevice: true, msc3202TransactionExtensions: true } });
    try {
      e.hs.sendStateAsUser(e.alice.userId, e.roomId, 'm.room.encryption', '', { algorithm: 'm.megolm.v1.aes-sha2' });
      const member = await E2eePeer.login(e.hs.url, e.alice.userId, 'pw', 'ALICELAPTOP');
      peers.push(member);
      await member.sync();
      const config = appserviceConfig(e, {}, { encryption: { storeSecret: SECRET } });
      registerOwnAppservice(e, config);
      const adapter = createE2eeAdapter(e, config);
      adapters.push(adapter);
      await adapter.start();
      pointHomeserverAt(e, adapter);
      expect((await ready(adapter)).crossSigning?.state).toBe('signed');
      expect(e.hs.keys.crossSigningKey(BOT, 'master')).toBeDefined();
      expect(e.hs.uia.attempts).toEqual([]);
      await member.setUpCrossSigning();
      await member.verifyUser(BOT);
      await member.sync();
      await member.machine.updateTrackedUsers([new wasm.UserId(BOT)]);
      await member.flush();
      const device = await member.machine.getDevice(new wasm.UserId(BOT), new wasm.DeviceId('SYNCGATE'));
      expect(device?.isCrossSignedByOwner()).toBe(true);
      expect(device?.isCrossSigningTrusted()).toBe(true);
    } finally {
      for (const a of adapters.splice(0)) await a.stop();
      await e.close();
    }
  });
});
