import { describe, expect, it } from 'vitest';
import { stripReplyFallbackBody } from '../../../src/bridge/format/index.js';

describe('stripReplyFallbackBody (Matrix legacy rich-reply fallback)', () => {
  it('strips the spec example', () => {
    expect(stripReplyFallbackBody('> <@alice:example.org> This is the original body\n\nThis is where the reply goes')).toBe(
      'This is where the reply goes',
    );
  });

  it('strips every quoted line of a multi-line fallback and only the one blank line after it', () => {
    expect(stripReplyFallbackBody('> <@alice:example.org> first\n> second\n>\n> fourth\n\n\nreply\n> not fallback')).toBe(
      '\nreply\n> not fallback',
    );
  });

  it('strips the emote and file forms', () => {
    expect(stripReplyFallbackBody('> * <@alice:example.org> waves\n\nhi')).toBe('hi');
    expect(stripReplyFallbackBody('> <@alice:example.org> sent an image.\n\nnice 🎉')).toBe('nice 🎉');
  });

  it('leaves a body without the prefix alone', () => {
    expect(stripReplyFallbackBody('no fallback\n> a quote later')).toBe('no fallback\n> a quote later');
    expect(stripReplyFallbackBody('>not the prefix (no space)\n\nx')).toBe('>not the prefix (no space)\n\nx');
  });

  it('keeps right-to-left replies intact', () => {
    expect(stripReplyFallbackBody('> <@bob:example.org> שלום\n\nمرحبا')).toBe('مرحبا');
  });
});
