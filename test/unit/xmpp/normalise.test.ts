// XMPP normalisation on real-shaped stanza fixtures (test/fixtures/xmpp).
import { describe, expect, it } from 'vitest';
import { ECHO_ID_KEY } from '../../../src/core/adapter.js';
import { parseEventDraft } from '../../../src/core/event.js';
import { TRUNCATION_MARKER } from '../../../src/core/text.js';
import { idem, lookupKey, rawId, rawStanzaId, scopedId, senderScope, stanzaIdKey } from '../../../adapters/xmpp/ids.js';
import { normaliseMessage, openEnvelope, refsOf, toDraft, type Normalised, type NormaliseContext, type Parsed, type Ref, type RoomFacts } from '../../../adapters/xmpp/normalise.js';
import { parseXml } from '../../../adapters/xmpp/xml.js';
import { ACCOUNT, ALICE, ROOM, stanza } from '../../fixtures/xmpp/index.js';

const NOW = 1_790_000_000_000;
const ROOM_FACTS: RoomFacts = { nick: 'syncgate', occupantId: 'OCC-BRIDGE=', stanzaIds: true, occupantIds: true };

function ctx(overrides: Partial<NormaliseContext> = {}, facts: RoomFacts | undefined = ROOM_FACTS): NormaliseContext {
  return { account: ACCOUNT, now: NOW, accountStanzaIds: true, maxBodyChars: 65_536, room: (r) => (r === ROOM ? facts : undefined), ...overrides };
}

/** Opens the envelope of a live stanza and normalises it. */
function live(name: string, c: NormaliseContext = ctx()): Normalised {
  const env = openEnvelope(stanza(name), ACCOUNT);
  if (env.ok !== true) return env;
  if (env.type !== 'message') throw new Error(`${name} is an archive result`);
  return normaliseMessage(env.message, env.source, c);
}

function ok(n: Normalised): Parsed {
  if (n.ok !== true) throw new Error(`expected a parsed message, got ${JSON.stringify(n)}`);
  return n.value;
}

/** The one reference a parsed message needs resolved. */
function onlyRef(p: Parsed): [string, Ref] {
  const refs = refsOf(p.action);
  expect(refs).toHaveLength(1);
  return refs[0] as [string, Ref];
}

const aliceScope = senderScope(ROOM, 'o:OCC-ALICE=');

describe('groupchat messages', () => {
  it('maps a MUC message: occupant-id identity, room stanza-id idem, scoped native ids, XEP-0393 styling', () => {
    const p = ok(live('muc-message'));
    expect(p.chat).toBe('groupchat');
    expect(p.conversation).toBe(ROOM);
    expect(p.fromUs).toBe(false);
    expect(p.echoOf).toBeUndefined();
    expect(p.sender).toEqual({ uid: `xmpp:${aliceScope}`, proto: 'xmpp', native: `${ROOM}/Alice`, display: 'Alice', auth: 'occupant-id' });
    expect(p.idem).toBe(idem.muc(ROOM, 'SID-1'));
    expect(p.ids).toEqual({
      'xmpp.id': scopedId(aliceScope, 'a1b2c3'),
      'xmpp.originId': scopedId(aliceScope, 'a1b2c3'),
      'xmpp.stanzaId': `${ROOM}/SID-1`,
      'xmpp.stanzaIdBy': ROOM,
      'xmpp.occupantId': 'OCC-ALICE=',
    });
    expect(rawId(p.ids['xmpp.id'])).toBe('a1b2c3');
    expect(rawStanzaId(p.ids['xmpp.stanzaId'])).toBe('SID-1');
    expect(p.archived).toEqual({ archive: ROOM, id: 'SID-1' });
    expect(p.action).toEqual({ kind: 'message', content: { body: 'Hello *everyone*', format: 'xep0393', formatted: 'Hello *everyone*' } });
    expect(p.ts).toEqual({ received: NOW });
    expect(p.historical).toBe(false);

    const draft = toDraft(p, { room: 'general', via: 'xmpp', targets: {} });
    expect(() => parseEventDraft(draft)).not.toThrow();
    expect(draft).toMatchObject({ kind: 'message', room: 'general', origin: { proto: 'xmpp', via: 'xmpp' } });
  });

  it('without trusted occupant ids the nick is the identity, marked as claimed, and stanza-ids are not trusted without sid', () => {
    const p = ok(live('muc-message', ctx({}, { nick: 'syncgate', stanzaIds: false, occupantIds: false })));
    expect(p.sender.auth).toBe('claimed');
    expect(p.sender.uid).toBe(`xmpp:${senderScope(ROOM, 'n:Alice')}`);
    expect(p.ids['xmpp.occupantId']).toBeUndefined();
    expect(p.ids['xmpp.stanzaId']).toBeUndefined();
    expect(p.idem).toBe(idem.origin(senderScope(ROOM, 'n:Alice'), 'a1b2c3'));
  });

  it('recognises our own reflection by occupant id and reports our event id for the echo check', () => {
    const p = ok(live('muc-reflection'));
    expect(p.fromUs).toBe(true);
    expect(p.echoOf).toBe('01JEVENT000000000000000001');
    expect(p.ids[ECHO_ID_KEY]).toBe('01JEVENT000000000000000001');
    expect(p.ids['xmpp.stanzaId']).toBe(`${ROOM}/SID-2`);
  });

  it('a correction references the original by the corrector’s own scoped id and must come from the same sender', () => {
    const p = ok(live('muc-correction'));
    expect(p.action.kind).toBe('edit');
    const [name, ref] = onlyRef(p);
    expect(name).toBe('replaces');
    expect(ref.sameSender).toBe(true);
    expect(ref.keys).toEqual([lookupKey('xmpp.originId', scopedId(aliceScope, 'a1b2c3')), lookupKey('xmpp.id', scopedId(aliceScope, 'a1b2c3'))]);
    expect(toDraft(p, { room: 'general', via: 'xmpp', targets: {} })).toBeUndefined();
    const draft = toDraft(p, { room: 'general', via: 'xmpp', targets: { replaces: 'E1' } });
    expect(draft).toMatchObject({ kind: 'edit', rel: { replaces: 'E1' }, content: { body: 'Hello everybody' } });
    expect(() => parseEventDraft(draft)).not.toThrow();
  });

  it('an impostor under the same nick has another identity and so other lookup keys', () => {
    const p = ok(live('muc-correction-impostor'));
    expect(p.sender.uid).not.toBe(`xmpp:${aliceScope}`);
    const [, ref] = onlyRef(p);
    expect(ref.keys.some((k) => k.includes('OCC-ALICE'))).toBe(false);
  });

  it('a retraction (XEP-0424) goes by the room stanza-id, with the retractor’s origin-id as fallback', () => {
    const p = ok(live('muc-retraction'));
    expect(p.action.kind).toBe('retraction');
    const [name, ref] = onlyRef(p);
    expect(name).toBe('redacts');
    expect(ref.keys[0]).toBe(stanzaIdKey(ROOM, 'SID-1'));
    expect(ref.sameSender).toBe(true);
    expect(toDraft(p, { room: 'general', via: 'xmpp', targets: { redacts: 'E1' } })).toMatchObject({ kind: 'retraction', rel: { redacts: 'E1' } });
  });

  it('reactions (XEP-0444) are the full set, deduplicated, by the room stanza-id', () => {
    const p = ok(live('muc-reactions'));
    expect(p.action).toMatchObject({ kind: 'reaction', keys: ['👍', '🐢'] });
    const [, ref] = onlyRef(p);
    expect(ref.keys).toEqual([stanzaIdKey(ROOM, 'SID-2')]);
    const draft = toDraft(p, { room: 'general', via: 'xmpp', targets: { reactsTo: 'E2' } });
    expect(draft).toMatchObject({ kind: 'reaction', reaction: { keys: ['👍', '🐢'] }, rel: { reactsTo: 'E2' } });
    expect(() => parseEventDraft(draft)).not.toThrow();
  });

  it('an empty reactions element removes all reactions', () => {
    const msg = parseXml(`<message from="${ROOM}/Alice" type="groupchat" id="x"><reactions id="SID-2" xmlns="urn:xmpp:reactions:0"/><occupant-id id="OCC-ALICE=" xmlns="urn:xmpp:occupant-id:0"/></message>`);
    const p = ok(normaliseMessage(msg, { kind: 'live' }, ctx()));
    expect(p.action).toMatchObject({ kind: 'reaction', keys: [] });
  });

  it('a reply (XEP-0461) strips its fallback by code points, not UTF-16 units', () => {
    const p = ok(live('muc-reply'));
    expect(p.action).toMatchObject({ kind: 'message', content: { body: 'Welcome 🎉' } });
    const [name, ref] = onlyRef(p);
    expect(name).toBe('replyTo');
    expect(ref.keys).toEqual([stanzaIdKey(ROOM, 'SID-1')]);
    expect(toDraft(p, { room: 'general', via: 'xmpp', targets: { replyTo: 'E1' } })).toMatchObject({ rel: { replyTo: 'E1' } });
    // An unknown target leaves a plain message.
    const orphan = toDraft(p, { room: 'general', via: 'xmpp', targets: {} });
    expect(orphan).toMatchObject({ kind: 'message' });
    expect(orphan && 'rel' in orphan ? orphan.rel : undefined).toBeUndefined();
  });

  it('a displayed marker (XEP-0333) moves up to the message with that room stanza-id', () => {
    const p = ok(live('muc-displayed'));
    expect(p.action.kind).toBe('marker');
    expect(p.idem).toBe(idem.origin(aliceScope, 'mk1'));
    expect(toDraft(p, { room: 'general', via: 'xmpp', targets: { upTo: 'E2' } })).toMatchObject({ kind: 'marker', rel: { upTo: 'E2' } });
  });

  it('skips subjects and messages from the room itself', () => {
    expect(live('muc-subject').ok).toBe('skip');
    const fromRoom = parseXml(`<message from="${ROOM}" type="groupchat"><body>Room is now public</body></message>`);
    expect(normaliseMessage(fromRoom, { kind: 'live' }, ctx()).ok).toBe('skip');
  });
});

describe('1:1 messages', () => {
  const aliceOwn = senderScope(ALICE, ALICE);

  it('maps a chat message: server identity with nick, our archive stanza-id (a forged one by the domain is ignored), receipt request', () => {
    const p = ok(live('chat-message'));
    expect(p.chat).toBe('chat');
    expect(p.conversation).toBe(ALICE);
    expect(p.sender).toEqual({ uid: `xmpp:${ALICE}`, proto: 'xmpp', native: ALICE, display: 'Alice A.', auth: 'server' });
    expect(p.idem).toBe(idem.archive(ACCOUNT, 'ASID-1'));
    expect(p.ids['xmpp.stanzaId']).toBe(`${ACCOUNT}/ASID-1`);
    expect(p.ids['xmpp.originId']).toBe(scopedId(aliceOwn, 'c-1'));
    expect(p.receiptFor).toBe('c-1');
    expect(p.action).toEqual({ kind: 'message', content: { body: 'hi bridge' } });
  });

  it('takes the origin time from XEP-0203 delay', () => {
    const p = ok(live('chat-offline'));
    expect(p.ts).toEqual({ origin: Date.parse('2026-11-22T02:41:08Z'), received: NOW });
    expect(p.idem).toBe(idem.archive(ACCOUNT, 'ASID-0'));
  });

  it('keeps http(s) OOB attachments (XEP-0066) and drops other schemes', () => {
    const p = ok(live('chat-oob'));
    expect(p.action).toMatchObject({ kind: 'message', content: { body: 'https://upload.example.org/abc/cat.jpg', attachments: [{ url: 'https://upload.example.org/abc/cat.jpg', name: 'cat.jpg' }] } });
  });

  it('an <unstyled/> body is plain text', () => {
    const p = ok(live('chat-unstyled'));
    expect(p.action).toEqual({ kind: 'message', content: { body: '2 * 3 *is* six' } });
  });

  it('a receipt (XEP-0184) refers to our message by its id', () => {
    const p = ok(live('chat-receipt'));
    expect(p.action.kind).toBe('receipt');
    const [, ref] = onlyRef(p);
    expect(ref.keys[0]).toBe(lookupKey('xmpp.originId', scopedId(senderScope(ALICE, ACCOUNT), '01JEVENT000000000000000007')));
    const draft = toDraft(p, { room: 'dm', via: 'xmpp', targets: { upTo: 'E7' } });
    expect(draft).toMatchObject({ kind: 'receipt', receipt: { type: 'delivered' } });
    expect(() => parseEventDraft(draft)).not.toThrow();
  });

  it('a v0 retraction (fastening) by origin-id in 1:1 refers to the sender’s own message only', () => {
    const p = ok(live('chat-retraction-v0'));
    const [, ref] = onlyRef(p);
    expect(ref.keys).toEqual([lookupKey('xmpp.originId', scopedId(aliceOwn, 'c-1')), lookupKey('xmpp.id', scopedId(aliceOwn, 'c-1'))]);
    expect(ref.sameSender).toBe(true);
  });

  it('skips chat states', () => {
    expect(live('chat-composing').ok).toBe('skip');
  });
});

describe('carbons and archive results', () => {
  it('a sent carbon from our bare JID is our own outgoing message to the peer', () => {
    const p = ok(live('carbon-sent'));
    expect(p.fromUs).toBe(true);
    expect(p.conversation).toBe(ALICE);
    expect(p.sender.uid).toBe(`xmpp:${ACCOUNT}`);
    expect(p.echoOf).toBe('out1');
    expect(p.idem).toBe(idem.archive(ACCOUNT, 'ASID-2'));
    expect(p.ids['xmpp.originId']).toBe(scopedId(senderScope(ALICE, ACCOUNT), 'out1'));
  });

  it('a received carbon is an incoming message', () => {
    const p = ok(live('carbon-received'));
    expect(p.fromUs).toBe(false);
    expect(p.sender.native).toBe(ALICE);
    expect(p.idem).toBe(idem.archive(ACCOUNT, 'ASID-3'));
  });

  it('rejects a carbon not from our bare JID', () => {
    expect(live('carbon-spoofed')).toMatchObject({ ok: false, reason: 'spoofed-carbon' });
  });

  it('a room archive result gives the same idempotency key as the live copy (the result id is the stanza-id)', () => {
    const env = openEnvelope(stanza('mam-room'), ACCOUNT);
    expect(env).toMatchObject({ ok: true, type: 'archive-result', queryId: 'Q1', from: ROOM, resultId: 'SID-7' });
    if (env.ok !== true || env.type !== 'archive-result') throw new Error('not a result');
    const p = ok(normaliseMessage(env.message, { kind: 'archive', archive: ROOM, resultId: env.resultId, stamp: env.stamp }, ctx()));
    expect(p.idem).toBe(idem.muc(ROOM, 'SID-7'));
    expect(p.historical).toBe(true);
    expect(p.ts.origin).toBe(Date.parse('2026-11-22T02:40:00Z'));
    expect(p.sender.uid).toBe(`xmpp:${aliceScope}`);
    expect(toDraft(p, { room: 'general', via: 'xmpp', targets: {} })).toMatchObject({ origin: { historical: true } });
  });

  it('an account archive result has the live copy’s key; an archived outgoing message of ours is an echo', () => {
    const env = openEnvelope(stanza('mam-account'), ACCOUNT);
    expect(env).toMatchObject({ ok: true, type: 'archive-result', from: ACCOUNT });
    if (env.ok !== true || env.type !== 'archive-result') throw new Error('not a result');
    const p = ok(normaliseMessage(env.message, { kind: 'archive', archive: ACCOUNT, resultId: env.resultId }, ctx()));
    expect(p.idem).toBe(ok(live('chat-message')).idem);

    const out = openEnvelope(stanza('mam-account-outgoing'), ACCOUNT);
    if (out.ok !== true || out.type !== 'archive-result') throw new Error('not a result');
    const q = ok(normaliseMessage(out.message, { kind: 'archive', archive: ACCOUNT, resultId: out.resultId }, ctx()));
    expect(q.fromUs).toBe(true);
    expect(q.echoOf).toBe('01JEVENT000000000000000008');
    expect(q.conversation).toBe(ALICE);
    expect(q.ids['xmpp.stanzaId']).toBe(`${ACCOUNT}/ASID-9`);
  });

  it('an archive result names its sender; the adapter checks it against the query (a stranger is not an archive)', () => {
    const env = openEnvelope(stanza('mam-stranger'), ACCOUNT);
    expect(env).toMatchObject({ ok: true, type: 'archive-result', from: 'mallory@example.org' });
  });

  it('rejects a groupchat message found in another archive', () => {
    const env = openEnvelope(stanza('mam-room'), ACCOUNT);
    if (env.ok !== true || env.type !== 'archive-result') throw new Error('not a result');
    expect(normaliseMessage(env.message, { kind: 'archive', archive: ACCOUNT, resultId: 'X' }, ctx())).toMatchObject({ ok: false, reason: 'archive-stranger' });
  });
});

describe('bad input', () => {
  it('cuts a body over the log limit with the visible marker instead of dropping it', () => {
    const big = parseXml(`<message from="${ALICE}/x" type="chat" id="b"><body>${'x'.repeat(70_000)}</body></message>`);
    const out = normaliseMessage(big, { kind: 'live' }, ctx());
    if (out.ok !== true || out.value.action.kind !== 'message') throw new Error(`expected a message, got ${JSON.stringify(out).slice(0, 200)}`);
    expect(out.value.action.content.body).toHaveLength(65_536);
    expect(out.value.action.content.body.endsWith(TRUNCATION_MARKER)).toBe(true);
  });

  it('rejects text with characters XML 1.0 does not allow', () => {
    const bad = parseXml(`<message from="${ALICE}/x" type="chat" id="b"><body>bell\u0007 and nul\u0000</body></message>`);
    expect(normaliseMessage(bad, { kind: 'live' }, ctx())).toMatchObject({ ok: false, reason: 'invalid-characters' });
  });

  it('rejects over-long reaction keys and corrections without an id', () => {
    const long = parseXml(`<message from="${ROOM}/Alice" type="groupchat"><reactions id="S" xmlns="urn:xmpp:reactions:0"><reaction>${'a'.repeat(65)}</reaction></reactions></message>`);
    expect(normaliseMessage(long, { kind: 'live' }, ctx())).toMatchObject({ ok: false, reason: 'invalid-stanza' });
    const noId = parseXml(`<message from="${ALICE}/x" type="chat"><body>x</body><replace xmlns="urn:xmpp:message-correct:0"/></message>`);
    expect(normaliseMessage(noId, { kind: 'live' }, ctx())).toMatchObject({ ok: false, reason: 'invalid-stanza' });
  });

  it('ignores error and headline messages', () => {
    expect(normaliseMessage(parseXml(`<message from="${ALICE}" type="error"><body>x</body></message>`), { kind: 'live' }, ctx()).ok).toBe('skip');
    expect(normaliseMessage(parseXml(`<message from="example.org" type="headline"><body>x</body></message>`), { kind: 'live' }, ctx()).ok).toBe('skip');
  });

  it('keeps over-long identities within the schema limits, unique by hash', () => {
    const nick = 'n'.repeat(600);
    const p = ok(normaliseMessage(parseXml(`<message from="${ROOM}/${nick}" type="groupchat" id="z"><body>x</body></message>`), { kind: 'live' }, ctx({}, { nick: 'syncgate', stanzaIds: true, occupantIds: false })));
    expect(p.sender.uid.length).toBeLessThanOrEqual(256);
    expect(p.sender.native.length).toBeLessThanOrEqual(512);
    expect(() => parseEventDraft(toDraft(p, { room: 'general', via: 'xmpp', targets: {} }))).not.toThrow();
  });
});

describe('encrypted messages (issue 26)', () => {
  const NOTICE = '[An encrypted message could not be read]';

  /** The message an encrypted stanza becomes: the notice, marked, never the fallback body. */
  function undecryptable(p: Parsed, reason: string, scheme?: string): void {
    expect(p.action).toEqual({ kind: 'message', content: { body: NOTICE, undecryptable: { reason, ...(scheme ? { scheme } : {}) } } });
    expect(p.encrypted).toEqual({ reason, ...(scheme ? { scheme } : {}) });
    const draft = toDraft(p, { room: 'dm', via: 'xmpp', targets: {} });
    expect(() => parseEventDraft(draft)).not.toThrow();
    expect(JSON.stringify(draft)).not.toMatch(/sent you|encrypted with|This message is encrypted|\?OTR/);
  }

  it.each([
    ['chat-omemo', 'omemo', 'eu.siacs.conversations.axolotl'],
    ['chat-omemo2', 'omemo2', 'urn:xmpp:omemo:2'],
    ['chat-openpgp', 'openpgp', 'urn:xmpp:openpgp:0'],
    ['chat-pgp-legacy', 'openpgp-legacy', 'jabber:x:encrypted'],
    ['chat-otr', 'otr', 'urn:xmpp:otr:0'],
    ['chat-eme-only', 'unknown-encryption', 'urn:example:future-crypto:0'],
  ])('%s becomes the undecryptable notice (%s), not its fallback body', (name, reason, scheme) => {
    const p = ok(live(name));
    expect(p.conversation).toBe(ALICE);
    expect(p.fromUs).toBe(false);
    undecryptable(p, reason, scheme);
  });

  it('an OMEMO message keeps its ids and receipt request; an OMEMO key transport (no payload) is not a message', () => {
    const p = ok(live('chat-omemo'));
    undecryptable(p, 'omemo', 'eu.siacs.conversations.axolotl');
    expect(p.idem).toBe(idem.archive(ACCOUNT, 'ASID-E1'));
    expect(p.receiptFor).toBe('e-1');
    expect(live('chat-omemo-keytransport')).toMatchObject({ ok: 'skip' });
  });

  it('applies in a MUC, to carbons and to archive results alike', () => {
    const muc = ok(live('muc-omemo'));
    expect(muc.chat).toBe('groupchat');
    expect(muc.idem).toBe(idem.muc(ROOM, 'SID-E1'));
    undecryptable(muc, 'omemo', 'eu.siacs.conversations.axolotl');

    const carbon = ok(live('carbon-received-omemo'));
    expect(carbon.conversation).toBe(ALICE);
    undecryptable(carbon, 'omemo', 'eu.siacs.conversations.axolotl');

    const env = openEnvelope(stanza('mam-account-omemo'), ACCOUNT);
    if (env.ok !== true || env.type !== 'archive-result') throw new Error('not a result');
    const archived = ok(normaliseMessage(env.message, { kind: 'archive', archive: ACCOUNT, resultId: env.resultId, stamp: env.stamp }, ctx()));
    expect(archived.historical).toBe(true);
    undecryptable(archived, 'omemo', 'eu.siacs.conversations.axolotl');
  });

  it('an encrypted correction replaces the original with the notice', () => {
    const fixed = parseXml(
      `<message from="${ALICE}/x" type="chat" id="e-5"><encrypted xmlns="eu.siacs.conversations.axolotl"><header sid="1"><key rid="2">k</key><iv>i</iv></header><payload>p</payload></encrypted><body>fallback</body><replace xmlns="urn:xmpp:message-correct:0" id="e-1"/></message>`,
    );
    const p = ok(normaliseMessage(fixed, { kind: 'live' }, ctx()));
    expect(p.action).toMatchObject({ kind: 'edit', content: { body: NOTICE, undecryptable: { reason: 'omemo' } }, replaces: { sameSender: true } });
  });

  it('a plain message is not affected', () => {
    const p = ok(live('chat-message'));
    expect(p.encrypted).toBeUndefined();
    expect(p.action).toEqual({ kind: 'message', content: { body: 'hi bridge' } });
    const otrMention = parseXml(`<message from="${ALICE}/x" type="chat" id="m"><body>what is ?OTR anyway</body></message>`);
    expect(ok(normaliseMessage(otrMention, { kind: 'live' }, ctx())).action).toEqual({ kind: 'message', content: { body: 'what is ?OTR anyway' } });
  });
});
