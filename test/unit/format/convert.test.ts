import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { TextFormat } from '../../../src/core/event.js';
import { convert, hasXep0393Styling, type TargetFormat } from '../../../src/bridge/format/index.js';

interface CorpusMessage {
  name: string;
  source: TextFormat;
  formatted: string;
  body: string;
  html?: string | null;
  xep0393?: string | null;
  markdown?: string | null;
  mentions: string[];
}

const { messages } = JSON.parse(readFileSync(new URL('../../fixtures/format/messages.json', import.meta.url), 'utf8')) as {
  messages: CorpusMessage[];
};
const FORMATS: readonly TextFormat[] = ['html', 'xep0393', 'markdown'];
const cases = messages.map((m) => [`${m.source}: ${m.name}`, m] as const);

describe('the message corpus', () => {
  it('covers every source format and the required content', () => {
    for (const format of FORMATS) expect(messages.some((m) => m.source === format)).toBe(true);
    const all = messages.map((m) => m.formatted).join('\n');
    expect(all).toMatch(/\p{Script=Arabic}/u);
    expect(all).toMatch(/\p{Script=Hebrew}/u);
    expect(all).toMatch(/\p{Extended_Pictographic}/u);
    expect(messages.some((m) => m.mentions.length > 0)).toBe(true);
  });

  it.each(cases)('%s: plain body and mentions', (_name, m) => {
    const content = { body: 'ignored when formatted text is given', format: m.source, formatted: m.formatted };
    expect(convert(content, 'plain')).toEqual({ body: m.body, matrixMentions: m.mentions });
  });

  it.each(cases)('%s: renders every other format', (_name, m) => {
    for (const target of FORMATS) {
      if (target === m.source) continue;
      const expected = m[target];
      expect(expected, `fixture lacks ${target}`).not.toBeUndefined();
      const out = convert({ body: m.body, format: m.source, formatted: m.formatted }, target);
      expect(out.body).toBe(m.body);
      expect(out.matrixMentions).toEqual(m.mentions);
      if (expected === null) {
        expect(out.format).toBeUndefined();
        expect(out.formatted).toBeUndefined();
      } else {
        expect(out.format).toBe(target);
        expect(out.formatted).toBe(expected);
      }
    }
  });

  // What goes on the wire in format X: `formatted` when set, else the body (identical text).
  const wire = (out: { body: string; formatted?: string }): string => out.formatted ?? out.body;

  it.each(cases.filter(([, m]) => m.source !== 'html' && m.html !== null))('%s: round trip through HTML gives the source back', (_name, m) => {
    const html = convert({ body: m.body, format: m.source, formatted: m.formatted }, 'html');
    expect(html.formatted).toBeDefined();
    const back = convert({ body: html.body, format: 'html', formatted: html.formatted ?? '' }, m.source);
    expect(wire(back)).toBe(m.formatted);
    expect(back.body).toBe(m.body);
    expect(back.matrixMentions).toEqual(m.mentions);
  });

  it.each(cases.filter(([, m]) => m.source !== 'html'))('%s: converting to its own format keeps it', (_name, m) => {
    const out = convert({ body: m.body, format: m.source, formatted: m.formatted }, m.source);
    if (m.html === null) expect(out.formatted).toBeUndefined();
    else expect(wire(out)).toBe(m.formatted);
  });

  it.each(cases.filter(([, m]) => m.source === 'html'))('%s: HTML → X → HTML → X is stable', (_name, m) => {
    for (const target of ['xep0393', 'markdown'] as const) {
      const first = convert({ body: m.body, format: 'html', formatted: m.formatted }, target);
      if (first.formatted === undefined) continue;
      const html = convert({ body: first.body, format: target, formatted: first.formatted }, 'html');
      expect(html.formatted, `${target} lost its formatting`).toBeDefined();
      const second = convert({ body: html.body, format: 'html', formatted: html.formatted ?? '' }, target);
      expect(second.formatted).toBe(first.formatted);
      expect(second.body).toBe(m.body);
      expect(second.matrixMentions).toEqual(target === 'markdown' ? m.mentions : []);
    }
  });
});

describe('convert', () => {
  it('leaves a plain message alone for every target', () => {
    const body = 'just *text* with a > sign\n\n\nand blank lines';
    for (const target of ['html', 'xep0393', 'markdown', 'plain'] as const satisfies readonly TargetFormat[]) {
      expect(convert({ body }, target)).toEqual({ body, matrixMentions: [] });
    }
  });

  it('treats a format without formatted text as plain', () => {
    expect(convert({ body: 'hi', format: 'html' }, 'xep0393')).toEqual({ body: 'hi', matrixMentions: [] });
  });

  it('keeps the original body when the formatted text renders to nothing', () => {
    const empty = convert({ body: 'hello', format: 'html', formatted: '<p> </p><br />' }, 'plain');
    expect(empty.body).toBe('hello');
    const scripted = convert({ body: 'hello', format: 'html', formatted: '<script>alert(1)</script>' }, 'xep0393');
    expect(scripted).toEqual({ body: 'hello', matrixMentions: [] });
  });

  it('writes images as their alt text, or a placeholder', () => {
    const html = 'look <img src="mxc://example.org/a" alt="a cat" /> <img src="mxc://example.org/b" />';
    expect(convert({ body: '', format: 'html', formatted: html }, 'plain').body).toBe('look a cat [image]');
  });

  it('keeps HTML-only formatting (colour, underline) from Matrix to Matrix but not elsewhere', () => {
    const content = { body: 'red', format: 'html', formatted: '<font color="#ff0000">red</font> <u>under</u>' } as const;
    expect(convert(content, 'html').formatted).toBe('<font color="#ff0000">red</font> <u>under</u>');
    expect(convert(content, 'xep0393')).toEqual({ body: 'red under', matrixMentions: [] });
  });

  it('writes no needless <p> for a single paragraph, and <p> between several', () => {
    expect(convert({ body: '', format: 'xep0393', formatted: '*a*' }, 'html').formatted).toBe('<strong>a</strong>');
    expect(convert({ body: '', format: 'xep0393', formatted: '*a*\n\nb' }, 'html').formatted).toBe('<p><strong>a</strong></p><p>b</p>');
  });

  it('escapes text when writing HTML', () => {
    const out = convert({ body: '', format: 'xep0393', formatted: '*<b>&amp;* <script>alert(1)</script>' }, 'html');
    expect(out.formatted).toBe('<strong>&lt;b&gt;&amp;amp;</strong> &lt;script&gt;alert(1)&lt;/script&gt;');
    expect(out.body).toBe('<b>&amp; <script>alert(1)</script>');
  });

  it('escapes Markdown so that text reads back as the same text', () => {
    const tricky = [
      '2*3*4 = 24 and a_b_c',
      '# not a heading',
      '- not a list',
      '1. not a list either',
      '> not a quote',
      '<b>not html</b> &amp; not an entity',
      '[not](a link) `not code` ~~not struck~~ | not a table |',
      '\\ backslash \\* kept',
      '---',
    ];
    for (const text of tricky) {
      const html = `<strong>x</strong> ${text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')}`;
      const md = convert({ body: '', format: 'html', formatted: html }, 'markdown');
      expect(md.formatted, text).toBeDefined();
      const back = convert({ body: '', format: 'markdown', formatted: md.formatted ?? '' }, 'plain');
      expect(back.body, `${text} → ${md.formatted}`).toBe(`x ${text}`);
    }
  });

  it('keeps text that starts a line literal in Markdown', () => {
    for (const text of ['# not a heading', '- not a list', '1. not a list', '+ plus', '===']) {
      const html = `<em>x</em><br />${text}`;
      const md = convert({ body: '', format: 'html', formatted: html }, 'markdown').formatted ?? '';
      expect(convert({ body: '', format: 'markdown', formatted: md }, 'plain').body, md).toBe(`x\n${text}`);
    }
  });

  it('writes no XEP-0393 span that would not parse back as the same span', () => {
    const cases: [string, string][] = [
      ['foo<b>bar</b>', 'foobar'], // an opening directive must follow whitespace
      ['<b>2*3</b>', '2*3'], // the closing directive would match too early
      ['<i><a href="https://example.org/a_b">docs</a></i>', 'docs (https://example.org/a_b)'],
      ['<b>a<br>b</b>', '*a*\n*b*'], // spans do not cross lines
      ['<b> spaced </b>x', '*spaced* x'],
      ['<b><b>double</b></b>', '*double*'],
      ['<code>a`b</code>', 'a`b'],
    ];
    for (const [html, xep] of cases) {
      const out = convert({ body: '', format: 'html', formatted: html }, 'xep0393');
      expect(out.formatted ?? out.body, html).toBe(xep);
    }
  });

  it('strips the legacy reply fallback from the body of a reply only', () => {
    const body = '> <@alice:example.org> original\n> second line\n\nmy reply';
    expect(convert({ body }, 'plain', { isReply: true }).body).toBe('my reply');
    expect(convert({ body }, 'plain').body).toBe(body);
  });

  it('reports each mentioned Matrix user once, in order', () => {
    const formatted =
      '<a href="https://matrix.to/#/@b:x.org">B</a> <a href="https://matrix.to/#/@a:x.org">A</a> <a href="https://matrix.to/#/@b:x.org">B again</a> <a href="https://matrix.to/#/#room:x.org">room</a>';
    expect(convert({ body: '', format: 'html', formatted }, 'plain').matrixMentions).toEqual(['@b:x.org', '@a:x.org']);
  });

  it('finds mentions written in Markdown and keeps the display name', () => {
    const out = convert({ body: '', format: 'markdown', formatted: 'hey [Bob](https://matrix.to/#/@bob:example.org)!' }, 'xep0393');
    expect(out).toEqual({ body: 'hey Bob!', matrixMentions: ['@bob:example.org'] });
  });
});

describe('hasXep0393Styling', () => {
  it('tells plain text that an XMPP client would style from text it would not', () => {
    expect(hasXep0393Styling('literal *stars* here')).toBe(true);
    expect(hasXep0393Styling('> a quote')).toBe(true);
    expect(hasXep0393Styling('2*3*4 and snake_case_name')).toBe(false);
    expect(hasXep0393Styling('مرحبا 🎉')).toBe(false);
  });
});
