/**
 * Pure text helpers every edge needs the same way: adapters may import only
 * src/core, and the bridge's format module uses them too.
 */
import { MAX_BODY_CHARS } from './event.js';

/** Cuts to `max` UTF-16 units with an ellipsis, never inside a surrogate pair. */
export function truncate(text: string, max: number = MAX_BODY_CHARS): string {
  if (text.length <= max) return text;
  let end = max - 1;
  const code = text.charCodeAt(end - 1);
  if (code >= 0xd800 && code <= 0xdbff) end--;
  return `${text.slice(0, end)}…`;
}

/**
 * Strips the body fallback of a Matrix rich reply (removed from the spec in
 * v1.13; clients SHOULD still strip them from what older clients send): the
 * leading lines that start with "> " and the blank line after them (spec
 * "Stripping the fallback"). A bare ">" line counts too, as some clients trim
 * trailing spaces. Only call this for events that are replies
 * (`m.in_reply_to`): in any other message a leading quote is the sender's own
 * text. The HTML part, `<mx-reply>`, goes in the bridge's `sanitizeHtml`.
 */
export function stripReplyFallbackBody(body: string): string {
  const lines = body.split('\n');
  let i = 0;
  while (i < lines.length && (lines[i]?.startsWith('> ') || lines[i] === '>')) i++;
  if (i === 0) return body;
  if (lines[i] === '') i++;
  return lines.slice(i).join('\n');
}

/**
 * The one size rule for every edge (README "Message size"): nothing is
 * dropped for its size. A text a target cannot carry whole is cut, never
 * inside a surrogate pair, and ends with this visible marker; the log keeps
 * the full text and the HTTP sender learns at send time which linked
 * endpoints will cut it.
 */
export const TRUNCATION_MARKER = ' …[truncated]';

const encoder = new TextEncoder();

/** UTF-8 length in bytes. */
export function utf8Length(text: string): number {
  return encoder.encode(text).length;
}

/** Cuts `text` to at most `max` UTF-16 units including the marker; unchanged when it fits. */
export function truncateMarked(text: string, max: number = MAX_BODY_CHARS): string {
  if (text.length <= max) return text;
  let end = Math.max(0, max - TRUNCATION_MARKER.length);
  const code = text.charCodeAt(end - 1);
  if (code >= 0xd800 && code <= 0xdbff) end--;
  return `${text.slice(0, end)}${TRUNCATION_MARKER}`;
}

/**
 * Cuts `text` so that `measure(result)` (default: its UTF-8 length) is at
 * most `maxBytes`, the marker included; unchanged when it fits. `measure`
 * lets a renderer count what its wire format adds (JSON or XML escaping).
 */
export function truncateToBytes(text: string, maxBytes: number, measure: (s: string) => number = utf8Length): string {
  if (measure(text) <= maxBytes) return text;
  // Binary search on the UTF-16 length: the measure grows with the prefix.
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (measure(truncateMarked(text, mid + TRUNCATION_MARKER.length)) <= maxBytes) lo = mid;
    else hi = mid - 1;
  }
  return truncateMarked(text, lo + TRUNCATION_MARKER.length);
}
