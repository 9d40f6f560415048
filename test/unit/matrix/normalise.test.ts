import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ECHO_ID_KEY } from '../../../src/core/adapter.js';
import { MAX_BODY_CHARS, parseEventDraft } from '../../../src/core/event.js';
import { stripReplyFallbackBody as stripReplyFallback, truncate, TRUNCATION_MARKER } from '../../../src/core/text.js';
import {
  markerDraft,
  normaliseEvent,
  parseMatrixEvent,
  readReceiptsOf,
  sanitizeMatrixHtml,
  type MatrixEvent,
  type NormaliseContext,
  type Normalised,
} from '../../../adapters/matrix/normalise.js';

const fixtures = JSON.parse(readFileSync(new URL('../../fixtures/matrix/events.json', import.meta.url), 'utf8')) as Record<string, unknown>;

const ctx: NormaliseContext = {
  via: 'matrix',
  room: 'lobby',
  now: 1_795_310_700_000,
  isOurs: (id) => id === '@syncgate:example.org' || /^@_sg_.*:example\.org$/.test(id),
  display: 'Alice',
};

function event(name: string): MatrixEvent {
  const ev = parseMatrixEvent(fixtures[name]);
  if ('invalid' in ev) throw new Error(`fixture ${name} is invalid: ${ev.invalid}`);
  return ev;
}

function normalise(name: string, context: NormaliseContext = ctx): Normalised {
  return normaliseEvent(event(name), context);
}

function expectAction<A extends Normalised['action']>(n: Normalised, action: A): Extract<Normalised, { action: A }> {
  expect(n.action).toBe(action);
  return n as Extract<Normalised, { action: A }>;
}

describe('Matrix normalise: messages', () => {
  it('maps a text message with the mx:<event_id> idempotency key and native id', () => {
    const n = expectAction(normalise('text'), 'message');
    expect(n.base).toEqual({
      v: 1,
      idem: 'mx:$1HkR3tTjWsTg-9WqGx5i0qXfSK8bYdUHg4cdU6Gf0GM',
      room: 'lobby',
      sender: { uid: 'matrix:@alice:example.org', proto: 'matrix', native: '@alice:example.org', display: 'Alice', auth: 'server' },
      origin: { proto: 'matrix', via: 'matrix', ids: { 'mx.eventId': '$1HkR3tTjWsTg-9WqGx5i0qXfSK8bYdUHg4cdU6Gf0GM' } },
      ts: { origin: 1795310601536, received: 1_795_310_700_000 },
    });
    expect(n.content).toEqual({ body: 'hello from Matrix' });
    // The draft it becomes passes the event schema.
    expect(() => parseEventDraft({ ...n.base, kind: 'message', content: n.content })).not.toThrow();
  });

  it('maps notices as text and emotes as /me with their HTML', () => {
    expect(expectAction(normalise('notice'), 'message').content).toEqual({ body: 'Build #42 passed' });
    expect(expectAction(normalise('emote'), 'message').content).toEqual({ body: '/me waves', format: 'html', formatted: '/me <em>waves</em>' });
  });

  it('sanitises HTML: no script, no event handlers, no javascript: links, and says so', () => {
    const n = expectAction(normalise('htmlWithScript'), 'message');
    expect(n.content.format).toBe('html');
    const html = n.content.formatted ?? '';
    expect(html).toContain('<b>hi</b>');
    expect(html).toContain('<a href="https://ok.example/">ok</a>');
    expect(html).not.toMatch(/script|onerror|onclick|javascript|iframe|evil\.example/i);
    expect(n.notes).toContain('html-sanitised');
    // Ordinary HTML that is only re-serialised (<br> → <br />) is not reported.
    const plain = parseMatrixEvent({ ...(fixtures['emote'] as object), content: { msgtype: 'm.text', body: 'a\nb', format: 'org.matrix.custom.html', formatted_body: '<p>a<br>b &amp; c</p>' } });
    if ('invalid' in plain) throw new Error(plain.invalid);
    const benign = expectAction(normaliseEvent(plain, ctx), 'message');
    expect([benign.content.formatted, benign.notes]).toEqual(['<p>a<br />b &amp; c</p>', []]);
  });

  it('strips the legacy reply fallback from body and HTML of a reply, and keeps the relation', () => {
    const n = expectAction(normalise('legacyReply'), 'message');
    expect(n.replyTo).toBe('$1HkR3tTjWsTg-9WqGx5i0qXfSK8bYdUHg4cdU6Gf0GM');
    expect(n.content).toEqual({ body: 'hi Alice', format: 'html', formatted: 'hi <b>Alice</b>' });
  });

  it('keeps a leading quote of a message that is not a reply', () => {
    expect(expectAction(normalise('quoteNotReply'), 'message').content.body).toBe('> a quote of my own\n\nand my text');
  });

  it('maps threads: the fallback reply is dropped, a real reply in a thread is kept', () => {
    const fallback = expectAction(normalise('threadFallback'), 'message');
    expect(fallback.thread).toBe('$Root000000000000000000000000000000000000001');
    expect(fallback.replyTo).toBeUndefined();
    const reply = expectAction(normalise('threadReply'), 'message');
    expect([reply.thread, reply.replyTo]).toEqual(['$Root000000000000000000000000000000000000001', '$Last000000000000000000000000000000000000001']);
  });

  it('maps media to attachments by URL, with captions and stickers', () => {
    expect(expectAction(normalise('image'), 'message').content).toEqual({
      body: 'photo.jpg',
      attachments: [{ url: 'mxc://example.org/AbCdEfGh', mime: 'image/jpeg', size: 48213, name: 'photo.jpg' }],
    });
    expect(expectAction(normalise('imageWithCaption'), 'message').content).toEqual({
      body: 'the pump after the repair',
      attachments: [{ url: 'mxc://example.org/PumpPng', mime: 'image/png', size: 1000, name: 'pump.png' }],
    });
    const withProxy = normalise('sticker', { ...ctx, mediaUrl: (mxc) => `https://gw.example/media/${mxc.slice(6)}` });
    expect(expectAction(withProxy, 'message').content.attachments).toEqual([{ url: 'https://gw.example/media/example.org/Sticker1', mime: 'image/webp', name: 'thumbs up' }]);
  });

  it('maps mentions of real users, not of our ghosts, and shows unknown msgtypes and locations by body', () => {
    expect(expectAction(normalise('mentions'), 'message').content.mentions).toEqual(['matrix:@bob:example.org']);
    const custom = expectAction(normalise('customMsgtype'), 'message');
    expect([custom.content.body, custom.notes]).toEqual(['Poll: lunch?', ['unsupported-msgtype']]);
    expect(expectAction(normalise('location'), 'message').content.body).toBe('Building 7 (geo:52.52,13.40)');
  });

  it('truncates a 1 MB body to the event limit, never inside a surrogate pair, and says so', () => {
    const raw = structuredClone(fixtures['text']) as { content: { body: string } };
    raw.content.body = '😀'.repeat(512 * 1024);
    const ev = parseMatrixEvent(raw);
    if ('invalid' in ev) throw new Error(ev.invalid);
    const n = expectAction(normaliseEvent(ev, ctx), 'message');
    expect(n.content.body.length).toBeLessThanOrEqual(MAX_BODY_CHARS);
    expect(n.content.body.endsWith(`😀${TRUNCATION_MARKER}`)).toBe(true);
    expect(n.notes).toEqual(['body-truncated']);
    expect(() => parseEventDraft({ ...n.base, kind: 'message', content: n.content })).not.toThrow();
  });
});

describe('Matrix normalise: relations and other kinds', () => {
  it('maps m.replace to an edit with the new content', () => {
    const n = expectAction(normalise('edit'), 'edit');
    expect(n.replaces).toBe('$1HkR3tTjWsTg-9WqGx5i0qXfSK8bYdUHg4cdU6Gf0GM');
    expect(n.content).toEqual({ body: 'hello from Matrix!', format: 'html', formatted: 'hello from <b>Matrix</b>!' });
    expect(expectAction(normalise('editWithoutNewContent'), 'ignore').reason).toBe('invalid-edit');
  });

  it('maps annotations to one key, and rejects annotations without a key', () => {
    const n = expectAction(normalise('reaction'), 'annotation');
    expect([n.target, n.key, n.base.idem]).toEqual(['$1HkR3tTjWsTg-9WqGx5i0qXfSK8bYdUHg4cdU6Gf0GM', '👍', 'mx:$React00000000000000000000000000000000000001']);
    expect(expectAction(normalise('reactionWithoutKey'), 'ignore').reason).toBe('invalid-reaction');
  });

  it('reads redacts from content (room v11) or from the top level (older rooms)', () => {
    expect(expectAction(normalise('redactionV11'), 'redaction').redacts).toBe('$1HkR3tTjWsTg-9WqGx5i0qXfSK8bYdUHg4cdU6Gf0GM');
    expect(expectAction(normalise('redactionOldRoom'), 'redaction').redacts).toBe('$1HkR3tTjWsTg-9WqGx5i0qXfSK8bYdUHg4cdU6Gf0GM');
  });

  it('an encrypted file (content.file) is a message whose file the inbound handler checks; a malformed one says why, and gives no attachment', () => {
    const n = expectAction(normalise('encryptedFile'), 'message');
    expect(n.encryptedFile).toEqual({ problem: 'file.key is not an A256CTR JWK' });
    expect(n.content.attachments).toBeUndefined();
  });

  it('reports encrypted, redacted, state and membership events instead of bridging them', () => {
    expect(expectAction(normalise('encrypted'), 'ignore').reason).toBe('encrypted');
    expect(expectAction(normalise('redacted'), 'ignore').reason).toBe('redacted');
    expect(expectAction(normalise('topic'), 'ignore').reason).toBe('unsupported-type');
    expect(normalise('encryption')).toEqual({ action: 'encryption' });
    expect(normalise('member')).toEqual({ action: 'membership', userId: '@alice:example.org', membership: 'join', display: 'Alice Liddell' });
  });

  it('turns our ghost\'s event with our content key into an echo; nobody else can claim one', () => {
    const echo = expectAction(normalise('ghostEcho'), 'echo');
    expect(echo.draft.origin.ids).toEqual({ 'mx.eventId': '$Echo0000000000000000000000000000000000000001', [ECHO_ID_KEY]: '0000001795310601000000000000' });
    expect(echo.draft.sender.puppet).toBe(true);
    expect(expectAction(normalise('ghostWithoutKey'), 'ignore').reason).toBe('own-event');
    const spoofed = expectAction(normalise('spoofedKey'), 'message');
    expect(spoofed.base.origin.ids[ECHO_ID_KEY]).toBeUndefined();
    expect(spoofed.base.sender.puppet).toBeUndefined();
  });

  it('rejects malformed events with the failing field', () => {
    expect(parseMatrixEvent(fixtures['malformedNoId'])).toEqual({ invalid: 'event_id' });
    expect(parseMatrixEvent(fixtures['malformedContent'])).toEqual({ invalid: 'content' });
    expect(parseMatrixEvent(fixtures['malformedTs'])).toEqual({ invalid: 'origin_server_ts' });
    expect(parseMatrixEvent('nope')).toEqual({ invalid: 'not an object' });
    expect(expectAction(normalise('bodyNotString'), 'ignore').reason).toBe('malformed-event');
    // /sync timelines omit room_id: the caller supplies it.
    const { room_id: _drop, ...withoutRoom } = fixtures['text'] as Record<string, unknown>;
    expect(parseMatrixEvent(withoutRoom)).toEqual({ invalid: 'room_id' });
    expect((parseMatrixEvent(withoutRoom, '!lobby:example.org') as MatrixEvent).room_id).toBe('!lobby:example.org');
  });
});

describe('Matrix normalise: receipts', () => {
  it('reads public read receipts only, with threads, never m.read.private', () => {
    const receipts = readReceiptsOf((fixtures['receipt'] as { content: unknown }).content);
    expect(receipts).toEqual([
      { userId: '@bob:example.org', eventId: '$1HkR3tTjWsTg-9WqGx5i0qXfSK8bYdUHg4cdU6Gf0GM', ts: 1795310602000 },
      { userId: '@carol:example.org', eventId: '$1HkR3tTjWsTg-9WqGx5i0qXfSK8bYdUHg4cdU6Gf0GM', ts: 1795310602001 },
      { userId: '@bob:example.org', eventId: '$Thread00000000000000000000000000000000000001', ts: 1795310602003, threadId: '$Root000000000000000000000000000000000000001' },
    ]);
    expect(receipts.some((r) => r.userId === '@dave:example.org')).toBe(false);
    const [first] = receipts;
    if (!first) throw new Error('no receipt');
    const draft = markerDraft('!lobby:example.org', first, 'evt-1', { ...ctx, display: 'Bob' });
    expect(draft).toMatchObject({ kind: 'marker', idem: 'mx:receipt:!lobby:example.org:@bob:example.org:$1HkR3tTjWsTg-9WqGx5i0qXfSK8bYdUHg4cdU6Gf0GM', rel: { upTo: 'evt-1' } });
    expect(() => parseEventDraft(draft)).not.toThrow();
  });
});

describe('Matrix normalise: helpers', () => {
  it('strips reply fallbacks, truncates safely and sanitises with the Matrix allowlist', () => {
    expect(stripReplyFallback('> <@a:b> x\n>\n\nreal')).toBe('real');
    expect(stripReplyFallback('no fallback')).toBe('no fallback');
    expect(truncate('abcdef', 4)).toBe('abc…');
    expect(truncate('ab😀c', 4)).toBe('ab…');
    expect(sanitizeMatrixHtml('<img src="mxc://s/m" alt="x"><img src="https://t/x.png"><code class="language-ts evil">c</code>')).toBe('<img src="mxc://s/m" alt="x" /><img /><code class="language-ts">c</code>');
    expect(sanitizeMatrixHtml('<font data-mx-color="#ff0000" style="x">red</font><mx-reply>gone</mx-reply>')).toBe('<font data-mx-color="#ff0000">red</font>');
  });
});

describe('Matrix normalise: mentions', () => {
  function withContent(content: Record<string, unknown>): Normalised {
    const ev = parseMatrixEvent({ ...(fixtures['text'] as object), content });
    if ('invalid' in ev) throw new Error(ev.invalid);
    return normaliseEvent(ev, ctx);
  }

  it('takes mentions from pills when the event has no m.mentions (clients before spec v1.7)', () => {
    const n = expectAction(
      withContent({
        msgtype: 'm.text',
        body: 'Bob: Carol: look',
        format: 'org.matrix.custom.html',
        formatted_body: '<a href="https://matrix.to/#/@bob:example.org">Bob</a>: <a href="https://matrix.to/#/%40carol%3Aexample.org">Carol</a>: look <a href="https://matrix.to/#/@_sg_x:example.org">ghost</a>',
      }),
      'message',
    );
    expect(n.content.mentions).toEqual(['matrix:@bob:example.org', 'matrix:@carol:example.org']);
    // m.mentions, when present, is trusted over pills; the pill of a reply fallback is no mention.
    const explicit = withContent({ msgtype: 'm.text', body: 'Bob', 'm.mentions': {}, format: 'org.matrix.custom.html', formatted_body: '<a href="https://matrix.to/#/@bob:example.org">Bob</a>' });
    expect(expectAction(explicit, 'message').content.mentions).toBeUndefined();
    const reply = withContent({
      msgtype: 'm.text',
      body: '> <@bob:example.org> hi\n\nyes',
      format: 'org.matrix.custom.html',
      formatted_body: '<mx-reply><blockquote><a href="https://matrix.to/#/@bob:example.org">@bob:example.org</a> hi</blockquote></mx-reply>yes',
      'm.relates_to': { 'm.in_reply_to': { event_id: '$x' } },
    });
    expect(expectAction(reply, 'message').content.mentions).toBeUndefined();
  });
});

describe('Matrix normalise: what counts as a change', () => {
  it('the expected <mx-reply> strip of a rich reply is no change (no html-sanitised note, so no warning); a real removal still is', () => {
    const reply = expectAction(normalise('legacyReply'), 'message');
    expect(reply.content.formatted).toBe('hi <b>Alice</b>');
    expect(reply.notes).not.toContain('html-sanitised');
    const raw = structuredClone(fixtures['legacyReply']) as { content: { formatted_body: string } };
    raw.content.formatted_body += '<script>alert(1)</script>';
    const ev = parseMatrixEvent(raw);
    if ('invalid' in ev) throw new Error(ev.invalid);
    expect(expectAction(normaliseEvent(ev, ctx), 'message').notes).toContain('html-sanitised');
  });
});
