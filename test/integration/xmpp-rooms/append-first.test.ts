/**
 * Append first, reflect after (issue 16, point 4), at the adapter: the rooms
 * component on a real Prosody, over a memory log and the real ingest sink
 * with a gate in front of it, so an append can be held or made to fail.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IngestSink } from '../../../src/core/adapter.js';
import { contentInFormat } from '../../../src/bridge/format/index.js';
import { createIngestSink } from '../../../src/bridge/ingest.js';
import { createRoomLinks, type RoomLinks } from '../../../src/bridge/links.js';
import { createEventLog } from '../../../src/eventlog/index.js';
import type { EventLog } from '../../../src/core/ports.js';
import { silentLogger } from '../../../src/log/index.js';
import { createXmppRoomsAdapter, parseXmppRoomsConfig, type XmppRoomsAdapter } from '../../../adapters/xmpp-rooms/index.js';
import { startProsody, type ProsodyServer } from '../../harness/prosody.js';
import { TestUser, endUsers, until, xml, DEADLINE_MS } from '../xmpp/helpers.js';
import type { XmlElement } from '@xmpp/client';
import { allEvents } from '../xmpp/helpers.js';

const SECRET = `s-${randomUUID()}`;
const SID = 'urn:xmpp:sid:0';
const STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';

let prosody: ProsodyServer;
let log: EventLog;
let links: RoomLinks;
let adapter: XmppRoomsAdapter;
let alice: TestUser;
let room: string;

/** The real sink, with each ingest held until released, or failed on demand. */
const gate = { hold: false, fail: false, waiting: [] as Array<() => void>, calls: 0 };

beforeAll(async () => {
  prosody = await startProsody({ component: { secret: SECRET } });
  if (!prosody.component) throw new Error('no component');
  room = `hall@${prosody.component.domain}`;
  await prosody.createUser('alice', 'alice-pw');
  log = createEventLog({ partitions: 4, log: silentLogger() });
  await log.rooms.put({ id: 'hall', links: [{ endpoint: 'rooms', target: 'hall' }] });
  links = await createRoomLinks({ rooms: log.rooms, logger: silentLogger() });
  const real = createIngestSink({ log, logger: silentLogger() });
  const sink: IngestSink = {
    ...real,
    async ingest(draft, options) {
      gate.calls++;
      if (gate.hold) await new Promise<void>((resolve) => gate.waiting.push(resolve));
      if (gate.fail) throw new Error('the log is unavailable');
      return real.ingest(draft, options);
    },
  };
  adapter = createXmppRoomsAdapter({
    name: 'rooms',
    config: parseXmppRoomsConfig({ service: prosody.component.service, domain: prosody.component.domain, secret: SECRET, access: [{ domain: prosody.domain, user: 'staff' }], reconnect: { minMs: 100, maxMs: 500 }, maxBodyBytes: 1000, rateLimit: { perSecond: 1, burst: 5 } }),
    log: silentLogger(),
    sink,
    links,
    archive: log,
    grants: (user) => Promise.resolve(user === 'staff' ? ['hall'] : []),
    contentIn: contentInFormat,
  });
  await adapter.start();
  expect(adapter.status().connected).toBe(true);
  alice = await TestUser.login(prosody, 'alice', 'alice-pw', 'phone');
  await alice.join(room, 'alice');
}, 60_000);

afterAll(async () => {
  await endUsers();
  await adapter?.stop();
  links?.close();
  await log?.close();
  await prosody?.stop();
});

describe('xmpp-rooms: append first, then reflect', () => {
  it('no reflection while the append is pending; the reflection follows the durable append', async () => {
    gate.hold = true;
    const calls = gate.calls;
    const id = randomUUID();
    const from = alice.stanzas.length;
    await alice.say(room, 'held', [], id);
    await until(() => gate.calls > calls, 'the append to start');
    // a round trip through the component after the message: still no reflection
    await alice.xmpp.iqCaller.request(xml('iq', { type: 'get', to: room }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })), DEADLINE_MS);
    expect(alice.find((s) => s.is('message') && s.attrs['id'] === id, from)).toBeUndefined();
    expect((await allEvents(log)).some((e) => 'content' in e && e.content.body === 'held')).toBe(false);
    gate.hold = false;
    gate.waiting.splice(0).forEach((release) => release());
    const reflection = await alice.waitFor((s) => s.is('message') && s.attrs['id'] === id, 'the reflection', DEADLINE_MS, from);
    const sid = reflection.getChildren('stanza-id', SID).find((s) => s.attrs['by'] === room)?.attrs['id'];
    const stored = (await allEvents(log)).find((e) => e.eventId === sid);
    expect(stored && 'content' in stored ? stored.content.body : undefined).toBe('held');
  });

  it('a failed append: the sender gets an error, nothing is reflected, nothing is stored; the resend is stored once', async () => {
    gate.fail = true;
    const id = randomUUID();
    const from = alice.stanzas.length;
    await alice.say(room, 'not stored', [], id);
    const error = await alice.waitFor((s) => s.is('message') && s.attrs['type'] === 'error' && s.attrs['id'] === id, 'the error', DEADLINE_MS, from);
    expect(error.getChild('error')?.getChildElements().find((c) => c.getNS() === STANZAS)?.name).toBe('internal-server-error');
    expect(error.getChild('error')?.attrs['type']).toBe('wait');
    expect(alice.find((s) => s.is('message') && s.attrs['id'] === id && s.attrs['type'] === 'groupchat', from)).toBeUndefined();
    expect((await allEvents(log)).some((e) => 'content' in e && e.content.body === 'not stored')).toBe(false);
    gate.fail = false;
    await alice.say(room, 'not stored', [], id);
    await alice.waitFor((s) => s.is('message') && s.attrs['id'] === id && s.attrs['type'] === 'groupchat', 'the reflection of the resend', DEADLINE_MS, from);
    expect((await allEvents(log)).filter((e) => 'content' in e && e.content.body === 'not stored')).toHaveLength(1);
  });

  it('bad input: a body over the limit, a flood, a malformed join and archive query, a reference to nothing', async () => {
    const condition = (st: XmlElement) => st.getChild('error')?.getChildElements().find((c) => c.getNS() === STANZAS)?.name;
    const errorFor = (id: string, from: number) => alice.waitFor((st) => st.attrs['id'] === id && st.attrs['type'] === 'error', `error for ${id}`, DEADLINE_MS, from);
    // a correction of something that is not there
    let from = alice.stanzas.length;
    const ghost = randomUUID();
    await alice.say(room, 'fixed', [xml('replace', { xmlns: 'urn:xmpp:message-correct:0', id: 'no-such-message' })], ghost);
    expect(condition(await errorFor(ghost, from))).toBe('item-not-found');
    // a body over maxBodyBytes (1000): refused, not cut, nothing stored
    const big = randomUUID();
    await alice.say(room, 'é'.repeat(501), [], big);
    expect(condition(await errorFor(big, from))).toBe('not-acceptable');
    expect((await allEvents(log)).some((e) => 'content' in e && e.content.body.startsWith('éé'))).toBe(false);
    // a join without a nick, an archive query with a bad max and a bad date
    from = alice.stanzas.length;
    await alice.xmpp.send(xml('presence', { to: room }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' })));
    const noNick = await alice.waitFor((st) => st.is('presence') && st.attrs['type'] === 'error', 'join without nick refused', DEADLINE_MS, from);
    expect(condition(noNick)).toBe('jid-malformed');
    const query = (children: XmlElement[]) =>
      alice.xmpp.iqCaller.request(xml('iq', { type: 'set', to: room }, xml('query', { xmlns: 'urn:xmpp:mam:2' }, ...children)), DEADLINE_MS).then(
        () => 'ok',
        (err: { condition?: string }) => err.condition,
      );
    expect(await query([xml('set', { xmlns: 'http://jabber.org/protocol/rsm' }, xml('max', {}, 'many'))])).toBe('bad-request');
    expect(
      await query([xml('x', { xmlns: 'jabber:x:data', type: 'submit' }, xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, 'urn:xmpp:mam:2')), xml('field', { var: 'start' }, xml('value', {}, 'yesterday')))]),
    ).toBe('bad-request');
    // a flood: past the bucket (burst 5, 1/s) messages are refused with resource-constraint, the rest stored once each
    from = alice.stanzas.length;
    const ids: string[] = Array.from({ length: 15 }, () => randomUUID());
    for (const id of ids) await alice.say(room, `flood ${id}`, [], id);
    const outcome = new Map<string, string>();
    await until(() => {
      for (let i = from; i < alice.stanzas.length; i++) {
        const st = alice.stanzas[i] as XmlElement;
        const id = st.attrs['id'];
        if (id !== undefined && ids.includes(id) && st.is('message')) outcome.set(id, st.attrs['type'] === 'error' ? (condition(st) ?? 'error') : 'reflected');
      }
      return outcome.size === ids.length;
    }, 'an answer to every flood message');
    const refused = [...outcome.values()].filter((v) => v === 'resource-constraint').length;
    const reflected = [...outcome.values()].filter((v) => v === 'reflected').length;
    expect(refused).toBeGreaterThan(0);
    expect(refused + reflected).toBe(ids.length);
    expect((await allEvents(log)).filter((e) => 'content' in e && e.content.body.startsWith('flood '))).toHaveLength(reflected);
  });
});
