import { readFileSync } from 'node:fs';
import { DomUtils, parseDocument } from 'htmlparser2';
import { describe, expect, it } from 'vitest';
import { convert, sanitizeHtml, stripReplyFallbackHtml } from '../../../src/bridge/format/index.js';

const { payloads } = JSON.parse(readFileSync(new URL('../../fixtures/format/xss.json', import.meta.url), 'utf8')) as {
  payloads: string[];
};

// The Matrix spec's table, written out here rather than imported, so a wrong
// allowlist in the implementation fails these tests.
const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  font: ['data-mx-bg-color', 'data-mx-color', 'color'],
  span: ['data-mx-bg-color', 'data-mx-color', 'data-mx-spoiler', 'data-mx-maths'],
  a: ['href', 'target'],
  img: ['width', 'height', 'alt', 'title', 'src'],
  ol: ['start'],
  code: ['class'],
  div: ['data-mx-maths'],
};
const TAGS = new Set([
  'font', 'del', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'blockquote', 'p', 'a', 'ul', 'ol', 'sup', 'sub', 'li', 'b', 'i',
  'u', 'strong', 'em', 's', 'strike', 'code', 'hr', 'br', 'div', 'table', 'thead', 'tbody', 'tr', 'th', 'td',
  'caption', 'pre', 'span', 'img', 'details', 'summary',
]);
const LINK_SCHEMES = ['https', 'http', 'ftp', 'mailto', 'magnet'];

/** The scheme a browser would see: leading/trailing C0 and space dropped, tabs and newlines removed. */
function browserScheme(url: string): string | undefined {
  // eslint-disable-next-line no-control-regex -- emulating the URL parser's stripping of control characters
  const cleaned = url.replace(/^[\u0000-\u0020]+|[\u0000-\u0020]+$/g, '').replace(/[\t\n\r]/g, '');
  return /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(cleaned)?.[1]?.toLowerCase();
}

/** Parses the output and lists every way it breaks the allowlist; empty when safe. */
function violations(html: string): string[] {
  const problems: string[] = [];
  const doc = parseDocument(html, { decodeEntities: true });
  for (const el of DomUtils.findAll(() => true, doc.children)) {
    if (!TAGS.has(el.name)) problems.push(`tag <${el.name}>`);
    for (const [name, value] of Object.entries(el.attribs)) {
      if (/^on/i.test(name)) problems.push(`event handler ${name} on <${el.name}>`);
      if (!(ALLOWED[el.name] ?? []).includes(name)) problems.push(`attribute ${name} on <${el.name}>`);
      if (name === 'href') {
        const scheme = browserScheme(value);
        if (scheme === undefined || !LINK_SCHEMES.includes(scheme)) problems.push(`href ${JSON.stringify(value)}`);
      }
      if (name === 'src' && browserScheme(value) !== 'mxc') problems.push(`src ${JSON.stringify(value)}`);
      // eslint-disable-next-line no-control-regex -- control characters are what a browser ignores here
      if (/^(?:javascript|vbscript|data):/i.test(value.replace(/[\s\u0000-\u001f]/g, ''))) {
        problems.push(`dangerous URL in ${name}`);
      }
    }
  }
  return problems;
}

describe('sanitizeHtml on the XSS corpus', () => {
  it('has a corpus to check', () => {
    expect(payloads.length).toBeGreaterThan(50);
  });

  it('the checker itself flags unsafe HTML', () => {
    // Guards against a checker that passes everything.
    expect(violations('<img src=x onerror=alert(1)>')).toEqual(
      expect.arrayContaining(['event handler onerror on <img>', 'src "x"']),
    );
    expect(violations('<a href=" jav&#x09;ascript:alert(1)">x</a>')).toEqual(
      expect.arrayContaining([expect.stringMatching(/^href /), 'dangerous URL in href']),
    );
    expect(violations('<script>alert(1)</script>')).toContain('tag <script>');
    expect(violations('<b style="color:red">x</b>')).toContain('attribute style on <b>');
  });

  it.each(payloads)('neutralises %s', (payload) => {
    const out = sanitizeHtml(payload);
    expect(violations(out)).toEqual([]);
    // a second, textual look at the markup
    expect(out).not.toMatch(/<\s*\/?\s*(?:script|style|iframe|object|embed|svg|math|base|meta|link)\b/i);
    expect(out).not.toMatch(/<[^>]*\son[a-z]+\s*=/i);
    expect(out).not.toMatch(/(?:java|vb)script\s*:/i);
    // stable under a second pass: nothing re-forms when the output is parsed again
    expect(sanitizeHtml(out)).toBe(out);
  });

  it.each(payloads)('converts %s to safe HTML from HTML and from Markdown', (payload) => {
    const fromHtml = convert({ body: 'fallback', format: 'html', formatted: payload }, 'html');
    expect(violations(fromHtml.formatted ?? '')).toEqual([]);
    const fromMarkdown = convert({ body: 'fallback', format: 'markdown', formatted: payload }, 'html');
    expect(violations(fromMarkdown.formatted ?? '')).toEqual([]);
  });

  it('refuses Markdown links and images with dangerous URLs', () => {
    const md = '[a](javascript:alert(1)) [b](JAVASCRIPT:alert(1)) [c](vbscript:x) [d](data:text/html,x) ![e](javascript:alert(1)) <javascript:alert(1)>';
    const out = convert({ body: md, format: 'markdown', formatted: md }, 'html');
    expect(violations(out.formatted ?? '')).toEqual([]);
    expect(out.formatted ?? '').not.toMatch(/href=/);
  });
});

describe('sanitizeHtml keeps what Matrix allows', () => {
  it.each([
    ['a matrix.to mention', '<a href="https://matrix.to/#/@alice:example.org">Alice</a>'],
    ['an http, ftp, mailto and magnet link', '<a href="http://example.org/">a</a><a href="ftp://example.org/f">b</a><a href="mailto:a@example.org">c</a><a href="magnet:?xt=urn:btih:abc">d</a>'],
    ['a target=_blank link', '<a href="https://example.org/" target="_blank">a</a>'],
    ['an mxc image with its attributes', '<img src="mxc://example.org/abc" alt="cat" title="cat" width="32" height="32" />'],
    ['a highlighted code block', '<pre><code class="language-typescript">let a = 1;</code></pre>'],
    ['colours', '<span data-mx-color="#ff00aa" data-mx-bg-color="#000000">c</span><font color="#123456">f</font>'],
    ['a spoiler and maths', '<span data-mx-spoiler="reason">s</span><div data-mx-maths="x^2">x²</div>'],
    ['a numbered list from 3', '<ol start="3"><li>c</li></ol>'],
    ['a table', '<table><thead><tr><th>h</th></tr></thead><tbody><tr><td>d</td></tr></tbody></table>'],
    ['details', '<details><summary>more</summary>hidden</details>'],
    ['every inline tag', '<b>b</b><i>i</i><u>u</u><s>s</s><strike>k</strike><del>d</del><sup>1</sup><sub>2</sub><em>e</em><strong>s</strong><code>c</code>'],
  ])('%s', (_name, html) => {
    expect(sanitizeHtml(html)).toBe(html);
  });

  it('drops what the spec does not list', () => {
    expect(sanitizeHtml('<a href="https://example.org/" target="_top" name="n" rel="opener">a</a>')).toBe('<a href="https://example.org/">a</a>');
    expect(sanitizeHtml('<span data-mx-color="red" data-mx-bg-color="#12345">x</span>')).toBe('<span>x</span>');
    expect(sanitizeHtml('<img src="mxc://s/m" width="100%" height="1e9" />')).toBe('<img src="mxc://s/m" />');
    expect(sanitizeHtml('<code class="hljs language-js">x</code>')).toBe('<code class="language-js">x</code>');
    expect(sanitizeHtml('<ol start="x"><li>a</li></ol>')).toBe('<ol><li>a</li></ol>');
    expect(sanitizeHtml('<u>keep</u><marquee>text kept, tag not</marquee>')).toBe('<u>keep</u>text kept, tag not');
    // Containers of foreign markup go with their content, not just their tags.
    expect(sanitizeHtml('<svg><text>s</text></svg><math><mi>m</mi></math><iframe>i</iframe><object>o</object>after')).toBe('after');
  });

  it('drops relative and protocol-relative links (the spec requires a scheme)', () => {
    expect(sanitizeHtml('<a href="/x">a</a><a href="//evil.example/">b</a><a href="x.html">c</a>')).toBe('<a>a</a><a>b</a><a>c</a>');
  });

  it('limits nesting to 100 levels', () => {
    const deep = '<b>'.repeat(150) + 'x' + '</b>'.repeat(150);
    const out = sanitizeHtml(deep);
    expect(out.match(/<b>/g)?.length).toBe(100);
    expect(out).toContain('x');
  });

  it('strips <mx-reply> with everything in it, mentions included', () => {
    const html =
      '<mx-reply><blockquote><a href="https://matrix.to/#/!r:example.org/$e">In reply to</a> <a href="https://matrix.to/#/@bob:example.org">@bob:example.org</a><br />quoted <b>text</b></blockquote></mx-reply>my <b>answer</b>';
    expect(sanitizeHtml(html)).toBe('my <b>answer</b>');
    expect(stripReplyFallbackHtml(html)).toBe('my <b>answer</b>');
    expect(convert({ body: '> <@bob:example.org> quoted text\n\nmy answer', format: 'html', formatted: html }, 'plain')).toEqual({
      body: 'my answer',
      matrixMentions: [],
    });
  });
});
