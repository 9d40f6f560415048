/**
 * Matrix rich-reply fallbacks (removed from the spec in v1.13; clients SHOULD
 * still strip them from what older clients send). The HTML part,
 * `<mx-reply>`, goes in `sanitizeHtml`.
 */

/**
 * Strips the body fallback of a reply: the leading lines that start with
 * "> " and the blank line after them (spec "Stripping the fallback").
 * A bare ">" line counts too, as some clients trim trailing spaces. Only
 * call this for events that are replies (`m.in_reply_to`): in any other
 * message a leading quote is the sender's own text.
 */
export function stripReplyFallbackBody(body: string): string {
  const lines = body.split('\n');
  let i = 0;
  while (i < lines.length && (lines[i]?.startsWith('> ') || lines[i] === '>')) i++;
  if (i === 0) return body;
  if (lines[i] === '') i++;
  return lines.slice(i).join('\n');
}
