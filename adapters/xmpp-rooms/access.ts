/**
 * Who may use which room: the access rules map a JID (or its domain) to a
 * gateway user, and that user's room grants decide. Not mapped:
 * registration-required; mapped but not granted: forbidden.
 */
import type { AccessRule } from './config.js';
import type { RoomsContext } from './context.js';
import { domainOf } from './ns.js';

export type AccessVerdict = { readonly ok: true; readonly user: string } | { readonly ok: false; readonly condition: 'registration-required' | 'forbidden' };

/** The gateway user of a bare JID: an exact JID rule first, then a domain rule. */
export function userOf(rules: readonly AccessRule[], bare: string): string | undefined {
  const exact = rules.find((r) => r.jid === bare);
  if (exact) return exact.user;
  const domain = domainOf(bare);
  return rules.find((r) => r.domain === domain)?.user;
}

export async function mayUse(ctx: RoomsContext, bare: string, room: string): Promise<AccessVerdict> {
  const user = userOf(ctx.config.access, bare);
  if (user === undefined) return { ok: false, condition: 'registration-required' };
  const granted = await ctx.grants(user);
  return granted.includes(room) ? { ok: true, user } : { ok: false, condition: 'forbidden' };
}
