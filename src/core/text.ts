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
