import { describe, expect, it } from 'vitest';
import { parseXep0393, renderText } from '../../../src/bridge/format/text.js';
import type { Block, Inline } from '../../../src/bridge/format/ir.js';

/** A compact view of parsed spans: *x*, _x_, ~x~, `x` written as S(x), E(x), K(x), C(x). */
function show(nodes: readonly Inline[]): string {
  return nodes
    .map((n) => {
      switch (n.kind) {
        case 'text':
          return n.text;
        case 'break':
          return '\n';
        case 'strong':
          return `S(${show(n.children)})`;
        case 'em':
          return `E(${show(n.children)})`;
        case 'strike':
          return `K(${show(n.children)})`;
        case 'code':
          return `C(${n.text})`;
        default:
          return `?${n.kind}`;
      }
    })
    .join('');
}

function spans(text: string): string {
  const [first, ...rest] = parseXep0393(text);
  expect(rest).toEqual([]);
  if (first?.kind !== 'paragraph') throw new Error(`expected one paragraph, got ${first?.kind}`);
  return show(first.children);
}

describe('XEP-0393 spans (the examples of §5.2)', () => {
  it.each([
    ['*strong*', 'S(strong)'],
    ['plain *strong* plain', 'plain S(strong) plain'],
    ['*strong* plain *strong*', 'S(strong) plain S(strong)'],
    ['*strong*plain*', 'S(strong)plain*'],
    ['* plain *strong*', '* plain S(strong)'],
    ['_emphasized span containing *strong span*_', 'E(emphasized span containing S(strong span))'],
    ['The full title is _Twelfth Night, or What You Will_ but', 'The full title is E(Twelfth Night, or What You Will) but'],
    ['Everyone ~dis~likes cake.', 'Everyone K(dis)likes cake.'],
    ['This is `*monospace*`', 'This is C(*monospace*)'],
    ['This is *`monospace and bold`*', 'This is S(C(monospace and bold))'],
  ])('styles %s', (input, expected) => {
    expect(spans(input)).toBe(expected);
  });

  it.each([['not strong*'], ['*not strong'], ['*not *strong'], ['**'], ['****'], ['snake_case_name'], ['2*3*4'], ['a * b * c']])(
    'leaves %s unstyled',
    (input) => {
      expect(spans(input)).toBe(input);
    },
  );

  it('does not let a span cross lines', () => {
    expect(spans('*not \n strong*')).toBe('*not \n strong*');
  });

  it('styles right-to-left text and text after astral characters', () => {
    expect(spans('مرحبا *بالعالم*')).toBe('مرحبا S(بالعالم)');
    expect(spans('🎉 _שלום_ 👩‍💻')).toBe('🎉 E(שלום) 👩‍💻');
  });
});

describe('XEP-0393 blocks', () => {
  it('reads a preformatted block and ignores styling inside it', () => {
    const blocks = parseXep0393('```ignored\n(println "Hello, *world*!")\n```\n\nThis should show up as monospace');
    expect(blocks).toEqual<Block[]>([
      { kind: 'code-block', text: '(println "Hello, *world*!")', language: 'ignored' },
      { kind: 'paragraph', children: [{ kind: 'text', text: 'This should show up as monospace' }] },
    ]);
  });

  it('ends an unclosed preformatted block at the end of its quote', () => {
    const blocks = parseXep0393('> ```\n> (println "Hello, world!")\n\nThe entire blockquote is a preformatted text block');
    expect(blocks[0]).toEqual({ kind: 'quote', children: [{ kind: 'code-block', text: '(println "Hello, world!")' }] });
    expect(blocks[1]?.kind).toBe('paragraph');
  });

  it('reads nested quotations with and without the space', () => {
    const expected: Block[] = [
      {
        kind: 'quote',
        children: [
          { kind: 'quote', children: [{ kind: 'paragraph', children: [{ kind: 'text', text: 'That that is, is.' }] }] },
          { kind: 'paragraph', children: [{ kind: 'text', text: 'Said the old hermit of Prague.' }] },
        ],
      },
      { kind: 'paragraph', children: [{ kind: 'text', text: 'Who?' }] },
    ];
    expect(parseXep0393('>> That that is, is.\n> Said the old hermit of Prague.\n\nWho?')).toEqual(expected);
    expect(parseXep0393('> > That that is, is.\n> Said the old hermit of Prague.\nWho?')).toEqual(expected);
  });

  it('caps quote nesting at 50 levels, the rest stays text', () => {
    let depth = 0;
    let blocks = parseXep0393(`${'>'.repeat(60_000)} x`);
    for (let quote = blocks[0]; quote?.kind === 'quote'; quote = blocks[0]) {
      depth++;
      blocks = quote.children;
    }
    expect(depth).toBe(50);
    expect(blocks[0]).toEqual({ kind: 'paragraph', children: [{ kind: 'text', text: `${'>'.repeat(60_000 - 50)} x` }] });
  });

  it('trims only the first whitespace character of a quoted line', () => {
    const [quote] = parseXep0393('>   indented');
    expect(quote).toEqual({ kind: 'quote', children: [{ kind: 'paragraph', children: [{ kind: 'text', text: '  indented' }] }] });
  });
});

describe('XEP-0393 writing', () => {
  it.each([
    '*bold* and _italic_ and ~strike~ and `code`',
    '> quoted\n> lines\nanswer',
    '> > nested\n> outer\nreply',
    '```js\nconst a = 1;\n```\nafter',
    '_emphasis with *strong* inside_',
    'مرحبا *بالعالم* 🎉',
    'one\ntwo\n\nthree',
  ])('writes back what it read: %s', (text) => {
    expect(renderText(parseXep0393(text), 'xep0393')).toBe(text);
  });

  it('writes plain text without directives', () => {
    expect(renderText(parseXep0393('*bold* and `code`\n> quote\n```\nblock\n```'), 'plain')).toBe('bold and code\n> quote\nblock');
  });
});
