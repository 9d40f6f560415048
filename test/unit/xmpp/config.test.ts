// XMPP adapter config, link options, the Prosody snippet and the catch-up stores.
import { describe, expect, it } from 'vitest';
import { createEventLog } from '../../../src/eventlog/index.js';
import { silentLogger } from '../../../src/log/index.js';
import { parseXmppConfig, linkOptions } from '../../../adapters/xmpp/config.js';
import { XmppConfigError } from '../../../adapters/xmpp/errors.js';
import { memoryCatchupStore, stateCatchupStore } from '../../../adapters/xmpp/catchup.js';
import { prosodyConfigSnippet } from '../../../adapters/xmpp/prosody-config.js';
import { ejabberdConfigSnippet } from '../../../adapters/xmpp/ejabberd-config.js';
import { backoffDelay } from '../../../src/core/backoff.js';
import { selfPingVerdict, parseMucPresence, mamQuery, parseFin } from '../../../adapters/xmpp/protocol.js';
import { parseXml } from '../../../adapters/xmpp/xml.js';

const minimal = { service: 'xmpp://127.0.0.1:5222', jid: 'Bridge@Example.org', password: 'secret' };

describe('config', () => {
  it('applies defaults and lower-cases the bare JID', () => {
    const c = parseXmppConfig(minimal);
    expect(c).toMatchObject({ jid: 'bridge@example.org', resource: 'syncgate', relayPrefix: '<{{display}}> ', mucNick: 'syncgate', reconnect: { minMs: 500, maxMs: 30_000 } });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('reports every violation at once', () => {
    try {
      parseXmppConfig({ service: 'http://x', jid: 'not a jid', password: '', reconnect: { minMs: 10 }, extra: 1 });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(XmppConfigError);
      const problems = (err as XmppConfigError).problems.join('\n');
      expect(problems).toMatch(/service/);
      expect(problems).toMatch(/jid/);
      expect(problems).toMatch(/password/);
      expect(problems).toMatch(/minMs/);
    }
    expect(() => parseXmppConfig({ ...minimal, reconnect: { minMs: 1000, maxMs: 500 } })).toThrow(/maxMs/);
  });
});

describe('link options', () => {
  it('MUC by default, with nick and password; 1:1 with type chat', () => {
    expect(linkOptions({ endpoint: 'xmpp', target: 'room@conference.example.org', options: { nick: 'gw' } })).toEqual({ type: 'groupchat', nick: 'gw', password: undefined, create: {} });
    expect(linkOptions({ endpoint: 'xmpp', target: 'r@m', options: { persistent: true, membersOnly: false, roomName: 'Ops' } })).toMatchObject({ create: { persistent: true, membersOnly: false, name: 'Ops' } });
    expect(linkOptions({ endpoint: 'xmpp', target: 'alice@example.org', options: { type: 'chat' } })).toEqual({ type: 'chat' });
  });

  it('rejects what cannot work', () => {
    expect(() => linkOptions({ endpoint: 'xmpp', target: 'room@conference.example.org/nick' })).toThrow(/bare JID/);
    expect(() => linkOptions({ endpoint: 'xmpp', target: 'alice@example.org', options: { type: 'chat', nick: 'x' } })).toThrow(/MUC links only/);
    expect(() => linkOptions({ endpoint: 'xmpp', target: 'r@m', options: { type: 'headline' } })).toThrow(/type/);
    expect(() => linkOptions({ endpoint: 'xmpp', target: 'r@m', options: { colour: 'red' } })).toThrow(/unknown option/);
    expect(() => linkOptions({ endpoint: 'xmpp', target: 'r@m', options: { persistent: 'yes' } })).toThrow(/persistent must be true or false/);
    expect(() => linkOptions({ endpoint: 'xmpp', target: 'alice@example.org', options: { type: 'chat', roomName: 'x' } })).toThrow(/MUC links only/);
  });
});

describe('prosody-config', () => {
  it('names the modules and settings the adapter relies on', () => {
    const text = prosodyConfigSnippet(parseXmppConfig(minimal));
    for (const needle of ['"carbons"', '"mam"', '"smacks"', '"muc_mam"', 'Component "conference.example.org" "muc"', 'VirtualHost "example.org"', 'prosodyctl adduser bridge@example.org']) {
      expect(text).toContain(needle);
    }
    const two = prosodyConfigSnippet({ jid: 'b@x.org' }, { mucDomains: ['rooms.x.org', 'Chat.x.org', 'rooms.x.org'] });
    expect(two).toContain('Component "rooms.x.org" "muc"');
    expect(two).toContain('Component "chat.x.org" "muc"');
    expect(two.match(/Component/g)).toHaveLength(2);
  });
});

describe('prosody-config --server ejabberd', () => {
  it('names the ejabberd modules and options the adapter relies on', () => {
    const text = ejabberdConfigSnippet(parseXmppConfig(minimal));
    for (const needle of ['mod_carboncopy: {}', 'mod_mam:', 'default: always', 'mod_stream_mgmt:', 'mod_muc:', 'host: "conference.example.org"', 'mam: true', 'access_mam: all', 'plugins: ["flat", "pep"]', 'ejabberdctl register bridge example.org']) {
      expect(text).toContain(needle);
    }
    const two = ejabberdConfigSnippet({ jid: 'b@x.org' }, { mucDomains: ['rooms.x.org', 'Chat.x.org', 'rooms.x.org'] });
    expect(two).toContain('hosts: ["rooms.x.org", "chat.x.org"]');
  });
});

describe('catch-up stores', () => {
  it('memory and state-backed stores keep the position per archive', async () => {
    const mem = memoryCatchupStore();
    await mem.set('a@x', { id: '1', ts: 5 });
    expect(await mem.get('a@x')).toEqual({ id: '1', ts: 5 });
    expect(await mem.get('b@x')).toBeUndefined();

    const log = createEventLog({ partitions: 1, log: silentLogger() });
    const store = stateCatchupStore(log.state, 'xmpp-catchup:xmpp');
    await store.set('room@muc', { id: 'S-9', ts: 42 });
    expect(await stateCatchupStore(log.state, 'xmpp-catchup:xmpp').get('room@muc')).toEqual({ id: 'S-9', ts: 42 });
    expect(await stateCatchupStore(log.state, 'xmpp-catchup:other').get('room@muc')).toBeUndefined();
    // An archive found empty: a time, no id.
    await store.set('empty@muc', { ts: 7 });
    expect(await stateCatchupStore(log.state, 'xmpp-catchup:xmpp').get('empty@muc')).toStrictEqual({ ts: 7 });
    await log.state.set('xmpp-catchup:xmpp', 'broken', '{not json');
    expect(await store.get('broken')).toBeUndefined();
    await log.close();
  });
});

describe('protocol helpers', () => {
  it('backoff grows, is jittered and capped', () => {
    expect(backoffDelay(0, 100, 1000, () => 0)).toBe(100);
    expect(backoffDelay(3, 100, 1000, () => 1)).toBe(800);
    expect(backoffDelay(30, 100, 1000, () => 1)).toBe(1000);
  });

  it('self-ping verdicts follow XEP-0410', () => {
    expect(selfPingVerdict('service-unavailable')).toBe('joined');
    expect(selfPingVerdict('feature-not-implemented')).toBe('joined');
    expect(selfPingVerdict('not-acceptable')).toBe('not-joined');
    expect(selfPingVerdict('remote-server-timeout')).toBe('unknown');
    expect(selfPingVerdict(undefined)).toBe('unknown');
  });

  it('parses our self-presence, a kick and a join error', () => {
    const self = parseMucPresence(parseXml('<presence from="r@m/gw"><occupant-id id="O1" xmlns="urn:xmpp:occupant-id:0"/><x xmlns="http://jabber.org/protocol/muc#user"><item affiliation="none" role="participant"/><status code="110"/></x></presence>'));
    expect(self).toMatchObject({ room: 'r@m', nick: 'gw', self: true, type: 'available', occupantId: 'O1' });
    const kicked = parseMucPresence(parseXml('<presence from="r@m/gw" type="unavailable"><x xmlns="http://jabber.org/protocol/muc#user"><status code="307"/><status code="110"/></x></presence>'));
    expect(kicked?.codes.has('307')).toBe(true);
    const conflict = parseMucPresence(parseXml('<presence from="r@m/gw" type="error"><error type="cancel"><conflict xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></presence>'));
    expect(conflict).toMatchObject({ type: 'error', condition: 'conflict' });
    expect(parseMucPresence(parseXml('<presence from="alice@x/phone"/>'))).toBeUndefined();
  });

  it('builds MAM queries with RSM paging and reads <fin>', () => {
    const q = parseXml(mamQuery({ to: 'r@m', queryId: 'Q', max: 50, after: 'S-1', start: Date.UTC(2026, 0, 1) }).toString());
    expect(q.attrs['to']).toBe('r@m');
    const query = q.getChild('query', 'urn:xmpp:mam:2');
    expect(query?.attrs['queryid']).toBe('Q');
    expect(query?.getChild('set', 'http://jabber.org/protocol/rsm')?.getChildText('after')).toBe('S-1');
    expect(query?.getChild('set', 'http://jabber.org/protocol/rsm')?.getChildText('max')).toBe('50');
    const fields = query?.getChild('x', 'jabber:x:data')?.getChildren('field').map((f) => [f.attrs['var'], f.getChildText('value')]);
    expect(fields).toEqual([['FORM_TYPE', 'urn:xmpp:mam:2'], ['start', '2026-01-01T00:00:00.000Z']]);
    const fin = parseFin(parseXml('<iq type="result"><fin xmlns="urn:xmpp:mam:2" complete="true"><set xmlns="http://jabber.org/protocol/rsm"><first>A</first><last>B</last></set></fin></iq>'));
    expect(fin).toEqual({ complete: true, first: 'A', last: 'B' });
  });
});
