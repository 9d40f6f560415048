/**
 * Markdown ↔ the intermediate document.
 *
 * Reading: markdown-it (CommonMark plus tables, strikethrough and bare-URL
 * links) with raw HTML off, then `sanitizeHtml`, then the HTML reader — the
 * same path as Matrix HTML, so Markdown gets no way around the allowlist.
 * A single newline is a line break, as in chat clients.
 *
 * Writing escapes text so that it reads back as the same text.
 */
import MarkdownIt from 'markdown-it';
import { htmlToBlocks } from './html.js';
import { markItem, quoteLines, type Block, type Inline } from './ir.js';
import { matrixToUserHref } from './mentions.js';
import { sanitizeHtml } from './sanitize.js';

const md = new MarkdownIt('default', { html: false, linkify: true, breaks: true, typographer: false });

export function parseMarkdown(markdown: string): Block[] {
  return htmlToBlocks(sanitizeHtml(md.render(markdown)));
}

// --- writing

export function renderMarkdown(blocks: readonly Block[]): string {
  return renderBlocks(blocks, false);
}

function renderBlocks(blocks: readonly Block[], inListItem: boolean): string {
  return blocks
    .map((block, i) => {
      const previous = i > 0 ? blocks[i - 1] : undefined;
      if (!previous) return renderBlock(block);
      // An item's text followed by a nested list stays a tight list, where the list may interrupt
      // a paragraph (CommonMark: bullets, or numbers starting at 1).
      const interrupts = block.kind === 'list' && (!block.ordered || block.start === 1);
      const gap = inListItem && previous.kind === 'paragraph' && interrupts ? '\n' : '\n\n';
      return gap + renderBlock(block);
    })
    .join('');
}

function renderBlock(block: Block): string {
  switch (block.kind) {
    case 'paragraph':
      return renderInlines(block.children);
    case 'heading': {
      const level = Math.min(6, Math.max(1, block.level));
      const text = renderInlines(block.children.map((n) => (n.kind === 'break' ? { kind: 'text' as const, text: ' ' } : n)));
      return `${'#'.repeat(level)} ${text}`;
    }
    case 'code-block': {
      const fence = '`'.repeat(Math.max(3, longestRun(block.text, '`') + 1));
      return `${fence}${block.language ?? ''}\n${block.text}\n${fence}`;
    }
    case 'quote':
      return quoteLines(renderBlocks(block.children, false));
    case 'list':
      return block.items.map((item, index) => markItem(block.ordered ? `${block.start + index}. ` : '- ', renderBlocks(item, true))).join('\n');
    case 'table': {
      const width = Math.max(1, ...block.rows.map((row) => row.length));
      const line = (cells: readonly string[]): string =>
        `| ${Array.from({ length: width }, (_, i) => cells[i] ?? '').join(' | ')} |`;
      const rows = block.rows.map((row) => line(row.map((cell) => renderInlines(cell.map((n) => (n.kind === 'break' ? { kind: 'text' as const, text: ' ' } : n))))));
      const [header = line([]), ...rest] = rows;
      return [header, line(Array.from({ length: width }, () => '---')), ...rest].join('\n');
    }
    case 'rule':
      return '---';
  }
}

function renderInlines(nodes: readonly Inline[]): string {
  const pieces: string[] = [];
  // Only the last character written matters; reading it off a growing string would flatten it each time.
  let last = '';
  nodes.forEach((node, i) => {
    const piece = renderInline(node, last, nodes[i + 1]);
    if (piece !== '') last = piece.slice(-1);
    pieces.push(piece);
  });
  return pieces.join('');
}

const WORD = /[\p{L}\p{N}]/u;

/** `before`: the last character written on this run, '' at its start. */
function renderInline(node: Inline, before: string, next: Inline | undefined): string {
  const atLineStart = before === '' || before === '\n';
  switch (node.kind) {
    case 'text':
      return escapeText(node.text, atLineStart);
    case 'break':
      return '\n';
    case 'strong':
      return `**${renderInlines(node.children)}**`;
    case 'strike':
      return `~~${renderInlines(node.children)}~~`;
    case 'em': {
      // `_` cannot emphasise inside a word; `*` can, but `***x***` reads back with strong and em swapped.
      const inWord = WORD.test(before) || WORD.test(firstChar(next));
      const marker = inWord ? '*' : '_';
      return `${marker}${renderInlines(node.children)}${marker}`;
    }
    case 'code':
      return codeSpan(node.text);
    case 'link': {
      const label = renderInlines(node.children);
      if (label === '' || label === escapeText(node.href, false)) return `<${linkDestination(node.href)}>`;
      return `[${label}](${linkDestination(node.href)})`;
    }
    case 'mention':
      return `[${node.children.length ? renderInlines(node.children) : escapeText(node.userId, false)}](${matrixToUserHref(node.userId)})`;
    case 'image':
      return `![${escapeText(node.alt, false)}](${linkDestination(node.src)})`;
  }
}

/** The first character the next node will write, for the intraword check. */
function firstChar(node: Inline | undefined): string {
  if (!node) return '';
  switch (node.kind) {
    case 'text':
      return node.text.slice(0, 1);
    case 'code':
      return '`';
    case 'break':
      return '\n';
    case 'image':
      return '!';
    case 'link':
    case 'mention':
      return '[';
    default:
      return '*';
  }
}

function longestRun(text: string, ch: string): number {
  let longest = 0;
  let run = 0;
  for (const c of text) {
    run = c === ch ? run + 1 : 0;
    longest = Math.max(longest, run);
  }
  return longest;
}

function codeSpan(text: string): string {
  const fence = '`'.repeat(longestRun(text, '`') + 1);
  // CommonMark strips one space at each end when both are there, and a backtick at an edge would merge with the fence.
  const pad = text.startsWith('`') || text.endsWith('`') || (text.startsWith(' ') && text.endsWith(' ') && text.trim() !== '');
  return pad ? `${fence} ${text} ${fence}` : `${fence}${text}${fence}`;
}

/** Percent-encodes what would end or break a link destination. */
function linkDestination(url: string): string {
  return url.replace(/[\s()<>\\]/g, (c) => encodeURIComponent(c));
}

/**
 * Backslash-escapes what Markdown would read as markup. `_` between two word
 * characters (snake_case, URLs) cannot start emphasis and stays as it is;
 * `&` only when it would start an entity.
 */
function escapeText(text: string, atLineStart: boolean): string {
  let out = text.replace(/[\\`*~[\]<>|]/g, '\\$&');
  out = out.replace(/_/g, (m, offset: number, whole: string) =>
    WORD.test(whole.charAt(offset - 1)) && WORD.test(whole.charAt(offset + 1)) ? m : '\\_',
  );
  out = out.replace(/&(?=#?[a-zA-Z0-9]+;)/g, '\\&');
  if (atLineStart) out = escapeLineStart(out);
  return out;
}

/**
 * What starts a block only at the start of a line: ATX headings, list
 * markers, rules and setext underlines, and indentation (an indented code
 * block; Markdown has no other way to keep leading spaces, so they go).
 */
function escapeLineStart(text: string): string {
  const line = text.replace(/^[ \t]+/, '');
  if (/^(?:-[ \t]*){3,}$|^=+[ \t]*$/.test(line)) return `\\${line}`;
  return line.replace(/^(#{1,6}|[-+])(?=[ \t]|$)/, '\\$1').replace(/^(\d{1,9})([.)])(?=[ \t]|$)/, '$1\\$2');
}
