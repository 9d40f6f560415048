/**
 * Text helpers the adapter needs without importing src/bridge: Unicode
 * code-point offsets (XEP-0426, used by XEP-0428 fallbacks) and detection of
 * XEP-0393 styling.
 */

/** Length in code points: "😀 hi" is 4 here, 5 in UTF-16 units. */
export function codePointLength(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/** A fallback range in code points, half-open; a missing bound means the start / the end of the text. */
export interface CodePointRange {
  readonly start?: number;
  readonly end?: number;
}

/**
 * Removes the ranges from `text`. Bounds are clamped; a range whose start
 * lies after its end is ignored, so a peer's bad offsets cannot eat the message.
 */
export function stripRanges(text: string, ranges: readonly CodePointRange[]): string {
  if (ranges.length === 0) return text;
  const chars = Array.from(text);
  const drop = new Uint8Array(chars.length);
  const clamp = (n: number) => (Number.isFinite(n) ? Math.min(chars.length, Math.max(0, Math.trunc(n))) : 0);
  for (const r of ranges) {
    const start = clamp(r.start ?? 0);
    const end = clamp(r.end ?? chars.length);
    if (start < end) drop.fill(1, start, end);
  }
  return chars.filter((_, i) => drop[i] === 0).join('');
}

// XEP-0393 §6: an opening directive starts a line or follows whitespace and is
// not followed by whitespace; the closing one is not preceded by whitespace;
// spans do not cross lines.
const SPAN = /(?:^|\s)([*_~`])(?=\S)[^\n]*?\S\1/mu;
const BLOCK = /^(?:```|>)/mu;

/** True when a XEP-0393 client would show styling in this text. */
export function hasStyling(text: string): boolean {
  return BLOCK.test(text) || SPAN.test(text);
}
