/**
 * Unicode code-point offsets, as XEP-0426 counts them for XEP-0428 fallback
 * ranges (used by XEP-0461 replies): "😀 hi" is 4 characters there, 5 UTF-16
 * units in JavaScript. Never use `String#length` or `slice` on such offsets.
 * The one helper for both the bridge's formats and the adapters (which may
 * import src/core).
 */

/** A half-open range `[start, end)` of code points; a missing bound means the start / the end of the text. */
export interface CodePointRange {
  readonly start?: number;
  readonly end?: number;
}

export function codePointLength(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++, n++) {
    const unit = text.charCodeAt(i);
    // a surrogate pair is one code point; a lone surrogate counts as one, as in Array.from
    if (unit >= 0xd800 && unit <= 0xdbff) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
  }
  return n;
}

/** `text` from code point `start` up to (not including) `end`; bounds are clamped to the text. */
export function codePointSlice(text: string, start: number, end?: number): string {
  const chars = Array.from(text);
  return chars.slice(clamp(start, chars.length), end === undefined ? chars.length : clamp(end, chars.length)).join('');
}

function clamp(offset: number, length: number): number {
  if (Number.isNaN(offset)) return 0;
  return Math.min(length, Math.max(0, Math.trunc(offset)));
}

/**
 * Removes the fallback ranges from `text`. Ranges may be unsorted or overlap;
 * bounds outside the text are clamped and a range whose start lies after its
 * end is ignored (a peer's bad offsets must not eat the message).
 */
export function stripFallback(text: string, ranges: readonly CodePointRange[]): string {
  if (ranges.length === 0) return text;
  const chars = Array.from(text);
  const drop = new Uint8Array(chars.length);
  for (const range of ranges) {
    const start = clamp(range.start ?? 0, chars.length);
    const end = clamp(range.end ?? chars.length, chars.length);
    if (start < end) drop.fill(1, start, end);
  }
  return chars.filter((_, i) => drop[i] === 0).join('');
}

/** Puts a fallback before `text` and returns the range that marks it, for a XEP-0428 `<body start end/>`. */
export function prependFallback(fallback: string, text: string): { text: string; range: { start: number; end: number } } {
  return { text: fallback + text, range: { start: 0, end: codePointLength(fallback) } };
}
