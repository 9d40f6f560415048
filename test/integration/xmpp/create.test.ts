// MUCs the gateway creates, against a real Prosody and ejabberd: linking a room that does
// not exist yet makes the bridge its creator (status 201); the room must be
// unlocked at once (an instant room, or the link's configuration), or
// everyone else gets item-not-found until the server's lock runs out.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { XMPP_SERVERS, startXmppServer, type XmppServer } from '../../harness/xmpp-server.js';
import type { XmppAdapter } from '../../../adapters/xmpp/index.js';
import { ADAPTER, NS, TestUser, allEvents, bodyOf, createGateway, endUsers, makeAdapter, until, xml, type Gateway } from './helpers.js';

let server: XmppServer;
let gw: Gateway;
let adapter: XmppAdapter;
let alice: TestUser;
const rooms = { instant: '', configured: '', members: '' };

/** Alice's join: her self-presence, or the error the room answers with. */
async function tryJoin(room: string): Promise<{ ok: true } | { ok: false; condition: string | undefined }> {
  const from = alice.stanzas.length;
  await alice.xmpp.send(xml('presence', { to: `${room}/Alice` }, xml('x', { xmlns: NS.muc }, xml('history', { maxstanzas: '0' }))));
  const answer = await alice.waitFor((s) => s.is('presence') && s.attrs['from'] === `${room}/Alice`, `the answer to alice’s join of ${room}`, undefined, from);
  if (answer.attrs['type'] !== 'error') return { ok: true };
  return { ok: false, condition: answer.getChild('error')?.getChildElements()[0]?.name };
}

describe.each(XMPP_SERVERS)('on %s', (kind) => {
  beforeAll(async () => {
    // Prosody's default: a new room stays locked until its creator configures it.
    server = await startXmppServer(kind, { roomLocking: true, mucArchiveByDefault: false });
    await Promise.all([server.createUser('bridge', 'bridge-secret'), server.createUser('alice', 'alice-secret')]);
    for (const key of Object.keys(rooms) as Array<keyof typeof rooms>) rooms[key] = `${key}-${randomUUID().slice(0, 8)}@${server.mucDomain}`;
    gw = await createGateway({
      rooms: [
        { id: 'instant', links: [{ endpoint: ADAPTER, target: rooms.instant }] },
        { id: 'configured', links: [{ endpoint: ADAPTER, target: rooms.configured, options: { persistent: false, roomName: 'Ops room' } }] },
        { id: 'members', links: [{ endpoint: ADAPTER, target: rooms.members, options: { membersOnly: true } }] },
      ],
    });
    adapter = makeAdapter(gw, server);
    await adapter.start();
    alice = await TestUser.login(server, 'alice', 'alice-secret');
  });

  afterAll(async () => {
    await adapter?.stop();
    await endUsers();
    await gw?.close();
    await server?.stop();
  });

  describe('XMPP rooms the gateway creates', () => {
    it('a linked room that did not exist is unlocked at once: others can join and talk', async () => {
      expect(adapter.status().ready).toBe(true);
      expect(await tryJoin(rooms.instant)).toEqual({ ok: true });
      await alice.say(rooms.instant, 'first words');
      await until(async () => (await allEvents(gw.log, ['instant'])).some((e) => bodyOf(e) === 'first words'), 'alice’s message in the log');
    });

    it('link options configure a room the gateway creates: temporary and named, or members-only', async () => {
      const info = await alice.xmpp.iqCaller.request(xml('iq', { type: 'get', to: rooms.configured }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })), 10_000);
      const query = info.getChild('query', 'http://jabber.org/protocol/disco#info');
      const features = (query?.getChildren('feature') ?? []).map((f) => f.attrs['var']);
      // The harness's rooms are persistent by default: this one was configured otherwise.
      expect(features).toContain('muc_temporary');
      expect(query?.getChild('identity')?.attrs['name']).toBe('Ops room');
      expect(await tryJoin(rooms.configured)).toEqual({ ok: true });

      // Alice is no member: the room refuses her, instead of being locked (item-not-found).
      expect(await tryJoin(rooms.members)).toEqual({ ok: false, condition: 'registration-required' });
    });

    it('rooms the gateway creates are archived, through the field the server’s own form offers for it (the server archives none by default here)', async () => {
      for (const room of Object.values(rooms)) {
        const info = await alice.xmpp.iqCaller.request(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })), 10_000);
        const features = (info.getChild('query', 'http://jabber.org/protocol/disco#info')?.getChildren('feature') ?? []).map((f) => f.attrs['var']);
        expect(features, room).toContain('urn:xmpp:mam:2');
      }
      const configured = gw.logLines.filter((l) => l['msg'] === 'created the MUC with the link’s configuration').map((l) => l['configured'] as Record<string, string>);
      expect(configured).toHaveLength(3);
      // Prosody names the field muc#roomconfig_enablearchiving, ejabberd `mam` (and refuses a form with the other's).
      const field = server.kind === 'ejabberd' ? 'mam' : 'muc#roomconfig_enablearchiving';
      for (const c of configured) expect(c[field]).toBe('1');
      expect(adapter.status().ready).toBe(true);
    });
  });
});
