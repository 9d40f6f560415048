// Checks the Prosody harness against the server features the XMPP adapter
// relies on: plaintext SASL on loopback, XEP-0198, Carbons, MUC with
// XEP-0359 stanza-ids, MAM on the user and room archives, and a restart that
// keeps accounts, rooms and archives while clients reconnect.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProsody } from '../harness/prosody.js';
import type { ProsodyServer } from '../harness/prosody.js';

// @xmpp/client ships no type declarations; this is the subset the test uses.
interface XmlElement {
  name: string;
  attrs: Record<string, string | undefined>;
  is(name: string, xmlns?: string): boolean;
  getChild(name: string, xmlns?: string): XmlElement | undefined;
  getChildren(name: string, xmlns?: string): XmlElement[];
  getChildText(name: string, xmlns?: string): string | null;
  toString(): string;
}
type XmlChild = XmlElement | string;
type XmlFactory = (name: string, attrs?: Record<string, string>, ...children: XmlChild[]) => XmlElement;
interface XmppClient {
  status: string;
  jid: { toString(): string } | null;
  streamManagement: { enabled: boolean; id: string };
  iqCaller: { request(iq: XmlElement, timeout?: number): Promise<XmlElement> };
  start(): Promise<unknown>;
  stop(): Promise<unknown>;
  send(element: XmlElement): Promise<void>;
  on(event: 'stanza' | 'nonza', listener: (element: XmlElement) => void): void;
  on(event: 'online', listener: () => void): void;
  on(event: 'error', listener: (error: Error) => void): void;
}
interface XmppModule {
  client(options: { service: string; domain: string; username: string; password: string; resource: string }): XmppClient;
  xml: XmlFactory;
}

const NS_SM = 'urn:xmpp:sm:3';
const NS_CARBONS = 'urn:xmpp:carbons:2';
const NS_FORWARD = 'urn:xmpp:forward:0';
const NS_MAM = 'urn:xmpp:mam:2';
const NS_SID = 'urn:xmpp:sid:0';
const NS_MUC = 'http://jabber.org/protocol/muc';
const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';
const NS_DISCO_INFO = 'http://jabber.org/protocol/disco#info';
const NS_DATA = 'jabber:x:data';
const NS_RSM = 'http://jabber.org/protocol/rsm';
const NS_STREAMS = 'http://etherx.jabber.org/streams';

const DEADLINE_MS = 10_000;

/** One logged-in resource, with everything it received recorded for assertions. */
interface Session {
  xmpp: XmppClient;
  bare: string;
  nick: string;
  stanzas: XmlElement[];
  features: XmlElement[];
  online: number;
  /** Own initial presence echoed by the server: the resource is available from then on. */
  available: number;
  errors: Error[];
}

let xmppModule: XmppModule;
let xml: XmlFactory;
let server: ProsodyServer;
const sessions: Session[] = [];
let alice1: Session;
let alice2: Session;
let bob: Session;

async function waitUntil<T>(what: string, probe: () => T | undefined, timeoutMs = DEADLINE_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise<void>((resolve) => setTimeout(resolve, 20));
  }
}

/** Runs `attempt` until it resolves, retrying failures until the deadline; for steps right after a reconnect. */
async function retrying<T>(what: string, attempt: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`gave up after ${timeoutMs} ms on ${what}: ${(err as Error).message}`);
    }
    await new Promise<void>((resolve) => setTimeout(resolve, 200));
  }
}

async function login(localpart: string, password: string, resource: string): Promise<Session> {
  const xmpp = xmppModule.client({ service: server.service, domain: server.domain, username: localpart, password, resource });
  const session: Session = {
    xmpp,
    bare: `${localpart}@${server.domain}`,
    nick: `${localpart}-${resource}`,
    stanzas: [],
    features: [],
    online: 0,
    available: 0,
    errors: [],
  };
  xmpp.on('stanza', (el) => {
    session.stanzas.push(el);
    if (el.is('presence') && el.attrs['type'] === undefined && el.attrs['from'] === xmpp.jid?.toString()) {
      session.available += 1;
    }
  });
  xmpp.on('nonza', (el) => {
    if (el.is('features', NS_STREAMS)) session.features.push(el);
  });
  xmpp.on('online', () => {
    session.online += 1;
    // Initial presence makes the resource available: messages to the bare JID go
    // only to available resources, otherwise they are stored offline.
    xmpp.send(xml('presence')).catch((err: unknown) => session.errors.push(err as Error));
  });
  // Stream errors and refused reconnects during the restart test land here; without a listener they would throw.
  xmpp.on('error', (err) => session.errors.push(err));
  sessions.push(session);
  await xmpp.start();
  await waitUntil(`${session.bare} to be available`, () => (session.available > 0 ? true : undefined));
  return session;
}

function findMessage(session: Session, match: (m: XmlElement) => boolean): XmlElement | undefined {
  return session.stanzas.find((s) => s.is('message') && match(s));
}

/** Sends a XEP-0313 query and collects its results, which arrive before the IQ result carrying `<fin>`. */
async function queryArchive(
  session: Session,
  archive: string | undefined,
  fields: Record<string, string> = {},
): Promise<{ results: XmlElement[]; fin: XmlElement }> {
  const queryid = randomUUID();
  const form = xml(
    'x',
    { xmlns: NS_DATA, type: 'submit' },
    xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, NS_MAM)),
    ...Object.entries(fields).map(([name, value]) => xml('field', { var: name }, xml('value', {}, value))),
  );
  const iq = xml(
    'iq',
    { type: 'set', id: randomUUID(), ...(archive === undefined ? {} : { to: archive }) },
    xml('query', { xmlns: NS_MAM, queryid }, form, xml('set', { xmlns: NS_RSM }, xml('max', {}, '50'))),
  );
  const from = archive ?? session.bare;
  const reply = await session.xmpp.iqCaller.request(iq, DEADLINE_MS);
  const fin = reply.getChild('fin', NS_MAM);
  if (!fin) throw new Error(`MAM reply without <fin>: ${reply.toString()}`);
  const results = session.stanzas.filter((s) => {
    const result = s.getChild('result', NS_MAM);
    // Results must come from the archive's JID (XEP-0313 §4); the user archive may omit `from`.
    return result?.attrs['queryid'] === queryid && (s.attrs['from'] ?? session.bare) === from;
  });
  return { results, fin };
}

function forwardedMessage(result: XmlElement): XmlElement | undefined {
  return result.getChild('result', NS_MAM)?.getChild('forwarded', NS_FORWARD)?.getChild('message');
}

async function joinRoom(session: Session, room: string): Promise<void> {
  await session.xmpp.send(
    xml('presence', { to: `${room}/${session.nick}` }, xml('x', { xmlns: NS_MUC }, xml('history', { maxstanzas: '0' }))),
  );
  // Self-presence (status 110) ends the join (XEP-0045 §7.2.2).
  await waitUntil(`${session.nick} to join ${room}`, () =>
    session.stanzas.find(
      (s) =>
        s.is('presence') &&
        s.attrs['from'] === `${room}/${session.nick}` &&
        s.attrs['type'] !== 'error' &&
        (s.getChild('x', NS_MUC_USER)?.getChildren('status') ?? []).some((st) => st.attrs['code'] === '110'),
    ),
  );
}

describe('prosody harness', () => {
  beforeAll(async () => {
    // A variable specifier keeps TypeScript from looking for the missing declarations.
    const specifier = '@xmpp/client';
    xmppModule = (await import(specifier)) as XmppModule;
    xml = xmppModule.xml;
    server = await startProsody();
    await server.createUser('alice', 'alice-secret');
    await server.createUser('bob', 'bob-secret');
    alice1 = await login('alice', 'alice-secret', 'r1');
    alice2 = await login('alice', 'alice-secret', 'r2');
    bob = await login('bob', 'bob-secret', 'r1');
  });

  afterAll(async () => {
    await Promise.all(sessions.map((s) => s.xmpp.stop().catch(() => undefined)));
    await server?.stop();
  });

  it('logs in over plaintext SCRAM on loopback and offers stream management', async () => {
    expect(server.version).toMatch(/^\d+\.\d+/);
    expect(server.c2sPort).not.toBe(5222);
    for (const session of [alice1, alice2, bob]) {
      expect(session.xmpp.jid?.toString()).toMatch(new RegExp(`^${session.bare}/`));
      // XEP-0198 is offered after authentication, next to resource binding.
      expect(session.features.some((f) => f.getChild('sm', NS_SM) !== undefined)).toBe(true);
      // The client enables SM without waiting for <enabled/>; wait for it here.
      await waitUntil('stream management to be enabled', () =>
        session.xmpp.streamManagement.enabled && session.xmpp.streamManagement.id !== '' ? true : undefined,
      );
    }
  });

  it('enables Carbons, delivers a 1:1 message, copies it to the other resource and archives it', async () => {
    for (const session of [alice1, alice2]) {
      const reply = await session.xmpp.iqCaller.request(
        xml('iq', { type: 'set', id: randomUUID() }, xml('enable', { xmlns: NS_CARBONS })),
        DEADLINE_MS,
      );
      expect(reply.attrs['type']).toBe('result');
    }

    const id = randomUUID();
    const body = `hello bob ${id}`;
    await alice1.xmpp.send(
      xml('message', { to: bob.bare, type: 'chat', id }, xml('body', {}, body), xml('origin-id', { xmlns: NS_SID, id })),
    );

    const received = await waitUntil('bob to receive the message', () => findMessage(bob, (m) => m.attrs['id'] === id));
    expect(received.getChildText('body')).toBe(body);
    // Prosody stamps the recipient's archive id on the live copy (XEP-0359).
    const bobStanzaId = received.getChildren('stanza-id', NS_SID).find((s) => s.attrs['by'] === bob.bare);
    expect(bobStanzaId?.attrs['id']).toBeTruthy();

    // XEP-0280: the other resource gets a <sent/> carbon, from its own bare JID.
    const carbon = await waitUntil('alice/r2 to get the sent carbon', () =>
      findMessage(
        alice2,
        (m) =>
          m.attrs['from'] === alice2.bare &&
          m.getChild('sent', NS_CARBONS)?.getChild('forwarded', NS_FORWARD)?.getChild('message')?.attrs['id'] === id,
      ),
    );
    expect(carbon.getChild('sent', NS_CARBONS)?.getChild('forwarded', NS_FORWARD)?.getChild('message')?.getChildText('body')).toBe(
      body,
    );

    // Alice's own archive has the outgoing message.
    const { results, fin } = await queryArchive(alice1, undefined, { with: bob.bare });
    expect(fin.attrs['complete']).toBe('true');
    expect(results.map((r) => forwardedMessage(r)?.getChildText('body'))).toContain(body);

    // Bob's archive id from the live copy is the MAM result id in his archive.
    const bobArchive = await queryArchive(bob, undefined, { with: alice1.bare });
    const bobResult = bobArchive.results.find((r) => forwardedMessage(r)?.attrs['id'] === id);
    expect(bobResult?.getChild('result', NS_MAM)?.attrs['id']).toBe(bobStanzaId?.attrs['id']);
  });

  describe('MUC', () => {
    const roomLocal = `room-${randomUUID().slice(0, 8)}`;
    let room: string;
    let groupchatId: string;
    let roomStanzaId: string;
    const body = `hello room ${roomLocal}`;

    it('creates a persistent, archived room on first join and reflects messages with a room stanza-id', async () => {
      room = `${roomLocal}@${server.mucDomain}`;
      await joinRoom(alice1, room);
      await joinRoom(bob, room);

      const info = await alice1.xmpp.iqCaller.request(
        xml('iq', { type: 'get', to: room, id: randomUUID() }, xml('query', { xmlns: NS_DISCO_INFO })),
        DEADLINE_MS,
      );
      const features = (info.getChild('query', NS_DISCO_INFO)?.getChildren('feature') ?? []).map((f) => f.attrs['var']);
      expect(features).toContain('muc_persistent');
      expect(features).toContain(NS_MAM);
      expect(features).toContain('http://jabber.org/protocol/muc#stable_id');

      groupchatId = randomUUID();
      await alice1.xmpp.send(xml('message', { to: room, type: 'groupchat', id: groupchatId }, xml('body', {}, body)));

      const fromAlice = `${room}/${alice1.nick}`;
      const reflection = await waitUntil('the reflection to alice', () =>
        findMessage(alice1, (m) => m.attrs['id'] === groupchatId && m.attrs['from'] === fromAlice),
      );
      const stanzaId = reflection.getChildren('stanza-id', NS_SID).find((s) => s.attrs['by'] === room);
      expect(stanzaId?.attrs['id']).toBeTruthy();
      roomStanzaId = stanzaId?.attrs['id'] ?? '';

      const atBob = await waitUntil('bob to receive the groupchat', () =>
        findMessage(bob, (m) => m.attrs['id'] === groupchatId && m.attrs['from'] === fromAlice),
      );
      expect(atBob.getChildText('body')).toBe(body);
      expect(atBob.getChildren('stanza-id', NS_SID).find((s) => s.attrs['by'] === room)?.attrs['id']).toBe(roomStanzaId);
      if (server.occupantId) {
        // XEP-0421: the same occupant-id on every copy, for edit/retraction checks.
        const occupantId = reflection.getChild('occupant-id', 'urn:xmpp:occupant-id:0')?.attrs['id'];
        expect(occupantId).toBeTruthy();
        expect(atBob.getChild('occupant-id', 'urn:xmpp:occupant-id:0')?.attrs['id']).toBe(occupantId);
      }
    });

    it('returns the groupchat message from the room archive with a complete RSM page', async () => {
      const { results, fin } = await queryArchive(bob, room);
      expect(fin.attrs['complete']).toBe('true');
      const hit = results.find((r) => r.getChild('result', NS_MAM)?.attrs['id'] === roomStanzaId);
      expect(hit === undefined ? undefined : forwardedMessage(hit)?.getChildText('body')).toBe(body);
      expect(fin.getChild('set', NS_RSM)?.getChildText('last')).toBe(roomStanzaId);
    });

    it('restarts on the same port with the same data, and the clients reconnect', async () => {
      const port = server.c2sPort;
      const before = [alice1, alice2, bob].map((s) => ({ online: s.online, available: s.available }));

      await server.restart();
      expect(server.c2sPort).toBe(port);

      // Server-side SM state is gone, so each client gets a new session ('online'
      // again) and is available once its new initial presence is echoed.
      for (const [i, session] of [alice1, alice2, bob].entries()) {
        const was = before[i] ?? { online: 0, available: 0 };
        await waitUntil(
          `${session.bare} to reconnect`,
          () => (session.online > was.online && session.available > was.available ? true : undefined),
          30_000,
        );
      }

      // Retried: once, on a loaded machine, a send right after the reconnect failed
      // inside @xmpp/client ("Cannot read properties of null (reading 'write')": its
      // socket was gone again). Client reconnect churn is not what this test checks.
      const received = await retrying('a 1:1 message after the restart', async () => {
        const id = randomUUID();
        await alice1.xmpp.send(xml('message', { to: bob.bare, type: 'chat', id }, xml('body', {}, 'after restart')));
        return waitUntil('bob to receive after the restart', () => findMessage(bob, (m) => m.attrs['id'] === id), 5_000);
      });
      expect(received.getChildText('body')).toBe('after restart');

      // The persistent room and its archive were written to the data dir and are still there.
      const { results } = await retrying('the room archive after the restart', () => queryArchive(bob, room));
      expect(results.map((r) => r.getChild('result', NS_MAM)?.attrs['id'])).toContain(roomStanzaId);
    });
  });
});
