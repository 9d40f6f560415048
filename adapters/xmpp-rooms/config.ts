/**
 * The rooms component's configuration (adapter type `xmpp-rooms`): one
 * TypeBox schema, and the link rule — a room linked to this adapter appears
 * as `<target>@<domain>`, so `target` is the room JID's local part.
 */
import { Type, type Static } from '@sinclair/typebox';
import { AdapterConfigError } from '../../src/core/adapter.js';
import { applySchema } from '../../src/core/schema.js';
import type { RoomLink } from '../../src/core/ports.js';

const DOMAIN = '^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$';
/** lower case only: JID local parts compare case-insensitively, so one spelling per room */
export const ROOM_LOCALPART = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export const AccessRule = Type.Object(
  {
    /** a bare JID … */
    jid: Type.Optional(Type.String({ pattern: '^[^@/\\s]+@[^@/\\s]+$', maxLength: 2047 })),
    /** … or every account of a domain */
    domain: Type.Optional(Type.String({ pattern: DOMAIN, maxLength: 1023 })),
    /** the gateway user (as in `syncgate user add`) whose room grants decide what they may join */
    user: Type.String({ minLength: 1, maxLength: 256 }),
  },
  { additionalProperties: false },
);
export type AccessRule = Static<typeof AccessRule>;

export const XmppRoomsConfig = Type.Object(
  {
    /** the server's component listener: `xmpp://host:port` (XEP-0114, Prosody's component_ports, default 5347) */
    service: Type.String({ pattern: '^xmpp://[^/]+$', maxLength: 1024 }),
    /** the component's domain, as in Prosody's `Component "rooms.example.org"` */
    domain: Type.String({ pattern: DOMAIN, maxLength: 1023 }),
    /** the component secret (Prosody's component_secret); SYNCGATE_ADAPTER_<NAME>_SECRET */
    secret: Type.String({ minLength: 1, maxLength: 1024 }),
    /** who may join: an exact JID rule wins over a domain rule; anyone else gets registration-required */
    access: Type.Array(AccessRule, { maxItems: 10_000, default: [] }),
    reconnect: Type.Object(
      {
        minMs: Type.Integer({ minimum: 50, maximum: 60_000, default: 500 }),
        maxMs: Type.Integer({ minimum: 100, maximum: 600_000, default: 30_000 }),
      },
      { additionalProperties: false, default: {} },
    ),
    /** room history sent on join when the client's <history/> does not say (XEP-0045 §7.2.14) */
    historyDefault: Type.Integer({ minimum: 0, maximum: 1000, default: 20 }),
    /** the most history a join gets, whatever it asks */
    historyMax: Type.Integer({ minimum: 0, maximum: 1000, default: 100 }),
    /** MAM page size when the query has no RSM <max/>, and the largest page served */
    mamDefaultPage: Type.Integer({ minimum: 1, maximum: 1000, default: 50 }),
    mamMaxPage: Type.Integer({ minimum: 1, maximum: 1000, default: 250 }),
    /** the largest message body (UTF-8 bytes) an occupant may send; a longer one is refused (not-acceptable) */
    maxBodyBytes: Type.Integer({ minimum: 1, maximum: 262_144, default: 65_536 }),
    /** per occupant account and room: a token bucket; past it, messages are refused with resource-constraint */
    rateLimit: Type.Object(
      {
        perSecond: Type.Number({ minimum: 0.01, maximum: 10_000, default: 5 }),
        burst: Type.Integer({ minimum: 1, maximum: 100_000, default: 20 }),
      },
      { additionalProperties: false, default: {} },
    ),
    /** stream open/close and how long start() waits for the first connection (it keeps trying after that) */
    streamTimeoutMs: Type.Integer({ minimum: 100, maximum: 120_000, default: 10_000 }),
    startTimeoutMs: Type.Integer({ minimum: 0, maximum: 600_000, default: 20_000 }),
  },
  { additionalProperties: false },
);
export type XmppRoomsConfig = Static<typeof XmppRoomsConfig>;

export class XmppRoomsConfigError extends AdapterConfigError {
  constructor(problems: readonly string[]) {
    super('xmpp-rooms', problems);
    this.name = 'XmppRoomsConfigError';
  }
}

/** Applies defaults and validates, reporting every violation at once. */
export function parseXmppRoomsConfig(input: unknown): XmppRoomsConfig {
  const { value, problems } = applySchema(XmppRoomsConfig, input);
  if (problems.length > 0) throw new XmppRoomsConfigError(problems);
  const config = value as XmppRoomsConfig;
  const more: string[] = [];
  if (config.reconnect.maxMs < config.reconnect.minMs) more.push('/reconnect: maxMs must be >= minMs');
  if (config.mamMaxPage < config.mamDefaultPage) more.push('/mamMaxPage: must be >= mamDefaultPage');
  config.access.forEach((rule, i) => {
    if ((rule.jid === undefined) === (rule.domain === undefined)) more.push(`/access/${i}: give exactly one of jid or domain`);
  });
  if (more.length > 0) throw new XmppRoomsConfigError(more);
  const access = config.access.map((r) => ({ ...r, ...(r.jid !== undefined ? { jid: r.jid.toLowerCase() } : {}), ...(r.domain !== undefined ? { domain: r.domain.toLowerCase() } : {}) }));
  return Object.freeze({ ...config, domain: config.domain.toLowerCase(), access });
}

/** A room link of this adapter: its target is the room JID's local part (no options). */
export function validateRoomsLink(link: RoomLink): void {
  const problems: string[] = [];
  if (!ROOM_LOCALPART.test(link.target)) problems.push(`target ${JSON.stringify(link.target)} must be a room JID local part: lower-case letters, digits, '.', '_', '-' (at most 64)`);
  for (const name of Object.keys(link.options ?? {})) if (name !== 'name') problems.push(`unknown option ${name} (only name)`);
  const name = link.options?.['name'];
  if (name !== undefined && typeof name !== 'string') problems.push('name must be a string');
  if (problems.length > 0) throw new XmppRoomsConfigError(problems.map((p) => `link ${link.target}: ${p}`));
}
