/**
 * Matrix user mentions ("pills"): `<a href="https://matrix.to/#/@user:server">Name</a>`.
 */

// Historical user ids allow more than today's grammar, so only the shape is
// checked: a sigil, a non-empty localpart, a colon and a server name.
const USER_ID = /^@[^\s:/?#]+:[^\s/?#]+$/u;
const MAX_USER_ID_LENGTH = 255;

/** The Matrix user id a matrix.to link points at, or undefined for any other link. */
export function matrixUserIdFromHref(href: string): string | undefined {
  let url: URL;
  try {
    url = new URL(href.trim());
  } catch {
    return undefined;
  }
  if ((url.protocol !== 'https:' && url.protocol !== 'http:') || url.hostname !== 'matrix.to') return undefined;
  // Fragment: `#/@user:server`, optionally percent-encoded and with `?via=…`.
  const fragment = url.hash.startsWith('#/') ? url.hash.slice(2) : '';
  const raw = fragment.split('?')[0] ?? '';
  let id: string;
  try {
    id = decodeURIComponent(raw);
  } catch {
    return undefined;
  }
  return id.length <= MAX_USER_ID_LENGTH && USER_ID.test(id) ? id : undefined;
}

/** The canonical matrix.to link for a user id. */
export function matrixToUserHref(userId: string): string {
  return `https://matrix.to/#/${userId}`;
}
