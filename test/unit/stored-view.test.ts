// A sync page's events are written from the stored JSON text (format 2 or 3)
// without decoding it (issue 19, point 1): the text must be the device view
// that decoding and http/view.ts viewFor give, member for member, in the
// same order, for every kind and every optional part, with the sending
// device's txnId and without the hidden origin ids.
import { describe, expect, it } from 'vitest';
import type { EventDraft, LogEvent } from '../../src/core/event.js';
import { arrayElements, decodeFields, encodeEvent, encodeFields, storedText3, viewJsonOfEvent, viewJsonOfStored } from '../../src/eventlog/codec.js';
import { deviceView, syncPageBody, viewFor } from '../../src/http/view.js';

const awkward = 'q"uo\\te \\" \u0000 \u2028 é 🚀 </script> \\';
const sender = { uid: `u:${awkward}`, proto: 'api', native: awkward, display: awkward, auth: 'api-token', puppet: true } as const;
const plain = { uid: 'mx:@a:x', proto: 'matrix', native: '@a:x', auth: 'server' } as const;

const drafts = [
  {
    v: 1,
    kind: 'message',
    idem: `api:${awkward}`,
    room: 'r1',
    sender,
    origin: { proto: 'api', via: 'api', ids: { 'api.txnId': awkward, 'api.device': 'dev1', [awkward]: 'x' }, historical: true },
    ts: { received: 1_700_000_000_000, origin: 1_699_999_999_999 },
    content: { body: awkward, formatted: `<b>${awkward}</b>`, format: 'html' },
    rel: { replyTo: '01ABCDEF' },
  },
  { v: 1, kind: 'message', idem: 'a:1', room: 'r2', sender: plain, origin: { proto: 'matrix', via: 'matrix', ids: { 'matrix.eventId': '$e' } }, ts: { received: 1 }, content: { body: '' } },
  { v: 1, kind: 'message', idem: 'a:2', room: 'r2', sender: plain, origin: { proto: 'api', via: 'api', ids: { 'api.txnId': 't2', 'api.device': 'dev2' } }, ts: { received: 2 }, content: { body: 'x' } },
  { v: 1, kind: 'message', idem: 'a:3', room: 'r2', sender: plain, origin: { proto: 'api', via: 'api', ids: { 'api.device': 'dev1' } }, ts: { received: 3 }, content: { body: 'no txn id' } },
  { v: 1, kind: 'edit', idem: 'a:4', room: 'r2', sender: plain, origin: { proto: 'xmpp', via: 'xmpp', ids: {} }, ts: { received: 4 }, content: { body: 'new' }, rel: { replaces: '01ABCDEF' } },
  { v: 1, kind: 'retraction', idem: 'a:5', room: 'r2', sender: plain, origin: { proto: 'xmpp', via: 'xmpp', ids: {} }, ts: { received: 5 }, rel: { redacts: '01ABCDEF' } },
  { v: 1, kind: 'reaction', idem: 'a:6', room: 'r2', sender: plain, origin: { proto: 'matrix', via: 'matrix', ids: {} }, ts: { received: 6 }, rel: { reactsTo: '01ABCDEF' }, reaction: { keys: ['👍', awkward] } },
  { v: 1, kind: 'marker', idem: 'a:7', room: 'r2', sender: plain, origin: { proto: 'matrix', via: 'matrix', ids: {} }, ts: { received: 7 }, content: { body: 'marker body' } },
  { v: 1, kind: 'receipt', idem: 'a:8', room: 'r2', sender: plain, origin: { proto: 'matrix', via: 'matrix', ids: {} }, ts: { received: 8 }, receipt: { upTo: '01ABCDEF' } },
  { v: 1, kind: 'presence', idem: 'a:9', room: 'r2', sender: plain, origin: { proto: 'xmpp', via: 'xmpp', ids: {} }, ts: { received: 9 }, presence: { state: 'away', status: awkward } },
  { v: 1, kind: 'typing', idem: 'a:10', room: 'r2', sender: plain, origin: { proto: 'xmpp', via: 'xmpp', ids: {} }, ts: { received: 10 }, typing: { active: true } },
  // format 3 stores these without the key's end (an origin id) and the native id's start (the uid)
  { v: 1, kind: 'message', idem: 'api:dev1:txn-0001', room: 'r2', sender: { uid: 'alice', proto: 'api', native: 'alice/dev1', auth: 'api-token' }, origin: { proto: 'api', via: 'api', ids: { 'api.device': 'dev1', 'api.txnId': 'txn-0001' } }, ts: { received: 1_796_600_000_000 }, content: { body: 'mine' } },
  { v: 1, kind: 'message', idem: `mx:$${awkward}`, room: 'r2', sender: { uid: awkward, proto: 'matrix', native: `${awkward}:hs`, auth: 'server' }, origin: { proto: 'matrix', via: 'hs', ids: { 'mx.eventId': `$${awkward}` } }, ts: { received: 12 }, content: { body: 'theirs' } },
  { v: 1, kind: 'telemetry', idem: 'a:11', room: 'r2', sender: plain, origin: { proto: 'mqtt', via: 'mqtt', ids: { 'mqtt.topic': 'a/b' } }, ts: { received: 11 }, telemetry: { contentType: 'application/json', payload: '{"t":1}' } },
] as unknown as EventDraft[];

function logEvent(draft: EventDraft, i: number): LogEvent {
  // what the log hands out: the stored form decoded, then eventId and cursor
  return Object.assign({}, decodeFields(draft.room, encodeFields(draft)), { eventId: `01EVENT${i}`, cursor: `cur"${i}` }) as LogEvent;
}

describe('device view written from the stored text', () => {
  it.each(['dev1', 'dev2', ''])('is viewFor as JSON, member for member and in order, for every kind (device %j)', (deviceId) => {
    drafts.forEach((draft, i) => {
      const event = logEvent(draft, i);
      const expected = JSON.stringify(viewFor(event, deviceId));
      expect(viewJsonOfStored(encodeEvent(draft), draft.room, event.eventId, event.cursor, deviceView(deviceId))).toBe(expected);
      expect(viewJsonOfEvent(event, deviceView(deviceId))).toBe(expected);
      // format 3, the entry id's milliseconds at, before and after the received time
      for (const delta of [0, 4, -9]) {
        const base = draft.ts.received - delta;
        expect(viewJsonOfStored(storedText3(draft, base), draft.room, event.eventId, event.cursor, deviceView(deviceId), base)).toBe(expected);
      }
    });
  });

  it('gives the sending device its txnId and no one the hidden ids', () => {
    const [first] = drafts as [EventDraft];
    const mine = JSON.parse(viewJsonOfStored(encodeEvent(first), first.room, 'e', 'c', deviceView('dev1')) ?? '{}') as { unsigned?: unknown; origin: { ids: object } };
    const theirs = JSON.parse(viewJsonOfStored(encodeEvent(first), first.room, 'e', 'c', deviceView('dev9')) ?? '{}') as { unsigned?: unknown; origin: { ids: object } };
    expect(mine.unsigned).toEqual({ txnId: awkward });
    expect(theirs.unsigned).toBeUndefined();
    expect(mine.origin.ids).toEqual({ [awkward]: 'x' });
    expect(theirs.origin.ids).toEqual({ [awkward]: 'x' });
  });

  it('gives up (undefined) on text that is not format 2, so the caller decodes it', () => {
    for (const text of ['', '{}', '[]', '[1,2]', '["a"', '[9999999,"i","u","n",null,"v",{},1]', 'x'.repeat(10)]) {
      expect(viewJsonOfStored(text, 'r', 'e', 'c', deviceView('d'))).toBeUndefined();
    }
  });

  it('gives up (undefined) on text that is not format 3 given an id', () => {
    for (const text of ['', '[]', '[1,2]', '[0,-5,"i","u","n",null,"v",{}]', '[0,1.5,"i","u","n",null,"v",{}]', '["x",0,"i","u","n",null,"v",{}]', '[-,0,"i","u","n",null,"v",{}]']) {
      expect(viewJsonOfStored(text, 'r', 'e', 'c', deviceView('d'), 5)).toBeUndefined();
    }
    // a format-3 flag in a format-2 head
    expect(viewJsonOfStored(`[${9 * 4 * 5 * 4 * 4},"i","u","n",null,"v",{},1]`, 'r', 'e', 'c', deviceView('d'))).toBeUndefined();
  });
});

describe('array elements', () => {
  it('cuts a JSON array into its element texts, strings with escaped quotes and backslashes included', () => {
    const values = [1, 'a"b', 'c\\', '\\"', { k: ['x]', '}'] }, null, [[]], 'é🚀', -2.5e-7, true];
    expect(arrayElements(JSON.stringify(values))).toEqual(values.map((v) => JSON.stringify(v)));
    expect(arrayElements('[]')).toEqual([]);
  });

  it('refuses what is not one array', () => {
    for (const text of ['', '{}', '[1', '[1,]', '[,1]', '[1,]x', '["a]', '[1]]', '[{"a":1]']) expect(arrayElements(text)).toBeUndefined();
  });
});

describe('syncPageBody', () => {
  it('is the UTF-8 of the page JSON text, for any text (non-ASCII, astral, a lone surrogate) and an empty page', () => {
    const events = drafts.map((d, i) => viewJsonOfEvent({ ...d, eventId: `01E${i}`, cursor: `c${i}` } as LogEvent, deviceView('dev1')));
    events.push(JSON.stringify({ odd: 'lone \ud800 surrogate', wide: '\u{1F680}\u00e9' }).replace('\\ud800', '\ud800'));
    for (const page of [events, events.slice(0, 1), []]) {
      for (const limited of [true, false]) {
        const text = `{"events":[${page.join(',')}],"next":${JSON.stringify(`n-${awkward}`)},"limited":${limited}}`;
        const body = syncPageBody(page, `n-${awkward}`, limited);
        expect(body.equals(Buffer.from(text, 'utf8'))).toBe(true);
        if (page.length > 0 && !page.some((e) => e.includes('\ud800'))) expect(JSON.parse(body.toString('utf8'))).toEqual({ events: page.map((e) => JSON.parse(e) as unknown), next: `n-${awkward}`, limited });
      }
    }
  });
});
