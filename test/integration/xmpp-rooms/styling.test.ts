/**
 * XEP-0393 styling on the rooms component (issue 16, point 5: "rendered as
 * the bridge account adapter renders"), against a real Prosody in a whole
 * gateway on Redis: formatted HTTP messages reach occupants styled — live, in
 * the join history and in MAM results alike — and an occupant's styled text
 * goes round the log without being converted twice.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LogEvent } from '../../../src/core/event.js';
import type { TestGateway } from '../../harness/gateway.js';
import { TestUser, until, xml, DEADLINE_MS } from '../xmpp/helpers.js';
import { startRoomsWorld, type RoomsWorld } from './helpers.js';
import type { XmlElement } from '@xmpp/client';

const NS = {
  sid: 'urn:xmpp:sid:0',
  muc: 'http://jabber.org/protocol/muc',
  mucUser: 'http://jabber.org/protocol/muc#user',
  mam: 'urn:xmpp:mam:2',
  data: 'jabber:x:data',
  forward: 'urn:xmpp:forward:0',
  delay: 'urn:xmpp:delay',
  styling: 'urn:xmpp:styling:0',
};

let world: RoomsWorld | undefined;
let gw: TestGateway;
let lobby: string;
let carol: string;
let alice: TestUser;
let bob: TestUser;

async function httpSend(content: Record<string, string>): Promise<string> {
  const r = await gw.device<{ eventId: string }>(carol, 'PUT', `/v1/rooms/lobby/send/${randomUUID()}`, { kind: 'message', content });
  expect(r.status).toBe(200);
  return r.body.eventId;
}

async function httpEvent(eventId: string): Promise<LogEvent> {
  let found: LogEvent | undefined;
  await until(async () => {
    const r = await gw.device<{ events: LogEvent[] }>(carol, 'GET', '/v1/sync?limit=1000&timeout=0');
    found = r.body.events.find((e) => e.eventId === eventId);
    return found !== undefined;
  }, `event ${eventId} over HTTP sync`);
  return found as LogEvent;
}

function stanzaIdOf(s: XmlElement): string | undefined {
  return s.getChildren('stanza-id', NS.sid).find((x) => x.attrs['by'] === lobby)?.attrs['id'];
}

function unstyled(s: XmlElement): boolean {
  return s.getChild('unstyled', NS.styling) !== undefined;
}

async function join(user: TestUser, nick: string, maxstanzas: number): Promise<number> {
  const from = user.stanzas.length;
  await user.xmpp.send(xml('presence', { to: `${lobby}/${nick}` }, xml('x', { xmlns: NS.muc }, xml('history', { maxstanzas: String(maxstanzas) }))));
  await user.waitFor((s) => s.is('message') && s.attrs['from'] === lobby && s.getChild('subject') !== undefined, `${user.bare} joins (subject)`, DEADLINE_MS, from);
  return from;
}

/** The archived copies of these events, by id, as one MAM query returns them. */
async function mamCopies(user: TestUser, ids: readonly string[]): Promise<Map<string, XmlElement>> {
  const queryid = randomUUID();
  const from = user.stanzas.length;
  await user.xmpp.iqCaller.request(
    xml(
      'iq',
      { type: 'set', to: lobby },
      xml(
        'query',
        { xmlns: NS.mam, queryid },
        xml('x', { xmlns: NS.data, type: 'submit' }, xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, NS.mam)), xml('field', { var: 'ids' }, ...ids.map((id) => xml('value', {}, id)))),
      ),
    ),
    DEADLINE_MS,
  );
  const out = new Map<string, XmlElement>();
  for (const s of user.stanzas.slice(from)) {
    const result = s.getChild('result', NS.mam);
    const message = result?.getChild('forwarded', NS.forward)?.getChild('message');
    if (result?.attrs['queryid'] === queryid && message) out.set(result.attrs['id'] ?? '', message);
  }
  return out;
}

beforeAll(async () => {
  world = await startRoomsWorld({
    prefix: 'rooms-styling',
    accounts: ['alice', 'bob'],
    access: ['alice', 'bob'],
    rooms: [{ id: 'lobby', links: [{ endpoint: 'rooms', target: 'lobby' }] }],
    devices: [
      ['carol', ['lobby']],
      ['alice', ['lobby']],
      ['bob', ['lobby']],
    ],
  });
  gw = world.gw;
  lobby = `lobby@${world.domain}`;
  carol = world.token('carol');
  [alice, bob] = await Promise.all([TestUser.login(world.prosody, 'alice', 'alice-pw', 'phone'), TestUser.login(world.prosody, 'bob', 'bob-pw', 'desk')]);
}, 120_000);

afterAll(async () => {
  await world?.stop();
});

describe('xmpp-rooms XEP-0393 styling', () => {
  it('formatted HTTP messages reach occupants styled: live, in the join history and in MAM', async () => {
    await join(alice, 'alice', 0);
    const mark = alice.stanzas.length;
    const sent: Array<{ content: Record<string, string>; styled?: string; plain?: string }> = [
      { content: { body: 'ship it now and carefully', format: 'markdown', formatted: 'ship it **now** and _carefully_' }, styled: 'ship it *now* and _carefully_' },
      { content: { body: 'big deal', format: 'html', formatted: '<b>big</b> deal' }, styled: '*big* deal' },
      // plain text that a XEP-0393 client would style is marked <unstyled/>
      { content: { body: 'sizes 2*3 and *not* bold' }, plain: 'sizes 2*3 and *not* bold' },
    ];
    const ids: string[] = [];
    for (const s of sent) ids.push(await httpSend(s.content));

    const check = (copy: XmlElement | undefined, i: number, where: string): void => {
      const want = sent[i];
      expect(copy, `${where}: copy of message ${i}`).toBeDefined();
      expect([where, copy?.getChildText('body')]).toEqual([where, want?.styled ?? want?.plain]);
      expect([where, unstyled(copy as XmlElement)]).toEqual([where, want?.plain !== undefined]);
    };

    // live
    for (const [i, id] of ids.entries()) check(await alice.waitFor((s) => s.is('message') && stanzaIdOf(s) === id, `live copy ${i}`, DEADLINE_MS, mark), i, 'live');

    // join history
    const from = await join(bob, 'bob', ids.length);
    const history = bob.stanzas.slice(from).filter((s) => s.is('message') && s.getChild('delay', NS.delay) !== undefined);
    for (const [i, id] of ids.entries()) check(history.find((s) => stanzaIdOf(s) === id), i, 'history');

    // MAM
    const archived = await mamCopies(alice, ids);
    for (const [i, id] of ids.entries()) check(archived.get(id), i, 'mam');
  });

  it("an occupant's styled text is stored as XEP-0393 and comes back as sent, not converted twice", async () => {
    const styledId = randomUUID();
    const plainId = randomUUID();
    const mark = alice.stanzas.length;
    const bobMark = bob.stanzas.length;
    await alice.say(lobby, '*hi* there\n> quoted', [], styledId);
    await alice.say(lobby, 'a *literal* star', [xml('unstyled', { xmlns: NS.styling })], plainId);
    const styled = await alice.waitFor((s) => s.is('message') && s.attrs['id'] === styledId, 'reflection of the styled message', DEADLINE_MS, mark);
    const plain = await alice.waitFor((s) => s.is('message') && s.attrs['id'] === plainId, 'reflection of the unstyled message', DEADLINE_MS, mark);
    expect([styled.getChildText('body'), unstyled(styled)]).toEqual(['*hi* there\n> quoted', false]);
    expect([plain.getChildText('body'), unstyled(plain)]).toEqual(['a *literal* star', true]);

    // stored as the bridge account adapter stores an XMPP message: styling as xep0393, <unstyled/> as plain
    const styledEvent = await httpEvent(stanzaIdOf(styled) as string);
    const plainEvent = await httpEvent(stanzaIdOf(plain) as string);
    expect('content' in styledEvent ? styledEvent.content : undefined).toMatchObject({ format: 'xep0393', formatted: '*hi* there\n> quoted' });
    expect('content' in plainEvent ? plainEvent.content : undefined).toEqual({ body: 'a *literal* star' });

    // the other occupant and the archive show the same
    const bobCopy = await bob.waitFor((s) => s.is('message') && stanzaIdOf(s) === styledEvent.eventId, 'Bob gets the styled message', DEADLINE_MS, bobMark);
    expect([bobCopy.getChildText('body'), unstyled(bobCopy)]).toEqual(['*hi* there\n> quoted', false]);
    const archived = await mamCopies(bob, [styledEvent.eventId, plainEvent.eventId]);
    expect([archived.get(styledEvent.eventId)?.getChildText('body'), unstyled(archived.get(styledEvent.eventId) as XmlElement)]).toEqual(['*hi* there\n> quoted', false]);
    expect([archived.get(plainEvent.eventId)?.getChildText('body'), unstyled(archived.get(plainEvent.eventId) as XmlElement)]).toEqual(['a *literal* star', true]);
  });
});
