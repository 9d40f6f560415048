// Encrypted XMPP messages against a real Prosody and ejabberd (issue 26, part 1): an OMEMO
// message sent by an ordinary client (@xmpp/client, not our adapter) in 1:1
// and in a MUC becomes the undecryptable notice in the log, never its
// fallback text; the sender is told once; and nothing goes back to that
// contact or room in clear unless the operator allows it, also after a restart.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { XmlElement } from '@xmpp/client';
import { XMPP_SERVERS, startXmppServer, type XmppServer } from '../../harness/xmpp-server.js';
import type { LogEvent } from '../../../src/core/event.js';
import { DEFAULT_ENCRYPTED_NOTICE } from '../../../adapters/xmpp/config.js';
import type { XmppAdapter } from '../../../adapters/xmpp/index.js';
import { ADAPTER, TestUser, allEvents, apiDraft, apiPost, bodyOf, counters, createGateway, deliver, endUsers, makeAdapter, until, xml, type Gateway } from './helpers.js';

const DM = 'dm-alice';
const GROUP = 'encrypted-group';
const NOTICE = '[An encrypted message could not be read]';
const FALLBACK = 'I sent you an OMEMO encrypted message but your client doesn’t seem to support that. Find more information on https://conversations.im/omemo';

let server: XmppServer;
let gw: Gateway;
let adapter: XmppAdapter;
let alice: TestUser;
let bob: TestUser;
let bridgeJid: string;
let room: string;

/** The stanza Conversations sends for an OMEMO 0.3 message (XEP-0384 0.3 + XEP-0380 + fallback + store hint). */
function omemo(): XmlElement[] {
  return [
    xml(
      'encrypted',
      { xmlns: 'eu.siacs.conversations.axolotl' },
      xml('header', { sid: '1234567' }, xml('key', { rid: '7654321', prekey: 'true' }, 'MwohBQ8Bvn3ZbXyS5R1F0bC3iS0n2aA='), xml('key', { rid: '2345678' }, 'MwohBQ8Bvn3ZbXyS5R1F0bC3iS0n2aB='), xml('iv', {}, 'o9MYqw3C2VrBRvUX')),
      xml('payload', {}, 'iLX0aH6TKd5pBvdn5Ko='),
    ),
    xml('encryption', { xmlns: 'urn:xmpp:eme:0', namespace: 'eu.siacs.conversations.axolotl', name: 'OMEMO' }),
    xml('store', { xmlns: 'urn:xmpp:hints' }),
  ];
}

async function eventsIn(roomId: string): Promise<LogEvent[]> {
  return allEvents(gw.log, [roomId]);
}

const isNoticeFromBridge = (from: string) => (s: XmlElement) => s.is('message') && s.attrs['from'] === from && s.getChildText('body') === DEFAULT_ENCRYPTED_NOTICE;

describe.each(XMPP_SERVERS)('on %s', (kind) => {
  beforeAll(async () => {
    server = await startXmppServer(kind);
    await Promise.all([server.createUser('bridge', 'bridge-secret'), server.createUser('alice', 'alice-secret'), server.createUser('bob', 'bob-secret')]);
    bridgeJid = `bridge@${server.domain}`;
    room = `omemo-${randomUUID().slice(0, 8)}@${server.mucDomain}`;
    alice = await TestUser.login(server, 'alice', 'alice-secret', 'phone');
    bob = await TestUser.login(server, 'bob', 'bob-secret');
    await bob.join(room, 'Bob');
    await alice.join(room, 'Alice');
    gw = await createGateway({
      rooms: [
        { id: DM, links: [{ endpoint: ADAPTER, target: `alice@${server.domain}`, options: { type: 'chat' } }] },
        { id: GROUP, links: [{ endpoint: ADAPTER, target: room }] },
      ],
    });
    // The log's state store, as the runtime passes it: what the adapter remembers survives a restart.
    adapter = makeAdapter(gw, server, { state: gw.log.state });
    await adapter.start();
  });

  afterAll(async () => {
    await adapter?.stop();
    await endUsers();
    await gw?.close();
    await server?.stop();
  });

  describe('encrypted XMPP messages', () => {
    it('an OMEMO 1:1 message is logged as undecryptable, never as its fallback; the sender is told once; nothing goes back in clear', async () => {
      expect(adapter.status()).toMatchObject({ connected: true, ready: true });
      await alice.chat(bridgeJid, FALLBACK, omemo());
      await until(async () => (await eventsIn(DM)).length === 1, 'the encrypted message in the log');
      const [event] = await eventsIn(DM);
      expect(event).toMatchObject({ kind: 'message', sender: { uid: `xmpp:alice@${server.domain}` }, content: { body: NOTICE, undecryptable: { reason: 'omemo', scheme: 'eu.siacs.conversations.axolotl' } } });
      expect(JSON.stringify(event)).not.toContain('OMEMO encrypted message');

      // One notice, and not a second one for the next encrypted message.
      await alice.waitFor(isNoticeFromBridge(`${bridgeJid}/syncgate`), 'the notice at alice');
      await alice.chat(bridgeJid, FALLBACK, omemo());
      await until(async () => (await eventsIn(DM)).length === 2, 'the second encrypted message in the log');
      // A clear message after it, which alice receives after any notice the second one could have caused.
      await alice.chat(bridgeJid, 'and one in clear');
      await until(async () => (await eventsIn(DM)).some((e) => bodyOf(e) === 'and one in clear'), 'the clear message in the log');
      expect(alice.count(isNoticeFromBridge(`${bridgeJid}/syncgate`))).toBe(1);
      expect(counters(adapter).encryptedNotices).toBe(1);
      expect(adapter.status().detail?.['encrypted']).toMatchObject({ omemo: 2 });
      // The notice is not bridged (our own message, seen again in the archive or otherwise).
      expect((await eventsIn(DM)).filter((e) => bodyOf(e) === DEFAULT_ENCRYPTED_NOTICE)).toHaveLength(0);

      // An HTTP message to alice is refused for good (a dead letter with the reason), and nothing reaches her.
      const posted = await apiPost(gw.log, apiDraft(DM, { kind: 'message', content: { body: 'secret plans' } }));
      const result = await deliver(gw, adapter, posted);
      expect(result.status).toBe('rejected');
      expect(result.status === 'rejected' && result.reason).toMatch(/alice@.*encrypted.*allowPlaintextAfterEncrypted/);
      expect(counters(adapter).plaintextRefused).toBe(1);

      // Still so after a restart: it is remembered in the log's state.
      await adapter.stop();
      adapter = makeAdapter(gw, server, { state: gw.log.state });
      await adapter.start();
      expect(await deliver(gw, adapter, posted)).toMatchObject({ status: 'rejected' });
      expect(alice.find((s) => s.attrs['id'] === posted.eventId)).toBeUndefined();

      // Unless the operator allows plaintext.
      await adapter.stop();
      adapter = makeAdapter(gw, server, { state: gw.log.state, config: { allowPlaintextAfterEncrypted: true } });
      await adapter.start();
      expect(await deliver(gw, adapter, posted)).toMatchObject({ status: 'delivered' });
      const got = await alice.waitFor((s) => s.attrs['id'] === posted.eventId, 'the allowed message at alice');
      expect(got.getChildText('body')).toBe('<Carol> secret plans');
    });

    it('an OMEMO message in a MUC is logged as undecryptable; the room is told once; nothing goes into the room in clear', async () => {
      await adapter.stop();
      adapter = makeAdapter(gw, server, { state: gw.log.state });
      await adapter.start();
      expect(adapter.status()).toMatchObject({ ready: true });
      const bridgeInRoom = `${room}/syncgate`;

      await alice.say(room, FALLBACK, omemo());
      await until(async () => (await eventsIn(GROUP)).length === 1, 'the encrypted groupchat message in the log');
      const [event] = await eventsIn(GROUP);
      expect(event).toMatchObject({ kind: 'message', sender: { display: 'Alice' }, content: { body: NOTICE, undecryptable: { reason: 'omemo' } } });
      expect(JSON.stringify(event)).not.toContain('OMEMO encrypted message');

      // The notice goes to the room (everyone there who encrypts learns it at once), once.
      await alice.waitFor(isNoticeFromBridge(bridgeInRoom), 'the notice in the room');
      await bob.waitFor(isNoticeFromBridge(bridgeInRoom), 'the notice at bob');
      await alice.say(room, FALLBACK, omemo());
      await until(async () => (await eventsIn(GROUP)).length === 2, 'the second encrypted groupchat message in the log');
      await alice.say(room, 'clear again');
      await until(async () => (await eventsIn(GROUP)).some((e) => bodyOf(e) === 'clear again'), 'the clear groupchat message in the log');
      expect(alice.count(isNoticeFromBridge(bridgeInRoom))).toBe(1);
      // Its reflection is not bridged.
      expect((await eventsIn(GROUP)).filter((e) => bodyOf(e) === DEFAULT_ENCRYPTED_NOTICE)).toHaveLength(0);

      const posted = await apiPost(gw.log, apiDraft(GROUP, { kind: 'message', content: { body: 'for the room' } }));
      const result = await deliver(gw, adapter, posted);
      expect(result.status).toBe('rejected');
      expect(result.status === 'rejected' && result.reason).toContain(room);
      expect(bob.find((s) => s.attrs['id'] === posted.eventId)).toBeUndefined();
    });
  });
});
