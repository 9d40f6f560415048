/**
 * End-to-end encrypted rooms in bot mode: the adapter's own device (the
 * wasm OlmMachine, crypto state sealed in the log's state store) against the
 * fake homeserver, with a member whose client is an independent Rust-crypto
 * peer (test/harness/matrix-e2ee-peer.ts).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { LogEvent } from '../../../src/core/event.js';
import { SyncgateError } from '../../../src/core/errors.js';
import type { MatrixAdapter } from '../../../adapters/matrix/index.js';
import type { MatrixAdapterConfig } from '../../../adapters/matrix/config.js';
import { waitFor } from '../../harness/free-port.js';
import type { E2eePeer } from '../../harness/matrix-e2ee-peer.js';
import { createE2eeAdapter, encryptRoom, memberPeer, STORE_SECRET } from './e2ee-room.js';
import { appendApi, type ApiDraft, botConfig, createEnv, Driver, matrixLink, roomEvents, waitForEvents, type Env } from './helpers.js';

const RELAY = '@relay:fake.test';
const SECRET = STORE_SECRET;

let env: Env;
let peer: E2eePeer;
const adapters: MatrixAdapter[] = [];

beforeEach(async () => {
  env = await createEnv();
  env.hs.registerUser('relay', 'relay-pw');
  encryptRoom(env);
  peer = await memberPeer(env);
});

afterEach(async () => {
  for (const a of adapters.splice(0)) await a.stop();
  peer.close();
  await env.close();
});

function encConfig(secret: string | null = SECRET, encryption: Record<string, unknown> = {}): MatrixAdapterConfig {
  return botConfig(env, {}, secret === null ? {} : { encryption: { storeSecret: secret, ...encryption } });
}

async function start(config: MatrixAdapterConfig): Promise<MatrixAdapter> {
  const adapter = createE2eeAdapter(env, config);
  adapters.push(adapter);
  await adapter.start();
  return adapter;
}

interface Device {
  deviceId: string;
  curve25519: string;
  ed25519: string;
  fresh: boolean;
}

function deviceOf(adapter: MatrixAdapter): Device {
  const enc = adapter.status().detail?.['encryption'] as { device?: Device };
  if (!enc.device) throw new Error(`crypto not active: ${JSON.stringify(enc)}`);
  return enc.device;
}

async function bridgeReady(adapter: MatrixAdapter): Promise<void> {
  await waitFor(() => env.hs.keys.keysOf(RELAY, 'SYNCGATE') !== undefined && adapter.status().ready, { timeoutMs: 20_000, what: 'the bridge device keys uploaded and the adapter ready' });
  await peer.sync();
}

/** What the HTTP API appends into another gateway room than helpers.ts's ROOM. */
async function appendTo(room: string, body: string): Promise<LogEvent> {
  const { eventId } = await env.log.append({
    v: 1,
    idem: `api:dev1:${room}-${body}`,
    room,
    sender: { uid: 'api:carol', proto: 'api', native: 'carol', display: 'Carol', auth: 'api-token' },
    origin: { proto: 'api', via: 'api', ids: {} },
    ts: { received: Date.now() },
    kind: 'message',
    content: { body },
  });
  const event = await env.log.getEvent(room, eventId);
  if (!event) throw new Error('appended event not found');
  return event;
}

function texts(events: Awaited<ReturnType<typeof roomEvents>>): string[] {
  return events.filter((e) => e.kind === 'message').map((e) => ('content' in e ? e.content.body : ''));
}

describe('Matrix adapter, bot mode, encrypted room', () => {
  it('bridges a member\'s Megolm messages (message, reply, edit, reaction) into the log and encrypts what it relays for the member\'s devices', async () => {
    const adapter = await start(encConfig());
    await bridgeReady(adapter);

    const first = await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'hello from an encrypted room' });
    await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'a reply', 'm.relates_to': { 'm.in_reply_to': { event_id: first } } });
    await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.text', body: '* hello, edited', 'm.new_content': { msgtype: 'm.text', body: 'hello, edited' }, 'm.relates_to': { rel_type: 'm.replace', event_id: first } });
    await peer.sendEncrypted(env.roomId, 'm.reaction', { 'm.relates_to': { rel_type: 'm.annotation', event_id: first, key: '👍' } });
    const events = await waitForEvents(env.log, (evs) => evs.some((e) => e.kind === 'reaction') && evs.some((e) => e.kind === 'edit') && texts(evs).includes('a reply'), 'the decrypted events bridged');
    const original = events.find((e) => e.kind === 'message' && e.origin.ids['mx.eventId'] === first);
    expect(original && 'content' in original ? original.content.body : undefined).toBe('hello from an encrypted room');
    const reply = events.find((e) => e.kind === 'message' && 'content' in e && e.content.body === 'a reply');
    expect(reply?.kind === 'message' ? reply.rel?.replyTo : undefined).toBe(original?.eventId);
    const edit = events.find((e) => e.kind === 'edit');
    expect(edit?.kind === 'edit' ? edit.rel.replaces : undefined).toBe(original?.eventId);
    expect(edit && 'content' in edit ? edit.content.body : undefined).toBe('hello, edited');
    // Relations stay in clear on the encrypted event, as the spec wants (the homeserver aggregates them).
    const clearRelations = env.hs.events(env.roomId).filter((e) => e.type === 'm.room.encrypted' && e.content['m.relates_to'] !== undefined);
    expect(clearRelations.map((e) => (e.content['m.relates_to'] as { rel_type?: string }).rel_type ?? 'm.in_reply_to').sort()).toEqual(['m.annotation', 'm.in_reply_to', 'm.replace']);
    const reaction = events.find((e) => e.kind === 'reaction');
    expect(reaction && 'reaction' in reaction ? reaction.reaction.keys : undefined).toEqual(['👍']);

    const out = await appendApi(env.log, { kind: 'message', content: { body: 'relayed secretly' } });
    const result = await new Driver(adapter, env.log, matrixLink(env)).deliver(out);
    expect(result.status).toBe('delivered');
    const sent = env.hs.events(env.roomId).filter((e) => e.sender === RELAY && e.type !== 'm.room.member');
    expect(sent.map((e) => e.type)).toEqual(['m.room.encrypted']);
    expect(JSON.stringify(sent)).not.toContain('relayed secretly');
    const got = await peer.waitFor((m) => m.sender === RELAY);
    expect(got.error).toBeUndefined();
    expect(String(got.content?.['body'])).toContain('relayed secretly');
    expect(got.senderDevice).toBe('SYNCGATE');
    expect(got.senderCurve25519).toBe(deviceOf(adapter).curve25519);
    // our own encrypted echo is recognised, not bridged back
    await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'after the relay' });
    const after = await waitForEvents(env.log, (evs) => texts(evs).includes('after the relay'), 'the next member message');
    expect(texts(after).filter((t) => t.includes('relayed secretly'))).toEqual(['relayed secretly']);
  });

  it('relays edits, reactions, replies and retractions into the encrypted room as a member\'s client expects them', async () => {
    const adapter = await start(encConfig());
    await bridgeReady(adapter);
    const driver = new Driver(adapter, env.log, matrixLink(env));
    const m = await appendApi(env.log, { kind: 'message', content: { body: 'original' } });
    expect((await driver.deliver(m)).status).toBe('delivered');
    const mx = driver.nativeIds(m.eventId)?.['mx.eventId'];
    const drafts: ApiDraft[] = [
      { kind: 'edit', content: { body: 'edited' }, rel: { replaces: m.eventId } },
      { kind: 'message', content: { body: 'a reply' }, rel: { replyTo: m.eventId } },
      { kind: 'reaction', rel: { reactsTo: m.eventId }, reaction: { keys: ['🎉'] } },
      { kind: 'retraction', rel: { redacts: m.eventId } },
    ];
    for (const draft of drafts) {
      expect((await driver.deliver(await appendApi(env.log, draft))).status).toBe('delivered');
    }
    const fromRelay = env.hs.events(env.roomId).filter((e) => e.sender === RELAY && e.type !== 'm.room.member');
    // Everything encrypted but the redaction, which the spec keeps in clear.
    expect(fromRelay.map((e) => e.type)).toEqual(['m.room.encrypted', 'm.room.encrypted', 'm.room.encrypted', 'm.room.encrypted', 'm.room.redaction']);
    // Text never in clear; a reaction's key is, in its clear m.relates_to, as the spec has it (and Element does).
    expect(JSON.stringify(fromRelay)).not.toMatch(/original|edited|a reply/);
    expect(fromRelay.filter((e) => JSON.stringify(e.content).includes('🎉')).map((e) => e.content['m.relates_to'])).toEqual([{ rel_type: 'm.annotation', event_id: mx, key: '🎉' }]);
    // Every relation in clear on the m.room.encrypted content (spec "Mixing relations and encryption": the server aggregates them).
    expect(fromRelay.filter((e) => e.type === 'm.room.encrypted').map((e) => e.content['m.relates_to'])).toEqual([
      undefined,
      { rel_type: 'm.replace', event_id: mx },
      { 'm.in_reply_to': { event_id: mx } },
      { rel_type: 'm.annotation', event_id: mx, key: '🎉' },
    ]);
    const edit = await peer.waitFor((x) => x.sender === RELAY && (x.content?.['m.relates_to'] as { rel_type?: string } | undefined)?.rel_type === 'm.replace');
    expect(edit.content?.['m.new_content']).toMatchObject({ body: expect.stringContaining('edited') });
    expect((edit.content?.['m.relates_to'] as { event_id?: string }).event_id).toBe(mx);
    const reply = await peer.waitFor((x) => x.sender === RELAY && String(x.content?.['body']).includes('a reply'));
    expect((reply.content?.['m.relates_to'] as { 'm.in_reply_to'?: { event_id?: string } })['m.in_reply_to']?.event_id).toBe(mx);
    const reaction = await peer.waitFor((x) => x.sender === RELAY && x.type === 'm.reaction');
    expect(reaction.content?.['m.relates_to']).toMatchObject({ rel_type: 'm.annotation', event_id: mx, key: '🎉' });
  });

  it('keeps its device and sessions across a restart: a message sent while the gateway was down is decrypted after it comes back', async () => {
    const first = await start(encConfig());
    await bridgeReady(first);
    const device = deviceOf(first);
    await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'before the restart' });
    await waitForEvents(env.log, (evs) => texts(evs).includes('before the restart'), 'the first message');
    await first.stop();

    // While down: the member sends with the session the bridge already has, and with a new one (rotated).
    await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'while down, same session' });
    await peer.machine.invalidateGroupSession(new (await import('@matrix-org/matrix-sdk-crypto-wasm')).RoomId(env.roomId));
    await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'while down, new session' });

    const second = await start(encConfig());
    await waitFor(() => second.status().ready, { timeoutMs: 20_000, what: 'the restarted adapter ready' });
    const { fresh: wasFresh, ...identity } = device;
    expect(wasFresh).toBe(true);
    expect(deviceOf(second)).toEqual({ ...identity, fresh: false });
    // The device keys were uploaded once: the restart announced no new identity.
    expect(env.hs.keys.uploads.filter((u) => u.userId === RELAY && u.body['device_keys'] !== undefined)).toHaveLength(1);
    const events = await waitForEvents(env.log, (evs) => texts(evs).includes('while down, new session'), 'the messages sent while down');
    expect(texts(events)).toEqual(['before the restart', 'while down, same session', 'while down, new session']);
    expect(events.every((e) => !('content' in e) || e.content.undecryptable === undefined)).toBe(true);
  });

  it('refuses to start with another store secret (SG_ERR_STATE_SEALED_KEY) rather than becoming a new device', async () => {
    const first = await start(encConfig());
    await bridgeReady(first);
    await first.stop();
    const err = await start(encConfig('another secret of some length')).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SyncgateError);
    expect((err as SyncgateError).code).toBe('SG_ERR_STATE_SEALED_KEY');
    expect(env.hs.keys.uploads.filter((u) => u.userId === RELAY && u.body['device_keys'] !== undefined)).toHaveLength(1);
  });

  it('detects a lost crypto store (the homeserver has keys for our device, we have none): says so, and goes on as a new device, never with other keys under the old one', async () => {
    const first = await start(encConfig());
    await bridgeReady(first);
    const keys = env.hs.keys.keysOf(RELAY, 'SYNCGATE');
    await first.stop();
    // The store lost: every record of the crypto namespace gone.
    const stored = await env.log.state.entries('matrix-crypto:matrix');
    expect(stored.map(([k]) => k)).toContain('meta');
    await env.log.state.update('matrix-crypto:matrix', [], stored.map(([k]) => k));
    const second = await start(encConfig());
    await waitFor(() => second.status().ready && (second.status().detail?.['encryption'] as { active: boolean }).active, { timeoutMs: 20_000, what: 'the adapter ready with a new device' });
    const enc = second.status().detail?.['encryption'] as { device: Device & { replaced?: string } };
    expect(enc.device.deviceId).toMatch(/^SYNCGATE_/);
    expect(enc.device.replaced).toMatch(/crypto store .* is lost/);
    expect(env.lines.some((l) => l.level === 50 && l.msg.includes('is lost'))).toBe(true);
    // The old device's keys are untouched (test/integration/matrix/e2ee-devices.test.ts: the new device, its clean-up).
    expect(env.hs.keys.keysOf(RELAY, 'SYNCGATE')).toEqual(keys);
  });

  it('holds an event whose room key comes late, bridges the room\'s other events meanwhile, and bridges it once when the key arrives', async () => {
    const adapter = await start(encConfig());
    await bridgeReady(adapter);
    env.hs.keys.delayToDevice(RELAY, 'SYNCGATE', true);
    const late = await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'my key comes late' });
    const held = () => (adapter.status().detail?.['encryption'] as { held?: { waiting: number } }).held?.waiting ?? 0;
    await waitFor(() => held() === 1, { timeoutMs: 20_000, what: 'the event held' });
    env.hs.sendAsUser(env.bob.userId, env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'meanwhile, in clear' });
    await waitForEvents(env.log, (evs) => texts(evs).includes('meanwhile, in clear'), 'the room\'s next event bridged while one is held');
    env.hs.keys.delayToDevice(RELAY, 'SYNCGATE', false);
    const events = await waitForEvents(env.log, (evs) => texts(evs).includes('my key comes late'), 'the held event bridged once its key arrived');
    expect(texts(events)).toEqual(['meanwhile, in clear', 'my key comes late']);
    expect(events.find((e) => e.origin.ids['mx.eventId'] === late && e.kind === 'message')).toBeDefined();
    expect(held()).toBe(0);
    expect(env.hs.events(env.roomId).filter((e) => e.event_id === late)).toHaveLength(1);
  });

  it('marks a never-decryptable event undecryptable after the hold and goes on with the room', async () => {
    const adapter = await start(encConfig(SECRET, { undecryptableHoldMs: 500 }));
    await bridgeReady(adapter);
    env.hs.sendAsUser(env.alice.userId, env.roomId, 'm.room.encrypted', {
      algorithm: 'm.megolm.v1.aes-sha2',
      ciphertext: 'AwgAEnB5i8Pq1Ld0nY6k2t7x',
      session_id: 'no-such-session',
      sender_key: peer.curve25519,
      device_id: 'ALICEPHONE',
    });
    await peer.sendEncrypted(env.roomId, 'm.room.message', { msgtype: 'm.text', body: 'the next one' });
    await waitForEvents(env.log, (evs) => texts(evs).includes('the next one'), 'the message after the undecryptable one');
    const events = await waitForEvents(env.log, (evs) => evs.length === 2, 'both events');
    const marked = events.filter((e) => e.kind === 'message' && 'content' in e && e.content.undecryptable !== undefined);
    expect(marked.map((e) => ('content' in e ? e.content.undecryptable : undefined))).toEqual([{ reason: 'keys-missing', scheme: 'm.megolm.v1.aes-sha2' }]);
    // held for the bound, then marked: the next message is not held up by it
    await waitForEvents(env.log, (evs) => texts(evs).includes('[An encrypted message could not be read]'), 'the undecryptable notice after the hold');
    expect(texts(await roomEvents(env.log)).sort()).toEqual(['[An encrypted message could not be read]', 'the next one']);
    expect((adapter.status().detail?.['inbound'] as { undecryptable: Record<string, number> }).undecryptable).toEqual({ 'keys-missing': 1 });
  });

  it('a second device the member logs in later decrypts what the bridge sends after', async () => {
    const adapter = await start(encConfig());
    await bridgeReady(adapter);
    const driver = new Driver(adapter, env.log, matrixLink(env));
    expect((await driver.deliver(await appendApi(env.log, { kind: 'message', content: { body: 'to the phone' } }))).status).toBe('delivered');
    await peer.waitFor((m) => String(m.content?.['body']).includes('to the phone'));
    const laptop = await memberPeer(env, 'ALICELAPTOP');
    try {
      await laptop.sync();
      // The bridge learns of the new device from device_lists.changed in its next /sync batches.
      const batches = () => (adapter.status().detail?.['sync'] as { batches: number }).batches;
      const seen = batches();
      await waitFor(() => batches() >= seen + 2, { timeoutMs: 20_000, what: 'the bridge to sync past the new device' });
      expect((await driver.deliver(await appendApi(env.log, { kind: 'message', content: { body: 'to both devices' } }))).status).toBe('delivered');
      const onLaptop = await laptop.waitFor((m) => m.sender === RELAY && m.content !== undefined && String(m.content['body']).includes('to both devices'));
      expect(onLaptop.senderDevice).toBe('SYNCGATE');
      await peer.waitFor((m) => String(m.content?.['body']).includes('to both devices'));
    } finally {
      laptop.close();
    }
  });

  it('rotates its Megolm session per the room\'s rotation_period_msgs, and the member reads every message', async () => {
    encryptRoom(env, env.roomId, { rotation_period_msgs: 2 });
    const adapter = await start(encConfig());
    await bridgeReady(adapter);
    const driver = new Driver(adapter, env.log, matrixLink(env));
    for (const body of ['r1', 'r2', 'r3', 'r4', 'r5']) expect((await driver.deliver(await appendApi(env.log, { kind: 'message', content: { body } }))).status).toBe('delivered');
    const sessions = env.hs.events(env.roomId).filter((e) => e.sender === RELAY && e.type === 'm.room.encrypted').map((e) => String(e.content['session_id']));
    expect(sessions).toHaveLength(5);
    expect(new Set(sessions).size).toBe(3);
    for (const body of ['r1', 'r2', 'r3', 'r4', 'r5']) await peer.waitFor((m) => m.sender === RELAY && String(m.content?.['body']).includes(body));
  });

  it('a room that turns encrypted while bridged gets nothing in clear after its m.room.encryption event', async () => {
    const clearRoom = env.hs.createRoom(env.alice.userId, { preset: 'public_chat' });
    await env.log.rooms.put({ id: 'clear', links: [{ endpoint: 'matrix', target: clearRoom }] });
    await env.links.refresh();
    const adapter = await start(encConfig());
    await waitFor(() => adapter.status().ready, { timeoutMs: 20_000, what: 'the adapter ready' });
    const link = { endpoint: 'matrix', target: clearRoom };
    const driver = new Driver(adapter, env.log, link);
    expect((await driver.deliver(await appendTo('clear', 'in clear, before'))).status).toBe('delivered');
    // The state change and the next delivery at once: the adapter's /sync has not seen it yet.
    encryptRoom(env, clearRoom);
    expect((await driver.deliver(await appendTo('clear', 'must be encrypted'))).status).toBe('delivered');
    const sent = env.hs.events(clearRoom).filter((e) => e.sender === RELAY && e.type !== 'm.room.member');
    expect(sent.map((e) => e.type)).toEqual(['m.room.message', 'm.room.encrypted']);
    expect(JSON.stringify(sent)).not.toContain('must be encrypted');
  });

  it('never sends in clear into an encrypted room: encrypting fails → retried, nothing sent; no crypto configured → rejected as before', async () => {
    const adapter = await start(encConfig());
    await bridgeReady(adapter);
    env.hs.rateLimitNext(1000, '/keys/query', 200);
    const out = await appendApi(env.log, { kind: 'message', content: { body: 'must not leak' } });
    const result = await new Driver(adapter, env.log, matrixLink(env)).deliver(out, 2);
    expect(result.status).toBe('retry');
    await adapter.stop();
    const plain = await start(encConfig(null));
    await waitFor(() => plain.status().ready, { timeoutMs: 20_000, what: 'the adapter without crypto ready' }).catch((err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify(plain.status())}`);
    });
    const refused = await new Driver(plain, env.log, matrixLink(env)).deliver(out, 1);
    expect(refused.status).toBe('rejected');
    expect(JSON.stringify(env.hs.events(env.roomId).filter((e) => e.sender === RELAY))).not.toContain('must not leak');
    expect(env.hs.events(env.roomId).filter((e) => e.sender === RELAY && (e.type === 'm.room.message' || e.type === 'm.room.encrypted'))).toEqual([]);
  });
});
