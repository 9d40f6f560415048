/**
 * Room key requests (bot mode): an encrypted event whose room key never
 * reached the bridge device (the share was lost) is held; the bridge's
 * OlmMachine asks the bot user's other devices for the key
 * (m.room_key_request to-device, as the Rust crypto does: only to its own
 * user's devices), and an answer (m.forwarded_room_key) releases the held
 * event, bridged once.
 *
 * The other device is an independent Rust-crypto peer logged in as the bot
 * user (an operator's Element session): it answers by its library's policy —
 * only a request from one of its own devices it has verified — and the
 * bridge accepts the forwarded key only from an own device it trusts
 * (`encryption.trustedDevices`, pinned by Ed25519 fingerprint).
 */
import * as wasm from '@matrix-org/matrix-sdk-crypto-wasm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { LogEvent } from '../../../src/core/event.js';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import type { MatrixAdapterConfig } from '../../../adapters/matrix/config.js';
import { waitFor } from '../../harness/free-port.js';
import { E2eePeer } from '../../harness/matrix-e2ee-peer.js';
import { appendApi, botConfig, Driver, matrixLink, roomEvents, type Env } from './helpers.js';
import { closeWorld, relayWorld, startKept } from './e2ee-room.js';

const RELAY = '@relay:fake.test';
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

function texts(events: LogEvent[]): string[] {
  return events.filter((e) => e.kind === 'message' && e.origin.via === 'matrix').map((e) => ('content' in e ? e.content.body : ''));
}

interface CryptoDetail {
  device?: { deviceId: string; ed25519: string };
  counters?: { keyRequestsSent?: number };
  held?: { waiting: number; released: number };
}

const crypto = (adapter: MatrixAdapter): CryptoDetail => adapter.status().detail?.['encryption'] as CryptoDetail;

describe('Matrix adapter, room key requests', () => {
  it('asks the bot user\'s other devices for a missing room key; the forwarded key releases the held event, bridged once', async () => {
    // The operator's own session of the bot user (Element), in the room as the bot is.
    const phone = await E2eePeer.login(env.hs.url, RELAY, 'relay-pw', 'RELAYPHONE');
    peers.push(phone);
    await phone.sync();
    const adapter = await start(botConfig(env, {}, { encryption: { storeSecret: SECRET, trustedDevices: [{ deviceId: 'RELAYPHONE', ed25519: phone.machine.identityKeys.ed25519.toBase64() }] } }));
    await waitFor(() => env.hs.keys.keysOf(RELAY, 'SYNCGATE') !== undefined && adapter.status().ready, { timeoutMs: 20_000, what: 'the bridge ready' });
    // The operator verifies the bridge device in their session (compares its fingerprint with the status).
    const ed25519 = crypto(adapter).device?.ed25519;
    await waitFor(
      async () => {
        await phone.sync();
        return phone.verifyDevice(RELAY, 'SYNCGATE').then(
          () => true,
          () => false,
        );
      },
      { timeoutMs: 20_000, what: 'the operator session to know the bridge device' },
    );
    expect((await phone.machine.getDevice(new wasm.UserId(RELAY), new wasm.DeviceId('SYNCGATE')))?.ed25519Key?.toBase64()).toBe(ed25519);
    await alice.sync();
    // The bridge has relayed into the room before: its room key share opened an Olm session with every
    // device in it, the operator's session included, over which that session can answer later.
    expect((await new Driver(adapter, env.log, matrixLink(env)).deliver(await appendApi(env.log, { kind: 'message', content: { body: 'relayed earlier' } }))).status).toBe('delivered');
    expect(env.hs.keys.sent.some((m) => m.sender === RELAY && m.recipient === RELAY && m.deviceId === 'RELAYPHONE' && m.type === 'm.room.encrypted')).toBe(true);
    await phone.sync();
    const relayed = env.hs.events(env.roomId).find((e) => e.sender === RELAY && e.type === 'm.room.encrypted');
    if (!relayed) throw new Error('nothing relayed');
    expect((await phone.decrypt(relayed as unknown as Record<string, unknown>, env.roomId)).content?.['body']).toContain('relayed earlier');

    // The member's room key share to the bridge device is lost on the way; the operator's session gets it.
    env.hs.keys.loseToDevice(RELAY, 'SYNCGATE', env.alice.userId, true);
    // As Element does, the key is shared before the event is sent: the operator's session stores it first.
    const encrypted = await alice.encrypt(env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'the share to the bridge was lost' });
    await phone.sync();
    const eventId = await alice.putEncrypted(env.roomId, encrypted);
    const lostShares = env.hs.keys.sent.filter((m) => m.lost === true && m.recipient === RELAY && m.deviceId === 'SYNCGATE');
    expect(lostShares.length).toBeGreaterThan(0);
    const sessionId = String(env.hs.events(env.roomId).find((e) => e.event_id === eventId)?.content['session_id']);

    // Held, and a key request to the bot user's own devices (what the homeserver received).
    await waitFor(() => (crypto(adapter).held?.waiting ?? 0) === 1, { timeoutMs: 20_000, what: 'the event held' });
    await waitFor(() => env.hs.keys.sent.some((m) => m.sender === RELAY && m.type === 'm.room_key_request'), { timeoutMs: 20_000, what: 'the room key request sent' });
    const requests = env.hs.keys.sent.filter((m) => m.sender === RELAY && m.type === 'm.room_key_request' && m.content['action'] === 'request');
    expect(new Set(requests.map((r) => r.recipient))).toEqual(new Set([RELAY]));
    expect(requests.map((r) => r.deviceId)).toContain('RELAYPHONE');
    expect(requests[0]?.content).toMatchObject({ action: 'request', requesting_device_id: 'SYNCGATE', body: { room_id: env.roomId, session_id: sessionId, algorithm: 'm.megolm.v1.aes-sha2' } });
    expect(crypto(adapter).counters?.keyRequestsSent).toBeGreaterThanOrEqual(1);
    expect(texts(await roomEvents(env.log))).toEqual([]);

    // The operator's session answers by its own policy (the requester is its own, verified device).
    await waitFor(
      async () => {
        await phone.sync();
        return env.hs.keys.sent.some((m) => m.sender === RELAY && m.recipient === RELAY && m.deviceId === 'SYNCGATE' && m.type === 'm.room.encrypted');
      },
      { timeoutMs: 20_000, what: 'the operator session to forward the key' },
    );
    await waitFor(async () => texts(await roomEvents(env.log)).includes('the share to the bridge was lost'), { timeoutMs: 20_000, what: 'the held event released by the forwarded key' });
    const events = await roomEvents(env.log);
    expect(events.filter((e) => e.origin.ids['mx.eventId'] === eventId)).toHaveLength(1);
    expect(events.every((e) => !('content' in e) || e.content.undecryptable === undefined)).toBe(true);
    expect(crypto(adapter).held).toMatchObject({ waiting: 0, released: 1 });
  });

  it('trusts no own device whose Ed25519 key is not the pinned one: an error says so, and no key request goes out', async () => {
    const phone = await E2eePeer.login(env.hs.url, RELAY, 'relay-pw', 'RELAYPHONE');
    peers.push(phone);
    await phone.sync();
    const wrong = Buffer.alloc(32, 7).toString('base64').replace(/=+$/, '');
    const adapter = await start(botConfig(env, {}, { encryption: { storeSecret: SECRET, trustedDevices: [{ deviceId: 'RELAYPHONE', ed25519: wrong }] } }));
    await waitFor(() => env.hs.keys.keysOf(RELAY, 'SYNCGATE') !== undefined && adapter.status().ready, { timeoutMs: 20_000, what: 'the bridge ready' });
    await waitFor(() => env.lines.some((l) => l.level === 50 && l.msg.includes('another Ed25519 key than configured')), { timeoutMs: 20_000, what: 'the fingerprint mismatch reported' });
    await alice.sync();
    env.hs.keys.loseToDevice(RELAY, 'SYNCGATE', env.alice.userId, true);
    await alice.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'lost, and nobody to ask' });
    await waitFor(() => (crypto(adapter).held?.waiting ?? 0) === 1, { timeoutMs: 20_000, what: 'the event held' });
    // A later event bridged proves the bridge went on past the held one; still no request (the Rust crypto asks only trusted own devices).
    env.hs.keys.loseToDevice(RELAY, 'SYNCGATE', env.alice.userId, false);
    await alice.machine.invalidateGroupSession(new wasm.RoomId(env.roomId));
    await alice.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'the next one' });
    await waitFor(async () => texts(await roomEvents(env.log)).includes('the next one'), { timeoutMs: 20_000, what: 'the next event bridged' });
    expect(env.hs.keys.sent.filter((m) => m.sender === RELAY && m.type === 'm.room_key_request')).toEqual([]);
    expect(crypto(adapter).counters?.keyRequestsSent).toBe(0);
  });
});
