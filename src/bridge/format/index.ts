/**
 * Format conversion for delivery: Matrix HTML ↔ XEP-0393 styling ↔ Markdown
 * ↔ plain text. Pure functions, no I/O.
 *
 * Every source is parsed into one small document (./ir.ts) and rendered for
 * the target; HTML is sanitised on the way in and on the way out. The plain
 * `body` is always rendered from the same document, so it says what the
 * formatted text says (links as "text (url)", mentions as display names).
 */
import type { Content, LogEvent, TextFormat } from '../../core/event.js';
import { hasMarkup, htmlToBlocks, renderHtml } from './html.js';
import { collectMentions, hasFormatting, type Block } from './ir.js';
import { parseMarkdown, renderMarkdown } from './markdown.js';
import { stripReplyFallbackBody } from '../../core/text.js';
import { sanitizeHtml } from './sanitize.js';
import { parseXep0393, renderText } from './text.js';

export { sanitizeHtml, stripReplyFallbackHtml, MATRIX_ALLOWED_TAGS, LINK_SCHEMES } from './sanitize.js';
export { stripReplyFallbackBody } from '../../core/text.js';
export { codePointLength, codePointSlice, stripFallback, prependFallback, type CodePointRange } from '../../core/codepoints.js';
export { hasXep0393Styling } from './text.js';
export { matrixUserIdFromHref, matrixToUserHref } from './mentions.js';

export type TargetFormat = TextFormat | 'plain';

/** The text part of `Content` (src/core/event.ts). */
export interface FormattedText {
  readonly body: string;
  readonly format?: TextFormat;
  readonly formatted?: string;
}

export interface Converted {
  /** plain text, always present */
  body: string;
  /** set only when the formatted text says more than `body` */
  format?: TextFormat;
  formatted?: string;
  /**
   * Matrix user ids of the mentions found (matrix.to user links), in order,
   * without duplicates. These are Matrix ids, not gateway uids: the caller
   * maps them before putting them in `content.mentions`.
   */
  matrixMentions: string[];
}

export interface ConvertOptions {
  /**
   * The message is a reply (`m.in_reply_to`): strip the legacy "> " reply
   * fallback from a plain body. `<mx-reply>` is stripped from HTML always.
   */
  readonly isReply?: boolean;
}

/**
 * Converts message text for a target format. For `xep0393` the XMPP body to
 * send is `formatted` when `format` is set, else `body` (then add
 * `<unstyled/>` if `hasXep0393Styling(body)`). HTML → HTML keeps the source,
 * re-sanitised; XEP-0393 → XEP-0393 keeps it as is; Markdown is always
 * re-rendered. `body` is always rendered afresh.
 */
export function convert(content: FormattedText, target: TargetFormat, options: ConvertOptions = {}): Converted {
  const plainBody = options.isReply ? stripReplyFallbackBody(content.body) : content.body;
  const { format: source, formatted: formattedIn } = content;
  if (source === undefined || formattedIn === undefined) return { body: plainBody, matrixMentions: [] };

  let blocks: Block[];
  let safeHtml: string | undefined;
  switch (source) {
    case 'html':
      safeHtml = sanitizeHtml(formattedIn);
      blocks = htmlToBlocks(safeHtml);
      break;
    case 'markdown':
      blocks = parseMarkdown(formattedIn);
      break;
    case 'xep0393':
      blocks = parseXep0393(formattedIn);
      break;
  }

  const styled = hasFormatting(blocks);
  // Unstyled XEP-0393 text is plain text already; rendering it again would only fold blank lines.
  let body = source === 'xep0393' && !styled ? formattedIn : renderText(blocks, 'plain');
  // Formatted text that renders to nothing (empty paragraphs, nothing but script) must not blank the message.
  if (body.trim() === '') body = plainBody;
  const matrixMentions = collectMentions(blocks);

  let formatted: string | undefined;
  switch (target) {
    case 'plain':
      break;
    case 'html':
      // Matrix to Matrix keeps what the document cannot hold (colours, spoilers, sup/sub).
      if (safeHtml !== undefined) formatted = styled || hasMarkup(safeHtml) ? safeHtml : undefined;
      else formatted = styled ? renderHtml(blocks) : undefined;
      break;
    case 'markdown':
      // Re-rendered even from Markdown: what leaves here is escaped by us and carries no raw HTML.
      if (styled) formatted = renderMarkdown(blocks);
      break;
    case 'xep0393':
      if (styled) formatted = source === 'xep0393' ? formattedIn : renderText(blocks, 'xep0393');
      break;
  }
  if (formatted === undefined || formatted === body || target === 'plain') return { body, matrixMentions };
  return { body, format: target, formatted, matrixMentions };
}

/**
 * An event's content in a target format (sanitised on the way), keeping
 * mentions and attachments; undefined for kinds without content. What a
 * delivery hands an adapter as `context.content`, and what an adapter that
 * renders straight from the log (history, archive queries) renders.
 */
export function contentInFormat(event: LogEvent, target: TargetFormat): Content | undefined {
  if (!('content' in event)) return undefined;
  // Plain text is the same in every format (XEP-0393 has no escaping; adapters escape for HTML).
  if (event.content.format === undefined) return event.content;
  const { body, format, formatted, ...rest } = event.content;
  const converted = convert(
    { body, ...(format ? { format } : {}), ...(formatted !== undefined ? { formatted } : {}) },
    target,
    { isReply: 'rel' in event && event.rel !== undefined && 'replyTo' in event.rel },
  );
  return {
    ...rest,
    body: converted.body,
    ...(converted.format ? { format: converted.format } : {}),
    ...(converted.formatted !== undefined ? { formatted: converted.formatted } : {}),
  };
}
