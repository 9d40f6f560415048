// The XMPP adapter in 1:1 conversations against a real Prosody and ejabberd: a user's
// message to the bridge account maps to its room and back, with receipts,
// reactions and replies on the right messages, and no echo.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XMPP_SERVERS, startXmppServer, type XmppServer } from '../../harness/xmpp-server.js';
import { startTcpRelay } from '../../harness/tcp-relay.js';
import type { LogEvent } from '../../../src/core/event.js';
import type { XmppAdapter } from '../../../adapters/xmpp/index.js';
import { NS as ANS } from '../../../adapters/xmpp/xml.js';
import type { XmlElement } from '@xmpp/client';
import { ADAPTER, NS, TestUser, allEvents, apiDraft, apiPost, bodyOf, counters, createGateway, deliver, dropped, endUsers, makeAdapter, until, xml, type Gateway } from './helpers.js';

const DM = 'dm-alice';

let server: XmppServer;
let gw: Gateway;
let adapter: XmppAdapter;
let alice: TestUser;
let bridgeJid: string;

async function eventWhere(what: string, match: (e: LogEvent) => boolean): Promise<LogEvent> {
  let found: LogEvent | undefined;
  await until(async () => (found = (await allEvents(gw.log, [DM])).find(match)) !== undefined, what);
  return found as LogEvent;
}

describe.each(XMPP_SERVERS)('on %s', (kind) => {
  beforeAll(async () => {
    server = await startXmppServer(kind);
    await Promise.all([server.createUser('bridge', 'bridge-secret'), server.createUser('alice', 'alice-secret'), server.createUser('bob', 'bob-secret')]);
    bridgeJid = `bridge@${server.domain}`;
    gw = await createGateway({ rooms: [{ id: DM, links: [{ endpoint: ADAPTER, target: `alice@${server.domain}`, options: { type: 'chat' } }] }] });
    adapter = makeAdapter(gw, server);
    await adapter.start();
    alice = await TestUser.login(server, 'alice', 'alice-secret', 'phone');
  });

  afterAll(async () => {
    await adapter?.stop();
    await endUsers();
    await gw?.close();
    await server?.stop();
  });

  describe('XMPP adapter in 1:1', () => {
    it('a user’s message to the bridge account lands in its room once, and is acknowledged with a receipt', async () => {
      expect(adapter.status()).toMatchObject({ connected: true, ready: true });
      const id = await alice.chat(bridgeJid, 'hello bridge', [xml('request', { xmlns: ANS.receipts })]);
      const inbound = await eventWhere('alice’s message', (e) => bodyOf(e) === 'hello bridge');
      expect(inbound).toMatchObject({ kind: 'message', room: DM, sender: { uid: `xmpp:alice@${server.domain}`, native: `alice@${server.domain}`, auth: 'server' } });
      expect(inbound.origin.ids['xmpp.stanzaIdBy']).toBe(bridgeJid);
      expect(inbound.idem).toMatch(new RegExp(`^xmpp:arch:${bridgeJid}:`));
      // XEP-0184: the receipt goes out after the append.
      await alice.waitFor((s) => s.getChild('received', ANS.receipts)?.attrs['id'] === id, 'the receipt');
    });

    it('an HTTP message goes to the user as a chat message, confirmed by the stream management ack, once and without echo', async () => {
      const posted = await apiPost(gw.log, apiDraft(DM, { kind: 'message', content: { body: 'hello alice' } }));
      const result = await deliver(gw, adapter, posted);
      expect(result).toMatchObject({ status: 'delivered', nativeIds: { 'xmpp.originId': `alice@${server.domain}/${bridgeJid}/${posted.eventId}` } });
      const got = await alice.waitFor((s) => s.attrs['id'] === posted.eventId, 'the message at alice');
      expect(got.attrs).toMatchObject({ type: 'chat', from: `${bridgeJid}/syncgate` });
      expect(got.getChildText('body')).toBe('<Carol> hello alice');
      expect(got.getChild('origin-id', NS.sid)?.attrs['id']).toBe(posted.eventId);

      // Alice reacts to it and replies to it by its id (1:1 references use origin-id / id).
      await alice.chat(bridgeJid, undefined, [xml('reactions', { xmlns: ANS.reactions, id: posted.eventId }, xml('reaction', {}, '👋')), xml('store', { xmlns: ANS.hints })]);
      const reaction = await eventWhere('alice’s reaction', (e) => e.kind === 'reaction');
      expect(reaction).toMatchObject({ rel: { reactsTo: posted.eventId }, reaction: { keys: ['👋'] } });
      const quote = '> hello alice\n';
      await alice.chat(bridgeJid, `${quote}hi!`, [xml('reply', { xmlns: ANS.reply, to: bridgeJid, id: posted.eventId }), xml('fallback', { xmlns: ANS.fallback, for: ANS.reply }, xml('body', { start: 0, end: Array.from(quote).length }))]);
      const reply = await eventWhere('alice’s reply', (e) => bodyOf(e) === 'hi!');
      expect(reply).toMatchObject({ rel: { replyTo: posted.eventId } });
      await alice.chat(bridgeJid, undefined, [xml('displayed', { xmlns: ANS.markers, id: posted.eventId })]);
      const marker = await eventWhere('alice’s marker', (e) => e.kind === 'marker');
      expect(marker).toMatchObject({ rel: { upTo: posted.eventId } });
      expect(counters(adapter).echo).toBe(0);
      expect((await allEvents(gw.log, [DM])).filter((e) => bodyOf(e) === 'hello alice')).toHaveLength(1);
    });

    it('edits, replies, reactions and markers over HTTP name alice’s and our messages by their ids', async () => {
      const aliceId = await alice.chat(bridgeJid, 'original from alice');
      const aliceEvent = await eventWhere('alice’s message', (e) => bodyOf(e) === 'original from alice');

      const reply = await apiPost(gw.log, apiDraft(DM, { kind: 'message', content: { body: 'answering' }, rel: { replyTo: aliceEvent.eventId } }));
      expect((await deliver(gw, adapter, reply)).status).toBe('delivered');
      const replied = await alice.waitFor((s) => s.attrs['id'] === reply.eventId, 'the reply');
      expect(replied.getChild('reply', ANS.reply)?.attrs['id']).toBe(aliceId);
      // XEP-0461: `to` names the author of the original.
      expect(replied.getChild('reply', ANS.reply)?.attrs['to']).toBe(`alice@${server.domain}`);

      const edit = await apiPost(gw.log, apiDraft(DM, { kind: 'edit', content: { body: 'answering, edited' }, rel: { replaces: reply.eventId } }));
      expect((await deliver(gw, adapter, edit)).status).toBe('delivered');
      const corrected = await alice.waitFor((s) => s.attrs['id'] === edit.eventId, 'the correction');
      expect(corrected.getChild('replace', ANS.correct)?.attrs['id']).toBe(reply.eventId);

      const reaction = await apiPost(gw.log, apiDraft(DM, { kind: 'reaction', rel: { reactsTo: aliceEvent.eventId }, reaction: { keys: ['✅'] } }));
      expect((await deliver(gw, adapter, reaction)).status).toBe('delivered');
      const reacted = await alice.waitFor((s) => s.attrs['id'] === reaction.eventId, 'the reaction');
      expect(reacted.getChild('reactions', ANS.reactions)?.attrs['id']).toBe(aliceId);

      const marker = await apiPost(gw.log, apiDraft(DM, { kind: 'marker', rel: { upTo: aliceEvent.eventId } }));
      expect((await deliver(gw, adapter, marker)).status).toBe('delivered');
      const displayed = await alice.waitFor((s) => s.attrs['id'] === marker.eventId, 'the marker');
      expect(displayed.getChild('displayed', ANS.markers)?.attrs['id']).toBe(aliceId);
    });

    it('a reaction, marker and reply a client sends as soon as it receives our message (before the stream management ack) land on it', async () => {
      const posted = await apiPost(gw.log, apiDraft(DM, { kind: 'message', content: { body: 'answer me at once' } }));
      // Alice's client answers the moment the message arrives, as some clients send markers and reactions.
      let answering = true;
      const answer = (el: XmlElement) => {
        if (!answering || !el.is('message') || el.attrs['id'] !== posted.eventId) return;
        void alice.chat(bridgeJid, undefined, [xml('reactions', { xmlns: ANS.reactions, id: posted.eventId }, xml('reaction', {}, '⚡')), xml('store', { xmlns: ANS.hints })]);
        void alice.chat(bridgeJid, undefined, [xml('displayed', { xmlns: ANS.markers, id: posted.eventId })]);
        void alice.chat(bridgeJid, 'right away', [xml('reply', { xmlns: ANS.reply, to: bridgeJid, id: posted.eventId })]);
      };
      alice.xmpp.on('stanza', answer);
      try {
        expect((await deliver(gw, adapter, posted)).status).toBe('delivered');
        const reply = await eventWhere('alice’s immediate reply', (e) => bodyOf(e) === 'right away');
        expect(reply).toMatchObject({ rel: { replyTo: posted.eventId } });
        const reaction = await eventWhere('alice’s immediate reaction', (e) => e.kind === 'reaction' && e.reaction.keys.includes('⚡'));
        expect(reaction).toMatchObject({ rel: { reactsTo: posted.eventId } });
        const marker = await eventWhere('alice’s immediate marker', (e) => e.kind === 'marker' && e.rel.upTo === posted.eventId);
        expect(marker.sender.uid).toBe(`xmpp:alice@${server.domain}`);
      } finally {
        answering = false;
      }
    });

    it('with a wrong password start() gives up waiting, reports the error and keeps retrying without crashing', async () => {
      // The server's answers wait in a relay until start() has given up, as on a busy machine where
      // the first authentication failure comes after the start timeout: the test waits for it.
      const relay = await startTcpRelay({ port: server.c2sPort });
      relay.hold('down');
      const wrong = makeAdapter(gw, server, { service: relay.service, password: 'not-the-password', config: { startTimeoutMs: 1500, resource: 'wrong-password' } });
      try {
        await wrong.start();
        expect(wrong.status()).toMatchObject({ connected: false, ready: false });
        relay.release('down');
        await until(() => /not-authorized/.test(String(wrong.status().detail?.['lastError'])) && Number(wrong.status().detail?.['reconnectAttempts']) > 0, 'the authentication failure and a retry', 30_000);
        expect(wrong.status()).toMatchObject({ connected: false, ready: false });
        const posted = await apiPost(gw.log, apiDraft(DM, { kind: 'message', content: { body: 'not while offline' } }));
        expect((await wrong.deliver(posted, { room: DM, link: { endpoint: ADAPTER, target: `alice@${server.domain}`, options: { type: 'chat' } } }, { attempt: 0, references: {} })).status).toBe('retry');
      } finally {
        await wrong.stop();
        await relay.close();
      }
      expect(adapter.status().connected).toBe(true);
    });

    it('ignores someone no room links to, with a logged reason', async () => {
      const bob = await TestUser.login(server, 'bob', 'bob-secret');
      await bob.chat(bridgeJid, 'anyone there?');
      await until(() => (dropped(adapter)['no-room'] ?? 0) >= 1, 'bob’s message dropped');
      expect(gw.logLines.some((l) => l['reason'] === 'no-room' && String(l['detail']).includes('bob@'))).toBe(true); // logged at debug level
      expect((await allEvents(gw.log)).some((e) => bodyOf(e) === 'anyone there?')).toBe(false);
    });
  });
});
