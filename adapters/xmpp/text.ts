/**
 * Detection of XEP-0393 styling. Code-point offsets (XEP-0426, used by
 * XEP-0428 fallbacks) are in src/core/codepoints.ts.
 */

// XEP-0393 §6: an opening directive starts a line or follows whitespace and is
// not followed by whitespace; the closing one is not preceded by whitespace;
// spans do not cross lines.
const SPAN = /(?:^|\s)([*_~`])(?=\S)[^\n]*?\S\1/mu;
const BLOCK = /^(?:```|>)/mu;

/** True when a XEP-0393 client would show styling in this text. */
export function hasStyling(text: string): boolean {
  return BLOCK.test(text) || SPAN.test(text);
}
