/**
 * Room keys and membership in an encrypted room, in both modes: a member who
 * leaves gets no key for what the bridge sends after (a new Megolm session,
 * no to-device share to their devices), and a member who joins gets the key
 * for what the bridge sends after their join. The members are independent
 * Rust-crypto peers (test/harness/matrix-e2ee-peer.ts); the leave reaches the
 * adapter as Synapse sends it (/sync in bot mode, a transaction with the
 * MSC3202 device lists in appservice mode).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../harness/free-port.js';
import { E2eePeer } from '../../harness/matrix-e2ee-peer.js';
import { encryptedRoom, type E2eeMode, type EncryptedRoom } from './e2ee-room.js';
import { appendApi, Driver, matrixLink } from './helpers.js';

const rooms: EncryptedRoom[] = [];
const peers: E2eePeer[] = [];

afterEach(async () => {
  for (const p of peers.splice(0)) p.close();
  for (const r of rooms.splice(0)) await r.close();
});

async function setup(mode: E2eeMode): Promise<EncryptedRoom> {
  const r = await encryptedRoom(mode);
  rooms.push(r);
  return r;
}

async function login(r: EncryptedRoom, userId: string, deviceId: string): Promise<E2eePeer> {
  const p = await E2eePeer.login(r.env.hs.url, userId, 'pw', deviceId);
  peers.push(p);
  await p.sync();
  return p;
}

/** The bridge's encrypted events in the room, in order. */
function bridgeEncrypted(r: EncryptedRoom): Array<{ eventId: string; sessionId: string; raw: Record<string, unknown> }> {
  return r.env.hs
    .events(r.env.roomId)
    .filter((e) => e.sender === r.bridgeUser && e.type === 'm.room.encrypted')
    .map((e) => ({ eventId: e.event_id, sessionId: String(e.content['session_id']), raw: { ...e } as Record<string, unknown> }));
}

/** Room key shares (Olm-encrypted to-device messages) the bridge device sent to a user's devices since `from`. */
function sharesTo(r: EncryptedRoom, userId: string, from: number): number {
  return r.env.hs.keys.sent.slice(from).filter((m) => m.sender === r.bridgeUser && m.recipient === userId && m.type === 'm.room.encrypted').length;
}

describe.each(['bot', 'appservice'] as const)('Matrix adapter, %s mode: room keys and membership changes', (mode) => {
  it('rotates the Megolm session when a member leaves (no key to their devices) and shares it with a member who joins, for what is sent after', async () => {
    const r = await setup(mode);
    const { env, peer: alice } = r;
    const bob = await login(r, env.bob.userId, 'BOBPHONE');
    const driver = new Driver(r.adapter, env.log, matrixLink(env));

    expect((await driver.deliver(await appendApi(env.log, { kind: 'message', content: { body: 'before the leave' } }))).status).toBe('delivered');
    const a1 = await alice.waitFor((m) => m.sender === r.bridgeUser && String(m.content?.['body']).includes('before the leave'));
    expect(a1.error).toBeUndefined();
    const b1 = await bob.waitFor((m) => m.sender === r.bridgeUser);
    expect(b1.error).toBeUndefined();
    expect(String(b1.content?.['body'])).toContain('before the leave');
    expect(sharesTo(r, env.bob.userId, 0)).toBeGreaterThan(0);
    const [first] = bridgeEncrypted(r);
    if (!first) throw new Error('no encrypted event from the bridge');

    // Bob leaves, as Synapse tells it: the leave event in the timeline, bob in device_lists.left.
    env.hs.leaveRoom(env.bob.userId, env.roomId);
    const mark = env.hs.keys.sent.length;
    expect((await driver.deliver(await appendApi(env.log, { kind: 'message', content: { body: 'after the leave' } }))).status).toBe('delivered');
    const second = bridgeEncrypted(r)[1];
    if (!second) throw new Error('no second encrypted event from the bridge');
    expect(second.sessionId).not.toBe(first.sessionId);
    const a2 = await alice.waitFor((m) => m.eventId === second.eventId);
    expect(a2.error).toBeUndefined();
    expect(String(a2.content?.['body'])).toContain('after the leave');
    // Nothing went to bob's devices, and his client cannot read the event.
    expect(sharesTo(r, env.bob.userId, mark)).toBe(0);
    await bob.sync();
    const b2 = await bob.decrypt(second.raw, env.roomId);
    expect(b2.content).toBeUndefined();
    expect(b2.error).toBeDefined();

    // Carol joins: what the bridge sends after reaches her devices, and she reads it.
    const carolUser = env.hs.registerUser('carol', 'pw');
    const carol = await login(r, carolUser.userId, 'CAROLPHONE');
    env.hs.joinRoom(carolUser.userId, env.roomId);
    const beforeJoin = env.hs.keys.sent.length;
    expect((await driver.deliver(await appendApi(env.log, { kind: 'message', content: { body: 'after the join' } }))).status).toBe('delivered');
    expect(sharesTo(r, carolUser.userId, beforeJoin)).toBeGreaterThan(0);
    expect(sharesTo(r, env.bob.userId, mark)).toBe(0);
    const third = bridgeEncrypted(r)[2];
    if (!third) throw new Error('no third encrypted event from the bridge');
    const c3 = await carol.waitFor((m) => m.eventId === third.eventId);
    expect(c3.error).toBeUndefined();
    expect(String(c3.content?.['body'])).toContain('after the join');
    const a3 = await alice.waitFor((m) => m.eventId === third.eventId);
    expect(a3.error).toBeUndefined();
    // Bob, still outside, gets nothing and reads nothing.
    await bob.sync();
    expect((await bob.decrypt(third.raw, env.roomId)).error).toBeDefined();
  });

  it('rotates the Megolm session when a member signs a device out: the next message\'s key goes to the member\'s remaining devices only', async () => {
    const r = await setup(mode);
    const { env, peer: phone } = r;
    const laptop = await login(r, env.alice.userId, 'ALICELAPTOP');
    const driver = new Driver(r.adapter, env.log, matrixLink(env));
    expect((await driver.deliver(await appendApi(env.log, { kind: 'message', content: { body: 'to both devices' } }))).status).toBe('delivered');
    const [first] = bridgeEncrypted(r);
    if (!first) throw new Error('no encrypted event from the bridge');
    expect((await laptop.waitFor((m) => m.eventId === first.eventId)).error).toBeUndefined();
    expect((await phone.waitFor((m) => m.eventId === first.eventId)).error).toBeUndefined();

    // The laptop is signed out (its keys deleted); the bridge learns it from the device-list change (/sync or MSC3202) and queries the keys again.
    const queriesBefore = env.hs.requests().filter((q) => q.path.endsWith('/keys/query') && q.userId === r.bridgeUser).length;
    await phone.deleteDevice('ALICELAPTOP', 'pw');
    await waitFor(() => env.hs.requests().filter((q) => q.path.endsWith('/keys/query') && q.userId === r.bridgeUser).length > queriesBefore, {
      timeoutMs: 30_000,
      what: 'the bridge to query the member\'s devices again after the change',
    });
    const mark = env.hs.keys.sent.length;
    expect((await driver.deliver(await appendApi(env.log, { kind: 'message', content: { body: 'to the phone only' } }))).status).toBe('delivered');
    const second = bridgeEncrypted(r)[1];
    if (!second) throw new Error('no second encrypted event from the bridge');
    expect(second.sessionId).not.toBe(first.sessionId);
    const shares = env.hs.keys.sent.slice(mark).filter((m) => m.sender === r.bridgeUser && m.recipient === env.alice.userId && m.type === 'm.room.encrypted');
    expect(shares.map((m) => m.deviceId)).toEqual(['ALICEPHONE']);
    const got = await phone.waitFor((m) => m.eventId === second.eventId);
    expect(got.error).toBeUndefined();
    expect(String(got.content?.['body'])).toContain('to the phone only');
  });

  it('shares the key with invited members too while history is visible to them (history_visibility shared, as Element does), not when it is joined-only', async () => {
    const r = await setup(mode);
    const { env, peer: alice } = r;
    const driver = new Driver(r.adapter, env.log, matrixLink(env));
    const carolUser = env.hs.registerUser('carol', 'pw');
    const carol = await login(r, carolUser.userId, 'CAROLPHONE');
    env.hs.inviteUser(env.alice.userId, env.roomId, carolUser.userId);
    const mark = env.hs.keys.sent.length;
    expect((await driver.deliver(await appendApi(env.log, { kind: 'message', content: { body: 'while carol is invited' } }))).status).toBe('delivered');
    expect(sharesTo(r, carolUser.userId, mark)).toBeGreaterThan(0);
    const [first] = bridgeEncrypted(r);
    if (!first) throw new Error('no encrypted event from the bridge');
    env.hs.joinRoom(carolUser.userId, env.roomId);
    await carol.sync();
    const c1 = await carol.decrypt(first.raw, env.roomId);
    expect(c1.error).toBeUndefined();
    expect(String(c1.content?.['body'])).toContain('while carol is invited');

    // Joined-only history: an invited member gets nothing, and the session changes with the setting.
    env.hs.sendStateAsUser(env.alice.userId, env.roomId, 'm.room.history_visibility', '', { history_visibility: 'joined' });
    const daveUser = env.hs.registerUser('dave', 'pw');
    await login(r, daveUser.userId, 'DAVEPHONE');
    env.hs.inviteUser(env.alice.userId, env.roomId, daveUser.userId);
    const mark2 = env.hs.keys.sent.length;
    expect((await driver.deliver(await appendApi(env.log, { kind: 'message', content: { body: 'joined-only now' } }))).status).toBe('delivered');
    expect(sharesTo(r, daveUser.userId, mark2)).toBe(0);
    const second = bridgeEncrypted(r)[1];
    if (!second) throw new Error('no second encrypted event from the bridge');
    expect(second.sessionId).not.toBe(first.sessionId);
    expect((await alice.waitFor((m) => m.eventId === second.eventId)).error).toBeUndefined();
    expect((await carol.waitFor((m) => m.eventId === second.eventId)).error).toBeUndefined();
  });
});
