// The Redis stored form. Format 2 (one field `e`, the event as one JSON
// array) reads back every draft; format 1 (ten fields, what logs written
// before hold) still reads back the same drafts. Format 1's encodeValues
// writes sender and origin tuples by hand (no intermediate arrays), so they
// must stay exactly JSON.stringify's text. Id-map fields are 14 plain ASCII
// characters. Format 3 (one field `f`) is format 2 with the received time
// as an offset from the entry id's milliseconds, an idempotency key without
// an end that is one of its origin ids, and a native id without a start that
// is its uid: it reads back every draft too, whatever the offset's sign.
import { describe, expect, it } from 'vitest';
import type { EventDraft } from '../../src/core/event.js';
import { EVENT_FIELD, EVENT_FIELD_3, FIELD_NAMES, decodeFields, decodeStored, encodeEvent, encodeFields, encodeFieldsV1, encodeValues, storedText3 } from '../../src/eventlog/codec.js';
import { idField } from '../../src/eventlog/redis-backend.js';

const awkward = 'q"uo\\te \u0000 \u2028 é 🚀 </script>';

const drafts: EventDraft[] = [
  {
    v: 1,
    kind: 'message',
    idem: `api:${awkward}`,
    room: 'r1',
    sender: { uid: `u:${awkward}`, proto: 'api', native: awkward, display: awkward, auth: 'api-token', puppet: true },
    origin: { proto: 'api', via: 'api', ids: { 'api.txnId': awkward, [awkward]: 'x' }, historical: true },
    ts: { received: 1_700_000_000_000, origin: 1_699_999_999_999 },
    content: { body: awkward, formatted: `<b>${awkward}</b>`, format: 'html' },
    rel: { replyTo: '01ABCDEF' },
  },
  {
    v: 1,
    kind: 'reaction',
    idem: 'mx:1',
    room: 'r2',
    sender: { uid: 'mx:@a:x', proto: 'matrix', native: '@a:x', auth: 'server' },
    origin: { proto: 'matrix', via: 'matrix', ids: {} },
    ts: { received: 1 },
    rel: { reactsTo: '01ABCDEF' },
    reaction: { keys: ['👍', awkward] },
  },
];

describe('event codec', () => {
  it.each(drafts.map((d) => [d.kind, d] as const))('stores a %s as one field and reads the draft back', (_kind, draft) => {
    const fields = encodeFields(draft);
    expect(fields).toHaveLength(2);
    expect(fields[0]).toBe(EVENT_FIELD);
    expect(decodeFields(draft.room, fields)).toEqual(draft);
  });

  it.each(drafts.map((d) => [d.kind, d] as const))('format 1: writes %s sender and origin as JSON.stringify would, and a format-1 entry still reads back', (_kind, draft) => {
    const values = encodeValues(draft);
    expect(values).toHaveLength(FIELD_NAMES.length);
    const s = draft.sender;
    const o = draft.origin;
    expect(values[2]).toBe(JSON.stringify([s.uid, s.proto, s.native, s.display ?? null, s.auth, s.puppet ? 1 : 0]));
    expect(values[3]).toBe(JSON.stringify([o.proto, o.via, o.ids, o.historical ? 1 : 0]));
    expect(decodeFields(draft.room, encodeFieldsV1(draft))).toEqual(draft);
  });

  it('reads both formats to the same draft, and keeps optional parts absent', () => {
    const bare: EventDraft = {
      v: 1,
      kind: 'retraction',
      idem: 'api:d:1',
      room: 'r3',
      sender: { uid: 'u', proto: 'api', native: 'u', auth: 'api-token' },
      origin: { proto: 'api', via: 'api', ids: {} },
      ts: { received: 5 },
      rel: { redacts: '01ABCDEF' },
    } as EventDraft;
    for (const draft of [...drafts, bare]) {
      const fromV2 = decodeFields(draft.room, encodeFields(draft));
      const fromV1 = decodeFields(draft.room, encodeFieldsV1(draft));
      expect(fromV2).toEqual(fromV1);
      // the same keys in the same order: JSON served to clients is unchanged
      expect(JSON.stringify(fromV2)).toBe(JSON.stringify(fromV1));
    }
  });
});

describe('format 2 head', () => {
  it('reads back every kind, sender proto, auth, origin proto, puppet and historical', () => {
    const kinds = ['message', 'edit', 'retraction', 'reaction', 'marker', 'receipt', 'presence', 'typing', 'telemetry'] as const;
    const protos = ['xmpp', 'matrix', 'mqtt', 'api'] as const;
    const auths = ['server', 'occupant-id', 'broker-acl', 'api-token', 'claimed'] as const;
    const base = drafts[0] as EventDraft;
    let n = 0;
    for (const kind of kinds)
      for (const sproto of protos)
        for (const auth of auths)
          for (const oproto of protos)
            for (const flags of [0, 1, 2, 3]) {
              const sender = { ...base.sender, proto: sproto, auth, puppet: flags % 2 === 1 };
              const origin = { ...base.origin, proto: oproto, historical: flags >= 2 };
              if (!sender.puppet) delete (sender as { puppet?: boolean }).puppet;
              if (!origin.historical) delete (origin as { historical?: boolean }).historical;
              const draft = { ...base, kind, sender, origin } as EventDraft;
              const back = decodeFields(draft.room, encodeFields(draft));
              expect([back.kind, back.sender, back.origin]).toEqual([kind, sender, origin]);
              n++;
            }
    expect(n).toBe(9 * 4 * 5 * 4 * 4);
  });

  it('refuses a head it does not know', () => {
    expect(() => decodeFields('r', [EVENT_FIELD, JSON.stringify([9 * 4 * 5 * 4 * 4, 'i', 'u', 'n', null, 'v', {}, 1])])).toThrow(/unknown head/);
  });
});

describe('id-map fields', () => {
  it('are 14 base64url characters (14 bytes, nothing to escape in JSON), whatever the key', () => {
    for (const key of ['', 'r1\u0000api:1', awkward, 'x'.repeat(5000)]) {
      const field = idField(key);
      expect(field).toMatch(/^[A-Za-z0-9_-]{14}$/);
      expect(JSON.stringify(field)).toBe(`"${field}"`);
      expect(idField(key)).toBe(field);
    }
  });

  it('do not collide over many keys', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 100_000; i++) seen.add(idField(`r1\u0000mqtt:dev:${i}`));
    expect(seen.size).toBe(100_000);
  });
});

/** A draft of the bench's shape (test/bench/eventlog.ts) with the given parts replaced. */
function apiMessage(parts: { idem?: string; uid?: string; native?: string; ids?: Record<string, string>; received?: number }): EventDraft {
  return {
    v: 1,
    kind: 'message',
    idem: parts.idem ?? 'api:dev-1234:txn-12345',
    room: 'ops',
    sender: { uid: parts.uid ?? 'alice', proto: 'api', native: parts.native ?? 'alice/dev-1234', display: 'Alice', auth: 'api-token' },
    origin: { proto: 'api', via: 'api', ids: parts.ids ?? { 'api.deviceId': 'dev-1234', 'api.txnId': 'txn-12345' } },
    ts: { received: parts.received ?? 1_796_600_000_000 },
    content: { body: 'The pump in building 7 reported a pressure drop.' },
  } as EventDraft;
}

describe('format 3', () => {
  const cases: Array<[string, EventDraft]> = [
    ...drafts.map((d) => [d.kind, d] as [string, EventDraft]),
    ['API message (idem ends with the txnId, native starts with the uid)', apiMessage({})],
    ['Matrix-shaped key ending with the event id', apiMessage({ idem: 'mx:$0123456789abcdefghijklmnopqrstuvwxyzABCDEFG', ids: { 'mx.eventId': '$0123456789abcdefghijklmnopqrstuvwxyzABCDEFG' } })],
    ['key equal to an id (nothing left would be its start: kept whole)', apiMessage({ idem: 'txn-12345', ids: { 'api.txnId': 'txn-12345' } })],
    ['key ending with two ids (the longer is left out)', apiMessage({ idem: 'k:abcd-efgh', ids: { a: 'efgh', b: 'abcd-efgh', c: 'h' } })],
    ['integer-like id keys (JSON keeps them first)', apiMessage({ idem: 'k:zzzz', ids: { b: 'yyyy', '7': 'zzzz', '1': 'xxxx' } })],
    ['key whose id end begins with a low surrogate', apiMessage({ idem: 'k:\ud83d\ude80abcd', ids: { a: '\ude80abcd' } })],
    ['key with a lone surrogate (made well-formed, no reference)', apiMessage({ idem: 'k:\ud83dabcd', ids: { a: 'abcd' } })],
    ['native equal to the uid', apiMessage({ native: 'alice' })],
    ['native not starting with the uid', apiMessage({ native: 'bob/alice' })],
    ['uid ending inside a surrogate pair of the native id', apiMessage({ uid: 'a\ud83d', native: 'a\ud83d\ude80/x' })],
    ['empty uid', apiMessage({ uid: '', native: 'n' })],
  ];

  it.each(cases)('reads back %s whatever the offset from the entry id', (_what, draft) => {
    const expected = decodeFields(draft.room, encodeFields(draft));
    for (const delta of [0, 3, -3, 1_000_000_007, -draft.ts.received]) {
      const base = draft.ts.received - delta;
      const text = storedText3(draft, base);
      expect(text.startsWith(`[${delta},`)).toBe(true);
      const back = decodeStored(draft.room, text, base);
      expect(back).toEqual(expected);
      // same keys in the same order as format 2 gives
      expect(JSON.stringify(back)).toBe(JSON.stringify(expected));
      expect(decodeFields(draft.room, [EVENT_FIELD_3, text], base)).toEqual(expected);
    }
  });

  it('leaves out the key end and the native start it can, and the received time', () => {
    const draft = apiMessage({});
    const text = storedText3(draft, draft.ts.received + 2);
    expect(text).toContain('"api:dev-1234:"');
    expect(text.match(/txn-12345/g)).toHaveLength(1);
    expect(text).toContain('"/dev-1234"');
    expect(text).not.toContain(String(draft.ts.received));
    // the bench's event: 13 digits of time become 2 (`-2`), 9 of key and 5 of native id go; the head's flags add 2 digits
    const v2 = encodeEvent(draft).length;
    expect(v2 - text.length).toBe(11 + 9 + 5 - 2);
  });

  it('needs the entry id: a format-3 field list read without it is an error, not a wrong time', () => {
    const draft = apiMessage({});
    expect(() => decodeFields('ops', [EVENT_FIELD_3, storedText3(draft, draft.ts.received)])).toThrow(/without its id/);
  });

  it('format 2 refuses a head with format 3 flags', () => {
    const flagged = 9 * 4 * 5 * 4 * 4;
    expect(() => decodeFields('r', [EVENT_FIELD, JSON.stringify([flagged, 'i', 'u', 'n', null, 'v', {}, 1])])).toThrow(/unknown head/);
    expect(decodeStored('r', JSON.stringify([0, flagged, 'i', 'u', 'n', null, 'v', {}]), 5).sender.native).toBe('un');
    // a key end that names an origin id the event does not have
    expect(() => decodeStored('r', JSON.stringify([0, 2 * flagged, 'i', 'u', 'n', null, 'v', {}]), 5)).toThrow(/origin id 1 of 0/);
  });
});
