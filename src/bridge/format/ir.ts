/**
 * The intermediate document every format is parsed into and rendered from.
 *
 * It holds only what at least two of our formats can express (strong,
 * emphasis, strike, code, links, mentions, quotes, code blocks, lists,
 * headings, tables); anything else (colours, underline, sup/sub, spoilers)
 * is reduced to its text on the way in. HTML → HTML never passes through it,
 * so Matrix-to-Matrix formatting is not reduced.
 */

export type StyleKind = 'strong' | 'em' | 'strike';

export type Inline =
  | { readonly kind: 'text'; text: string }
  | { readonly kind: StyleKind; children: Inline[] }
  | { readonly kind: 'code'; text: string }
  | { readonly kind: 'link'; href: string; children: Inline[] }
  /** a Matrix user pill: `userId` is the Matrix id, the children are the display text */
  | { readonly kind: 'mention'; userId: string; href: string; children: Inline[] }
  | { readonly kind: 'image'; src: string; alt: string; title?: string; width?: string; height?: string }
  | { readonly kind: 'break' };

export type Block =
  | { readonly kind: 'paragraph'; children: Inline[] }
  | { readonly kind: 'heading'; level: number; children: Inline[] }
  | { readonly kind: 'code-block'; text: string; language?: string }
  | { readonly kind: 'quote'; children: Block[] }
  | { readonly kind: 'list'; ordered: boolean; start: number; items: Block[][] }
  | { readonly kind: 'table'; rows: Inline[][][] }
  | { readonly kind: 'rule' };

export type Container = Extract<Inline, { children: Inline[] }>;

/**
 * `target.push(...items)` without the spread: spreading passes every item as
 * an argument and overflows the stack somewhere past 100 000 items.
 */
export function pushAll<T>(target: T[], items: readonly T[]): void {
  for (const item of items) target.push(item);
}

export function isContainer(node: Inline): node is Container {
  return 'children' in node;
}

export function isStyle(node: Inline): node is { kind: StyleKind; children: Inline[] } {
  return node.kind === 'strong' || node.kind === 'em' || node.kind === 'strike';
}

/** True when the document carries anything beyond text and line breaks. */
export function hasFormatting(blocks: readonly Block[]): boolean {
  return blocks.some((b) => b.kind !== 'paragraph' || b.children.some((n) => n.kind !== 'text' && n.kind !== 'break'));
}

/** Matrix user ids of every mention, in order of first appearance. */
export function collectMentions(blocks: readonly Block[]): string[] {
  const found = new Set<string>();
  const inlines = (nodes: readonly Inline[]): void => {
    for (const n of nodes) {
      if (n.kind === 'mention') found.add(n.userId);
      if (isContainer(n)) inlines(n.children);
    }
  };
  const walk = (list: readonly Block[]): void => {
    for (const b of list) {
      switch (b.kind) {
        case 'paragraph':
        case 'heading':
          inlines(b.children);
          break;
        case 'quote':
          walk(b.children);
          break;
        case 'list':
          for (const item of b.items) walk(item);
          break;
        case 'table':
          for (const row of b.rows) for (const cell of row) inlines(cell);
          break;
        case 'code-block':
        case 'rule':
          break;
      }
    }
  };
  walk(blocks);
  return [...found];
}

// HTML whitespace only: U+00A0 and other Unicode spaces are content.
const HTML_SPACE_RUN = /[ \t\n\r\f]+/g;

export function collapseHtmlSpace(text: string): string {
  return text.replace(HTML_SPACE_RUN, ' ');
}

/**
 * Tidies a run of inline nodes so every renderer can rely on its shape:
 * no empty text or empty containers, adjacent texts merged, leading and
 * trailing spaces of a line removed (HTML only), a style never nested in the same style,
 * no line break inside a container (styling spans cannot cross lines in
 * XEP-0393), and spaces at the edge of a container moved outside it (neither
 * XEP-0393 nor Markdown lets a span start or end with a space).
 */
export function normaliseInlines(nodes: readonly Inline[], options: NormaliseOptions): Inline[] {
  const split = nodes.flatMap((n) => unnestSameStyle(n, new Set())).flatMap(splitAtBreaks);
  const hoisted = hoistSpaces(split);
  const lines = options.trimLines ? trimLines(collapseAcross(hoisted)) : hoisted;
  return mergeTexts(dropEmpty(lines));
}

export interface NormaliseOptions {
  /** true for HTML, where spaces at a line's edges are not rendered; text formats keep indentation */
  readonly trimLines: boolean;
}

function unnestSameStyle(node: Inline, open: ReadonlySet<string>): Inline[] {
  if (!isContainer(node)) return [{ ...node }]; // a copy: later steps edit text nodes in place
  const inside = isStyle(node) ? new Set([...open, node.kind]) : open;
  const children = node.children.flatMap((c) => unnestSameStyle(c, inside));
  if (isStyle(node) && open.has(node.kind)) return children;
  return [{ ...node, children }];
}

/** `strong[a, break, b]` becomes `strong[a], break, strong[b]`. */
function splitAtBreaks(node: Inline): Inline[] {
  if (!isContainer(node)) return [node];
  const children = node.children.flatMap(splitAtBreaks);
  if (!children.some((c) => c.kind === 'break')) return [{ ...node, children }];
  const out: Inline[] = [];
  let run: Inline[] = [];
  for (const c of children) {
    if (c.kind === 'break') {
      if (run.length) out.push({ ...node, children: run });
      out.push(c);
      run = [];
    } else {
      run.push(c);
    }
  }
  if (run.length) out.push({ ...node, children: run });
  return out;
}

function hoistSpaces(nodes: readonly Inline[]): Inline[] {
  const out: Inline[] = [];
  for (const n of nodes) {
    if (!isContainer(n)) {
      out.push(n);
      continue;
    }
    const children = hoistSpaces(n.children);
    const lead = takeEdgeSpace(children, 'start');
    const trail = takeEdgeSpace(children, 'end');
    if (lead) out.push({ kind: 'text', text: lead });
    out.push({ ...n, children });
    if (trail) out.push({ kind: 'text', text: trail });
  }
  return out;
}

/** Removes the whitespace at one edge of a (hoisted) child list and returns it. */
function takeEdgeSpace(children: Inline[], edge: 'start' | 'end'): string {
  const index = edge === 'start' ? 0 : children.length - 1;
  const first = children[index];
  if (!first || first.kind !== 'text') return '';
  const { text } = first;
  // Index scans, not /\s+$/, which is quadratic on long runs of inner spaces.
  let cut = edge === 'start' ? 0 : text.length;
  if (edge === 'start') while (cut < text.length && isWhitespace(text.charAt(cut))) cut++;
  else while (cut > 0 && isWhitespace(text.charAt(cut - 1))) cut--;
  const taken = edge === 'start' ? text.slice(0, cut) : text.slice(cut);
  first.text = edge === 'start' ? text.slice(cut) : text.slice(0, cut);
  if (first.text === '') children.splice(index, 1);
  return taken;
}

const WHITESPACE = /^\s$/u;

function isWhitespace(ch: string): boolean {
  return WHITESPACE.test(ch);
}

/**
 * HTML shows one space where a run of them spans several nodes
 * ("a <b> b</b>"); hoisting can also put two spaces side by side.
 */
function collapseAcross(nodes: Inline[]): Inline[] {
  let afterSpace = true;
  const visit = (list: Inline[]): void => {
    for (const n of list) {
      if (n.kind === 'text') {
        n.text = n.text.replace(/ {2,}/g, ' ');
        if (afterSpace) n.text = n.text.replace(/^ /, '');
        if (n.text) afterSpace = n.text.endsWith(' ');
      } else if (n.kind === 'break') {
        afterSpace = true;
      } else if (isContainer(n)) {
        visit(n.children);
      } else {
        afterSpace = false;
      }
    }
  };
  visit(nodes);
  return nodes;
}

/** Drops spaces at the start and end of each line (HTML collapses them). */
function trimLines(nodes: Inline[]): Inline[] {
  const lines: Inline[][] = [[]];
  for (const n of nodes) {
    if (n.kind === 'break') lines.push([n], []);
    else lines[lines.length - 1]?.push(n);
  }
  for (const line of lines) {
    trimEdge(line, 'start');
    trimEdge(line, 'end');
  }
  return lines.flat();
}

function trimEdge(line: Inline[], edge: 'start' | 'end'): void {
  for (;;) {
    const i = edge === 'start' ? 0 : line.length - 1;
    const n = line[i];
    if (!n || n.kind !== 'text') return;
    let cut = edge === 'start' ? 0 : n.text.length;
    if (edge === 'start') while (n.text.charAt(cut) === ' ') cut++;
    else while (cut > 0 && n.text.charAt(cut - 1) === ' ') cut--;
    n.text = edge === 'start' ? n.text.slice(cut) : n.text.slice(0, cut);
    if (n.text !== '') return;
    line.splice(i, 1);
  }
}

function dropEmpty(nodes: readonly Inline[]): Inline[] {
  const out: Inline[] = [];
  for (const n of nodes) {
    if (n.kind === 'text' && n.text === '') continue;
    if (n.kind === 'code' && n.text === '') continue;
    if (isContainer(n)) {
      const children = dropEmpty(n.children);
      if (children.length === 0 && n.kind !== 'link' && n.kind !== 'mention') continue;
      out.push({ ...n, children });
      continue;
    }
    out.push(n);
  }
  return out;
}

function mergeTexts(nodes: readonly Inline[]): Inline[] {
  const out: Inline[] = [];
  for (const n of nodes) {
    const last = out[out.length - 1];
    if (n.kind === 'text' && last?.kind === 'text') {
      last.text += n.text;
      continue;
    }
    out.push(isContainer(n) ? { ...n, children: mergeTexts(n.children) } : n);
  }
  return out;
}

/** Applies `normaliseInlines` everywhere and drops paragraphs left empty. */
export function normaliseBlocks(blocks: readonly Block[], options: NormaliseOptions): Block[] {
  const out: Block[] = [];
  for (const b of blocks) {
    switch (b.kind) {
      case 'paragraph':
      case 'heading': {
        const children = stripEdgeBreaks(normaliseInlines(b.children, options));
        if (children.length) out.push({ ...b, children });
        break;
      }
      case 'quote': {
        const children = normaliseBlocks(b.children, options);
        if (children.length) out.push({ kind: 'quote', children });
        break;
      }
      case 'list': {
        const items = b.items.map((item) => normaliseBlocks(item, options));
        if (items.length) out.push({ ...b, items });
        break;
      }
      case 'table': {
        const rows = b.rows.map((row) => row.map((cell) => stripEdgeBreaks(normaliseInlines(cell, options))));
        if (rows.length) out.push({ kind: 'table', rows });
        break;
      }
      case 'code-block':
      case 'rule':
        out.push(b);
        break;
    }
  }
  return out;
}

function stripEdgeBreaks(nodes: Inline[]): Inline[] {
  let start = 0;
  let end = nodes.length;
  while (start < end && nodes[start]?.kind === 'break') start++;
  while (end > start && nodes[end - 1]?.kind === 'break') end--;
  return nodes.slice(start, end);
}

/** A quote block's text: every line behind "> " (an empty line as a bare ">"). */
export function quoteLines(text: string): string {
  return text
    .split('\n')
    .map((line) => (line ? `> ${line}` : '>'))
    .join('\n');
}

/** A list item's text behind its marker, the following lines indented to match. */
export function markItem(marker: string, body: string): string {
  const indent = ' '.repeat(marker.length);
  return body
    .split('\n')
    .map((line, n) => (n === 0 ? marker + line : line ? indent + line : line))
    .join('\n');
}
