// Code-point offsets (XEP-0426) and XEP-0393 styling detection.
import { describe, expect, it } from 'vitest';
import { codePointLength, stripFallback as stripRanges } from '../../../src/core/codepoints.js';
import { hasStyling } from '../../../adapters/xmpp/text.js';
import { hasInvalidXmlChars, stripInvalidXmlChars } from '../../../adapters/xmpp/xml.js';
import { escapeKey, rawId, rawStanzaId, scopedId, scopedStanzaId, senderScope } from '../../../adapters/xmpp/ids.js';

describe('code points', () => {
  it('counts astral characters once', () => {
    expect(codePointLength('😀 hi')).toBe(4);
    expect('😀 hi'.length).toBe(5);
  });

  it('strips ranges by code point, clamped, ignoring inverted ranges', () => {
    expect(stripRanges('😀 hi there', [{ start: 0, end: 5 }])).toBe('there');
    expect(stripRanges('abc', [{ start: 2 }])).toBe('ab');
    expect(stripRanges('abc', [{ start: 2, end: 1 }, { start: -5, end: 1 }])).toBe('bc');
    expect(stripRanges('abc', [{ start: 0, end: 99 }])).toBe('');
    expect(stripRanges('abc', [{}])).toBe('');
  });
});

describe('XEP-0393 detection', () => {
  it.each([
    ['*bold*', true],
    ['a _word_ here', true],
    ['~gone~', true],
    ['`code`', true],
    ['> quote', true],
    ['```\npre\n```', true],
    ['2 * 3 * 4', false],
    ['snake_case_name', false],
    ['a*b*c', false],
    ['* not bold *', false],
    ['plain text', false],
    ['*across\nlines*', false],
  ])('%j → %s', (text, styled) => {
    expect(hasStyling(text)).toBe(styled);
  });
});

describe('XML characters', () => {
  it('finds and strips what XML 1.0 does not allow, keeps tab/newline and astral characters', () => {
    expect(hasInvalidXmlChars('ok\tline\n😀')).toBe(false);
    expect(hasInvalidXmlChars('a\u0001b')).toBe(true);
    expect(hasInvalidXmlChars('lone \uD800 surrogate')).toBe(true);
    expect(stripInvalidXmlChars('a\u0000b\uFFFEc\uDC00d😀')).toBe('abcd😀');
  });
});

describe('scoped ids', () => {
  it('round-trip raw ids whatever they contain; escaped sender keys cannot forge a scope', () => {
    const scope = senderScope('room@muc.example', 'o:ab/c%d');
    expect(scope).toBe(`room@muc.example/${escapeKey('o:ab/c%d')}`);
    expect(rawId(scopedId(scope, 'id/with/slashes'))).toBe('id/with/slashes');
    expect(rawStanzaId(scopedStanzaId('room@muc.example', 'S/1'))).toBe('S/1');
    expect(senderScope('r@m', 'n:a/b')).not.toBe(senderScope('r@m/n:a', 'b'));
    expect(rawId(undefined)).toBeUndefined();
  });
});

describe('one code-point helper', () => {
  it('the bridge formats and the XMPP adapter use the same functions, from src/core', async () => {
    const core = await import('../../../src/core/codepoints.js');
    const format = await import('../../../src/bridge/format/index.js');
    const xmppText: Record<string, unknown> = await import('../../../adapters/xmpp/text.js');
    expect(format.codePointLength).toBe(core.codePointLength);
    expect(format.stripFallback).toBe(core.stripFallback);
    expect(xmppText['codePointLength']).toBeUndefined();
    expect(xmppText['stripRanges']).toBeUndefined();
  });
});
