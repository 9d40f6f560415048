/**
 * Room key requests in appservice mode: the bridge device is the bridge
 * bot's (fed from the transactions' MSC2409/MSC3202 extensions). An event
 * whose room key share to it was lost is held; the bridge asks the bridge
 * bot's other devices for the key (m.room_key_request), and the answer
 * (m.forwarded_room_key, Olm-encrypted, pushed in a transaction) releases
 * the held event, bridged once.
 *
 * The other device is an independent Rust-crypto peer logged in as the
 * bridge bot with the AS token (an operator's tool on the bot account): it
 * answers by its library's policy — only its own verified devices — and the
 * bridge accepts the forwarded key only because that device is pinned in
 * `encryption.trustedDevices`.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { LogEvent } from '../../../src/core/event.js';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import { waitFor } from '../../harness/free-port.js';
import { E2eePeer } from '../../harness/matrix-e2ee-peer.js';
import { AS_EXTENSIONS, BRIDGE_USER, createE2eeAdapter, encryptRoom, memberPeer, pointHomeserverAt, registerOwnAppservice, STORE_SECRET } from './e2ee-room.js';
import { appendApi, AS_TOKEN, appserviceConfig, createEnv, Driver, matrixLink, roomEvents, type Env } from './helpers.js';

const BOT = BRIDGE_USER.appservice;

let env: Env | undefined;
const peers: E2eePeer[] = [];
const adapters: MatrixAdapter[] = [];

afterEach(async () => {
  for (const a of adapters.splice(0)) await a.stop();
  for (const p of peers.splice(0)) p.close();
  await env?.close();
  env = undefined;
});

interface CryptoDetail {
  active?: boolean;
  device?: { deviceId: string; ed25519: string };
  counters?: { keyRequestsSent?: number };
  held?: { waiting: number; released: number };
}

const crypto = (adapter: MatrixAdapter): CryptoDetail => adapter.status().detail?.['encryption'] as CryptoDetail;

function texts(events: LogEvent[]): string[] {
  return events.filter((e) => e.kind === 'message' && e.origin.via === 'matrix').map((e) => ('content' in e ? e.content.body : ''));
}

describe('Matrix adapter, appservice mode: room key requests', () => {
  it('asks the bridge bot\'s other devices for a missing room key; the forwarded key, pushed in a transaction, releases the held event, bridged once', async () => {
    const e = await createEnv({ hs: AS_EXTENSIONS });
    env = e;
    encryptRoom(e);
    const alice = await memberPeer(e);
    peers.push(alice);
    const base = appserviceConfig(e, {}, { encryption: { storeSecret: STORE_SECRET } });
    registerOwnAppservice(e, base);
    // The operator's other session of the bridge bot.
    const phone = await E2eePeer.loginAppService(e.hs.url, AS_TOKEN, BOT, 'BOTPHONE');
    peers.push(phone);
    // Synced once before the bridge device exists: its keys come as a device-list change of its own user.
    await phone.sync();
    const config = appserviceConfig(e, {}, { encryption: { storeSecret: STORE_SECRET, trustedDevices: [{ deviceId: 'BOTPHONE', ed25519: phone.machine.identityKeys.ed25519.toBase64() }] } });
    const adapter = createE2eeAdapter(e, config);
    adapters.push(adapter);
    await adapter.start();
    pointHomeserverAt(e, adapter);
    await waitFor(() => crypto(adapter).active === true && adapter.status().ready, { timeoutMs: 30_000, what: 'the bridge device active and the adapter ready' });
    await waitFor(() => e.hs.joinedMembers(e.roomId).includes(BOT), { timeoutMs: 30_000, what: 'the bridge bot in the room' });

    // The operator verifies the bridge device in their session (compares its fingerprint with the status).
    await waitFor(
      async () => {
        await phone.sync();
        return phone.verifyDevice(BOT, 'SYNCGATE').then(
          () => true,
          () => false,
        );
      },
      { timeoutMs: 30_000, what: 'the operator session to know the bridge device' },
    );
    await alice.sync();
    // The bridge has relayed before: its room key share opened an Olm session with the operator's session.
    expect((await new Driver(adapter, e.log, matrixLink(e)).deliver(await appendApi(e.log, { kind: 'message', content: { body: 'relayed earlier' } }))).status).toBe('delivered');
    expect(e.hs.keys.sent.some((m) => m.sender === BOT && m.recipient === BOT && m.deviceId === 'BOTPHONE' && m.type === 'm.room.encrypted')).toBe(true);
    await phone.sync();

    // The member's room key share to the bridge device is lost on the way; the operator's session gets it.
    e.hs.keys.loseToDevice(BOT, 'SYNCGATE', e.alice.userId, true);
    const encrypted = await alice.encrypt(e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'the share to the bridge was lost' });
    await phone.sync();
    const eventId = await alice.putEncrypted(e.roomId, encrypted);
    expect(e.hs.keys.sent.filter((m) => m.lost === true && m.recipient === BOT && m.deviceId === 'SYNCGATE').length).toBeGreaterThan(0);
    const sessionId = String(e.hs.events(e.roomId).find((x) => x.event_id === eventId)?.content['session_id']);

    await waitFor(() => (crypto(adapter).held?.waiting ?? 0) === 1, { timeoutMs: 30_000, what: 'the event held' });
    await waitFor(() => e.hs.keys.sent.some((m) => m.sender === BOT && m.type === 'm.room_key_request'), { timeoutMs: 30_000, what: 'the room key request sent' });
    const requests = e.hs.keys.sent.filter((m) => m.sender === BOT && m.type === 'm.room_key_request' && m.content['action'] === 'request');
    expect(new Set(requests.map((r) => r.recipient))).toEqual(new Set([BOT]));
    expect(requests.map((r) => r.deviceId)).toContain('BOTPHONE');
    expect(requests[0]?.content).toMatchObject({ action: 'request', requesting_device_id: 'SYNCGATE', body: { room_id: e.roomId, session_id: sessionId, algorithm: 'm.megolm.v1.aes-sha2' } });
    expect(texts(await roomEvents(e.log))).toEqual([]);

    // The operator's session answers; the answer reaches the bridge in a transaction (MSC2409).
    await waitFor(
      async () => {
        await phone.sync();
        return e.hs.keys.sent.some((m) => m.sender === BOT && m.recipient === BOT && m.deviceId === 'SYNCGATE' && m.type === 'm.room.encrypted');
      },
      { timeoutMs: 30_000, what: 'the operator session to forward the key' },
    );
    await waitFor(async () => texts(await roomEvents(e.log)).includes('the share to the bridge was lost'), { timeoutMs: 30_000, what: 'the held event released by the forwarded key' });
    const events = await roomEvents(e.log);
    expect(events.filter((x) => x.origin.ids['mx.eventId'] === eventId)).toHaveLength(1);
    expect(events.every((x) => !('content' in x) || x.content.undecryptable === undefined)).toBe(true);
    expect(crypto(adapter).held).toMatchObject({ waiting: 0, released: 1 });
  });
});
