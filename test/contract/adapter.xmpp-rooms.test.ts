// The adapter contract on the rooms component (xmpp-rooms) against a real
// Prosody with `Component "rooms.localhost"`: the adapter reaches Prosody's
// component listener through the cut proxy; the native peer is an
// @xmpp/client occupant of the room the component hosts for the gateway
// room, let in by the access rules and the grants.
//
// Where the component differs from the other adapters (the hooks, not the
// assertions, say how):
// - the room lives in the component, so the occupant can only join once the
//   adapter is online, and joins again after every start (a new session
//   knows nobody): afterStart;
// - the component IS the room: nothing it sends is reflected back to it. The
//   one way a stanza it delivered comes back over XEP-0114 is a bounce (a
//   type="error" message carrying the original payload, as a client or its
//   server returns an undeliverable message); echo sends that, and the
//   adapter must drop it without storing anything or dropping the occupant;
// - the same native message seen twice is a client's resend with the same
//   origin-id (after a reconnect, XEP-0359): sendTwice.
import { randomUUID } from 'node:crypto';
import { expect } from 'vitest';
import { startProsody, type ProsodyServer } from '../harness/prosody.js';
import { NS, TestUser, endUsers, xml } from '../integration/xmpp/helpers.js';
import { adapterContract, until } from './adapter.contract.js';
import type { XmlElement } from '@xmpp/client';

const SECRET = `contract-${randomUUID()}`;
let server: ProsodyServer;
let seq = 0;
/** the gateway rooms of this file's worlds: what Alice's gateway user is granted */
const granted = new Set<string>();

function component(): NonNullable<ProsodyServer['component']> {
  if (!server.component) throw new Error('Prosody was started without the component');
  return server.component;
}

function stanzaIdOf(s: XmlElement, by: string): string | undefined {
  return s.getChildren('stanza-id', NS.sid).find((x) => x.attrs['by'] === by)?.attrs['id'];
}

adapterContract({
  type: 'xmpp-rooms',
  async start() {
    server = await startProsody({ component: { secret: SECRET } });
    await server.createUser('alice', 'alice-secret');
  },
  stop: async () => server?.stop(),
  port: () => component().port,
  grants: async (user) => (user === 'alice' ? [...granted] : []),
  async world(room, proxy) {
    seq++;
    granted.add(room);
    const roomJid = `${room}@${component().domain}`;
    const self = `${roomJid}/alice`;
    const alice = await TestUser.login(server, 'alice', 'alice-secret', `contract-${seq}`);
    // live messages from the room that are not Alice's own reflections (history carries a delay)
    const fromGateway = () =>
      alice.stanzas.filter(
        (s) => s.is('message') && s.attrs['type'] === 'groupchat' && s.attrs['from']?.startsWith(`${roomJid}/`) === true && s.attrs['from'] !== self && s.getChild('body') !== undefined && s.getChild('delay', 'urn:xmpp:delay') === undefined,
      );
    return {
      config: {
        service: proxy.url('xmpp'),
        domain: component().domain,
        secret: SECRET,
        access: [{ jid: alice.bare, user: 'alice' }],
        reconnect: { minMs: 100, maxMs: 1000 },
        streamTimeoutMs: 5_000,
        startTimeoutMs: 20_000,
      },
      link: { endpoint: 'xmpp-rooms', target: room },
      // A started component knows nobody: the occupant joins (again).
      afterStart: async () => void (await alice.join(roomJid, 'alice')),
      peer: {
        // a message counts as sent once it is reflected (reflected means stored)
        send: async (body) => void (await alice.reflectionOf(roomJid, await alice.say(roomJid, body))),
        // the component carries our event id as the room's stanza-id
        received: () => fromGateway().map((s) => ({ body: s.getChildText('body') ?? '', eventId: stanzaIdOf(s, roomJid) })),
      },
      // The delivered message comes back as a bounce from the occupant's side, payload and all.
      async echo(delivered) {
        const copy = fromGateway().find((s) => stanzaIdOf(s, roomJid) === delivered.eventId);
        if (!copy) throw new Error(`the peer never saw ${delivered.eventId}`);
        await alice.xmpp.send(
          xml(
            'message',
            { type: 'error', to: copy.attrs['from'], ...(copy.attrs['id'] !== undefined ? { id: copy.attrs['id'] } : {}) },
            xml('body', {}, copy.getChildText('body') ?? ''),
            xml('stanza-id', { xmlns: NS.sid, by: roomJid, id: delivered.eventId }),
            xml('error', { type: 'cancel' }, xml('service-unavailable', { xmlns: 'urn:ietf:params:xml:ns:xmpp-stanzas' })),
          ),
        );
      },
      // A resend with the same origin-id: the second is the same event, reflected again with the same stanza-id.
      async sendTwice(body, harness) {
        const id = randomUUID();
        const before = alice.stanzas.length;
        await alice.say(roomJid, body, [], id);
        const first = stanzaIdOf(await alice.waitFor((s) => s.is('message') && s.attrs['id'] === id && s.attrs['type'] === 'groupchat', 'the reflection', undefined, before), roomJid);
        expect(first).toBeDefined();
        const again = alice.stanzas.length;
        await alice.say(roomJid, body, [], id);
        const second = await alice.waitFor((s) => s.is('message') && s.attrs['id'] === id && s.attrs['type'] === 'groupchat', 'the reflection of the resend', undefined, again);
        expect(stanzaIdOf(second, roomJid)).toBe(first);
        await until(() => harness.ingested(body) >= 2, 'the resend handed to the sink again');
      },
      async close() {
        await alice.leave(roomJid).catch(() => undefined);
        await endUsers();
      },
    };
  },
});
