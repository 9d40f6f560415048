/** The rooms component's pure parts: config, link rule, access, join history request, rendering, Prosody snippet. */
import { describe, expect, it } from 'vitest';
import { parseXmppRoomsConfig, validateRoomsLink } from '../../../adapters/xmpp-rooms/config.js';
import { userOf } from '../../../adapters/xmpp-rooms/access.js';
import { historyRequest } from '../../../adapters/xmpp-rooms/presence.js';
import { renderEvent, visibleId } from '../../../adapters/xmpp-rooms/render.js';
import { backoffDelay } from '../../../src/core/backoff.js';
import { occupantIdFor } from '../../../adapters/xmpp-rooms/identity.js';
import { componentConfigSnippet } from '../../../adapters/xmpp-rooms/prosody-config.js';
import { xml } from '../../../adapters/xmpp-rooms/ns.js';
import { resolveConfig } from '../../../src/config/index.js';
import { AdapterConfigError } from '../../../src/core/adapter.js';
import type { LogEvent } from '../../../src/core/event.js';

const base = { service: 'xmpp://127.0.0.1:5347', domain: 'rooms.example.org', secret: 's3cret' };

describe('xmpp-rooms config', () => {
  it('fills defaults and lower-cases access rules', () => {
    const c = parseXmppRoomsConfig({ ...base, access: [{ jid: 'Alice@Example.org', user: 'alice' }, { domain: 'Example.org', user: 'staff' }] });
    expect(c.historyDefault).toBe(20);
    expect(c.mamMaxPage).toBe(250);
    expect(c.access[0]?.jid).toBe('alice@example.org');
    expect(c.access[1]?.domain).toBe('example.org');
  });

  it('reports every problem at once', () => {
    let problems: readonly string[] = [];
    try {
      parseXmppRoomsConfig({ service: 'http://x', domain: 'rooms..x', reconnect: { minMs: 10 } });
    } catch (err) {
      expect(err).toBeInstanceOf(AdapterConfigError);
      problems = (err as AdapterConfigError).problems;
    }
    expect(problems.some((p) => p.startsWith('/service'))).toBe(true);
    expect(problems.some((p) => p.startsWith('/domain'))).toBe(true);
    expect(problems.some((p) => p.startsWith('/secret'))).toBe(true);
    expect(problems.some((p) => p.startsWith('/reconnect/minMs'))).toBe(true);
    expect(() => parseXmppRoomsConfig({ ...base, access: [{ user: 'x' }] })).toThrow(/exactly one of jid or domain/);
  });

  it('is an adapter type of the gateway config, its secret from SYNCGATE_ADAPTER_<NAME>_SECRET', () => {
    const config = resolveConfig(
      { adapters: { rooms: { type: 'xmpp-rooms', service: base.service, domain: base.domain } }, rooms: [{ id: 'lobby', links: [{ endpoint: 'rooms', target: 'lobby' }] }] },
      { SYNCGATE_ADAPTER_ROOMS_SECRET: 'from-env' },
    );
    const section = config.adapters['rooms'];
    expect(section?.type).toBe('xmpp-rooms');
    expect(section?.type === 'xmpp-rooms' ? section.config.secret : undefined).toBe('from-env');
  });

  it('links name the room JID local part', () => {
    expect(() => validateRoomsLink({ endpoint: 'rooms', target: 'lobby' })).not.toThrow();
    expect(() => validateRoomsLink({ endpoint: 'rooms', target: 'Lobby' })).toThrow(/local part/);
    expect(() => validateRoomsLink({ endpoint: 'rooms', target: 'a@b' })).toThrow(/local part/);
    expect(() => validateRoomsLink({ endpoint: 'rooms', target: 'lobby', options: { nick: 'x' } })).toThrow(/unknown option nick/);
  });
});

describe('xmpp-rooms access, identity, history request', () => {
  const rules = [
    { jid: 'boss@example.org', user: 'boss' },
    { domain: 'example.org', user: 'staff' },
  ];
  it('an exact JID rule wins over a domain rule; others are unknown', () => {
    expect(userOf(rules, 'boss@example.org')).toBe('boss');
    expect(userOf(rules, 'ann@example.org')).toBe('staff');
    expect(userOf(rules, 'ann@elsewhere.org')).toBeUndefined();
  });

  it('occupant ids are stable per room and JID and differ across them', () => {
    expect(occupantIdFor('s', 'r', 'a@x')).toBe(occupantIdFor('s', 'r', 'a@x'));
    expect(occupantIdFor('s', 'r', 'a@x')).not.toBe(occupantIdFor('s', 'r2', 'a@x'));
    expect(occupantIdFor('s', 'r', 'a@x')).not.toBe(occupantIdFor('s', 'r', 'b@x'));
    expect(occupantIdFor('s', 'r', 'a@x')).not.toContain('a@x');
  });

  it('reads <history/>: maxstanzas, maxchars=0, seconds, since; capped by historyMax', () => {
    const d = { historyDefault: 20, historyMax: 50 };
    const join = (attrs?: Record<string, string>) => xml('x', { xmlns: 'http://jabber.org/protocol/muc' }, attrs ? xml('history', attrs) : undefined);
    expect(historyRequest(join(), d, 1000)).toEqual({ max: 20 });
    expect(historyRequest(undefined, d, 1000)).toEqual({ max: 20 });
    expect(historyRequest(join({ maxstanzas: '5' }), d, 1000)).toEqual({ max: 5 });
    expect(historyRequest(join({ maxstanzas: '500' }), d, 1000)).toEqual({ max: 50 });
    expect(historyRequest(join({ maxchars: '0' }), d, 1000).max).toBe(0);
    expect(historyRequest(join({ seconds: '10' }), d, 60_000)).toEqual({ max: 20, since: 50_000 });
    expect(historyRequest(join({ since: '1970-01-01T00:00:05Z' }), d, 60_000)).toEqual({ max: 20, since: 5000 });
    expect(historyRequest(join({ maxstanzas: 'lots' }), d, 1000)).toEqual({ max: 20 });
  });

  it('backoff grows with the attempt, jittered, within min and max', () => {
    expect(backoffDelay(0, 100, 1000, () => 0)).toBe(100);
    expect(backoffDelay(3, 100, 1000, () => 1)).toBe(800);
    expect(backoffDelay(30, 100, 1000, () => 1)).toBe(1000);
  });
});

describe('xmpp-rooms rendering', () => {
  const event = (over: Partial<LogEvent>): LogEvent =>
    ({
      v: 1,
      kind: 'message',
      idem: 'k',
      room: 'lobby',
      sender: { uid: 'api:carol', proto: 'api', native: 'carol', display: 'Carol', auth: 'api-token' },
      origin: { proto: 'api', via: 'api', ids: {} },
      ts: { received: 0 },
      content: { body: 'hi' },
      eventId: '01HZZZZZZZ00ABCDEFG',
      cursor: 'c',
      ...over,
    }) as LogEvent;

  it('every copy carries the event id as stanza-id by the room', () => {
    const m = renderEvent({ event: event({}), roomJid: 'lobby@rooms.x', nick: 'Carol', via: 'rooms' });
    expect(m?.attrs['from']).toBe('lobby@rooms.x/Carol');
    expect(m?.getChild('stanza-id', 'urn:xmpp:sid:0')?.attrs).toMatchObject({ by: 'lobby@rooms.x', id: '01HZZZZZZZ00ABCDEFG' });
    expect(m?.getChildText('body')).toBe('hi');
  });

  it("an occupant's own message keeps the id it sent; other events show their event id", () => {
    const own = event({ origin: { proto: 'xmpp', via: 'rooms', ids: { 'xmpp.id': 'a@x/m1', 'xmpp.originId': 'a@x/o1', 'xmpp.occupantId': 'occ' } } });
    expect(visibleId(own, 'rooms')).toBe('m1');
    const m = renderEvent({ event: own, roomJid: 'lobby@rooms.x', nick: 'a', via: 'rooms', occupantId: 'occ' });
    expect(m?.getChild('origin-id', 'urn:xmpp:sid:0')?.attrs['id']).toBe('o1');
    expect(m?.getChild('occupant-id', 'urn:xmpp:occupant-id:0')?.attrs['id']).toBe('occ');
    expect(visibleId(event({}), 'rooms')).toBe('01HZZZZZZZ00ABCDEFG');
  });

  it('prints the Prosody Component block with the secret placeholder and the listener port', () => {
    const text = componentConfigSnippet({ domain: 'rooms.example.org', service: 'xmpp://127.0.0.1:5348' });
    expect(text).toContain('Component "rooms.example.org"');
    expect(text).toContain('component_ports = { 5348 }');
    expect(text).toContain('component_secret');
    expect(text).not.toContain('"muc"\n');
  });
});

describe('xmpp-rooms inbound actions', () => {
  it('reads corrections, retractions, reactions, markers and replies; nothing for chat states', async () => {
    const { parseAction } = await import('../../../adapters/xmpp-rooms/parse.js');
    const m = (...children: ReturnType<typeof xml>[]) => xml('message', { type: 'groupchat' }, ...children);
    expect(parseAction(m(xml('body', {}, 'fixed'), xml('replace', { xmlns: 'urn:xmpp:message-correct:0', id: 'm1' })))).toEqual({ ok: true, action: { kind: 'edit', body: 'fixed', replaces: 'm1' } });
    expect(parseAction(m(xml('replace', { xmlns: 'urn:xmpp:message-correct:0', id: 'm1' })))).toMatchObject({ ok: false });
    expect(parseAction(m(xml('retract', { xmlns: 'urn:xmpp:message-retract:1', id: 'S' })))).toEqual({ ok: true, action: { kind: 'retraction', redacts: 'S' } });
    expect(parseAction(m(xml('reactions', { xmlns: 'urn:xmpp:reactions:0', id: 'S' }, xml('reaction', {}, '👍'), xml('reaction', {}, '👍'))))).toEqual({ ok: true, action: { kind: 'reaction', reactsTo: 'S', keys: ['👍'] } });
    expect(parseAction(m(xml('displayed', { xmlns: 'urn:xmpp:chat-markers:0', id: 'S' })))).toEqual({ ok: true, action: { kind: 'marker', upTo: 'S' } });
    expect(parseAction(m(xml('active', { xmlns: 'http://jabber.org/protocol/chatstates' })))).toBeUndefined();
    const quote = '> 🐱 said\n';
    const reply = m(
      xml('body', {}, `${quote}yes`),
      xml('reply', { xmlns: 'urn:xmpp:reply:0', id: 'S' }),
      xml('fallback', { xmlns: 'urn:xmpp:fallback:0', for: 'urn:xmpp:reply:0' }, xml('body', { start: '0', end: String(Array.from(quote).length) })),
    );
    // offsets count code points: the emoji is one
    expect(parseAction(reply)).toEqual({ ok: true, action: { kind: 'message', body: 'yes', replyTo: 'S' } });
  });
});

describe('xmpp-rooms flood bucket', () => {
  it('gives the burst at once, then perSecond', async () => {
    const { createState, takeToken } = await import('../../../adapters/xmpp-rooms/state.js');
    const state = createState();
    const limit = { perSecond: 2, burst: 3 };
    expect([0, 0, 0, 0].map(() => takeToken(state, 'k', limit, 1000))).toEqual([true, true, true, false]);
    expect(takeToken(state, 'k', limit, 1400)).toBe(false);
    expect(takeToken(state, 'k', limit, 1500)).toBe(true);
    expect(takeToken(state, 'other', limit, 1500)).toBe(true);
  });
});

describe('xmpp-rooms sender nicks', () => {
  it('a sender from another protocol gets its display name, made unique against occupants and other senders, and keeps it', async () => {
    const { senderNick } = await import('../../../adapters/xmpp-rooms/identity.js');
    const room = { room: 'lobby', jid: 'lobby@rooms.x', name: undefined, occupants: new Map(), nicks: new Map<string, string>() };
    room.occupants.set('alice', { nick: 'alice', bare: 'alice@x', user: 'alice', occupantId: 'o', sessions: new Map() });
    const from = (uid: string, display: string) =>
      ({ eventId: 'E', sender: { uid, proto: 'api', native: uid, display, auth: 'api-token' }, origin: { proto: 'api', via: 'api', ids: {} } }) as unknown as LogEvent;
    expect(senderNick(room, from('xmpp:alice@x', 'alice'))).toBe('alice');
    expect(senderNick(room, from('api:alice', 'alice'))).toBe('alice (2)');
    expect(senderNick(room, from('matrix:@alice:hs', 'alice'))).toBe('alice (3)');
    expect(senderNick(room, from('api:alice', 'Alice the Second'))).toBe('alice (2)');
    expect(senderNick(room, from('api:carol', 'Carol'))).toBe('Carol');
  });
});

describe('xmpp-rooms room index', () => {
  it('follows the links, keeps occupants of rooms that stay, and reports a second room on a taken local part', async () => {
    const { createState, syncRooms } = await import('../../../adapters/xmpp-rooms/state.js');
    const state = createState();
    expect(syncRooms(state, 'rooms.x', [{ room: 'b', target: 'hall', name: undefined }, { room: 'a', target: 'hall', name: undefined }, { room: 'c', target: 'ops', name: 'Ops' }])).toEqual(['b']);
    expect(state.rooms.get('hall')?.room).toBe('a');
    state.rooms.get('ops')?.occupants.set('n', { nick: 'n', bare: 'n@x', user: 'u', occupantId: 'o', sessions: new Map() });
    expect(syncRooms(state, 'rooms.x', [{ room: 'c', target: 'ops', name: 'Operations' }])).toEqual([]);
    expect([...state.rooms.keys()]).toEqual(['ops']);
    expect(state.rooms.get('ops')?.occupants.size).toBe(1);
    expect(state.rooms.get('ops')?.name).toBe('Operations');
  });
});
