// The bridge account as an OMEMO 0.3 device (issue 26, parts 2–5), against the
// harness's real Prosody (PEP on). The other end is a real OMEMO client that is
// not ours: Debian's python3-omemo + python3-oldmemo on python3-slixmpp
// (test/harness/omemo-peer.py), never our own crypto code on both ends.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LogEvent } from '../../../src/core/event.js';
import { SyncgateError } from '../../../src/core/errors.js';
import { createSealedStore } from '../../../src/runtime/sealed-store.js';
import { stateCatchupStore, type XmppAdapter } from '../../../adapters/xmpp/index.js';
import { OmemoPeer, type PeerMessage } from '../../harness/omemo-peer.js';
import { XMPP_SERVERS, startXmppServer, type XmppServer } from '../../harness/xmpp-server.js';
import { ADAPTER, allEvents, apiDraft, apiPost, bodyOf, counters, createGateway, deliver, makeAdapter, until, type Gateway } from './helpers.js';

const DM = 'dm-alice-omemo';
const GROUP = 'omemo-group';
const DM_BOB = 'dm-bob-clear';
const SECRET = 'omemo-store-secret-for-tests-0123456789';
const FALLBACK_WORDS = 'OMEMO encrypted message';
const NOTICE = '[An encrypted message could not be read]';
const PEER_DEADLINE_MS = 30_000;

let server: XmppServer;
let gw: Gateway;
let adapter: XmppAdapter | undefined;
let phone: OmemoPeer;
let laptop: OmemoPeer | undefined;
let aliceJid: string;
let bridgeJid: string;

function omemoAdapter(config: Record<string, unknown> = {}, secret = SECRET): XmppAdapter {
  return makeAdapter(gw, server, {
    state: gw.log.state,
    sealed: (ns, s) => createSealedStore(gw.log.state, ns, s),
    // Archive positions in the log's state, as the runtime keeps them: a restart catches up from there.
    catchup: stateCatchupStore(gw.log.state, `xmpp-catchup:${ADAPTER}`),
    config: { omemoSecret: secret, ...config },
  });
}

function omemoStatus(a: XmppAdapter): Record<string, unknown> {
  return a.status().detail?.['omemo'] as Record<string, unknown>;
}

async function dm(): Promise<LogEvent[]> {
  return allEvents(gw.log, [DM]);
}

/** The bridge's device id as the peer sees it on the bridge account's device list. */
async function bridgeDevicesSeenBy(peer: OmemoPeer): Promise<number[]> {
  return (await peer.devices(bridgeJid)).ids;
}

describe.each(XMPP_SERVERS)('the bridge account as an OMEMO device (%s + python-omemo)', (kind) => {
  beforeAll(async () => {
    server = await startXmppServer(kind);
    await Promise.all([server.createUser('bridge', 'bridge-secret'), server.createUser('alice', 'alice-secret'), server.createUser('bob', 'bob-secret')]);
    aliceJid = `alice@${server.domain}`;
    bridgeJid = `bridge@${server.domain}`;
    gw = await createGateway({
      rooms: [
        { id: DM, links: [{ endpoint: ADAPTER, target: aliceJid, options: { type: 'chat' } }] },
        { id: DM_BOB, links: [{ endpoint: ADAPTER, target: `bob@${server.domain}`, options: { type: 'chat' } }] },
      ],
    });
    phone = await OmemoPeer.start(server, { localpart: 'alice', password: 'alice-secret', resource: 'phone' });
  }, 120_000);

  afterAll(async () => {
    await adapter?.stop();
    await laptop?.stop();
    await phone?.stop();
    await gw?.close();
    await server?.stop();
  });

  it('publishes its device (device list and bundle, open access) and decrypts an OMEMO 1:1 message into its real text, never the fallback', async () => {
    adapter = omemoAdapter();
    await adapter.start();
    const status = omemoStatus(adapter);
    expect(status).toMatchObject({ state: 'published', mode: 'optional', trust: 'blind' });
    expect(status['fingerprint']).toMatch(/^([0-9a-f]{8} ){7}[0-9a-f]{8}$/);
    // Another account (alice) reads the bridge's device list and bundle: the access model is open.
    await until(async () => (await bridgeDevicesSeenBy(phone)).includes(status['deviceId'] as number), 'the bridge device on its device list, seen by alice', PEER_DEADLINE_MS);
    const seen = await phone.devices(bridgeJid);
    // The fingerprint the status shows is the one alice's client sees for the bridge's device.
    expect(seen.keys[String(status['deviceId'])]).toBe(String(status['fingerprint']).replaceAll(' ', ''));

    await phone.sendEncrypted(bridgeJid, 'hello from an OMEMO phone 🔐');
    await until(async () => (await dm()).length === 1, 'the decrypted message in the log', PEER_DEADLINE_MS);
    const [event] = await dm();
    expect(event).toMatchObject({ kind: 'message', sender: { uid: `xmpp:${aliceJid}` }, content: { body: 'hello from an OMEMO phone 🔐' } });
    expect(JSON.stringify(event)).not.toContain(FALLBACK_WORDS);
    expect(JSON.stringify(event)).not.toContain(NOTICE);
    expect(event && 'content' in event ? event.content.undecryptable : 'no content').toBeUndefined();
    expect(counters(adapter).encryptedNotices).toBe(0);
    expect(omemoStatus(adapter)).toMatchObject({ decrypted: 1 });
    // The phone started the session with one of the bridge's one-time pre-keys: replaced, and the bundle published again.
    await until(() => (omemoStatus(adapter as XmppAdapter)['preKeysReplaced'] as number) >= 1, 'the used pre-key replaced');
  });

  it('sends an HTTP message to the contact encrypted: both of its devices decrypt it, nothing goes in clear', async () => {
    const a = adapter as XmppAdapter;
    laptop = await OmemoPeer.start(server, { localpart: 'alice', password: 'alice-secret', resource: 'laptop' });
    const posted = await apiPost(gw.log, apiDraft(DM, { kind: 'message', content: { body: 'secret plans' } }));
    const result = await deliver(gw, a, posted);
    expect(result.status).toBe('delivered');
    for (const peer of [phone, laptop]) {
      const got = (await peer.waitFor((e) => e.event === 'message' && e['id'] === posted.eventId, `the message on alice's ${peer === phone ? 'phone' : 'laptop'}`, PEER_DEADLINE_MS)) as PeerMessage;
      expect(got).toMatchObject({ encrypted: true, body: '<Carol> secret plans' });
      expect(String(got['fallback'])).not.toContain('secret plans');
    }
    expect(omemoStatus(a)).toMatchObject({ encrypted: 1 });
    expect(counters(a).plaintextRefused).toBe(0);

    // A correction from the HTTP side is encrypted too and names the message it corrects.
    const edit = await apiPost(gw.log, apiDraft(DM, { kind: 'edit', rel: { replaces: posted.eventId }, content: { body: 'secret plans, revised' } }));
    expect((await deliver(gw, a, edit)).status).toBe('delivered');
    const corrected = (await phone.waitFor((e) => e.event === 'message' && e['id'] === edit.eventId, 'the correction on the phone', PEER_DEADLINE_MS)) as PeerMessage;
    expect(corrected).toMatchObject({ encrypted: true, body: '<Carol> secret plans, revised', replace: posted.eventId });
  });

  it('a correction sent encrypted by the contact edits the original message', async () => {
    const id = await phone.sendEncrypted(bridgeJid, 'meet at 5');
    await until(async () => (await dm()).some((e) => bodyOf(e) === 'meet at 5'), 'the message to correct', PEER_DEADLINE_MS);
    await phone.sendEncrypted(bridgeJid, 'meet at 6', { replace: id });
    await until(async () => (await dm()).some((e) => e.kind === 'edit' && bodyOf(e) === 'meet at 6'), 'the correction in the log', PEER_DEADLINE_MS);
    const events = await dm();
    const original = events.find((e) => bodyOf(e) === 'meet at 5');
    const edit = events.find((e) => e.kind === 'edit' && e.sender.proto === 'xmpp');
    expect(edit).toMatchObject({ kind: 'edit', rel: { replaces: original?.eventId }, content: { body: 'meet at 6' } });
  });

  it("follows the account's own other OMEMO devices: its messages (carbons) are decrypted, and what the bridge sends is encrypted for them too", async () => {
    const a = adapter as XmppAdapter;
    const ops = await OmemoPeer.start(server, { localpart: 'bridge', password: 'bridge-secret', resource: 'ops' });
    try {
      // The new device is pushed to the bridge (PEP +notify from its caps), not found by polling: the device list TTL is a minute.
      const posted = await apiPost(gw.log, apiDraft(DM, { kind: 'message', content: { body: 'to alice, readable by ops too' } }));
      await until(async () => {
        const r = await deliver(gw, a, posted);
        return r.status === 'delivered';
      }, 'the delivery');
      const got = (await phone.waitFor((e) => e.event === 'message' && e['id'] === posted.eventId, 'the message on the phone', PEER_DEADLINE_MS)) as PeerMessage;
      expect(got['rids']).toContain(ops.deviceId);

      const already = (await dm()).length;
      await ops.sendEncrypted(aliceJid, 'typed on the ops console');
      await until(async () => (await dm()).some((e) => bodyOf(e) === 'typed on the ops console'), "the ops device's message, from its carbon", PEER_DEADLINE_MS);
      const late = (await dm()).slice(already);
      expect(late.find((e) => bodyOf(e) === 'typed on the ops console')).toMatchObject({ kind: 'message', sender: { uid: `xmpp:${bridgeJid}` } });
      expect(JSON.stringify(late)).not.toContain(NOTICE);
    } finally {
      await ops.stop();
    }
  });

  it('after a crash, messages sent while the gateway was down are decrypted from the archive: all, once, in order, with the same device', async () => {
    const before = omemoStatus(adapter as XmppAdapter);
    (adapter as XmppAdapter).abort();
    const already = (await dm()).length;
    const texts = ['one', 'two', 'three', 'four', 'five'].map((t) => `while you were away: ${t}`);
    for (const text of texts) await phone.sendEncrypted(bridgeJid, text);
    adapter = omemoAdapter();
    await adapter.start();
    await until(async () => (await dm()).length >= already + texts.length, 'the five messages sent while the gateway was down', PEER_DEADLINE_MS);
    const after = omemoStatus(adapter);
    expect(after['deviceId']).toBe(before['deviceId']);
    expect(after['fingerprint']).toBe(before['fingerprint']);
    expect(after['lostDeviceId']).toBeUndefined();
    // Once each and in order, and nothing undecryptable among them.
    await until(async () => counters(adapter as XmppAdapter).received >= texts.length, 'the archive read');
    const late = (await dm()).slice(already);
    expect(late.map(bodyOf)).toEqual(texts);
    expect(JSON.stringify(late)).not.toContain(NOTICE);
    // The same device id is still the one on the bridge's device list.
    expect(await bridgeDevicesSeenBy(phone)).toContain(after['deviceId']);
  });

  it('refuses to start with another secret (SG_ERR_STATE_SEALED_KEY) rather than becoming a new device', async () => {
    const wrong = omemoAdapter({}, 'another-secret-entirely-0123456789');
    const err = await wrong.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SyncgateError);
    expect((err as SyncgateError).code).toBe('SG_ERR_STATE_SEALED_KEY');
    expect(wrong.status().detail?.['omemo']).toMatchObject({ state: 'failed' });
  });

  it('a lost store is detected: a new device, an error that says so, the old device removed from the device list when configured', async () => {
    const before = omemoStatus(adapter as XmppAdapter);
    await adapter?.stop();
    for (const [key] of await gw.log.state.entries(`xmpp-omemo:${ADAPTER}`)) await gw.log.state.delete(`xmpp-omemo:${ADAPTER}`, key);
    const logged = gw.logLines.length;
    adapter = omemoAdapter({ omemoRemoveLostDevice: true });
    await adapter.start();
    const after = omemoStatus(adapter);
    expect(after['deviceId']).not.toBe(before['deviceId']);
    expect(after['fingerprint']).not.toBe(before['fingerprint']);
    expect(after['lostDeviceId']).toBe(before['deviceId']);
    expect(gw.logLines.slice(logged).find((l) => l['reason'] === 'omemo-store-lost')).toMatchObject({ level: 50, lostDeviceId: before['deviceId'] });
    const seen = await bridgeDevicesSeenBy(phone);
    expect(seen).toContain(after['deviceId']);
    expect(seen).not.toContain(before['deviceId']);
    // The contact's next message builds a session with the new device.
    await phone.sendEncrypted(bridgeJid, 'hello, new device');
    await until(async () => (await dm()).some((e) => bodyOf(e) === 'hello, new device'), 'a message to the new device', PEER_DEADLINE_MS);
  });

  it('rotates the signed pre-key when it is due: a new contact device builds its session on the new one, existing sessions go on', async () => {
    const before = omemoStatus(adapter as XmppAdapter);
    await adapter?.stop();
    adapter = omemoAdapter({ omemoSignedPreKeyRotationMs: 0 });
    await adapter.start();
    const after = omemoStatus(adapter);
    expect(after['deviceId']).toBe(before['deviceId']);
    expect(after['signedPreKeyId']).toBe((before['signedPreKeyId'] as number) + 1);
    const tablet = await OmemoPeer.start(server, { localpart: 'alice', password: 'alice-secret', resource: 'tablet' });
    try {
      await tablet.sendEncrypted(bridgeJid, 'from a new tablet');
      await phone.sendEncrypted(bridgeJid, 'from the phone, old session');
      await until(async () => {
        const bodies = (await dm()).map(bodyOf);
        return bodies.includes('from a new tablet') && bodies.includes('from the phone, old session');
      }, 'both messages decrypted', PEER_DEADLINE_MS);
    } finally {
      await tablet.stop();
    }
  });

  it('manual trust: nothing from or to a device whose fingerprint is not listed; a listed one works both ways, the others get nothing', async () => {
    await adapter?.stop();
    adapter = omemoAdapter({ omemoTrust: 'manual' });
    await adapter.start();
    expect(omemoStatus(adapter)).toMatchObject({ state: 'published', trust: 'manual' });
    const already = (await dm()).length;
    const noticesFrom = phone.events.length;
    await phone.sendEncrypted(bridgeJid, 'from a device you did not verify');
    await until(async () => (await dm()).length === already + 1, 'the message from the unverified device in the log', PEER_DEADLINE_MS);
    const [unverified] = (await dm()).slice(already);
    expect(unverified).toMatchObject({ content: { body: NOTICE, undecryptable: { reason: 'omemo' } } });
    expect(omemoStatus(adapter)['untrusted']).toBeGreaterThanOrEqual(1);
    // Told why, with the fingerprint to encrypt for (not "the bridge reads no OMEMO").
    const fingerprint = String(omemoStatus(adapter)['fingerprint']);
    await phone.waitFor((e, i) => i >= noticesFrom && e.event === 'message' && e['encrypted'] === false && String(e['body']).includes(fingerprint), 'the OMEMO notice at alice', PEER_DEADLINE_MS);
    const refused = await deliver(gw, adapter, await apiPost(gw.log, apiDraft(DM, { kind: 'message', content: { body: 'for verified devices only' } })));
    expect(refused.status).toBe('rejected');
    expect(refused.status === 'rejected' && refused.reason).toMatch(/no OMEMO device the bridge can encrypt to/);

    // The operator verified the phone's fingerprint (as its client shows it, in groups, upper case).
    await adapter.stop();
    const shown = (phone.fingerprint.toUpperCase().match(/.{8}/g) ?? []).join(' ');
    adapter = omemoAdapter({ omemoTrust: 'manual', omemoTrusted: [{ jid: aliceJid, fingerprint: shown }] });
    await adapter.start();
    await phone.sendEncrypted(bridgeJid, 'from the verified phone');
    await until(async () => (await dm()).some((e) => bodyOf(e) === 'from the verified phone'), 'the verified message in the log', PEER_DEADLINE_MS);
    const posted = await apiPost(gw.log, apiDraft(DM, { kind: 'message', content: { body: 'for the phone only' } }));
    expect((await deliver(gw, adapter, posted)).status).toBe('delivered');
    const got = (await phone.waitFor((e) => e.event === 'message' && e['id'] === posted.eventId, 'the message on the verified phone', PEER_DEADLINE_MS)) as PeerMessage;
    expect(got).toMatchObject({ encrypted: true, body: '<Carol> for the phone only' });
    // The laptop (not verified) got the stanza without a key for it: it cannot read it.
    const onLaptop = await (laptop as OmemoPeer).waitFor((e) => e['id'] === posted.eventId, 'the message at the laptop', PEER_DEADLINE_MS);
    expect(onLaptop.event).toBe('undecryptable');
  });

  it('omemo: required: a contact without OMEMO gets nothing in clear (a dead letter); a contact with OMEMO gets it encrypted', async () => {
    await adapter?.stop();
    adapter = omemoAdapter({ omemo: 'required' });
    await adapter.start();
    const toBob = await deliver(gw, adapter, await apiPost(gw.log, apiDraft(DM_BOB, { kind: 'message', content: { body: 'bob has no OMEMO' } })));
    expect(toBob.status).toBe('rejected');
    expect(toBob.status === 'rejected' && toBob.reason).toMatch(/bob@.* has no OMEMO device the bridge can encrypt to/);
    const posted = await apiPost(gw.log, apiDraft(DM, { kind: 'message', content: { body: 'required and encrypted' } }));
    expect((await deliver(gw, adapter, posted)).status).toBe('delivered');
    const got = (await phone.waitFor((e) => e.event === 'message' && e['id'] === posted.eventId, 'the required message at alice', PEER_DEADLINE_MS)) as PeerMessage;
    expect(got).toMatchObject({ encrypted: true, body: '<Carol> required and encrypted' });
  });

  it('with omemo: off, the encrypted message is undecryptable (not its fallback) and the sender is told once', async () => {
    await adapter?.stop();
    adapter = omemoAdapter({ omemo: 'off' });
    await adapter.start();
    expect(omemoStatus(adapter)).toMatchObject({ state: 'off' });
    const already = (await dm()).length;
    const noticesFrom = phone.events.length;
    await phone.sendEncrypted(bridgeJid, 'you cannot read this');
    await phone.sendEncrypted(bridgeJid, 'nor this');
    await until(async () => (await dm()).length === already + 2, 'the two encrypted messages in the log', PEER_DEADLINE_MS);
    const late = (await dm()).slice(already);
    for (const e of late) expect(e).toMatchObject({ kind: 'message', content: { body: NOTICE, undecryptable: { reason: 'omemo' } } });
    expect(JSON.stringify(late)).not.toContain(FALLBACK_WORDS);
    expect(JSON.stringify(late)).not.toContain('cannot read this');
    const isNotice = (e: { event: string; [k: string]: unknown }): boolean => e.event === 'message' && e['encrypted'] === false && String(e['body']).includes('cannot read end-to-end encrypted');
    await phone.waitFor((e, i) => i >= noticesFrom && isNotice(e), 'the notice at alice', PEER_DEADLINE_MS);
    expect(phone.events.slice(noticesFrom).filter(isNotice)).toHaveLength(1);
    expect(counters(adapter).encryptedNotices).toBe(1);
  });

  it('a members-only, non-anonymous MUC both ways: the occupant\'s encrypted message is decrypted, an HTTP message reaches it encrypted', async () => {
    await adapter?.stop();
    adapter = omemoAdapter();
    await adapter.start();
    const room = `omemo-room-${Date.now().toString(36)}@${server.mucDomain}`;
    await phone.createRoom(room, 'Alice', [bridgeJid]);
    await gw.log.rooms.put({ id: GROUP, links: [{ endpoint: ADAPTER, target: room }] });
    await until(() => (adapter?.status().detail?.['rooms'] as Record<string, { ready?: boolean }> | undefined)?.[room]?.ready === true, 'the bridge in the room', PEER_DEADLINE_MS);
    await until(async () => (await phone.occupants(room)).includes(bridgeJid), 'alice seeing the bridge in the room', PEER_DEADLINE_MS);

    await phone.sendEncrypted(room, 'encrypted to the whole room', { type: 'groupchat' });
    await until(async () => (await allEvents(gw.log, [GROUP])).some((e) => bodyOf(e) === 'encrypted to the whole room'), 'the decrypted MUC message in the log', PEER_DEADLINE_MS);
    const [event] = await allEvents(gw.log, [GROUP]);
    expect(event).toMatchObject({ kind: 'message', sender: { uid: expect.stringContaining(room) }, content: { body: 'encrypted to the whole room' } });
    expect(JSON.stringify(event)).not.toContain(NOTICE);

    const posted = await apiPost(gw.log, apiDraft(GROUP, { kind: 'message', content: { body: 'room secret' } }));
    expect((await deliver(gw, adapter, posted)).status).toBe('delivered');
    const got = (await phone.waitFor((e) => e.event === 'message' && e['type'] === 'groupchat' && e['body'] === '<Carol> room secret', 'the encrypted MUC message at alice', PEER_DEADLINE_MS)) as PeerMessage;
    expect(got.encrypted).toBe(true);
    expect(phone.events.some((e) => e['type'] === 'groupchat' && e.event === 'message' && e['encrypted'] === false && String(e['body']).includes('room secret'))).toBe(false);
  });
});
