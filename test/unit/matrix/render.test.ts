import { describe, expect, it } from 'vitest';
import type { DraftOf } from '../../../src/core/event.js';
import { TRUNCATION_MARKER } from '../../../src/core/text.js';
import {
  annotationTxnId,
  expandPrefix,
  fitTextContent,
  MAX_TEXT_JSON_BYTES,
  renderAnnotation,
  renderEdit,
  renderMessage,
  renderRedaction,
  textContent,
  unannotateTxnId,
} from '../../../adapters/matrix/render.js';

const base = {
  v: 1 as const,
  room: 'lobby',
  sender: { uid: 'xmpp:carol@example.net', proto: 'xmpp' as const, native: 'carol@example.net', display: 'Carol <C&Co>', auth: 'server' as const },
  origin: { proto: 'xmpp' as const, via: 'xmpp', ids: { 'xmpp.id': 'abc' } },
  ts: { received: 1 },
  cursor: 'c',
};

function message(content: DraftOf<'message'>['content'], eventId = 'EVT1'): DraftOf<'message'> & { eventId: string } {
  return { ...base, kind: 'message', idem: `xmpp:${eventId}`, eventId, content };
}

describe('Matrix render', () => {
  it('renders a plain message with our content key', () => {
    expect(renderMessage(message({ body: 'hello' }), {})).toEqual({ msgtype: 'm.text', body: 'hello', 'org.syncgate.event_id': 'EVT1' });
  });

  it('renders /me as m.emote, HTML sanitised, markdown as HTML, XEP-0393 as plain text', () => {
    expect(textContent({ body: '/me waves', format: 'html', formatted: '<p>/me <em>waves</em></p>' })).toEqual({
      msgtype: 'm.emote',
      body: 'waves',
      format: 'org.matrix.custom.html',
      formatted_body: '<p><em>waves</em></p>',
    });
    expect(textContent({ body: 'x', format: 'html', formatted: '<b>x</b><script>alert(1)</script>' }).formatted_body).toBe('<b>x</b>');
    expect(textContent({ body: '**bold** and `code`', format: 'markdown', formatted: '**bold** and `code`' }).formatted_body).toBe('<p><strong>bold</strong> and <code>code</code></p>');
    expect(textContent({ body: '*bold*', format: 'xep0393', formatted: '*bold*' })).toEqual({ msgtype: 'm.text', body: '*bold*' });
    // HTML that adds nothing to the body is left out.
    expect(textContent({ body: 'plain', format: 'html', formatted: 'plain' })).toEqual({ msgtype: 'm.text', body: 'plain' });
  });

  it('renders attachments as links', () => {
    expect(textContent({ body: 'look', attachments: [{ url: 'https://gw.example/m/1', name: 'pump.png', mime: 'image/png' }] })).toEqual({
      msgtype: 'm.text',
      body: 'look\npump.png: https://gw.example/m/1',
    });
  });

  it('renders replies and threads by Matrix event id', () => {
    expect(renderMessage(message({ body: 'yes' }), { replyTo: '$r' })['m.relates_to']).toEqual({ 'm.in_reply_to': { event_id: '$r' } });
    expect(renderMessage(message({ body: 'yes' }), { thread: '$root' })['m.relates_to']).toEqual({
      rel_type: 'm.thread',
      event_id: '$root',
      is_falling_back: true,
      'm.in_reply_to': { event_id: '$root' },
    });
    expect(renderMessage(message({ body: 'yes' }), { thread: '$root', replyTo: '$r' })['m.relates_to']).toEqual({
      rel_type: 'm.thread',
      event_id: '$root',
      is_falling_back: false,
      'm.in_reply_to': { event_id: '$r' },
    });
  });

  it('prefixes the sender in bot mode, HTML-escaped, and names emotes after the sender', () => {
    const prefix = expandPrefix('<{{display}}> ', base.sender);
    expect(prefix).toBe('<Carol <C&Co>> ');
    expect(renderMessage(message({ body: 'hi', format: 'html', formatted: '<b>hi</b>' }), {}, { prefix })).toMatchObject({
      body: '<Carol <C&Co>> hi',
      formatted_body: '&lt;Carol &lt;C&amp;Co&gt;&gt; <b>hi</b>',
    });
    expect(textContent({ body: '/me waves' }, { prefix, emoteName: 'Carol' })).toEqual({ msgtype: 'm.emote', body: 'Carol waves' });
    expect(expandPrefix('[{{uid}}] ', { uid: 'mqtt:pump-7' })).toBe('[mqtt:pump-7] ');
  });

  it('renders an edit of the original with a fallback body and m.new_content', () => {
    const edit: DraftOf<'edit'> & { eventId: string } = { ...base, kind: 'edit', idem: 'e', eventId: 'EVT2', content: { body: 'fixed' }, rel: { replaces: 'EVT1' } };
    expect(renderEdit(edit, '$orig')).toEqual({
      msgtype: 'm.text',
      body: '* fixed',
      'm.new_content': { msgtype: 'm.text', body: 'fixed' },
      'm.relates_to': { rel_type: 'm.replace', event_id: '$orig' },
      'org.syncgate.event_id': 'EVT2',
    });
  });

  it('renders annotations and redactions, with distinct deterministic txn ids per key', () => {
    expect(renderAnnotation('EVT3', '$t', '👍')).toEqual({ 'm.relates_to': { rel_type: 'm.annotation', event_id: '$t', key: '👍' }, 'org.syncgate.event_id': 'EVT3' });
    expect(renderRedaction('EVT4', 'spam')).toEqual({ reason: 'spam', 'org.syncgate.event_id': 'EVT4' });
    expect(annotationTxnId('EVT3', '👍')).toBe(annotationTxnId('EVT3', '👍'));
    expect(new Set([annotationTxnId('EVT3', '👍'), annotationTxnId('EVT3', '❤️'), unannotateTxnId('EVT3', '👍')]).size).toBe(3);
    expect(annotationTxnId('EVT3', '👍')).toMatch(/^EVT3\.a\.[0-9a-f]{16}$/);
  });
});

describe('Matrix render of an undecryptable message', () => {
  it('is an m.notice with the neutral notice, prefixed in bot mode, never anything else of the content', () => {
    const notice = message({ body: '[An encrypted message could not be read]', undecryptable: { reason: 'omemo', scheme: 'eu.siacs.conversations.axolotl' } });
    expect(renderMessage(notice, {})).toEqual({ msgtype: 'm.notice', body: '[An encrypted message could not be read]', 'org.syncgate.event_id': 'EVT1' });
    expect(textContent(notice.content, { prefix: 'Carol: ' })).toEqual({ msgtype: 'm.notice', body: 'Carol: [An encrypted message could not be read]' });
  });
});

describe('Matrix render: the size rule', () => {
  // 33,000 Cyrillic characters: within the log's character limit, 66,000 bytes of UTF-8 (Synapse caps an event at 65,536).
  const big = 'ж'.repeat(33_000);

  it('cuts a message over the event size with the visible marker, dropping the HTML first', () => {
    const content = renderMessage(message({ body: big, format: 'html', formatted: `<b>${big}</b>` }), {});
    expect(Buffer.byteLength(JSON.stringify(content))).toBeLessThanOrEqual(MAX_TEXT_JSON_BYTES + 200);
    expect(content['formatted_body']).toBeUndefined();
    expect(String(content['body']).endsWith(TRUNCATION_MARKER)).toBe(true);
    expect(String(content['body']).startsWith('жжж')).toBe(true);
  });

  it('cuts an edit so that both copies of the text fit one event', () => {
    const edit = { ...base, kind: 'edit' as const, idem: 'xmpp:E2', eventId: 'E2', content: { body: big }, rel: { replaces: 'EVT1' } };
    const content = renderEdit(edit, '$orig');
    expect(Buffer.byteLength(JSON.stringify(content))).toBeLessThanOrEqual(MAX_TEXT_JSON_BYTES + 400);
    expect(String((content['m.new_content'] as { body: string }).body).endsWith(TRUNCATION_MARKER)).toBe(true);
  });

  it('leaves a message that fits alone', () => {
    expect(fitTextContent({ msgtype: 'm.text', body: 'ж'.repeat(1000) })).toEqual({ msgtype: 'm.text', body: 'ж'.repeat(1000) });
  });
});

describe('Matrix render: mentions', () => {
  it('sends m.mentions and turns the mentioned user in the HTML into a pill', () => {
    const content = renderMessage(message({ body: 'hi @bob:hs.test', format: 'html', formatted: '<p>hi <b>@bob:hs.test</b></p>' }), {}, { mentions: ['@bob:hs.test'] });
    expect(content['m.mentions']).toEqual({ user_ids: ['@bob:hs.test'] });
    expect(content['formatted_body']).toBe('<p>hi <b><a href="https://matrix.to/#/@bob:hs.test">@bob:hs.test</a></b></p>');
  });

  it('makes HTML for a plain body that names the user, and leaves a body that does not alone', () => {
    const named = renderMessage(message({ body: 'ping @bob & co' }), {}, { mentions: ['@bob:hs.test'] });
    expect(named).toMatchObject({ body: 'ping @bob & co', format: 'org.matrix.custom.html', formatted_body: 'ping <a href="https://matrix.to/#/@bob:hs.test">@bob</a> &amp; co' });
    const unnamed = renderMessage(message({ body: 'hello all' }), {}, { mentions: ['@bob:hs.test'] });
    expect(unnamed).toEqual({ msgtype: 'm.text', body: 'hello all', 'm.mentions': { user_ids: ['@bob:hs.test'] }, 'org.syncgate.event_id': 'EVT1' });
  });

  it('puts m.mentions of an edit in the new content only', () => {
    const edit = { ...base, kind: 'edit' as const, idem: 'xmpp:E2', eventId: 'E2', content: { body: 'hi @bob:hs.test' }, rel: { replaces: 'EVT1' } };
    const content = renderEdit(edit, '$orig', { mentions: ['@bob:hs.test'] });
    expect(content['m.mentions']).toBeUndefined();
    expect(content['m.new_content']).toMatchObject({ 'm.mentions': { user_ids: ['@bob:hs.test'] } });
  });
});
