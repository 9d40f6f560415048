import { describe, expect, it } from 'vitest';
import { codePointLength, codePointSlice, prependFallback, stripFallback } from '../../../src/bridge/format/index.js';

describe('code-point offsets (XEP-0426)', () => {
  it('counts code points, not UTF-16 units', () => {
    expect(codePointLength('😀 hi')).toBe(4);
    expect('😀 hi'.length).toBe(5);
    expect(codePointLength('𝔸𝔹')).toBe(2);
    expect(codePointLength('👩‍💻')).toBe(3); // two people-emoji code points and a zero-width joiner
    expect(codePointLength('مرحبا')).toBe(5);
    expect(codePointLength('')).toBe(0);
    expect(codePointLength('a\ud800b')).toBe(3); // a lone surrogate is one, as in Array.from
  });

  it('slices after emoji and astral characters by code point', () => {
    const text = '😀𝔸 שלום';
    expect(codePointSlice(text, 3)).toBe('שלום');
    expect(codePointSlice(text, 1, 2)).toBe('𝔸');
    expect(codePointSlice(text, 0, 1)).toBe('😀');
    // a UTF-16 slice at the same offsets would cut the emoji in half
    expect(text.slice(0, 1)).not.toBe('😀');
  });

  it('clamps bounds to the text', () => {
    expect(codePointSlice('ab😀', -5, 99)).toBe('ab😀');
    expect(codePointSlice('ab😀', 2, 1)).toBe('');
    expect(codePointSlice('ab😀', Number.NaN)).toBe('ab😀');
  });
});

describe('stripFallback (XEP-0428 ranges)', () => {
  it('removes the reply fallback of the XEP-0428 example', () => {
    const body = '> Anna wrote:\n> Hi, how are you?\nGreat';
    expect(stripFallback(body, [{ start: 0, end: 33 }])).toBe('Great');
  });

  it('counts the range in code points when emoji come before it', () => {
    // The quoted text holds astral characters, so the UTF-16 offsets differ from the code-point ones.
    const fallback = '> 😀 Anna 𝔸 wrote:\n> 👋🏽 hi\n';
    const { text, range } = prependFallback(fallback, 'Great 🎉');
    expect(range).toEqual({ start: 0, end: Array.from(fallback).length });
    expect(range.end).toBeLessThan(fallback.length);
    expect(stripFallback(text, [range])).toBe('Great 🎉');
  });

  it('removes a range in the middle after astral characters', () => {
    const text = '🎉🎉 [fallback] rest';
    expect(stripFallback(text, [{ start: 3, end: 14 }])).toBe('🎉🎉 rest');
  });

  it('treats a missing start or end as the edge of the text, and no bounds as the whole text', () => {
    expect(stripFallback('😀abc', [{ end: 2 }])).toBe('bc');
    expect(stripFallback('😀abc', [{ start: 2 }])).toBe('😀a');
    expect(stripFallback('😀abc', [{}])).toBe('');
  });

  it('merges overlapping and unsorted ranges and ignores reversed or out-of-range ones', () => {
    expect(stripFallback('0123456789', [{ start: 6, end: 8 }, { start: 1, end: 3 }, { start: 2, end: 4 }])).toBe('04589');
    expect(stripFallback('0123456789', [{ start: 5, end: 2 }])).toBe('0123456789');
    expect(stripFallback('0123456789', [{ start: 8, end: 500 }])).toBe('01234567');
    expect(stripFallback('0123456789', [])).toBe('0123456789');
  });
});
