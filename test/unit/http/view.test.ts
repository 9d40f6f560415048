import { describe, expect, it } from 'vitest';
import type { LogEvent } from '../../../src/core/event.js';
import { Value } from '@sinclair/typebox/value';
import { parseEventDraft } from '../../../src/core/event.js';
import { EventView } from '../../../src/http/schemas.js';
import { ViewCache, viewFor } from '../../../src/http/view.js';

function event(ids: Record<string, string>): LogEvent {
  return {
    v: 1,
    kind: 'message',
    idem: 'api:d1:t-42',
    room: 'ops',
    sender: { uid: 'alice', proto: 'api', native: 'alice', auth: 'api-token' },
    origin: { proto: 'api', via: 'api', ids },
    ts: { received: 1 },
    content: { body: 'hi' },
    eventId: '01M80G7TVM030000000',
    cursor: 'AgQD9NaPiKA0ANrvYL8',
  };
}

describe('event view', () => {
  it('shows the txnId to the sending device only, and hides the idempotency key and API ids from all', () => {
    const e = event({ 'api.txnId': 't-42', 'api.device': 'd1' });
    const mine = viewFor(e, 'd1');
    expect(mine.unsigned).toEqual({ txnId: 't-42' });
    expect(mine.origin.ids).toEqual({});
    expect('idem' in mine).toBe(false);
    const theirs = viewFor(e, 'd2');
    expect(theirs.unsigned).toBeUndefined();
    expect(JSON.stringify(theirs)).not.toContain('t-42');
    expect(JSON.stringify(theirs)).not.toContain('d1');
    expect(theirs).toMatchObject({ eventId: e.eventId, cursor: e.cursor, content: { body: 'hi' } });
  });

  it('gives the same JSON text, key for key in order, as the view written with object rest and spread', () => {
    const reference = (e: LogEvent, deviceId: string): unknown => {
      const { idem: _idem, ...rest } = e;
      const ids = e.origin.ids;
      const priv = (k: string) => k === 'api.txnId' || k === 'api.device';
      const view = Object.keys(ids).some(priv) ? { ...rest, origin: { ...e.origin, ids: Object.fromEntries(Object.entries(ids).filter(([k]) => !priv(k))) } } : rest;
      return ids['api.device'] === deviceId ? { ...view, unsigned: { txnId: ids['api.txnId'] } } : view;
    };
    const idSets: Array<Record<string, string>> = [{}, { 'api.txnId': 't-42', 'api.device': 'd1' }, { 'mx.eventId': '$abc', 'api.txnId': 't-1' }];
    for (const ids of idSets) {
      const e = { ...event(ids), rel: { replyTo: '01M80G7TVM030000001' } } as LogEvent;
      for (const device of ['d1', 'd2']) expect(JSON.stringify(viewFor(e, device))).toBe(JSON.stringify(reference(e, device)));
    }
  });

  it('keeps the native ids of other protocols', () => {
    const e = event({ 'mx.eventId': '$abc', 'xmpp.stanzaId': 's1' });
    expect(viewFor(e, 'd1').origin.ids).toEqual({ 'mx.eventId': '$abc', 'xmpp.stanzaId': 's1' });
    expect(viewFor(e, 'd1').unsigned).toBeUndefined();
  });

  it('serialises the shared view once and the sender view apart', () => {
    const cache = new ViewCache(2);
    const e = event({ 'api.txnId': 't-42', 'api.device': 'd1' });
    const a = cache.json(e, 'd2');
    expect(cache.json(e, 'd3')).toBe(a);
    expect(JSON.parse(a)).toEqual(viewFor(e, 'd2'));
    expect(JSON.parse(cache.json(e, 'd1'))).toEqual(viewFor(e, 'd1'));
    // bounded: older entries are evicted and recomputed identically
    cache.json({ ...e, eventId: 'B' }, 'd2');
    cache.json({ ...e, eventId: 'C' }, 'd2');
    expect(cache.json(e, 'd2')).toBe(a);
  });

  it('shows the undecryptable marker of a message with the notice as its body', () => {
    const e = { ...event({}), content: { body: '[An encrypted message could not be read]', undecryptable: { reason: 'omemo' as const, scheme: 'eu.siacs.conversations.axolotl' } } };
    const { eventId: _e, cursor: _c, ...draft } = e;
    expect(() => parseEventDraft(draft)).not.toThrow();
    expect(viewFor(e, 'd1')).toMatchObject({ content: { body: '[An encrypted message could not be read]', undecryptable: { reason: 'omemo', scheme: 'eu.siacs.conversations.axolotl' } } });
    expect(Value.Check(EventView, JSON.parse(JSON.stringify(viewFor(e, 'd1'))))).toBe(true);
  });
});
