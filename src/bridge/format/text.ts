/**
 * XEP-0393 message styling ↔ the intermediate document, and plain text.
 *
 * Parsing follows the XEP's business rules: blocks first (``` preformatted
 * blocks, `>` quotations, plain lines), then spans inside each line, lazily
 * matched; an opening directive sits at the start of a line/span or after
 * whitespace and is not followed by whitespace, a closing one is not preceded
 * by whitespace, and spans never cross lines.
 *
 * XEP-0393 has no escape, so writing can only leave styling out where it
 * would be misread: a span is written only where its directives would parse
 * back to the same span, otherwise its text is written unstyled.
 */
import { hasFormatting, markItem, normaliseBlocks, pushAll, quoteLines, type Block, type Inline, type StyleKind } from './ir.js';

const SPACE = /^[\p{White_Space}\p{Z}]$/u;

function isSpace(ch: string | undefined): boolean {
  return ch !== undefined && SPACE.test(ch);
}

const DIRECTIVES: Readonly<Record<string, StyleKind | 'code'>> = { '*': 'strong', _: 'em', '~': 'strike', '`': 'code' };
const MARKERS: Readonly<Record<StyleKind, string>> = { strong: '*', em: '_', strike: '~' };

// --- parsing

export function parseXep0393(text: string): Block[] {
  return normaliseBlocks(parseBlocks(text.replace(/\r\n?/g, '\n').split('\n')), { trimLines: false });
}

/** True when the text would show styling in a XEP-0393 client (a sender of plain text then adds `<unstyled/>`). */
export function hasXep0393Styling(text: string): boolean {
  return hasFormatting(parseXep0393(text));
}

/**
 * Deeper `>` levels stay text: recursion must not follow a line of 60 000
 * `>`s, and Matrix caps HTML nesting at 100 tags anyway.
 */
const MAX_QUOTE_DEPTH = 50;

function parseBlocks(lines: readonly string[], depth = 0): Block[] {
  const blocks: Block[] = [];
  let paragraph: Inline[] | undefined;
  const flush = (): void => {
    if (paragraph) blocks.push({ kind: 'paragraph', children: paragraph });
    paragraph = undefined;
  };
  let i = 0;
  while (i < lines.length) {
    const line = lines[i] ?? '';
    if (line.startsWith('```')) {
      flush();
      const end = lines.indexOf('```', i + 1);
      const stop = end === -1 ? lines.length : end;
      const hint = line.slice(3).trim();
      const text = lines.slice(i + 1, stop).join('\n');
      // The XEP ignores the rest of the opening line; a word there is a language hint by convention.
      blocks.push(/^[\w.+#-]{1,32}$/.test(hint) ? { kind: 'code-block', text, language: hint } : { kind: 'code-block', text });
      i = stop + 1;
    } else if (line.startsWith('>') && depth < MAX_QUOTE_DEPTH) {
      flush();
      const quoted: string[] = [];
      for (; i < lines.length && lines[i]?.startsWith('>'); i++) {
        const rest = (lines[i] ?? '').slice(1);
        // "Lines inside the block quote MUST have the first leading whitespace character trimmed."
        // (every whitespace character is in the BMP, so it is one UTF-16 unit)
        quoted.push(isSpace(rest[0]) ? rest.slice(1) : rest);
      }
      blocks.push({ kind: 'quote', children: parseBlocks(quoted, depth + 1) });
    } else if (line.trim() === '') {
      flush();
      i++;
    } else {
      if (paragraph) paragraph.push({ kind: 'break' });
      else paragraph = [];
      pushAll(paragraph, parseSpans(line));
      i++;
    }
  }
  flush();
  return blocks;
}

function parseSpans(line: string): Inline[] {
  const closers = closingPositions(line);
  const out: Inline[] = [];
  let text = '';
  let i = 0;
  while (i < line.length) {
    const ch = line[i] ?? '';
    const kind = DIRECTIVES[ch];
    // Start of the line or span, or after whitespace; followed by neither whitespace nor itself ("**" is plain).
    const next = line[i + 1];
    if (kind && (i === 0 || isSpace(line[i - 1])) && next !== undefined && !isSpace(next) && next !== ch) {
      // the first closing directive with at least one character of content: lazy matching
      const close = closers.get(ch)?.find(i + 2) ?? -1;
      if (close !== -1) {
        if (text) out.push({ kind: 'text', text });
        text = '';
        const inner = line.slice(i + 1, close);
        out.push(kind === 'code' ? { kind: 'code', text: inner } : { kind, children: parseSpans(inner) });
        i = close + 1;
        continue;
      }
    }
    text += ch;
    i++;
  }
  if (text) out.push({ kind: 'text', text });
  return out;
}

/**
 * For each directive, the positions where it could close a span (not after
 * whitespace), so that finding a span's end is a binary search rather than a
 * scan to the end of the line for every unmatched opener.
 */
function closingPositions(line: string): Map<string, { find(from: number): number }> {
  const positions = new Map<string, number[]>();
  for (let j = 1; j < line.length; j++) {
    const ch = line[j] ?? '';
    if (DIRECTIVES[ch] && !isSpace(line[j - 1])) {
      const list = positions.get(ch) ?? [];
      list.push(j);
      positions.set(ch, list);
    }
  }
  const search = (list: readonly number[]) => ({
    find(from: number): number {
      let lo = 0;
      let hi = list.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if ((list[mid] ?? Infinity) < from) lo = mid + 1;
        else hi = mid;
      }
      return list[lo] ?? -1;
    },
  });
  return new Map([...positions].map(([ch, list]) => [ch, search(list)]));
}

// --- writing

export type TextMode = 'plain' | 'xep0393';

/** Renders the document as XEP-0393 styled text or as plain text. */
export function renderText(blocks: readonly Block[], mode: TextMode): string {
  return renderBlocks(blocks, mode, false);
}

function renderBlocks(blocks: readonly Block[], mode: TextMode, inListItem: boolean): string {
  let out = '';
  let previous: Block | undefined;
  for (const block of blocks) {
    const rendered = renderBlock(block, mode);
    if (previous) out += inListItem && !(previous.kind === 'quote' && block.kind === 'quote') ? '\n' : separator(previous, block, mode);
    out += rendered;
    previous = block;
  }
  return out;
}

/**
 * One newline where a quote's `>` or a code fence already marks the boundary
 * (so "> quote\nreply" stays as typed), a blank line between other blocks.
 */
function separator(a: Block, b: Block, mode: TextMode): string {
  if (a.kind === 'quote' && b.kind === 'quote') return '\n\n';
  if (a.kind === 'quote' || b.kind === 'quote') return '\n';
  if (mode === 'xep0393' && (a.kind === 'code-block' || b.kind === 'code-block')) return '\n';
  return '\n\n';
}

function renderBlock(block: Block, mode: TextMode): string {
  switch (block.kind) {
    case 'paragraph':
      return renderInlines(block.children, mode, true);
    case 'heading':
      return renderInlines([{ kind: 'strong', children: block.children }], mode, true);
    case 'code-block':
      return mode === 'xep0393' ? `\`\`\`${block.language ?? ''}\n${block.text}\n\`\`\`` : block.text;
    case 'quote':
      return quoteLines(renderText(block.children, mode));
    case 'list':
      return block.items.map((item, index) => markItem(block.ordered ? `${block.start + index}. ` : '• ', renderBlocks(item, mode, true))).join('\n');
    case 'table':
      return block.rows.map((row) => row.map((cell) => renderInlines(cell, mode, true)).join(' | ')).join('\n');
    case 'rule':
      return '---';
  }
}

/**
 * `canOpen`: whether a directive may start at the current position when
 * nothing has been written yet (start of a line, or right after an opening
 * directive of the enclosing span).
 */
function renderInlines(nodes: readonly Inline[], mode: TextMode, canOpen: boolean): string {
  const pieces: string[] = [];
  let open = canOpen;
  for (const node of nodes) {
    const piece = renderInline(node, mode, open);
    // Looking at the last character of a growing `out += …` string flattens it each time: quadratic.
    if (piece !== '') open = isSpace(piece[piece.length - 1]);
    pieces.push(piece);
  }
  return pieces.join('');
}

function renderInline(node: Inline, mode: TextMode, canOpen: boolean): string {
  switch (node.kind) {
    case 'text':
      return node.text;
    case 'break':
      return '\n';
    case 'code':
      return mode === 'xep0393' && wraps(node.text, '`', canOpen) ? `\`${node.text}\`` : node.text;
    case 'strong':
    case 'em':
    case 'strike': {
      if (mode === 'plain') return renderInlines(node.children, mode, canOpen);
      const marker = MARKERS[node.kind];
      // The unstyled text decides: it is what sits between the directives, minus nested directives.
      const plain = renderInlines(node.children, 'plain', true);
      if (!wraps(plain, marker, canOpen)) return renderInlines(node.children, mode, canOpen);
      return marker + renderInlines(node.children, mode, true) + marker;
    }
    case 'link':
      return linkText(renderInlines(node.children, mode, canOpen), node.href);
    case 'mention':
      return node.children.length ? renderInlines(node.children, mode, canOpen) : node.userId;
    case 'image':
      return node.alt || node.title || '[image]';
  }
}

/** Whether `marker + inner + marker` parses back as exactly this span. */
function wraps(inner: string, marker: string, canOpen: boolean): boolean {
  if (!canOpen || inner === '' || inner.includes('\n') || inner.includes(marker)) return false;
  // Whitespace is all in the BMP, so looking at UTF-16 units is enough.
  return !isSpace(inner[0]) && !isSpace(inner[inner.length - 1]);
}

/** Links have no XEP-0393 or plain form: "text (url)", or the url alone when the text is the url. */
function linkText(text: string, href: string): string {
  if (text === '') return href;
  const bare = (u: string): string => u.replace(/^(?:https?:\/\/|mailto:)/i, '').replace(/\/$/, '');
  if (text === href || bare(text) === bare(href)) return text;
  return `${text} (${href})`;
}
