/** contentInFormat: an event's content as a delivery hands it over and as adapters rendering from the log render it. */
import { describe, expect, it } from 'vitest';
import { contentInFormat } from '../../../src/bridge/format/index.js';
import type { Content, LogEvent } from '../../../src/core/event.js';

function message(content: Content, rel?: { replyTo: string }): LogEvent {
  return {
    v: 1,
    kind: 'message',
    eventId: '1700000000000-0',
    cursor: 'c',
    idem: 'i',
    room: 'lobby',
    sender: { uid: 'carol', proto: 'api', native: 'carol', auth: 'api-token' },
    origin: { proto: 'api', via: 'api', ids: {} },
    ts: { received: 1_700_000_000_000 },
    content,
    ...(rel ? { rel } : {}),
  } as LogEvent;
}

describe('contentInFormat', () => {
  const markdown: Content = { body: 'ship it now', format: 'markdown', formatted: 'ship it **now**', mentions: ['bob'], attachments: [{ url: 'https://example.org/a.png' }] };

  it('converts formatted content to the target, keeping mentions and attachments', () => {
    expect(contentInFormat(message(markdown), 'xep0393')).toEqual({ body: 'ship it now', format: 'xep0393', formatted: 'ship it *now*', mentions: ['bob'], attachments: [{ url: 'https://example.org/a.png' }] });
    expect(contentInFormat(message(markdown), 'html')).toMatchObject({ body: 'ship it now', format: 'html', formatted: 'ship it <strong>now</strong>' });
    expect(contentInFormat(message(markdown), 'plain')).toEqual({ body: 'ship it now', mentions: ['bob'], attachments: [{ url: 'https://example.org/a.png' }] });
  });

  it('sanitises HTML on the way', () => {
    const html = contentInFormat(message({ body: 'hi', format: 'html', formatted: '<b>hi</b><script>alert(1)</script>' }), 'html');
    expect(html?.formatted).toBe('<b>hi</b>');
  });

  it('keeps XEP-0393 text for a XEP-0393 target, so a round trip does not convert it twice', () => {
    const styled = contentInFormat(message({ body: '*hi* there', format: 'xep0393', formatted: '*hi* there' }), 'xep0393');
    expect(styled).toEqual({ body: 'hi there', format: 'xep0393', formatted: '*hi* there' });
  });

  it('returns plain content as stored, in every format', () => {
    const plain: Content = { body: 'a *literal* star' };
    for (const target of ['plain', 'html', 'xep0393', 'markdown'] as const) expect(contentInFormat(message(plain), target)).toBe(plain);
  });

  it('strips the reply fallback from the plain body of a formatted reply', () => {
    const reply = contentInFormat(message({ body: '> <@bob:x> earlier\n\nagreed', format: 'markdown', formatted: '**agreed**' }, { replyTo: '1699999999999-0' }), 'xep0393');
    expect(reply).toEqual({ body: 'agreed', format: 'xep0393', formatted: '*agreed*' });
  });

  it('is undefined for kinds without content', () => {
    const { content: _content, ...rest } = message({ body: 'x' }) as LogEvent & { content: Content };
    const reaction = { ...rest, kind: 'reaction', reaction: { keys: ['👍'] }, rel: { reactsTo: '1' } } as unknown as LogEvent;
    expect(contentInFormat(reaction, 'xep0393')).toBeUndefined();
  });
});
