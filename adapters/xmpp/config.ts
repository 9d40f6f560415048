/**
 * The XMPP adapter's configuration: one TypeBox schema (type, defaults,
 * validation), and the per-link options read from room links.
 *
 * Room links: `{endpoint: <adapter name>, target: 'room@conference.example.org'}`
 * for a MUC (options `nick`, `password`), or `{endpoint, target:
 * 'user@example.org', options: {type: 'chat'}}` for a 1:1 conversation with
 * the bridge account.
 */
import { Type, type Static } from '@sinclair/typebox';
import { applySchema } from '../../src/core/schema.js';
import type { RoomLink } from '../../src/core/ports.js';
import { XmppConfigError } from './errors.js';

const BARE_JID = '^[^@/\\s]+@[^@/\\s]+$';

export const DEFAULT_ENCRYPTED_NOTICE =
  'This chat goes through a bridge that cannot read end-to-end encrypted messages (it reads OMEMO only when OMEMO is enabled for it, and it is not here). ' +
  'The other side saw only "an encrypted message could not be read". ' +
  'Messages you send without encryption are relayed; the bridge sends you nothing in clear text unless its operator allows it.';

export const DEFAULT_OMEMO_NOTICE =
  'This chat goes through a bridge that reads OMEMO, but it could not decrypt your message: it was not encrypted for the bridge\'s device, or that device is not trusted. ' +
  'The other side saw only "an encrypted message could not be read". The bridge\'s OMEMO fingerprint is {{fingerprint}}: make sure your client encrypts for it (and trusts it).';

export const XmppAdapterConfig = Type.Object(
  {
    /** where to connect: `xmpp://host:port` (STARTTLS when offered), `xmpps://host:port` (direct TLS) or a WebSocket URL */
    service: Type.String({ pattern: '^(xmpps?|wss?)://', maxLength: 1024 }),
    /** the XMPP domain of the account; default: the domain of `jid` */
    domain: Type.Optional(Type.String({ minLength: 1, maxLength: 1023 })),
    /** the bridge account, a bare JID */
    jid: Type.String({ pattern: BARE_JID, maxLength: 2047 }),
    password: Type.String({ minLength: 1, maxLength: 1024 }),
    /** fixed, so a restart binds the same full JID (and takes over a stale session of ours) */
    resource: Type.String({ minLength: 1, maxLength: 1023, default: 'syncgate' }),
    /** put before relayed text; `{{display}}` and `{{uid}}` are replaced; '' for none */
    relayPrefix: Type.String({ maxLength: 256, default: '<{{display}}> ' }),
    /** our nick in MUCs, unless the link sets `nick` */
    mucNick: Type.String({ minLength: 1, maxLength: 1023, default: 'syncgate' }),
    reconnect: Type.Object(
      {
        minMs: Type.Integer({ minimum: 50, maximum: 60_000, default: 500 }),
        maxMs: Type.Integer({ minimum: 100, maximum: 600_000, default: 30_000 }),
      },
      { additionalProperties: false, default: {} },
    ),
    /** XEP-0410 self-ping of every joined MUC, to notice that the room dropped us silently; 0 = off */
    selfPingIntervalMs: Type.Integer({ minimum: 0, maximum: 3_600_000, default: 120_000 }),
    /** how long a delivery waits for the MUC reflection (or the XEP-0198 ack in 1:1) before it is retried */
    deliveryTimeoutMs: Type.Integer({ minimum: 100, maximum: 300_000, default: 15_000 }),
    /** when the last archived id is no longer in the archive (item-not-found), catch up at most this far back */
    catchupMaxAgeMs: Type.Integer({ minimum: 0, maximum: 365 * 24 * 3600 * 1000, default: 7 * 24 * 3600 * 1000 }),
    /** an archive never caught up before: import this much history (0 = none, start from its newest entry) */
    initialHistoryMs: Type.Integer({ minimum: 0, maximum: 365 * 24 * 3600 * 1000, default: 0 }),
    /** MAM page size (RSM max) */
    mamPageSize: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
    /** one iq round trip (MAM page, disco, carbons, self-ping) and one MUC join */
    iqTimeoutMs: Type.Integer({ minimum: 100, maximum: 300_000, default: 20_000 }),
    /** opening / closing the stream */
    streamTimeoutMs: Type.Integer({ minimum: 100, maximum: 120_000, default: 10_000 }),
    /** how long start() waits for the first session to be ready (it keeps trying in the background after that) */
    startTimeoutMs: Type.Integer({ minimum: 0, maximum: 600_000, default: 30_000 }),
    /** how long an append failure is retried before the archive is re-read from its last position */
    ingestRetryMs: Type.Integer({ minimum: 0, maximum: 600_000, default: 5_000 }),
    /** XEP-0198 keepalive: an <r/> after this much silence; the connection is dropped when nothing answers for `smTimeoutMs` */
    smRequestAckIntervalMs: Type.Integer({ minimum: 1000, maximum: 600_000, default: 30_000 }),
    smTimeoutMs: Type.Integer({ minimum: 1000, maximum: 600_000, default: 60_000 }),
    /**
     * Told to whoever sends an end-to-end encrypted message the bridge cannot read (OMEMO, OpenPGP,
     * OTR): once per conversation per `encryptedNoticeIntervalMs`; '' sends nothing.
     */
    encryptedNotice: Type.String({ maxLength: 4096, default: DEFAULT_ENCRYPTED_NOTICE }),
    encryptedNoticeIntervalMs: Type.Integer({ minimum: 0, maximum: 365 * 24 * 3600 * 1000, default: 24 * 3600 * 1000 }),
    /** instead of encryptedNotice while the bridge is an OMEMO device (`{{fingerprint}}`: its fingerprint); '' sends none */
    omemoNotice: Type.String({ maxLength: 4096, default: DEFAULT_OMEMO_NOTICE }),
    /**
     * After an encrypted message arrived from a contact or room, the bridge refuses to send it
     * anything in clear (a dead letter with the reason) — unless this is true.
     */
    allowPlaintextAfterEncrypted: Type.Boolean({ default: false }),
    /**
     * The bridge account as an OMEMO 0.3 device (omemo.ts): `off` reads no OMEMO (encrypted
     * messages are undecryptable); `optional` (default) decrypts what is encrypted for it and
     * answers encrypted conversations encrypted, once `omemoSecret` is set (without it: as `off`);
     * `required` also encrypts every 1:1 message it sends (a contact without OMEMO gets nothing).
     */
    omemo: Type.Union([Type.Literal('off'), Type.Literal('optional'), Type.Literal('required')], { default: 'optional' }),
    /** seals the OMEMO keys and sessions in the log's state store (SYNCGATE_ADAPTER_<NAME>_OMEMO_SECRET, or _FILE) */
    omemoSecret: Type.Optional(Type.String({ minLength: 16, maxLength: 4096 })),
    /** `blind`: trust every contact device until one of its fingerprints is listed in omemoTrusted; `manual`: only those listed */
    omemoTrust: Type.Union([Type.Literal('blind'), Type.Literal('manual')], { default: 'blind' }),
    /** verified fingerprints (64 hex digits; spaces, colons and the 05 prefix allowed) */
    omemoTrusted: Type.Array(
      Type.Object({ jid: Type.String({ pattern: BARE_JID, maxLength: 2047 }), fingerprint: Type.String({ pattern: '^(05)?[0-9a-fA-F: ]{64,96}$' }) }, { additionalProperties: false }),
      { default: [], maxItems: 10_000 },
    ),
    /** a new signed pre-key at the first session after this much time (the previous one stays for key exchanges in flight); 0: at every session */
    omemoSignedPreKeyRotationMs: Type.Integer({ minimum: 0, maximum: 365 * 24 * 3600 * 1000, default: 7 * 24 * 3600 * 1000 }),
    /** how long a contact's device list is used before it is fetched again (PEP) */
    omemoDeviceListTtlMs: Type.Integer({ minimum: 0, maximum: 24 * 3600 * 1000, default: 60_000 }),
    /** when the OMEMO store is found lost (a new device had to be made), remove the old device from the account's device list */
    omemoRemoveLostDevice: Type.Boolean({ default: false }),
  },
  { additionalProperties: false },
);
export type XmppAdapterConfig = Static<typeof XmppAdapterConfig>;

/** Applies defaults and validates, reporting every violation at once. */
export function parseXmppConfig(input: unknown): XmppAdapterConfig {
  const { value: withDefaults, problems } = applySchema(XmppAdapterConfig, input);
  if (problems.length > 0) throw new XmppConfigError(problems);
  const config = withDefaults as XmppAdapterConfig;
  const more: string[] = [];
  if (config.reconnect.maxMs < config.reconnect.minMs) more.push('/reconnect: maxMs must be >= minMs');
  if (config.omemo === 'required' && config.omemoSecret === undefined) more.push('/omemoSecret: omemo: required needs the secret that seals the OMEMO keys (SYNCGATE_ADAPTER_<NAME>_OMEMO_SECRET)');
  for (const [i, t] of config.omemoTrusted.entries()) {
    if (t.fingerprint.replace(/[\s:]/g, '').replace(/^05(?=[0-9a-fA-F]{64}$)/, '').length !== 64) more.push(`/omemoTrusted/${i}/fingerprint: 64 hex digits`);
  }
  if (more.length > 0) throw new XmppConfigError(more);
  return Object.freeze({ ...config, jid: config.jid.toLowerCase() });
}

/** The domain the account logs in to. */
export function accountDomain(config: XmppAdapterConfig): string {
  return config.domain ?? config.jid.slice(config.jid.indexOf('@') + 1);
}

/** How to configure a MUC the gateway creates (it joined a room that did not exist); unset: the server's defaults. */
export interface RoomCreation {
  readonly persistent?: boolean | undefined;
  readonly membersOnly?: boolean | undefined;
  readonly name?: string | undefined;
}

export interface MucLinkOptions {
  readonly type: 'groupchat';
  readonly nick: string | undefined;
  readonly password: string | undefined;
  readonly create: RoomCreation;
}
export interface ChatLinkOptions {
  readonly type: 'chat';
}
export type LinkOptions = MucLinkOptions | ChatLinkOptions;

const LINK_OPTION_NAMES = new Set(['type', 'nick', 'password', 'persistent', 'membersOnly', 'roomName']);
const ROOM_CREATION_OPTIONS = ['persistent', 'membersOnly', 'roomName'];

/** Reads a room link's options; throws XmppConfigError listing what is wrong (for the admin API too). */
export function linkOptions(link: RoomLink): LinkOptions {
  const o = link.options ?? {};
  const problems: string[] = [];
  if (!new RegExp(BARE_JID).test(link.target)) problems.push(`target ${JSON.stringify(link.target)} is not a bare JID`);
  for (const name of Object.keys(o)) if (!LINK_OPTION_NAMES.has(name)) problems.push(`unknown option ${name}`);
  const type = o['type'] ?? 'groupchat';
  if (type !== 'chat' && type !== 'groupchat') problems.push(`type must be 'chat' or 'groupchat'`);
  const nick = o['nick'];
  const password = o['password'];
  if (nick !== undefined && (typeof nick !== 'string' || nick.length === 0 || nick.length > 1023)) problems.push('nick must be a non-empty string');
  if (password !== undefined && typeof password !== 'string') problems.push('password must be a string');
  for (const name of ['persistent', 'membersOnly']) if (o[name] !== undefined && typeof o[name] !== 'boolean') problems.push(`${name} must be true or false`);
  const roomName = o['roomName'];
  if (roomName !== undefined && (typeof roomName !== 'string' || roomName.length > 1023)) problems.push('roomName must be a string');
  if (type === 'chat' && (nick !== undefined || password !== undefined || ROOM_CREATION_OPTIONS.some((n) => o[n] !== undefined))) {
    problems.push(`nick, password, ${ROOM_CREATION_OPTIONS.join(', ')} apply to MUC links only`);
  }
  if (problems.length > 0) throw new XmppConfigError(problems.map((p) => `link ${link.target}: ${p}`));
  if (type === 'chat') return { type };
  const create: RoomCreation = {
    persistent: o['persistent'] as boolean | undefined,
    membersOnly: o['membersOnly'] as boolean | undefined,
    name: roomName as string | undefined,
  };
  return { type: 'groupchat', nick: nick as string | undefined, password: password as string | undefined, create };
}
