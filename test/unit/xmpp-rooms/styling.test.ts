/** XEP-0393 styling on the rooms component (pure): what an occupant's text is stored as, and what a body carries out. */
import { describe, expect, it } from 'vitest';
import { hasStyling, styledText, textContent } from '../../../adapters/xmpp-rooms/styling.js';
import { NS, xml } from '../../../adapters/xmpp-rooms/ns.js';

const stanza = (unstyled: boolean) => xml('message', { type: 'groupchat' }, unstyled ? xml('unstyled', { xmlns: NS.styling }) : undefined);

describe('xmpp-rooms styling', () => {
  it('detects what a XEP-0393 client would style', () => {
    expect(hasStyling('a *bold* word')).toBe(true);
    expect(hasStyling('> a quote')).toBe(true);
    expect(hasStyling('```\ncode\n```')).toBe(true);
    expect(hasStyling('2 * 3 * 4')).toBe(false);
    expect(hasStyling('plain words')).toBe(false);
  });

  it("stores an occupant's styled text as xep0393, unless it says <unstyled/>", () => {
    expect(textContent(stanza(false), '*hi* there')).toEqual({ body: '*hi* there', format: 'xep0393', formatted: '*hi* there' });
    expect(textContent(stanza(true), '*hi* there')).toEqual({ body: '*hi* there' });
    expect(textContent(stanza(false), 'plain words')).toEqual({ body: 'plain words' });
  });

  it('sends styled content as its XEP-0393 text, plain text that looks styled with <unstyled/>', () => {
    expect(styledText({ body: 'hi there', format: 'xep0393', formatted: '*hi* there' })).toEqual({ text: '*hi* there', unstyled: false });
    expect(styledText({ body: 'a *literal* star' })).toEqual({ text: 'a *literal* star', unstyled: true });
    expect(styledText({ body: 'plain words' })).toEqual({ text: 'plain words', unstyled: false });
  });
});
