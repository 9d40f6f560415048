/**
 * The fake homeserver's end-to-end-encryption endpoints behave as Synapse's
 * (test/harness/fake-homeserver-e2ee.ts), checked over HTTP and with two
 * real Rust-crypto clients (the wasm OlmMachine of matrix-sdk-crypto-wasm)
 * exchanging Megolm-encrypted messages through it.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createFakeHomeserver, type FakeHomeserver } from '../harness/fake-homeserver.js';
import { waitFor } from '../harness/free-port.js';
import { E2eePeer } from '../harness/matrix-e2ee-peer.js';

let hs: FakeHomeserver;
const peers: E2eePeer[] = [];

beforeEach(async () => {
  hs = await createFakeHomeserver({ serverName: 'fake.test' });
});

afterEach(async () => {
  for (const p of peers.splice(0)) p.close();
  await hs.stop();
});

async function login(localpart: string, deviceId: string): Promise<{ token: string; userId: string }> {
  const res = await fetch(`${hs.url}/_matrix/client/v3/login`, {
    method: 'POST',
    body: JSON.stringify({ type: 'm.login.password', identifier: { type: 'm.id.user', user: localpart }, password: 'pw', device_id: deviceId }),
  });
  const body = (await res.json()) as { access_token: string; user_id: string };
  return { token: body.access_token, userId: body.user_id };
}

async function call(token: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${hs.url}/_matrix/client/v3${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}` },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('key server as Synapse serves it', () => {
  it('counts one-time keys with signed_curve25519 always present, refuses a changed key under an existing id, claims then falls back', async () => {
    hs.registerUser('alice', 'pw');
    hs.registerUser('bob', 'pw');
    const alice = await login('alice', 'ALICEDEV');
    const bob = await login('bob', 'BOBDEV');
    const empty = await call(alice.token, 'POST', '/keys/upload', {});
    expect(empty).toEqual({ status: 200, body: { one_time_key_counts: { signed_curve25519: 0 } } });

    const up = await call(alice.token, 'POST', '/keys/upload', {
      device_keys: { user_id: alice.userId, device_id: 'ALICEDEV', algorithms: ['m.megolm.v1.aes-sha2'], keys: { 'curve25519:ALICEDEV': 'c', 'ed25519:ALICEDEV': 'e' }, signatures: {} },
      one_time_keys: { 'signed_curve25519:AAAA': { key: 'k1' }, 'signed_curve25519:AAAB': { key: 'k2' } },
      fallback_keys: { 'signed_curve25519:FFFF': { key: 'fb', fallback: true } },
    });
    expect(up.body).toEqual({ one_time_key_counts: { signed_curve25519: 2 } });
    const conflict = await call(alice.token, 'POST', '/keys/upload', { one_time_keys: { 'signed_curve25519:AAAA': { key: 'other' } } });
    expect(conflict.status).toBe(400);
    expect(String(conflict.body['error'])).toMatch(/already exists/);
    // the same key again is accepted and changes nothing
    expect((await call(alice.token, 'POST', '/keys/upload', { one_time_keys: { 'signed_curve25519:AAAA': { key: 'k1' } } })).body).toEqual({ one_time_key_counts: { signed_curve25519: 2 } });

    const query = await call(bob.token, 'POST', '/keys/query', { device_keys: { [alice.userId]: [] } });
    const devices = (query.body['device_keys'] as Record<string, Record<string, unknown>>)[alice.userId] ?? {};
    expect(Object.keys(devices)).toEqual(['ALICEDEV']);

    const claims: unknown[] = [];
    for (let i = 0; i < 4; i++) claims.push((await call(bob.token, 'POST', '/keys/claim', { one_time_keys: { [alice.userId]: { ALICEDEV: 'signed_curve25519' } } })).body);
    expect(claims.map((c) => Object.keys(((c as { one_time_keys: Record<string, Record<string, object>> }).one_time_keys[alice.userId] ?? {})['ALICEDEV'] ?? {}))).toEqual([
      ['signed_curve25519:AAAA'],
      ['signed_curve25519:AAAB'],
      ['signed_curve25519:FFFF'],
      ['signed_curve25519:FFFF'],
    ]);
    const sync = await call(alice.token, 'GET', '/sync?timeout=0');
    expect(sync.body['device_one_time_keys_count']).toEqual({ signed_curve25519: 0 });
    // the fallback key was used: no unused type left
    expect(sync.body['device_unused_fallback_key_types']).toEqual([]);
  });

  it('delivers to-device messages until a later sync acknowledges them, and reports device-list changes of room members', async () => {
    hs.registerUser('alice', 'pw');
    hs.registerUser('bob', 'pw');
    const alice = await login('alice', 'ALICEDEV');
    const bob = await login('bob', 'BOBDEV');
    const room = hs.createRoom(alice.userId, { preset: 'public_chat' });
    hs.joinRoom(bob.userId, room);
    const first = await call(bob.token, 'GET', '/sync?timeout=0');
    const since = String(first.body['next_batch']);

    expect((await call(alice.token, 'PUT', '/sendToDevice/m.test/t1', { messages: { [bob.userId]: { '*': { hello: 1 } } } })).status).toBe(200);
    // a retransmission of the same txnId sends nothing more
    await call(alice.token, 'PUT', '/sendToDevice/m.test/t1', { messages: { [bob.userId]: { '*': { hello: 1 } } } });
    await call(alice.token, 'POST', '/keys/upload', { device_keys: { user_id: alice.userId, device_id: 'ALICEDEV', algorithms: [], keys: { 'ed25519:ALICEDEV': 'x' }, signatures: {} } });

    const second = await call(bob.token, 'GET', `/sync?timeout=0&since=${since}`);
    expect((second.body['to_device'] as { events: unknown[] }).events).toEqual([{ type: 'm.test', sender: alice.userId, content: { hello: 1 } }]);
    expect((second.body['device_lists'] as { changed: string[] }).changed).toEqual([alice.userId]);
    // not acknowledged (same since): delivered again
    const again = await call(bob.token, 'GET', `/sync?timeout=0&since=${since}`);
    expect((again.body['to_device'] as { events: unknown[] }).events).toHaveLength(1);
    // acknowledged
    const third = await call(bob.token, 'GET', `/sync?timeout=0&since=${String(second.body['next_batch'])}`);
    expect((third.body['to_device'] as { events: unknown[] }).events).toEqual([]);
    expect(hs.keys.pendingToDevice(bob.userId, 'BOBDEV')).toBe(0);

    hs.leaveRoom(alice.userId, room);
    const fourth = await call(bob.token, 'GET', `/sync?timeout=0&since=${String(third.body['next_batch'])}`);
    expect((fourth.body['device_lists'] as { left: string[] }).left).toEqual([alice.userId]);
  });
});

describe('two Rust-crypto clients through the fake', () => {
  it('a Megolm message one member sends into an encrypted room is decrypted by the other, from the device that sent it', async () => {
    hs.registerUser('alice', 'pw');
    hs.registerUser('bob', 'pw');
    const alice = await E2eePeer.login(hs.url, '@alice:fake.test', 'pw', 'ALICEDEV');
    const bob = await E2eePeer.login(hs.url, '@bob:fake.test', 'pw', 'BOBDEV');
    peers.push(alice, bob);
    expect(hs.keys.keysOf('@alice:fake.test', 'ALICEDEV')).toBeDefined();
    expect(hs.keys.oneTimeKeyCount('@bob:fake.test', 'BOBDEV')).toBeGreaterThan(0);
    const room = hs.createRoom('@alice:fake.test', { preset: 'public_chat', initialState: [{ type: 'm.room.encryption', content: { algorithm: 'm.megolm.v1.aes-sha2' } }] });
    hs.joinRoom('@bob:fake.test', room);
    await alice.sync();
    await bob.sync();

    const eventId = await alice.sendEncrypted(room, 'm.room.message', { msgtype: 'm.text', body: 'secret hello' });
    const stored = hs.events(room).find((e) => e.event_id === eventId);
    expect(stored?.type).toBe('m.room.encrypted');
    expect(JSON.stringify(stored?.content)).not.toContain('secret hello');
    const got = await bob.waitFor((m) => m.eventId === eventId);
    expect(got.error).toBeUndefined();
    expect(got.content).toEqual({ msgtype: 'm.text', body: 'secret hello' });
    expect(got.senderDevice).toBe('ALICEDEV');
    expect(got.senderCurve25519).toBe(alice.curve25519);
    // the room key travelled as an Olm-encrypted to-device message
    expect(hs.keys.sent.some((m) => m.type === 'm.room.encrypted' && m.recipient === '@bob:fake.test' && m.deviceId === 'BOBDEV')).toBe(true);
  });
});

/** An AS listener that records every transaction body and answers 200. */
async function listener(): Promise<{ url: string; bodies: Array<Record<string, unknown>>; close: () => Promise<void> }> {
  const bodies: Array<Record<string, unknown>> = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method === 'PUT') bodies.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, bodies, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

describe('appservice transactions with Synapse\'s experimental E2EE extensions', () => {
  async function setUp(opts: { msc2409ToDevice: boolean; msc3202TransactionExtensions: boolean }) {
    await hs.stop();
    hs = await createFakeHomeserver({ serverName: 'fake.test', appServiceRetry: { initialMs: 50, maxMs: 500 }, ...opts });
    const as = await listener();
    hs.registerAppService({
      id: 'bridge',
      url: as.url,
      as_token: 'as-token-0123456789abcdef',
      hs_token: 'hs-token-0123456789abcdef',
      sender_localpart: 'bridge',
      namespaces: { users: [{ exclusive: true, regex: '@_b_.*:fake.test' }] },
      'de.sorunome.msc2409.push_ephemeral': true,
      'org.matrix.msc3202': true,
    });
    hs.registerUser('alice', 'pw');
    const alice = await login('alice', 'ALICEDEV');
    // The bridge bot's device, as an appservice gets one (m.login.application_service).
    const res = await fetch(`${hs.url}/_matrix/client/v3/login`, {
      method: 'POST',
      headers: { Authorization: 'Bearer as-token-0123456789abcdef' },
      body: JSON.stringify({ type: 'm.login.application_service', identifier: { type: 'm.id.user', user: 'bridge' }, device_id: 'BRIDGEDEV' }),
    });
    const bot = (await res.json()) as { access_token: string; user_id: string };
    const room = hs.createRoom(alice.userId, { preset: 'public_chat' });
    hs.joinRoom(bot.user_id, room);
    await call(bot.access_token, 'POST', '/keys/upload', {
      device_keys: { user_id: bot.user_id, device_id: 'BRIDGEDEV', algorithms: [], keys: { 'ed25519:BRIDGEDEV': 'b' }, signatures: {} },
      one_time_keys: { 'signed_curve25519:AAAA': { key: 'k' } },
      fallback_keys: { 'signed_curve25519:FFFF': { key: 'f', fallback: true } },
    });
    await call(alice.token, 'POST', '/keys/upload', { device_keys: { user_id: alice.userId, device_id: 'ALICEDEV', algorithms: [], keys: { 'ed25519:ALICEDEV': 'a' }, signatures: {} } });
    await call(alice.token, 'PUT', '/sendToDevice/m.room.encrypted/t1', { messages: { [bot.user_id]: { BRIDGEDEV: { ciphertext: 'x' } } } });
    return { as, bot, alice };
  }

  it('carries to-device messages (MSC2409), key counts and device lists (MSC3202) under Synapse\'s unstable names when enabled', async () => {
    const { as, bot, alice } = await setUp({ msc2409ToDevice: true, msc3202TransactionExtensions: true });
    try {
      await waitFor(() => as.bodies.some((b) => b['de.sorunome.msc2409.to_device'] !== undefined), { timeoutMs: 10_000, what: 'a transaction with the to-device message' });
      const toDevice = as.bodies.flatMap((b) => (b['de.sorunome.msc2409.to_device'] as unknown[] | undefined) ?? []);
      expect(toDevice).toEqual([{ type: 'm.room.encrypted', sender: alice.userId, content: { ciphertext: 'x' }, to_user_id: bot.user_id, to_device_id: 'BRIDGEDEV' }]);
      await waitFor(() => as.bodies.some((b) => b['org.matrix.msc3202.device_one_time_keys_count'] !== undefined), { timeoutMs: 10_000, what: 'a transaction with key counts' });
      const counts = as.bodies.filter((b) => b['org.matrix.msc3202.device_one_time_keys_count'] !== undefined).at(-1);
      expect(counts?.['org.matrix.msc3202.device_one_time_keys_count']).toEqual({ [bot.user_id]: { BRIDGEDEV: { signed_curve25519: 1 } } });
      expect(counts?.['org.matrix.msc3202.device_one_time_key_counts']).toEqual(counts?.['org.matrix.msc3202.device_one_time_keys_count']);
      expect(counts?.['org.matrix.msc3202.device_unused_fallback_key_types']).toEqual({ [bot.user_id]: { BRIDGEDEV: ['signed_curve25519'] } });
      const changed = as.bodies.flatMap((b) => ((b['org.matrix.msc3202.device_lists'] as { changed?: string[] } | undefined)?.changed ?? []));
      expect(changed).toContain(alice.userId);
    } finally {
      await as.close();
    }
  });

  it('carries the key counts in every transaction it sends, as Synapse computes them per transaction (a to-device message alone)', async () => {
    const { as, bot, alice } = await setUp({ msc2409ToDevice: true, msc3202TransactionExtensions: true });
    try {
      await waitFor(() => as.bodies.some((b) => b['de.sorunome.msc2409.to_device'] !== undefined) && hs.appServiceTransactions('bridge').every((t) => t.delivered), { timeoutMs: 10_000, what: 'the first transactions delivered' });
      const before = as.bodies.length;
      await call(alice.token, 'PUT', '/sendToDevice/m.room.encrypted/t2', { messages: { [bot.user_id]: { BRIDGEDEV: { ciphertext: 'y' } } } });
      await waitFor(() => as.bodies.slice(before).some((b) => b['de.sorunome.msc2409.to_device'] !== undefined), { timeoutMs: 10_000, what: 'the transaction with the second to-device message' });
      const body = as.bodies.slice(before).find((b) => b['de.sorunome.msc2409.to_device'] !== undefined);
      expect(body?.['events']).toEqual([]);
      expect(body?.['org.matrix.msc3202.device_one_time_keys_count']).toEqual({ [bot.user_id]: { BRIDGEDEV: { signed_curve25519: 1 } } });
    } finally {
      await as.close();
    }
  });

  it('carries none of them without the experimental features (as Synapse by default)', async () => {
    const { as } = await setUp({ msc2409ToDevice: false, msc3202TransactionExtensions: false });
    try {
      // the bot's join reaches the AS: the transactions flowed
      await waitFor(() => as.bodies.length > 0, { timeoutMs: 10_000, what: 'a transaction' });
      expect(hs.keys.pendingToDevice('@bridge:fake.test', 'BRIDGEDEV')).toBe(1);
      expect(as.bodies.filter((b) => Object.keys(b).some((k) => k.includes('msc3202') || k === 'de.sorunome.msc2409.to_device'))).toEqual([]);
    } finally {
      await as.close();
    }
  });
});

describe('m.login.application_service (a device for an appservice user, as Synapse\'s _do_appservice_login)', () => {
  const AS_TOKEN = 'as-token-0123456789abcdef';
  const asLogin = async (token: string | undefined, body: Record<string, unknown>): Promise<{ status: number; body: Record<string, unknown> }> => {
    const res = await fetch(`${hs.url}/_matrix/client/v3/login`, {
      method: 'POST',
      ...(token !== undefined ? { headers: { Authorization: `Bearer ${token}` } } : {}),
      body: JSON.stringify({ type: 'm.login.application_service', ...body }),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  beforeEach(() => {
    hs.registerAppService({
      id: 'bridge',
      url: null,
      as_token: AS_TOKEN,
      hs_token: 'hs-token-0123456789abcdef',
      sender_localpart: 'bridge',
      namespaces: { users: [{ exclusive: true, regex: '@_b_.*:fake.test' }] },
    });
    hs.registerUser('alice', 'pw');
  });

  it('gives the AS\'s user a device and a token; the same device_id again keeps the device and its keys and drops the older token', async () => {
    const first = await asLogin(AS_TOKEN, { identifier: { type: 'm.id.user', user: '@bridge:fake.test' }, device_id: 'BRIDGEDEV' });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ user_id: '@bridge:fake.test', device_id: 'BRIDGEDEV' });
    const token1 = String(first.body['access_token']);
    expect((await call(token1, 'GET', '/account/whoami')).body).toMatchObject({ user_id: '@bridge:fake.test', device_id: 'BRIDGEDEV' });
    const keys = { user_id: '@bridge:fake.test', device_id: 'BRIDGEDEV', algorithms: [], keys: { 'ed25519:BRIDGEDEV': 'b' }, signatures: {} };
    expect((await call(token1, 'POST', '/keys/upload', { device_keys: keys })).status).toBe(200);

    const second = await asLogin(AS_TOKEN, { identifier: { type: 'm.id.user', user: 'bridge' }, device_id: 'BRIDGEDEV' });
    expect(second.body).toMatchObject({ user_id: '@bridge:fake.test', device_id: 'BRIDGEDEV' });
    expect((await call(token1, 'GET', '/account/whoami')).status).toBe(401);
    expect(hs.keys.keysOf('@bridge:fake.test', 'BRIDGEDEV')).toEqual(keys);
  });

  it('refuses what Synapse refuses: no AS token, the legacy `user` field, another identifier type, a user outside the namespaces', async () => {
    expect((await asLogin(undefined, { identifier: { type: 'm.id.user', user: 'bridge' } })).body['errcode']).toBe('M_MISSING_TOKEN');
    const legacy = await asLogin(AS_TOKEN, { user: 'bridge' });
    expect([legacy.status, legacy.body['errcode']]).toEqual([400, 'M_INVALID_PARAM']);
    const thirdParty = await asLogin(AS_TOKEN, { identifier: { type: 'm.id.thirdparty', medium: 'email', address: 'a@b.c' } });
    expect([thirdParty.status, thirdParty.body['errcode']]).toEqual([400, 'M_INVALID_PARAM']);
    const outside = await asLogin(AS_TOKEN, { identifier: { type: 'm.id.user', user: '@alice:fake.test' } });
    expect([outside.status, outside.body['errcode']]).toEqual([403, 'M_FORBIDDEN']);
  });
});
