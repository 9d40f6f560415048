/**
 * `encryption.mode: required` (bot mode): only end-to-end encrypted rooms are
 * bridged. A linked room in clear is refused — shown in the status with
 * SG_ERR_ROOM_NOT_ENCRYPTED, nothing bridged from it or sent to it, the admin
 * API's link check refuses it — until it turns encrypted. The member is an
 * independent Rust-crypto peer (test/harness/matrix-e2ee-peer.ts).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { LogEvent } from '../../../src/core/event.js';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import { parseMatrixConfig, type MatrixAdapterConfig } from '../../../adapters/matrix/config.js';
import { MatrixConfigError } from '../../../adapters/matrix/errors.js';
import { waitFor } from '../../harness/free-port.js';
import { startGateway } from '../../harness/gateway.js';
import { E2eePeer } from '../../harness/matrix-e2ee-peer.js';
import { appserviceConfig, botConfig, createEnv, Driver, roomEvents, ROOM, type Env } from './helpers.js';
import { createE2eeAdapter, pointHomeserverAt, registerOwnAppservice } from './e2ee-room.js';

const RELAY = '@relay:fake.test';
const SECRET = 'a store secret of some length';

let env: Env;
let peer: E2eePeer;
let secretRoom: string;
const adapters: MatrixAdapter[] = [];

beforeEach(async () => {
  env = await createEnv();
  env.hs.registerUser('relay', 'relay-pw');
  // env.roomId (gateway room ROOM) stays in clear; 'secret' is linked to an encrypted room.
  secretRoom = env.hs.createRoom(env.alice.userId, { preset: 'public_chat' });
  env.hs.sendStateAsUser(env.alice.userId, secretRoom, 'm.room.encryption', '', { algorithm: 'm.megolm.v1.aes-sha2' });
  await env.log.rooms.put({ id: 'secret', links: [{ endpoint: 'matrix', target: secretRoom }] });
  await env.links.refresh();
  peer = await E2eePeer.login(env.hs.url, env.alice.userId, 'pw', 'ALICEPHONE');
});

afterEach(async () => {
  for (const a of adapters.splice(0)) await a.stop();
  peer.close();
  await env.close();
});

function requiredConfig(): MatrixAdapterConfig {
  return botConfig(env, {}, { encryption: { mode: 'required', storeSecret: SECRET } });
}

async function start(config: MatrixAdapterConfig): Promise<MatrixAdapter> {
  const adapter = createE2eeAdapter(env, config);
  adapters.push(adapter);
  await adapter.start();
  return adapter;
}

async function append(room: string, body: string): Promise<LogEvent> {
  return appendIn(env, room, body);
}

async function appendIn(e: Env, room: string, body: string): Promise<LogEvent> {
  const { eventId } = await e.log.append({
    v: 1,
    idem: `api:dev1:${room}-${body}`,
    room,
    sender: { uid: 'api:carol', proto: 'api', native: 'carol', display: 'Carol', auth: 'api-token' },
    origin: { proto: 'api', via: 'api', ids: {} },
    ts: { received: Date.now() },
    kind: 'message',
    content: { body },
  });
  const event = await e.log.getEvent(room, eventId);
  if (!event) throw new Error('appended event not found');
  return event;
}

/** What was bridged in from Matrix (the log also holds what the test appended for delivery). */
function texts(events: LogEvent[]): string[] {
  return events.filter((e) => e.kind === 'message' && e.origin.via === 'matrix').map((e) => ('content' in e ? e.content.body : ''));
}

interface Refused {
  roomId: string;
  code: string;
  reason: string;
}

const refusedRooms = (adapter: MatrixAdapter): Refused[] => (adapter.status().detail?.['refusedRooms'] as Refused[] | undefined) ?? [];

describe('Matrix adapter, encryption.mode: required', () => {
  it('is refused without a storeSecret, and optional stays the default', () => {
    expect(() => botConfig(env, {}, { encryption: { mode: 'required' } })).toThrow(MatrixConfigError);
    expect(() => botConfig(env, {}, { encryption: { mode: 'required' } })).toThrow(/encryption\/storeSecret/);
    expect(botConfig(env, {}, { encryption: { storeSecret: SECRET } }).encryption?.mode).toBe('optional');
    expect(parseMatrixConfig({ mode: 'bot', homeserverUrl: env.hs.url, serverName: 'fake.test', bot: { userId: RELAY, password: 'x' }, encryption: { storeSecret: SECRET } }).encryption?.mode).toBe('optional');
  });

  it('bridges the encrypted room both ways, refuses the room in clear (status, nothing in or out, link check) until it turns encrypted', async () => {
    const adapter = await start(requiredConfig());
    await waitFor(() => env.hs.keys.keysOf(RELAY, 'SYNCGATE') !== undefined && adapter.status().ready, { timeoutMs: 20_000, what: 'the bridge device keys uploaded and the adapter ready' });
    await peer.sync();

    // The room in clear is shown as refused, with the code from the error table; the encrypted one is not.
    await waitFor(() => refusedRooms(adapter).length === 1, { timeoutMs: 20_000, what: 'the clear room shown as refused' });
    expect(refusedRooms(adapter)).toEqual([{ roomId: env.roomId, code: 'SG_ERR_ROOM_NOT_ENCRYPTED', reason: expect.stringContaining('not end-to-end encrypted') as string }]);
    expect((adapter.status().detail?.['encryption'] as { mode: string; active: boolean })).toMatchObject({ mode: 'required', active: true });
    expect(env.lines.some((l) => l.level === 50 && (l as { code?: string }).code === 'SG_ERR_ROOM_NOT_ENCRYPTED')).toBe(true);

    // In: a clear message is not bridged; the encrypted room's message (sent after it) is.
    env.hs.sendAsUser(env.bob.userId, env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'in clear, refused' });
    await peer.sendEncrypted(secretRoom, 'm.room.message', { msgtype: 'm.text', body: 'encrypted, bridged' });
    await waitFor(async () => texts(await roomEvents(env.log, 'secret')).includes('encrypted, bridged'), { timeoutMs: 20_000, what: 'the encrypted message bridged' });
    await waitFor(() => ((adapter.status().detail?.['inbound'] as { dropped: Record<string, number> }).dropped['unencrypted-room'] ?? 0) >= 1, { timeoutMs: 20_000, what: 'the clear message dropped' });
    expect(texts(await roomEvents(env.log, ROOM))).toEqual([]);

    // Out: nothing to the room in clear (rejected with the code), encrypted into the other.
    const refused = await new Driver(adapter, env.log, { endpoint: 'matrix', target: env.roomId }).deliver(await append(ROOM, 'to the clear room'), 1);
    expect(refused.status).toBe('rejected');
    expect(refused.status === 'rejected' ? refused.reason : '').toContain('SG_ERR_ROOM_NOT_ENCRYPTED');
    expect(env.hs.events(env.roomId).filter((e) => e.sender === RELAY && e.type !== 'm.room.member')).toEqual([]);
    const sent = await new Driver(adapter, env.log, { endpoint: 'matrix', target: secretRoom }).deliver(await append('secret', 'to the encrypted room'), 5);
    expect(sent.status).toBe('delivered');
    expect(env.hs.events(secretRoom).filter((e) => e.sender === RELAY && e.type !== 'm.room.member').map((e) => e.type)).toEqual(['m.room.encrypted']);
    await peer.waitFor((m) => m.sender === RELAY && String(m.content?.['body']).includes('to the encrypted room'));

    // The admin API's link check: another room in clear is refused as `unencrypted`, the encrypted one passes.
    const other = env.hs.createRoom(env.alice.userId, { preset: 'public_chat' });
    env.hs.joinRoom(RELAY, other);
    expect(await adapter.checkLink?.({ endpoint: 'matrix', target: other })).toEqual({ reason: 'unencrypted', detail: expect.stringContaining(other) as string });
    expect(await adapter.checkLink?.({ endpoint: 'matrix', target: secretRoom })).toBeUndefined();

    // The room turns encrypted: refused no more, bridged (encrypted) both ways.
    env.hs.sendStateAsUser(env.alice.userId, env.roomId, 'm.room.encryption', '', { algorithm: 'm.megolm.v1.aes-sha2' });
    await waitFor(() => refusedRooms(adapter).length === 0, { timeoutMs: 20_000, what: 'the room no longer refused' });
    await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'now encrypted' });
    await waitFor(async () => texts(await roomEvents(env.log, ROOM)).includes('now encrypted'), { timeoutMs: 20_000, what: 'the now encrypted room bridged' });
    expect(texts(await roomEvents(env.log, ROOM))).toEqual(['now encrypted']);
    const after = await new Driver(adapter, env.log, { endpoint: 'matrix', target: env.roomId }).deliver(await append(ROOM, 'after it turned encrypted'), 5);
    expect(after.status).toBe('delivered');
    const fromRelay = env.hs.events(env.roomId).filter((e) => e.sender === RELAY && e.type !== 'm.room.member');
    expect(fromRelay.map((e) => e.type)).toEqual(['m.room.encrypted']);
    expect(JSON.stringify(fromRelay)).not.toContain('after it turned encrypted');
  });

  it('appservice mode: the room in clear is refused the same way (status, nothing from it, no ghost speaks in it), the encrypted room bridged', async () => {
    const e = await createEnv({ hs: { msc2409ToDevice: true, msc3202TransactionExtensions: true } });
    try {
      const encrypted = e.hs.createRoom(e.alice.userId, { preset: 'public_chat' });
      e.hs.sendStateAsUser(e.alice.userId, encrypted, 'm.room.encryption', '', { algorithm: 'm.megolm.v1.aes-sha2' });
      await e.log.rooms.put({ id: 'secret', links: [{ endpoint: 'matrix', target: encrypted }] });
      await e.links.refresh();
      const member = await E2eePeer.login(e.hs.url, e.alice.userId, 'pw', 'ALICELAPTOP');
      try {
        const config = appserviceConfig(e, {}, { encryption: { mode: 'required', storeSecret: SECRET } });
        registerOwnAppservice(e, config);
        const adapter = createE2eeAdapter(e, config);
        adapters.push(adapter);
        await adapter.start();
        pointHomeserverAt(e, adapter);
        await waitFor(() => (adapter.status().detail?.['encryption'] as { active: boolean }).active && adapter.status().ready, { timeoutMs: 20_000, what: 'the bridge device active' });
        await waitFor(() => refusedRooms(adapter).length === 1, { timeoutMs: 20_000, what: 'the clear room refused' });
        expect(refusedRooms(adapter).map((r) => [r.roomId, r.code])).toEqual([[e.roomId, 'SG_ERR_ROOM_NOT_ENCRYPTED']]);
        await member.sync();
        e.hs.sendAsUser(e.bob.userId, e.roomId, 'm.room.message', { msgtype: 'm.text', body: 'in clear, refused' });
        await member.sendEncrypted(encrypted, 'm.room.message', { msgtype: 'm.text', body: 'encrypted, bridged' });
        await waitFor(async () => texts(await roomEvents(e.log, 'secret')).includes('encrypted, bridged'), { timeoutMs: 20_000, what: 'the encrypted message bridged' });
        await waitFor(() => ((adapter.status().detail?.['inbound'] as { dropped: Record<string, number> }).dropped['unencrypted-room'] ?? 0) >= 1, { timeoutMs: 20_000, what: 'the clear message dropped' });
        expect(texts(await roomEvents(e.log, ROOM))).toEqual([]);
        const refused = await new Driver(adapter, e.log, { endpoint: 'matrix', target: e.roomId }).deliver(await appendIn(e, ROOM, 'to the clear room'), 1);
        expect(refused.status).toBe('rejected');
        // No ghost was registered or joined for it, nothing sent.
        expect(e.hs.events(e.roomId).filter((ev) => ev.sender.startsWith('@_sg_') || ev.sender === '@syncgate:fake.test').filter((ev) => ev.type !== 'm.room.member')).toEqual([]);
        expect(JSON.stringify(e.hs.events(e.roomId))).not.toContain('to the clear room');
      } finally {
        member.close();
      }
    } finally {
      for (const a of adapters.splice(0)) await a.stop();
      await e.close();
    }
  });

  it('through the gateway: the admin API refuses to link a room in clear with SG_ERR_ROOM_NOT_ENCRYPTED, links an encrypted one', async () => {
    const clear = env.hs.createRoom(env.alice.userId, { name: 'Plain' });
    env.hs.joinRoom(RELAY, clear);
    env.hs.joinRoom(RELAY, secretRoom);
    const g = await startGateway({
      config: {
        adapters: {
          matrix: { type: 'matrix', mode: 'bot', homeserverUrl: env.hs.url, serverName: env.hs.serverName, bot: { userId: RELAY, password: 'relay-pw', syncTimeoutMs: 2_000 }, encryption: { mode: 'required', storeSecret: SECRET } },
        },
        rooms: [],
      },
    });
    try {
      await waitFor(async () => (await g.admin<{ adapters: Record<string, { connected: boolean }> }>('GET', '/v1/admin/status')).body.adapters['matrix']?.connected === true, { timeoutMs: 20_000, what: 'the matrix adapter connected' });
      const refused = await g.admin<{ code: string; details: { problems: string[] } }>('PUT', '/v1/admin/rooms/plain', { links: [{ endpoint: 'matrix', target: clear }] });
      expect([refused.status, refused.body.code]).toEqual([400, 'SG_ERR_ROOM_NOT_ENCRYPTED']);
      expect(refused.body.details.problems[0]).toContain(clear);
      expect((await g.admin('GET', '/v1/admin/rooms/plain')).status).toBe(404);
      expect((await g.admin('PUT', '/v1/admin/rooms/secret2', { links: [{ endpoint: 'matrix', target: secretRoom }] })).status).toBe(200);
    } finally {
      await g.stop();
    }
  });
});
