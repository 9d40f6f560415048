/**
 * Sanitised Matrix HTML ↔ the intermediate document.
 *
 * Reading uses htmlparser2's tokenizer callbacks (the parser sanitize-html is
 * built on); it is only ever given the output of `sanitizeHtml`, so every tag
 * and attribute seen here is on the Matrix allowlist. Writing escapes all
 * text and runs the result through `sanitizeHtml` once more.
 */
import { Parser } from 'htmlparser2';
import { collapseHtmlSpace, normaliseBlocks, pushAll, type Block, type Inline } from './ir.js';
import { matrixToUserHref, matrixUserIdFromHref } from './mentions.js';
import { sanitizeHtml } from './sanitize.js';

interface HtmlElement {
  readonly name: string;
  readonly attrs: Readonly<Record<string, string>>;
  readonly children: HtmlNode[];
}
type HtmlNode = HtmlElement | string;

function parseFragment(html: string): HtmlElement {
  const root: HtmlElement = { name: '#fragment', attrs: {}, children: [] };
  const stack: HtmlElement[] = [root];
  const top = (): HtmlElement => stack[stack.length - 1] ?? root;
  const parser = new Parser(
    {
      onopentag(name, attrs) {
        const element: HtmlElement = { name, attrs, children: [] };
        top().children.push(element);
        stack.push(element);
      },
      ontext(text) {
        top().children.push(text);
      },
      onclosetag() {
        if (stack.length > 1) stack.pop();
      },
    },
    { decodeEntities: true, lowerCaseTags: true, lowerCaseAttributeNames: true },
  );
  parser.write(html);
  parser.end();
  return root;
}

const BLOCK_TAGS = new Set([
  'p', 'div', 'blockquote', 'pre', 'ul', 'ol', 'li', 'hr', 'table', 'thead', 'tbody', 'tfoot', 'tr', 'th', 'td',
  'caption', 'details', 'summary', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6',
]);

function isBlockElement(node: HtmlNode): node is HtmlElement {
  return typeof node !== 'string' && BLOCK_TAGS.has(node.name);
}

function textContent(node: HtmlNode): string {
  if (typeof node === 'string') return node;
  if (node.name === 'br') return '\n';
  return node.children.map(textContent).join('');
}

/** Whether sanitised HTML has any element other than `<br>`: formatting the document may not hold (colours, underline). */
export function hasMarkup(sanitisedHtml: string): boolean {
  // <br> is void, so any other element shows up at the top level.
  return parseFragment(sanitisedHtml).children.some((c) => typeof c !== 'string' && c.name !== 'br');
}

/** Parses HTML that has already been through `sanitizeHtml`. */
export function htmlToBlocks(sanitisedHtml: string): Block[] {
  return normaliseBlocks(blocksOf(parseFragment(sanitisedHtml).children), { trimLines: true });
}

function blocksOf(nodes: readonly HtmlNode[]): Block[] {
  const blocks: Block[] = [];
  let pending: Inline[] = [];
  const flush = (): void => {
    if (pending.length) blocks.push({ kind: 'paragraph', children: pending });
    pending = [];
  };
  for (const node of nodes) {
    if (isBlockElement(node)) {
      flush();
      pushAll(blocks, blockOf(node));
    } else {
      pushAll(pending, inlinesOf([node]));
    }
  }
  flush();
  return blocks;
}

function blockOf(el: HtmlElement): Block[] {
  switch (el.name) {
    case 'h1':
    case 'h2':
    case 'h3':
    case 'h4':
    case 'h5':
    case 'h6':
      return [{ kind: 'heading', level: Number(el.name.slice(1)), children: inlinesOf(el.children) }];
    case 'blockquote':
      return [{ kind: 'quote', children: blocksOf(el.children) }];
    case 'pre':
      return [codeBlockOf(el)];
    case 'ul':
    case 'ol':
      return [listOf(el)];
    case 'hr':
      return [{ kind: 'rule' }];
    case 'table':
      return tableOf(el);
    default:
      // p, div, details, summary, caption and stray list or table parts
      return blocksOf(el.children);
  }
}

function codeBlockOf(pre: HtmlElement): Block {
  // HTML drops a newline right after <pre>; Matrix clients end the code with one.
  const text = textContent(pre).replace(/^\n/, '').replace(/\n$/, '');
  const code = pre.children.find((c): c is HtmlElement => typeof c !== 'string' && c.name === 'code');
  const language = /(?:^|\s)language-([\w.+#-]{1,32})(?:\s|$)/.exec(code?.attrs.class ?? '')?.[1];
  return language ? { kind: 'code-block', text, language } : { kind: 'code-block', text };
}

function listOf(el: HtmlElement): Block {
  const items: Block[][] = [];
  for (const child of el.children) {
    if (typeof child === 'string') {
      if (child.trim()) items.push([{ kind: 'paragraph', children: [{ kind: 'text', text: collapseHtmlSpace(child) }] }]);
      continue;
    }
    items.push(child.name === 'li' ? blocksOf(child.children) : blocksOf([child]));
  }
  const start = Number.parseInt(el.attrs.start ?? '1', 10);
  return { kind: 'list', ordered: el.name === 'ol', start: Number.isFinite(start) ? start : 1, items };
}

function tableOf(table: HtmlElement): Block[] {
  const before: Block[] = [];
  const rows: Inline[][][] = [];
  const visit = (el: HtmlElement): void => {
    for (const child of el.children) {
      if (typeof child === 'string') continue;
      if (child.name === 'caption') pushAll(before, blocksOf(child.children));
      else if (child.name === 'tr') {
        rows.push(
          child.children
            .filter((c): c is HtmlElement => typeof c !== 'string' && (c.name === 'td' || c.name === 'th'))
            .map((cell) => blocksToInlines(blocksOf(cell.children))),
        );
      } else visit(child);
    }
  };
  visit(table);
  return [...before, { kind: 'table', rows }];
}

function inlinesOf(nodes: readonly HtmlNode[]): Inline[] {
  const out: Inline[] = [];
  for (const node of nodes) {
    if (typeof node === 'string') {
      out.push({ kind: 'text', text: collapseHtmlSpace(node) });
      continue;
    }
    switch (node.name) {
      case 'b':
      case 'strong':
        out.push({ kind: 'strong', children: inlinesOf(node.children) });
        break;
      case 'i':
      case 'em':
        out.push({ kind: 'em', children: inlinesOf(node.children) });
        break;
      case 's':
      case 'strike':
      case 'del':
        out.push({ kind: 'strike', children: inlinesOf(node.children) });
        break;
      case 'code':
        out.push({ kind: 'code', text: collapseHtmlSpace(textContent(node)) });
        break;
      case 'br':
        out.push({ kind: 'break' });
        break;
      case 'a':
        pushAll(out, linkOf(node));
        break;
      case 'img': {
        const { src, alt, title, width, height } = node.attrs;
        if (src) out.push({ kind: 'image', src, alt: alt ?? '', ...(title && { title }), ...(width && { width }), ...(height && { height }) });
        break;
      }
      default:
        if (BLOCK_TAGS.has(node.name)) {
          // A block inside an inline element: keep its text on lines of its own.
          out.push({ kind: 'break' });
          pushAll(out, blocksToInlines(blockOf(node)));
          out.push({ kind: 'break' });
        } else {
          pushAll(out, inlinesOf(node.children)); // span, font, u, sup, sub: their text only
        }
    }
  }
  return out;
}

function linkOf(a: HtmlElement): Inline[] {
  const children = inlinesOf(a.children);
  const href = a.attrs.href;
  if (!href) return children;
  const userId = matrixUserIdFromHref(href);
  return userId ? [{ kind: 'mention', userId, href, children }] : [{ kind: 'link', href, children }];
}

/** Flattens blocks to one inline run, a line break between blocks. */
function blocksToInlines(blocks: readonly Block[]): Inline[] {
  const out: Inline[] = [];
  for (const b of blocks) {
    if (out.length) out.push({ kind: 'break' });
    switch (b.kind) {
      case 'paragraph':
      case 'heading':
        pushAll(out, b.children);
        break;
      case 'quote':
        pushAll(out, blocksToInlines(b.children));
        break;
      case 'list':
        for (const item of b.items) {
          pushAll(out, blocksToInlines(item));
          out.push({ kind: 'break' });
        }
        break;
      case 'table':
        for (const row of b.rows) {
          for (const cell of row) pushAll(out, [...cell, { kind: 'text', text: ' ' }]);
          out.push({ kind: 'break' });
        }
        break;
      case 'code-block':
        out.push({ kind: 'code', text: b.text });
        break;
      case 'rule':
        break;
    }
  }
  return out;
}

// --- writing

export function escapeHtml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

/** Renders the document as Matrix HTML; a lone paragraph gets no `<p>` (the spec asks for no needless tags). */
export function renderHtml(blocks: readonly Block[]): string {
  return sanitizeHtml(renderBlocks(blocks));
}

function renderBlocks(blocks: readonly Block[]): string {
  const only = blocks.length === 1 ? blocks[0] : undefined;
  if (only?.kind === 'paragraph') return renderInlines(only.children);
  return blocks.map(renderBlock).join('');
}

function renderBlock(block: Block): string {
  switch (block.kind) {
    case 'paragraph':
      return `<p>${renderInlines(block.children)}</p>`;
    case 'heading': {
      const level = Math.min(6, Math.max(1, block.level));
      return `<h${level}>${renderInlines(block.children)}</h${level}>`;
    }
    case 'code-block': {
      const cls = block.language ? ` class="language-${escapeHtml(block.language)}"` : '';
      return `<pre><code${cls}>${escapeHtml(block.text)}</code></pre>`;
    }
    case 'quote':
      return `<blockquote>${renderBlocks(block.children)}</blockquote>`;
    case 'list': {
      const items = block.items.map((item) => `<li>${renderBlocks(item)}</li>`).join('');
      if (!block.ordered) return `<ul>${items}</ul>`;
      return block.start === 1 ? `<ol>${items}</ol>` : `<ol start="${block.start}">${items}</ol>`;
    }
    case 'table': {
      const rows = block.rows.map((row) => `<tr>${row.map((cell) => `<td>${renderInlines(cell)}</td>`).join('')}</tr>`);
      return `<table><tbody>${rows.join('')}</tbody></table>`;
    }
    case 'rule':
      return '<hr />';
  }
}

function renderInlines(nodes: readonly Inline[]): string {
  return nodes.map(renderInline).join('');
}

function renderInline(node: Inline): string {
  switch (node.kind) {
    case 'text':
      return escapeHtml(node.text);
    case 'break':
      return '<br />';
    case 'strong':
      return `<strong>${renderInlines(node.children)}</strong>`;
    case 'em':
      return `<em>${renderInlines(node.children)}</em>`;
    case 'strike':
      return `<del>${renderInlines(node.children)}</del>`;
    case 'code':
      return `<code>${escapeHtml(node.text)}</code>`;
    case 'link':
      return `<a href="${escapeHtml(node.href)}">${node.children.length ? renderInlines(node.children) : escapeHtml(node.href)}</a>`;
    case 'mention': {
      const label = node.children.length ? renderInlines(node.children) : escapeHtml(node.userId);
      return `<a href="${escapeHtml(matrixToUserHref(node.userId))}">${label}</a>`;
    }
    case 'image': {
      const attrs = [`src="${escapeHtml(node.src)}"`, `alt="${escapeHtml(node.alt)}"`];
      if (node.title) attrs.push(`title="${escapeHtml(node.title)}"`);
      if (node.width) attrs.push(`width="${escapeHtml(node.width)}"`);
      if (node.height) attrs.push(`height="${escapeHtml(node.height)}"`);
      return `<img ${attrs.join(' ')} />`;
    }
  }
}
