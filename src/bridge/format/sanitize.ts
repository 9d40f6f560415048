/**
 * Matrix HTML sanitising with the maintained allowlist sanitiser
 * (`sanitize-html`), configured with the tags and attributes the Matrix spec
 * recommends ("m.room.message msgtypes"). Every HTML string that leaves this
 * module — and every one it reads for conversion — has been through here.
 */
import sanitize from 'sanitize-html';
import type { IOptions, Attributes, Tag } from 'sanitize-html';

const HEADINGS = ['h1', 'h2', 'h3', 'h4', 'h5', 'h6'];

/** The Matrix spec list, plus `font` and `strike`, deprecated there but still sent by older clients and bridges. */
export const MATRIX_ALLOWED_TAGS: readonly string[] = [
  'font', 'del', ...HEADINGS, 'blockquote', 'p', 'a', 'ul', 'ol', 'sup', 'sub', 'li', 'b', 'i', 'u',
  'strong', 'em', 's', 'strike', 'code', 'hr', 'br', 'div', 'table', 'thead', 'tbody', 'tr', 'th', 'td',
  'caption', 'pre', 'span', 'img', 'details', 'summary',
];

export const LINK_SCHEMES: readonly string[] = ['https', 'http', 'ftp', 'mailto', 'magnet'];
const IMAGE_SCHEMES: readonly string[] = ['mxc'];

/**
 * Disallowed tags whose content goes too. For other disallowed tags the text
 * is kept; for these it is code, markup smuggling or (for `mx-reply`) the
 * legacy reply fallback, which the spec says to strip since v1.13.
 */
const DROP_WITH_CONTENT: readonly string[] = [
  'mx-reply', 'script', 'style', 'textarea', 'option', 'select', 'xmp', 'noscript', 'noembed', 'noframes',
  'iframe', 'object', 'embed', 'template', 'svg', 'math', 'title', 'head', 'plaintext', 'frameset',
];

const HEX_COLOUR = /^#[0-9a-fA-F]{6}$/;
const NAMED_COLOUR = /^[a-zA-Z]{1,20}$/;
const DIMENSION = /^\d{1,5}$/;
const LIST_START = /^-?\d{1,9}$/;
const LANGUAGE_CLASS = /^language-[\w.+#-]{1,32}$/;
const SCHEME = /^([a-zA-Z][a-zA-Z0-9+.-]*):/;

/**
 * What a browser does to a URL before looking at its scheme: drop leading and
 * trailing C0 controls and spaces, and every tab and newline inside. Checking
 * the scheme after this defeats `java\tscript:` and ` javascript:`.
 */
export function normaliseUrl(value: string): string {
  // Index scans, not /\s+$/-style regexes, which go quadratic on long inner runs.
  let start = 0;
  let end = value.length;
  while (start < end && value.charCodeAt(start) <= 0x20) start++;
  while (end > start && value.charCodeAt(end - 1) <= 0x20) end--;
  return value.slice(start, end).replace(/[\t\n\r]/g, '');
}

/** The lower-cased scheme of an absolute URL, or undefined for a relative one. */
export function urlScheme(value: string): string | undefined {
  return SCHEME.exec(normaliseUrl(value))?.[1]?.toLowerCase();
}

function keepUrl(attribs: Attributes, name: string, schemes: readonly string[]): void {
  const value = attribs[name];
  if (value === undefined) return;
  const scheme = urlScheme(value);
  // The spec forbids relative links; sanitize-html alone would keep them.
  if (scheme === undefined || !schemes.includes(scheme)) delete attribs[name];
  else attribs[name] = normaliseUrl(value);
}

function keepIf(attribs: Attributes, name: string, test: RegExp): void {
  const value = attribs[name];
  if (value !== undefined && !test.test(value.trim())) delete attribs[name];
}

const colours = (tagName: string, attribs: Attributes): Tag => {
  keepIf(attribs, 'data-mx-color', HEX_COLOUR);
  keepIf(attribs, 'data-mx-bg-color', HEX_COLOUR);
  const colour = attribs.color?.trim();
  if (colour !== undefined && !HEX_COLOUR.test(colour) && !NAMED_COLOUR.test(colour)) delete attribs.color;
  return { tagName, attribs };
};

const OPTIONS: IOptions = {
  allowedTags: [...MATRIX_ALLOWED_TAGS],
  allowedAttributes: {
    font: ['data-mx-bg-color', 'data-mx-color', 'color'],
    span: ['data-mx-bg-color', 'data-mx-color', 'data-mx-spoiler', 'data-mx-maths'],
    a: ['href', 'target'],
    img: ['width', 'height', 'alt', 'title', 'src'],
    ol: ['start'],
    code: ['class'],
    div: ['data-mx-maths'],
  },
  allowedClasses: { code: ['language-*'] },
  allowedSchemes: [...LINK_SCHEMES],
  allowedSchemesByTag: { img: [...IMAGE_SCHEMES] },
  allowedSchemesAppliedToAttributes: ['href', 'src', 'cite'],
  allowProtocolRelative: false,
  disallowedTagsMode: 'discard',
  nonTextTags: [...DROP_WITH_CONTENT],
  // The spec: "Tags must not be nested more than 100 levels deep."
  nestingLimit: 100,
  // No style attribute is allowed at all, so there is nothing for postcss to parse.
  parseStyleAttributes: false,
  transformTags: {
    a: (tagName, attribs) => {
      keepUrl(attribs, 'href', LINK_SCHEMES);
      // Only opening in a new window; `_top`/`_parent` would navigate the client away.
      if (attribs.target !== undefined && attribs.target !== '_blank') delete attribs.target;
      return { tagName, attribs };
    },
    img: (tagName, attribs) => {
      keepUrl(attribs, 'src', IMAGE_SCHEMES);
      keepIf(attribs, 'width', DIMENSION);
      keepIf(attribs, 'height', DIMENSION);
      return { tagName, attribs };
    },
    ol: (tagName, attribs) => {
      keepIf(attribs, 'start', LIST_START);
      return { tagName, attribs };
    },
    code: (tagName, attribs) => {
      // Only a syntax-highlighting hint: `language-` and a plain name, nothing else in the class list.
      const languages = (attribs.class ?? '').split(/\s+/).filter((c) => LANGUAGE_CLASS.test(c));
      if (languages.length) attribs.class = languages.join(' ');
      else delete attribs.class;
      return { tagName, attribs };
    },
    span: colours,
    font: colours,
  },
  // An image without an mxc source shows nothing but a broken icon.
  exclusiveFilter: (frame) => frame.tag === 'img' && !frame.attribs.src,
};

/** Reduces untrusted HTML to the Matrix allowlist and strips `<mx-reply>` blocks. */
export function sanitizeHtml(html: string): string {
  return sanitize(html, OPTIONS);
}

/**
 * Removes the legacy rich-reply fallback (`<mx-reply>…</mx-reply>`). It is
 * `sanitizeHtml` under the name callers look for: the fallback is only ever
 * removed together with sanitising, so no unsanitised HTML leaves this module.
 */
export const stripReplyFallbackHtml: (html: string) => string = sanitizeHtml;
