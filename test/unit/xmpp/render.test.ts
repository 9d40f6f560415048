// XMPP rendering: ids, references by chat type, relay prefix, fallbacks, hints.
import { describe, expect, it } from 'vitest';
import type { LogEvent } from '../../../src/core/event.js';
import { scopedId, senderScope } from '../../../adapters/xmpp/ids.js';
import { TRUNCATION_MARKER } from '../../../src/core/text.js';
import { expandPrefix, MAX_BODY_XML_BYTES, referenceId, render, sentByUs, type RenderInput } from '../../../adapters/xmpp/render.js';
import { parseXml, type XmlElement } from '../../../adapters/xmpp/xml.js';
import { ACCOUNT, ALICE, ROOM } from '../../fixtures/xmpp/index.js';

const carol = { uid: 'api:carol', proto: 'api' as const, native: 'carol/dev1', display: 'Carol', auth: 'api-token' as const };
const base = { v: 1 as const, idem: 'api:dev1:t1', room: 'general', sender: carol, origin: { proto: 'api' as const, via: 'api', ids: {} }, ts: { received: 1 }, cursor: 'c1' };

function event(partial: Record<string, unknown>): LogEvent {
  return { ...base, eventId: 'EV-NEW', ...partial } as unknown as LogEvent;
}

/** Native ids of a MUC message from Alice (as normalise reports them). */
const aliceMucIds = { 'xmpp.id': scopedId(senderScope(ROOM, 'o:OCC-A'), 'a1'), 'xmpp.originId': scopedId(senderScope(ROOM, 'o:OCC-A'), 'a1'), 'xmpp.stanzaId': `${ROOM}/SID-1`, 'xmpp.stanzaIdBy': ROOM };
/** Native ids of a MUC message the bridge delivered (event EV-OURS). */
const oursMucIds = { 'xmpp.id': scopedId(senderScope(ROOM, 'o:OCC-B'), 'EV-OURS'), 'xmpp.originId': scopedId(senderScope(ROOM, 'o:OCC-B'), 'EV-OURS'), 'xmpp.stanzaId': `${ROOM}/SID-2`, 'xmpp.stanzaIdBy': ROOM };
const ours1to1 = { 'xmpp.id': scopedId(senderScope(ALICE, ACCOUNT), 'EV-OURS'), 'xmpp.originId': scopedId(senderScope(ALICE, ACCOUNT), 'EV-OURS') };
const alice1to1 = { 'xmpp.id': scopedId(senderScope(ALICE, ALICE), 'c-1'), 'xmpp.originId': scopedId(senderScope(ALICE, ALICE), 'c-1'), 'xmpp.stanzaId': `${ACCOUNT}/ASID-1`, 'xmpp.stanzaIdBy': ACCOUNT };

function input(ev: LogEvent, over: Partial<RenderInput> = {}): RenderInput {
  return { event: ev, chat: 'groupchat', to: ROOM, references: {}, prefix: expandPrefix('<{{display}}> ', ev.sender), ...over };
}

function stanzaOf(i: RenderInput): XmlElement {
  const r = render(i);
  if (r.ok !== true) throw new Error(`expected a stanza, got ${JSON.stringify(r)}`);
  // Round-trip through the parser: what a server would read.
  return parseXml(r.stanza.toString());
}

describe('render', () => {
  it('a message: our event id as id and origin-id, the relay prefix, markable, to the room as groupchat', () => {
    const s = stanzaOf(input(event({ kind: 'message', content: { body: 'hi there' } })));
    expect(s.attrs).toMatchObject({ to: ROOM, type: 'groupchat', id: 'EV-NEW' });
    expect(s.getChild('origin-id', 'urn:xmpp:sid:0')?.attrs['id']).toBe('EV-NEW');
    expect(s.getChildText('body')).toBe('<Carol> hi there');
    expect(s.getChild('markable', 'urn:xmpp:chat-markers:0')).toBeDefined();
    expect(s.getChild('unstyled', 'urn:xmpp:styling:0')).toBeUndefined();
  });

  it('sends formatted XEP-0393 as the body; plain text that would look styled gets <unstyled/>', () => {
    const styled = stanzaOf(input(event({ kind: 'message', content: { body: 'bold' } }), { content: { body: 'bold', format: 'xep0393', formatted: '*bold*' } }));
    expect(styled.getChildText('body')).toBe('<Carol> *bold*');
    expect(styled.getChild('unstyled', 'urn:xmpp:styling:0')).toBeUndefined();
    const plain = stanzaOf(input(event({ kind: 'message', content: { body: '2 *3* 4' } })));
    expect(plain.getChild('unstyled', 'urn:xmpp:styling:0')).toBeDefined();
    // A quote block keeps working after the prefix.
    const quote = stanzaOf(input(event({ kind: 'message', content: { body: 'q' } }), { content: { body: 'q', format: 'xep0393', formatted: '> quoted\nreply' } }));
    expect(quote.getChildText('body')).toBe('<Carol>\n> quoted\nreply');
  });

  it('strips characters XML cannot carry, so our stream never breaks', () => {
    const s = render(input(event({ kind: 'message', content: { body: 'bell\u0007 ok\uFFFF' } })));
    expect(s.ok).toBe(true);
    if (s.ok === true) expect(s.stanza.getChildText('body')).toBe('<Carol> bell ok');
  });

  it('an attachment: OOB with the first URL, the others in the text', () => {
    const s = stanzaOf(input(event({ kind: 'message', content: { body: '', attachments: [{ url: 'https://m.example/a.png', name: 'a.png' }, { url: 'https://m.example/b.png' }] } })));
    expect(s.getChild('x', 'jabber:x:oob')?.getChildText('url')).toBe('https://m.example/a.png');
    expect(s.getChild('x', 'jabber:x:oob')?.getChildText('desc')).toBe('a.png');
    expect(s.getChildText('body')).toBe('<Carol> https://m.example/a.png\nhttps://m.example/b.png');
  });

  it('a lone attachment: the body is exactly its URL, as in OOB', () => {
    const url = 'https://m.example/a.png';
    const s = stanzaOf(input(event({ kind: 'message', content: { body: '', attachments: [{ url }] } })));
    expect(s.getChildText('body')).toBe(url);
    expect(s.getChild('x', 'jabber:x:oob')?.getChildText('url')).toBe(url);
  });

  it('a reply carries the original author as `to` (XEP-0461) when known', () => {
    const ev = event({ kind: 'message', content: { body: 'yes' }, rel: { replyTo: 'EV-ALICE' } });
    expect(stanzaOf(input(ev, { references: { replyTo: aliceMucIds }, replyAuthor: 'room@muc.example/Alice' })).getChild('reply', 'urn:xmpp:reply:0')?.attrs['to']).toBe('room@muc.example/Alice');
  });

  it('a reply in a MUC names the room stanza-id and carries a quote fallback measured in code points', () => {
    const ev = event({ kind: 'message', content: { body: 'yes 🎉' }, rel: { replyTo: 'EV-ALICE' } });
    const s = stanzaOf(input(ev, { references: { replyTo: aliceMucIds }, quote: { author: 'Alice', text: '😀 hi' } }));
    expect(s.getChild('reply', 'urn:xmpp:reply:0')?.attrs['id']).toBe('SID-1');
    const body = s.getChildText('body') ?? '';
    const fb = s.getChild('fallback', 'urn:xmpp:fallback:0');
    expect(fb?.attrs['for']).toBe('urn:xmpp:reply:0');
    const end = Number(fb?.getChild('body')?.attrs['end']);
    expect(Array.from(body).slice(end).join('')).toBe('<Carol> yes 🎉');
    expect(Array.from(body).slice(0, end).join('')).toBe('> Alice:\n> 😀 hi\n');
  });

  it('a reply in 1:1 names the origin-id; a reply to something unknown here is a plain message', () => {
    const ev = event({ kind: 'message', content: { body: 'ok' }, rel: { replyTo: 'EV-ALICE' } });
    const s = stanzaOf(input(ev, { chat: 'chat', to: ALICE, references: { replyTo: alice1to1 } }));
    expect(s.attrs['type']).toBe('chat');
    expect(s.getChild('reply', 'urn:xmpp:reply:0')?.attrs['id']).toBe('c-1');
    const plain = stanzaOf(input(ev, { chat: 'chat', to: ALICE, references: {} }));
    expect(plain.getChild('reply', 'urn:xmpp:reply:0')).toBeUndefined();
  });

  it('a correction replaces the original by its id (= its event id), never a later one, and only our own messages', () => {
    const ev = event({ kind: 'edit', content: { body: 'fixed' }, rel: { replaces: 'EV-OURS' } });
    const s = stanzaOf(input(ev, { references: { replaces: oursMucIds } }));
    expect(s.getChild('replace', 'urn:xmpp:message-correct:0')?.attrs['id']).toBe('EV-OURS');
    expect(s.attrs['id']).toBe('EV-NEW');
    expect(s.getChildText('body')).toBe('<Carol> fixed');
    const notOurs = render(input(event({ kind: 'edit', content: { body: 'x' }, rel: { replaces: 'EV-ALICE' } }), { references: { replaces: aliceMucIds } }));
    expect(notOurs.ok).toBe('skip');
  });

  it('a retraction: room stanza-id in a MUC, origin-id in 1:1, with fallback body and store hint', () => {
    const ev = event({ kind: 'retraction', rel: { redacts: 'EV-OURS' } });
    const muc = stanzaOf(input(ev, { references: { redacts: oursMucIds } }));
    expect(muc.getChild('retract', 'urn:xmpp:message-retract:1')?.attrs['id']).toBe('SID-2');
    expect(muc.getChild('fallback', 'urn:xmpp:fallback:0')?.attrs['for']).toBe('urn:xmpp:message-retract:1');
    expect(muc.getChild('store', 'urn:xmpp:hints')).toBeDefined();
    const dm = stanzaOf(input(ev, { chat: 'chat', to: ALICE, references: { redacts: ours1to1 } }));
    expect(dm.getChild('retract', 'urn:xmpp:message-retract:1')?.attrs['id']).toBe('EV-OURS');
    expect(render(input(event({ kind: 'retraction', rel: { redacts: 'EV-ALICE' } }), { references: { redacts: aliceMucIds } })).ok).toBe('skip');
  });

  it('reactions: the whole set, by room stanza-id in a MUC and by id in 1:1', () => {
    const ev = event({ kind: 'reaction', rel: { reactsTo: 'EV-ALICE' }, reaction: { keys: ['👍'] } });
    const muc = stanzaOf(input(ev, { references: { reactsTo: aliceMucIds }, reactionKeys: ['👍', '❤'] }));
    const r = muc.getChild('reactions', 'urn:xmpp:reactions:0');
    expect(r?.attrs['id']).toBe('SID-1');
    expect(r?.getChildren('reaction').map((x) => x.getText())).toEqual(['👍', '❤']);
    expect(muc.getChild('store', 'urn:xmpp:hints')).toBeDefined();
    expect(muc.getChild('body')).toBeUndefined();
    const dm = stanzaOf(input(ev, { chat: 'chat', to: ALICE, references: { reactsTo: alice1to1 } }));
    expect(dm.getChild('reactions', 'urn:xmpp:reactions:0')?.attrs['id']).toBe('c-1');
    expect(render(input(ev, { references: {} })).ok).toBe('skip');
  });

  it('a marker: displayed with the room stanza-id; never on a message the bridge sent', () => {
    const s = stanzaOf(input(event({ kind: 'marker', rel: { upTo: 'EV-ALICE' } }), { references: { upTo: aliceMucIds } }));
    expect(s.getChild('displayed', 'urn:xmpp:chat-markers:0')?.attrs['id']).toBe('SID-1');
    expect(s.getChild('body')).toBeUndefined();
    expect(render(input(event({ kind: 'marker', rel: { upTo: 'EV-OURS' } }), { references: { upTo: oursMucIds } })).ok).toBe('skip');
  });

  it('skips receipts, typing and presence', () => {
    expect(render(input(event({ kind: 'receipt', rel: { upTo: 'X' }, receipt: { type: 'read' } }))).ok).toBe('skip');
    expect(render(input(event({ kind: 'typing', typing: { active: true } }))).ok).toBe('skip');
  });

  it('helpers: reference ids by chat type and the sent-by-us check', () => {
    expect(referenceId(aliceMucIds, 'groupchat', ROOM)).toBe('SID-1');
    expect(referenceId(alice1to1, 'groupchat', ROOM)).toBeUndefined();
    expect(referenceId(alice1to1, 'chat', ALICE)).toBe('c-1');
    expect(sentByUs(oursMucIds, 'EV-OURS')).toBe(true);
    expect(sentByUs(aliceMucIds, 'EV-ALICE')).toBe(false);
    expect(expandPrefix('[{{uid}}] {{display}}: ', { uid: 'u1' })).toBe('[u1] u1: ');
  });
});

describe('render: the size rule', () => {
  it('cuts a body whose escaped XML exceeds the limit, with the visible marker, instead of sending a stanza the server refuses', () => {
    // 65,536 '<' are within the log's limit and become 262,144 bytes of XML (&lt;), over Prosody's 256 KiB stanza limit.
    const r = render(input(event({ kind: 'message', content: { body: '<'.repeat(65_536) } }), { prefix: '' }));
    if (r.ok !== true) throw new Error('expected a stanza');
    const body = r.stanza.getChildText('body') ?? '';
    expect(body.endsWith(TRUNCATION_MARKER)).toBe(true);
    expect(Buffer.byteLength(r.stanza.getChild('body')?.toString() ?? '')).toBeLessThanOrEqual(MAX_BODY_XML_BYTES + 20);
    expect(body.length).toBeGreaterThan(40_000);
  });
});
