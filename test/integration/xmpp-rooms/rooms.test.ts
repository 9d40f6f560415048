/**
 * The rooms component (adapter type xmpp-rooms) against a real Prosody with
 * `Component "rooms.localhost"`, in a whole gateway on Redis: @xmpp/client
 * users (two resources for Alice) and an HTTP device (Carol) in one room.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syncCursorAfter } from '../../../src/core/cursor.js';
import type { LogEvent } from '../../../src/core/event.js';
import type { ProsodyServer } from '../../harness/prosody.js';
import type { TestGateway } from '../../harness/gateway.js';
import { TestUser, until, xml, DEADLINE_MS } from '../xmpp/helpers.js';
import { startRoomsWorld, type RoomsWorld } from './helpers.js';
import type { XmlElement } from '@xmpp/client';

const NS = {
  sid: 'urn:xmpp:sid:0',
  muc: 'http://jabber.org/protocol/muc',
  mucUser: 'http://jabber.org/protocol/muc#user',
  mam: 'urn:xmpp:mam:2',
  rsm: 'http://jabber.org/protocol/rsm',
  data: 'jabber:x:data',
  forward: 'urn:xmpp:forward:0',
  delay: 'urn:xmpp:delay',
  occupantId: 'urn:xmpp:occupant-id:0',
  discoInfo: 'http://jabber.org/protocol/disco#info',
  discoItems: 'http://jabber.org/protocol/disco#items',
  stanzas: 'urn:ietf:params:xml:ns:xmpp-stanzas',
};

let world: RoomsWorld | undefined;
let prosody: ProsodyServer;
let gw: TestGateway;
let domain: string;
let lobby: string;
let carol: string;
let alice1: TestUser;
let alice2: TestUser;
let bob: TestUser;

interface Page {
  events: LogEvent[];
  next: string;
}

async function httpSend(body: string): Promise<{ eventId: string; cursor: string }> {
  const r = await gw.device<{ eventId: string; cursor: string }>(carol, 'PUT', `/v1/rooms/lobby/send/${randomUUID()}`, { kind: 'message', content: { body } });
  expect(r.status).toBe(200);
  return r.body;
}

async function httpSyncAll(since?: string): Promise<LogEvent[]> {
  const out: LogEvent[] = [];
  let cursor = since;
  for (;;) {
    const q = cursor === undefined ? '?limit=1000&timeout=0' : `?since=${encodeURIComponent(cursor)}&limit=1000&timeout=0`;
    const r = await gw.device<Page>(carol, 'GET', `/v1/sync${q}`);
    expect(r.status).toBe(200);
    out.push(...r.body.events);
    if (r.body.events.length === 0 || cursor === undefined) {
      if (cursor === undefined && r.body.events.length > 0) {
        cursor = r.body.next;
        continue;
      }
      return out;
    }
    cursor = r.body.next;
  }
}

function errorCondition(s: XmlElement): string | undefined {
  return s.getChild('error')?.getChildElements().find((c) => c.getNS() === NS.stanzas)?.name;
}

function stanzaIdOf(s: XmlElement, by: string): string | undefined {
  return s.getChildren('stanza-id', NS.sid).find((x) => x.attrs['by'] === by)?.attrs['id'];
}

async function joinRaw(user: TestUser, room: string, nick: string, history?: Record<string, string>): Promise<number> {
  const from = user.stanzas.length;
  await user.xmpp.send(xml('presence', { to: `${room}/${nick}` }, xml('x', { xmlns: NS.muc }, history ? xml('history', history) : undefined)));
  return from;
}

async function joinAndWait(user: TestUser, room: string, nick: string, history?: Record<string, string>): Promise<{ from: number; self: XmlElement }> {
  const from = await joinRaw(user, room, nick, history);
  // the subject ends the join (XEP-0045 §7.2.15)
  await user.waitFor((s) => s.is('message') && s.attrs['from'] === room && s.getChild('subject') !== undefined, `${user.bare} join of ${room} (subject)`, DEADLINE_MS, from);
  const self = user.find((s) => s.is('presence') && s.attrs['from'] === `${room}/${nick}` && (s.getChild('x', NS.mucUser)?.getChildren('status') ?? []).some((c) => c.attrs['code'] === '110'), from);
  if (!self) throw new Error('no self-presence');
  return { from, self };
}

interface MamPage {
  ids: string[];
  bodies: string[];
  stamps: number[];
  complete: boolean;
  first?: string | undefined;
  last?: string | undefined;
}

async function mam(user: TestUser, room: string, opts: { fields?: Record<string, string | string[]>; max?: number; after?: string; before?: string }): Promise<MamPage> {
  const queryid = randomUUID();
  const from = user.stanzas.length;
  const fields = Object.entries(opts.fields ?? {}).map(([name, v]) => xml('field', { var: name }, ...(Array.isArray(v) ? v : [v]).map((x) => xml('value', {}, x))));
  const reply = await user.xmpp.iqCaller.request(
    xml(
      'iq',
      { type: 'set', to: room },
      xml(
        'query',
        { xmlns: NS.mam, queryid },
        fields.length > 0 ? xml('x', { xmlns: NS.data, type: 'submit' }, xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, NS.mam)), ...fields) : undefined,
        xml('set', { xmlns: NS.rsm }, opts.max !== undefined ? xml('max', {}, String(opts.max)) : undefined, opts.after !== undefined ? xml('after', {}, opts.after) : undefined, opts.before !== undefined ? xml('before', {}, opts.before) : undefined),
      ),
    ),
    DEADLINE_MS,
  );
  const ids: string[] = [];
  const bodies: string[] = [];
  const stamps: number[] = [];
  for (let i = from; i < user.stanzas.length; i++) {
    const result = user.stanzas[i]?.getChild('result', NS.mam);
    if (result?.attrs['queryid'] !== queryid) continue;
    ids.push(result.attrs['id'] ?? '');
    bodies.push(result.getChild('forwarded', NS.forward)?.getChild('message')?.getChildText('body') ?? '');
    stamps.push(Date.parse(result.getChild('forwarded', NS.forward)?.getChild('delay', NS.delay)?.attrs['stamp'] ?? ''));
  }
  const fin = reply.getChild('fin', NS.mam);
  const set = fin?.getChild('set', NS.rsm);
  return { ids, bodies, stamps, complete: fin?.attrs['complete'] === 'true', first: set?.getChildText('first') ?? undefined, last: set?.getChildText('last') ?? undefined };
}

async function mamError(user: TestUser, room: string, fields: Record<string, string>): Promise<string | undefined> {
  try {
    await mam(user, room, { fields });
  } catch (err) {
    return (err as { condition?: string }).condition;
  }
  return undefined;
}

beforeAll(async () => {
  world = await startRoomsWorld({
    prefix: 'rooms',
    accounts: ['alice', 'bob', 'eve', 'mallory'],
    access: ['alice', 'bob', 'eve'],
    adapter: { historyDefault: 5 },
    rooms: [
      { id: 'lobby', name: 'Lobby', links: [{ endpoint: 'rooms', target: 'lobby', options: { name: 'The lobby' } }] },
      { id: 'other', links: [{ endpoint: 'rooms', target: 'other' }] },
    ],
    devices: [
      ['carol', ['lobby']],
      ['alice', ['lobby']],
      ['bob', ['lobby']],
      ['eve', []],
    ],
  });
  ({ prosody, gw, domain } = world);
  lobby = `lobby@${domain}`;
  carol = world.token('carol');
  [alice1, alice2, bob] = await Promise.all([TestUser.login(prosody, 'alice', 'alice-pw', 'phone'), TestUser.login(prosody, 'alice', 'alice-pw', 'laptop'), TestUser.login(prosody, 'bob', 'bob-pw', 'desk')]);
}, 120_000);

afterAll(async () => {
  await world?.stop();
});

describe('xmpp-rooms component', () => {
  it('answers disco on the service and on the room', async () => {
    const items = await alice1.xmpp.iqCaller.request(xml('iq', { type: 'get', to: domain }, xml('query', { xmlns: NS.discoItems })), DEADLINE_MS);
    // Alice is granted lobby only: other is not listed for her
    expect(items.getChild('query', NS.discoItems)?.getChildren('item').map((i) => i.attrs['jid'])).toEqual([lobby]);
    const info = await alice1.xmpp.iqCaller.request(xml('iq', { type: 'get', to: lobby }, xml('query', { xmlns: NS.discoInfo })), DEADLINE_MS);
    const features = info.getChild('query', NS.discoInfo)?.getChildren('feature').map((f) => f.attrs['var']) ?? [];
    for (const f of [NS.muc, 'muc_persistent', 'muc_membersonly', NS.mam, 'urn:xmpp:mam:2#extended', NS.sid, NS.occupantId]) expect(features).toContain(f);
    expect(info.getChild('query', NS.discoInfo)?.getChild('identity')?.attrs['name']).toBe('The lobby');
  });

  it('join: occupant list, self-presence 110/100 with occupant-id, history from the log with stanza-ids, then the subject', async () => {
    const sent = [];
    for (let i = 0; i < 4; i++) sent.push(await httpSend(`before join ${i}`));
    const { from, self } = await joinAndWait(alice1, lobby, 'alice', { maxstanzas: '3' });
    const codes = self.getChild('x', NS.mucUser)?.getChildren('status').map((s) => s.attrs['code']);
    expect(codes).toEqual(expect.arrayContaining(['110', '100']));
    const occupantId = self.getChild('occupant-id', NS.occupantId)?.attrs['id'];
    expect(occupantId).toMatch(/^[A-Za-z0-9_-]{10,}$/);
    const history = alice1.stanzas.slice(from).filter((s) => s.is('message') && s.getChild('delay', NS.delay) !== undefined);
    expect(history.map((m) => m.getChildText('body'))).toEqual(['before join 1', 'before join 2', 'before join 3']);
    expect(history.map((m) => stanzaIdOf(m, lobby))).toEqual(sent.slice(1).map((s) => s.eventId));
    expect(history[0]?.attrs['from']).toBe(`${lobby}/carol`);
    // the subject comes after the history
    const subjectAt = alice1.stanzas.findIndex((s, i) => i >= from && s.getChild('subject') !== undefined);
    const lastHistoryAt = alice1.stanzas.lastIndexOf(history.at(-1) as XmlElement);
    expect(subjectAt).toBeGreaterThan(lastHistoryAt);

    // a second resource of Alice joins the same nick: the same occupant, the same occupant-id
    const second = await joinAndWait(alice2, lobby, 'alice', { maxstanzas: '0' });
    expect(second.self.getChild('occupant-id', NS.occupantId)?.attrs['id']).toBe(occupantId);
    expect(alice2.stanzas.slice(second.from).some((s) => s.is('message') && s.getChild('delay', NS.delay) !== undefined)).toBe(false);
    // Bob sees Alice in the occupant list
    const bobJoin = await joinAndWait(bob, lobby, 'bob', { maxstanzas: '0' });
    expect(bob.find((s) => s.is('presence') && s.attrs['from'] === `${lobby}/alice`, bobJoin.from)).toBeDefined();
  });

  it('a message from an occupant is appended first, then reflected to every resource with the event id HTTP sync reports', async () => {
    const id = randomUUID();
    const fromA1 = alice1.stanzas.length;
    const fromA2 = alice2.stanzas.length;
    const fromB = bob.stanzas.length;
    await alice1.say(lobby, 'hello from the phone', [], id);
    const reflection = await alice1.waitFor((s) => s.is('message') && s.attrs['id'] === id && s.attrs['from'] === `${lobby}/alice`, 'own reflection', DEADLINE_MS, fromA1);
    const sid = stanzaIdOf(reflection, lobby);
    expect(sid).toBeDefined();
    // a reflection means stored: the HTTP device sees the same id
    const events = await httpSyncAll();
    const stored = events.find((e) => e.eventId === sid);
    expect(stored && 'content' in stored ? stored.content.body : undefined).toBe('hello from the phone');
    expect(stored?.sender.uid).toBe(`xmpp:alice@${prosody.domain}`);
    for (const [user, from] of [[alice2, fromA2], [bob, fromB]] as const) {
      const copy = await user.waitFor((s) => s.is('message') && s.getChildText('body') === 'hello from the phone', `${user.bare} copy`, DEADLINE_MS, from);
      expect(stanzaIdOf(copy, lobby)).toBe(sid);
      expect(copy.attrs['from']).toBe(`${lobby}/alice`);
    }

    // a resend with the same origin-id (after a reconnect) is not a second event
    const before = alice1.stanzas.length;
    await alice1.say(lobby, 'hello from the phone', [], id);
    const again = await alice1.waitFor((s) => s.is('message') && s.attrs['id'] === id, 'reflection of the resend', DEADLINE_MS, before);
    expect(stanzaIdOf(again, lobby)).toBe(sid);
    const after = await httpSyncAll();
    expect(after.filter((e) => 'content' in e && e.content.body === 'hello from the phone')).toHaveLength(1);
  });

  it('a spoofed stanza-id in what a client sends is ignored', async () => {
    const id = randomUUID();
    const from = alice1.stanzas.length;
    await alice1.say(lobby, 'spoof attempt', [xml('stanza-id', { xmlns: NS.sid, by: lobby, id: 'SPOOFED' })], id);
    const reflection = await alice1.waitFor((s) => s.is('message') && s.attrs['id'] === id, 'reflection', DEADLINE_MS, from);
    const ids = reflection.getChildren('stanza-id', NS.sid).map((s) => s.attrs['id']);
    expect(ids).toHaveLength(1);
    expect(ids[0]).not.toBe('SPOOFED');
  });

  it('an HTTP message reaches every resource with its event id as stanza-id', async () => {
    const marks = [alice1, alice2, bob].map((u) => u.stanzas.length);
    const { eventId } = await httpSend('from the web');
    for (const [i, user] of [alice1, alice2, bob].entries()) {
      const m = await user.waitFor((s) => s.is('message') && s.getChildText('body') === 'from the web', `${user.bare} gets the HTTP message`, DEADLINE_MS, marks[i]);
      expect(stanzaIdOf(m, lobby)).toBe(eventId);
      expect(m.attrs['from']).toBe(`${lobby}/carol`);
      expect(m.attrs['type']).toBe('groupchat');
    }
  });

  it('corrections, retractions, reactions, replies and markers: from occupants into the log, from HTTP to occupants', async () => {
    const X = {
      correct: 'urn:xmpp:message-correct:0',
      retract: 'urn:xmpp:message-retract:1',
      reactions: 'urn:xmpp:reactions:0',
      reply: 'urn:xmpp:reply:0',
      fallback: 'urn:xmpp:fallback:0',
      markers: 'urn:xmpp:chat-markers:0',
    };
    const latest = async (match: (e: LogEvent) => boolean, what: string): Promise<LogEvent> => {
      let found: LogEvent | undefined;
      await until(async () => (found = (await httpSyncAll()).filter(match).at(-1)) !== undefined, what);
      return found as LogEvent;
    };
    // Alice's message, then her correction naming her own message id (XEP-0308)
    const m1 = randomUUID();
    let mark = alice1.stanzas.length;
    await alice1.say(lobby, 'teh original', [], m1);
    const s1 = stanzaIdOf(await alice1.waitFor((s) => s.attrs['id'] === m1 && s.is('message'), 'reflection', DEADLINE_MS, mark), lobby) as string;
    const bobMark = bob.stanzas.length;
    await alice1.say(lobby, 'the original', [xml('replace', { xmlns: X.correct, id: m1 })]);
    const edit = await latest((e) => e.kind === 'edit', 'the edit in the log');
    expect(edit.kind === 'edit' ? [edit.rel.replaces, edit.content.body] : []).toEqual([s1, 'the original']);
    const bobEdit = await bob.waitFor((s) => s.getChild('replace', X.correct) !== undefined, 'Bob sees the correction', DEADLINE_MS, bobMark);
    expect(bobEdit.getChild('replace', X.correct)?.attrs['id']).toBe(m1);
    expect(stanzaIdOf(bobEdit, lobby)).toBe(edit.eventId);

    // Bob reacts, replies (fallback stripped) and marks it displayed, all by stanza-id
    mark = alice1.stanzas.length;
    await bob.say(lobby, undefined, [xml('reactions', { xmlns: X.reactions, id: s1 }, xml('reaction', {}, '👍'), xml('reaction', {}, '🎉'))]);
    const reaction = await latest((e) => e.kind === 'reaction', 'the reaction in the log');
    expect(reaction.kind === 'reaction' ? [reaction.rel.reactsTo, reaction.reaction.keys] : []).toEqual([s1, ['👍', '🎉']]);
    const seen = await alice1.waitFor((s) => s.getChild('reactions', X.reactions) !== undefined, 'Alice sees the reactions', DEADLINE_MS, mark);
    expect(seen.getChild('reactions', X.reactions)?.attrs['id']).toBe(s1);
    const quote = '> alice wrote: the original\n';
    await bob.say(lobby, `${quote}agreed`, [
      xml('reply', { xmlns: X.reply, id: s1, to: `${lobby}/alice` }),
      xml('fallback', { xmlns: X.fallback, for: X.reply }, xml('body', { start: '0', end: String(Array.from(quote).length) })),
    ]);
    const reply = await latest((e) => e.kind === 'message' && e.rel?.replyTo !== undefined, 'the reply in the log');
    expect(reply.kind === 'message' ? [reply.rel?.replyTo, reply.content.body] : []).toEqual([s1, 'agreed']);
    await bob.say(lobby, undefined, [xml('displayed', { xmlns: X.markers, id: s1 })]);
    const marker = await latest((e) => e.kind === 'marker', 'the marker in the log');
    expect(marker.kind === 'marker' ? marker.rel.upTo : undefined).toBe(s1);

    // only its sender retracts a message
    mark = bob.stanzas.length;
    const denied = randomUUID();
    await bob.say(lobby, undefined, [xml('retract', { xmlns: X.retract, id: s1 })], denied);
    const refusal = await bob.waitFor((s) => s.attrs['id'] === denied && s.attrs['type'] === 'error', 'refusal', DEADLINE_MS, mark);
    expect(errorCondition(refusal)).toBe('forbidden');
    await alice1.say(lobby, undefined, [xml('retract', { xmlns: X.retract, id: s1 })]);
    const retraction = await latest((e) => e.kind === 'retraction', 'the retraction in the log');
    expect(retraction.kind === 'retraction' ? retraction.rel.redacts : undefined).toBe(s1);
    await bob.waitFor((s) => s.getChild('retract', X.retract)?.attrs['id'] === s1, 'Bob sees the retraction', DEADLINE_MS, mark);

    // HTTP → occupants: edit, reaction, reply, retraction of Carol's message, by event id
    const { eventId: c1 } = await httpSend('carol says');
    mark = alice2.stanzas.length;
    const put = (body: unknown) => gw.device(carol, 'PUT', `/v1/rooms/lobby/send/${randomUUID()}`, body);
    expect((await put({ kind: 'edit', content: { body: 'carol said' }, rel: { replaces: c1 } })).status).toBe(200);
    expect((await put({ kind: 'reaction', rel: { reactsTo: s1 }, reaction: { keys: ['❤'] } })).status).toBe(200);
    expect((await put({ kind: 'message', content: { body: 'answering' }, rel: { replyTo: c1 } })).status).toBe(200);
    expect((await put({ kind: 'retraction', rel: { redacts: c1 } })).status).toBe(200);
    const httpEdit = await alice2.waitFor((s) => s.getChild('replace', X.correct) !== undefined, 'HTTP edit', DEADLINE_MS, mark);
    expect([httpEdit.getChild('replace', X.correct)?.attrs['id'], httpEdit.getChildText('body'), httpEdit.attrs['from']]).toEqual([c1, 'carol said', `${lobby}/carol`]);
    expect((await alice2.waitFor((s) => s.getChild('reactions', X.reactions) !== undefined && s.attrs['from'] === `${lobby}/carol`, 'HTTP reaction', DEADLINE_MS, mark)).getChild('reactions', X.reactions)?.getChildText('reaction')).toBe('❤');
    expect((await alice2.waitFor((s) => s.getChild('reply', X.reply) !== undefined, 'HTTP reply', DEADLINE_MS, mark)).getChild('reply', X.reply)?.attrs['id']).toBe(c1);
    await alice2.waitFor((s) => s.getChild('retract', X.retract)?.attrs['id'] === c1, 'HTTP retraction', DEADLINE_MS, mark);
  });

  it('MAM after-id gives exactly what /v1/sync gives from the same point', async () => {
    const events = await httpSyncAll();
    const lobbyEvents = events.filter((e) => e.room === 'lobby');
    const pivot = lobbyEvents[2] as LogEvent;
    for (let i = 0; i < 3; i++) await httpSend(`after pivot ${i}`);
    const page = await mam(alice1, lobby, { fields: { 'after-id': pivot.eventId }, max: 100 });
    const viaHttp = (await httpSyncAll(syncCursorAfter(pivot.cursor))).filter((e) => e.room === 'lobby');
    expect(page.ids).toEqual(viaHttp.map((e) => e.eventId));
    expect(page.complete).toBe(true);
    expect(page.ids.length).toBeGreaterThan(3);
    // with: one occupant's room JID
    const carols = await mam(alice1, lobby, { fields: { with: `${lobby}/carol` }, max: 100 });
    expect(carols.ids).toEqual(lobbyEvents.concat(viaHttp).filter((e, i, list) => list.findIndex((x) => x.eventId === e.eventId) === i && e.sender.uid === 'carol').map((e) => e.eventId));
  });

  it('MAM pages both ways over 1,000 events, complete exactly at the edges', async () => {
    const log = gw.gateway.log;
    for (let i = 0; i < 1000; i += 50) {
      await Promise.all(
        Array.from({ length: 50 }, (_, k) =>
          log.append({
            v: 1,
            kind: 'message',
            idem: `bulk:${randomUUID()}`,
            room: 'other',
            sender: { uid: 'api:carol', proto: 'api', native: 'carol', display: 'Carol', auth: 'api-token' },
            origin: { proto: 'api', via: 'api', ids: {} },
            ts: { received: Date.now() },
            content: { body: `bulk ${i + k}` },
          }),
        ),
      );
    }
    await gw.admin('PUT', '/v1/admin/users/alice/rooms/other');
    const all: string[] = [];
    let after: string | undefined;
    for (let pageNo = 0; ; pageNo++) {
      const page = await mam(alice1, `other@${domain}`, { max: 100, ...(after !== undefined ? { after } : {}) });
      all.push(...page.ids);
      expect(page.complete).toBe(pageNo === 9);
      if (page.complete) break;
      after = page.last;
    }
    expect(all).toHaveLength(1000);
    expect([...all].sort()).toEqual(all);
    // backwards from the end: before='' is the last page
    const back: string[] = [];
    let before = '';
    for (let pageNo = 0; ; pageNo++) {
      const page = await mam(alice1, `other@${domain}`, { max: 100, before });
      back.unshift(...page.ids);
      expect(page.complete).toBe(pageNo === 9);
      if (page.complete) break;
      before = page.first ?? '';
    }
    expect(back).toEqual(all);
    // ids (#extended), start/end
    const some = await mam(alice1, `other@${domain}`, { fields: { ids: [all[5] as string, all[500] as string] } });
    expect(some.ids).toEqual([all[5], all[500]]);
    const bounded = await mam(alice1, `other@${domain}`, { fields: { 'after-id': all[10] as string, 'before-id': all[15] as string } });
    expect(bounded.ids).toEqual(all.slice(11, 15));
    expect(bounded.complete).toBe(true);
    // start/end compare with the stamps the archive shows, inclusive
    const firstPage = await mam(alice1, `other@${domain}`, { max: 200 });
    const t = firstPage.stamps[100] as number;
    const fromT = await mam(alice1, `other@${domain}`, { fields: { start: new Date(t).toISOString() }, max: 1000 });
    expect(fromT.stamps.every((x) => x >= t)).toBe(true);
    const k = all.indexOf(fromT.ids[0] as string);
    expect(k).toBeGreaterThanOrEqual(0);
    expect(k).toBeLessThanOrEqual(100);
    expect(fromT.ids).toEqual(all.slice(k, k + fromT.ids.length));
    if (k > 0) expect(firstPage.stamps[k - 1]).toBeLessThan(t);
    const untilT = await mam(alice1, `other@${domain}`, { fields: { end: new Date(t).toISOString() }, max: 250 });
    expect(untilT.stamps.every((x) => x <= t)).toBe(true);
    expect(untilT.ids).toEqual(all.slice(0, untilT.ids.length));
    expect(untilT.ids.length).toBeGreaterThan(100);
    if (untilT.complete && untilT.ids.length < 200) expect(firstPage.stamps[untilT.ids.length]).toBeGreaterThan(t);
  });

  it('refuses: unknown room, unknown archive id, not a member, unknown account, message before joining', async () => {
    const from = alice1.stanzas.length;
    await joinRaw(alice1, `nosuchroom@${domain}`, 'alice');
    const unknown = await alice1.waitFor((s) => s.is('presence') && s.attrs['type'] === 'error' && s.attrs['from']?.startsWith(`nosuchroom@${domain}`) === true, 'unknown room error', DEADLINE_MS, from);
    expect(errorCondition(unknown)).toBe('item-not-found');
    expect(await mamError(alice1, lobby, { 'after-id': '0000000000000000000' })).toBe('item-not-found');

    const eve = await TestUser.login(prosody, 'eve', 'eve-pw', 'x');
    const e0 = await joinRaw(eve, lobby, 'eve');
    const forbidden = await eve.waitFor((s) => s.is('presence') && s.attrs['type'] === 'error', 'forbidden', DEADLINE_MS, e0);
    expect(errorCondition(forbidden)).toBe('forbidden');
    expect(await mamError(eve, lobby, {})).toBe('forbidden');

    const mallory = await TestUser.login(prosody, 'mallory', 'mallory-pw', 'x');
    const m0 = await joinRaw(mallory, lobby, 'mallory');
    const unregistered = await mallory.waitFor((s) => s.is('presence') && s.attrs['type'] === 'error', 'registration-required', DEADLINE_MS, m0);
    expect(errorCondition(unregistered)).toBe('registration-required');
    const m1 = mallory.stanzas.length;
    await mallory.say(lobby, 'let me in');
    const refused = await mallory.waitFor((s) => s.is('message') && s.attrs['type'] === 'error', 'message refused', DEADLINE_MS, m1);
    expect(errorCondition(refused)).toBe('not-acceptable');
    expect((await httpSyncAll()).some((e) => 'content' in e && e.content.body === 'let me in')).toBe(false);
  });
});
