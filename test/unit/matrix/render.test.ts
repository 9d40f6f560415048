import { describe, expect, it } from 'vitest';
import type { DraftOf } from '../../../src/core/event.js';
import {
  annotationTxnId,
  expandPrefix,
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
