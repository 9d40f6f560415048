/**
 * The Matrix adapter's configuration (one TypeBox schema: type, defaults and
 * validation), the application-service registration file it implies, and the
 * user-id namespace rules shared by the registration and the echo filter.
 *
 * Two modes (docs/protocols.md, "Matrix"):
 * - `appservice` (default for bridges): the homeserver pushes transactions to
 *   our listener; remote senders appear as ghost users `@<ghostPrefix><uid>`.
 * - `bot`: one ordinary account syncs and relays with a sender prefix.
 */
import { randomBytes } from 'node:crypto';
import { Type, type Static } from '@sinclair/typebox';
import { applySchema } from '../../src/core/schema.js';
import { stringify } from 'yaml';
import { MatrixConfigError } from './errors.js';

const Localpart = Type.String({ minLength: 1, maxLength: 200, pattern: '^[a-z0-9._=/+-]+$' });
const Token = Type.String({ minLength: 16, maxLength: 1024 });

export const MatrixAppserviceConfig = Type.Object(
  {
    /** the registration id (unique per homeserver) */
    id: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9._-]+$', default: 'syncgate' }),
    /** we authenticate to the homeserver with this */
    asToken: Token,
    /** the homeserver authenticates to us with this */
    hsToken: Token,
    listenHost: Type.String({ minLength: 1, maxLength: 255, default: '0.0.0.0' }),
    /** 0 picks a free port (tests) */
    listenPort: Type.Integer({ minimum: 0, maximum: 65_535, default: 9000 }),
    /** where the homeserver reaches our listener, written into the registration */
    url: Type.String({ pattern: '^https?://', maxLength: 2048 }),
    /** ghost users are `@<ghostPrefix><escaped uid>:<serverName>`; keep it starting with `_` */
    ghostPrefix: Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9._=/+-]+$', default: '_sg_' }),
    /** the AS's own user (sender_localpart): joins linked rooms, invites ghosts */
    botLocalpart: Type.String({ ...Localpart, default: 'syncgate' }),
    botDisplayName: Type.Optional(Type.String({ maxLength: 256 })),
    /** a larger transaction body is refused with 413 (the homeserver keeps retrying it: see the log) */
    maxBodyBytes: Type.Integer({ minimum: 1024, maximum: 512 * 1024 * 1024, default: 32 * 1024 * 1024 }),
    /** how long a completed transaction id is remembered (a retransmission within it is answered without work) */
    transactionTtlHours: Type.Integer({ minimum: 1, maximum: 24 * 365, default: 72 }),
    /**
     * End-to-end encryption: the bridge bot's device, created with an
     * `m.login.application_service` login under this id (the same id at every
     * start, so a restart keeps the device; README "Encrypted Matrix rooms").
     */
    deviceId: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$', default: 'SYNCGATE' }),
  },
  { additionalProperties: false },
);
export type MatrixAppserviceConfig = Static<typeof MatrixAppserviceConfig>;

export const MatrixBotConfig = Type.Object(
  {
    userId: Type.String({ pattern: '^@[^:]+:.+$', maxLength: 255 }),
    accessToken: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
    password: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
    /**
     * Fixed device for password logins: transaction ids are scoped per device,
     * so a retry after a restart (new login, same device) is still deduplicated.
     */
    deviceId: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$', default: 'SYNCGATE' }),
    /** put before relayed text; `{{display}}` and `{{uid}}` are replaced */
    senderPrefix: Type.String({ maxLength: 256, default: '<{{display}}> ' }),
    /** long-poll wait of one /sync */
    syncTimeoutMs: Type.Integer({ minimum: 0, maximum: 120_000, default: 30_000 }),
    /** timeline events per room per /sync; a longer gap is filled from /messages */
    timelineLimit: Type.Integer({ minimum: 1, maximum: 1000, default: 50 }),
  },
  { additionalProperties: false },
);
export type MatrixBotConfig = Static<typeof MatrixBotConfig>;

export const MatrixEncryptionConfig = Type.Object(
  {
    /**
     * `optional` (default): end-to-end encrypted rooms are bridged when the
     * adapter's crypto works (a `storeSecret`; in appservice mode also the
     * homeserver's transaction extensions), refused clearly
     * otherwise; `off`: encrypted rooms are always refused; `required`:
     * only encrypted rooms are bridged, a linked room in clear is refused
     * (SG_ERR_ROOM_NOT_ENCRYPTED: nothing bridged to or from it).
     */
    mode: Type.Union([Type.Literal('off'), Type.Literal('optional'), Type.Literal('required')], { default: 'optional' }),
    /**
     * Encrypts the crypto state (device keys, Olm and Megolm sessions) at rest
     * in the log's state store. Losing or changing it means a new device.
     * A secret: also SYNCGATE_ADAPTER_<NAME>_ENCRYPTION_STORE_SECRET(_FILE).
     */
    storeSecret: Type.Optional(Type.String({ minLength: 16, maxLength: 1024 })),
    /**
     * An encrypted event whose room key has not arrived is held and tried
     * again (after each /sync batch) this long, then bridged as the
     * undecryptable notice.
     */
    undecryptableHoldMs: Type.Integer({ minimum: 0, maximum: 86_400_000, default: 120_000 }),
    /**
     * Appservice mode: how long to wait for the homeserver to push our own
     * test to-device message and our key counts in a transaction (MSC2409 /
     * MSC3202) before saying in the status that its extensions are off.
     */
    extensionsTimeoutMs: Type.Integer({ minimum: 100, maximum: 600_000, default: 30_000 }),
    /**
     * When the crypto store turns out lost (the homeserver has keys for our
     * device, we have nothing for it) a new device is created; with this on,
     * the bridge user's older devices that syncgate created (device id the
     * configured `deviceId` or `<deviceId>_…`) are deleted then. Bot mode:
     * needs `bot.password` (Synapse asks for it, user-interactive auth);
     * appservice mode: needs MSC4190 (`io.element.msc4190: true` in the
     * registration, which `syncgate matrix-registration` writes).
     */
    deleteOldDevices: Type.Boolean({ default: false }),
    /**
     * Cross-signs the bot user (master, self-signing and user-signing keys,
     * private parts in the crypto store) and signs the bridge device with
     * it, so a member who verifies the bot user once sees the device as
     * verified. Only when the homeserver has no cross-signing keys for the
     * bot user yet (first upload: no user-interactive auth on Synapse).
     */
    crossSigning: Type.Boolean({ default: true }),
    /**
     * Other devices of the bridge's own Matrix user that the bridge device
     * trusts, each pinned by its Ed25519 fingerprint (as Element shows it
     * under Settings → Sessions): the bridge accepts room keys they forward
     * in answer to its key requests (the Rust crypto accepts forwarded keys
     * only from own verified devices) and forwards keys to them on request.
     */
    trustedDevices: Type.Array(
      Type.Object(
        {
          deviceId: Type.String({ minLength: 1, maxLength: 255 }),
          ed25519: Type.String({ minLength: 40, maxLength: 64, pattern: '^[A-Za-z0-9+/]+$' }),
        },
        { additionalProperties: false },
      ),
      { maxItems: 100, default: [] },
    ),
  },
  { additionalProperties: false },
);
export type MatrixEncryptionConfig = Static<typeof MatrixEncryptionConfig>;

export const MatrixAdapterConfig = Type.Object(
  {
    mode: Type.Union([Type.Literal('appservice'), Type.Literal('bot')], { default: 'appservice' }),
    homeserverUrl: Type.String({ pattern: '^https?://', maxLength: 2048 }),
    /** the homeserver's server name (the part after `:` in user ids) */
    serverName: Type.String({ minLength: 1, maxLength: 255, pattern: '^[A-Za-z0-9.:\\[\\]-]+$' }),
    appservice: Type.Optional(MatrixAppserviceConfig),
    bot: Type.Optional(MatrixBotConfig),
    /** one client-server request */
    requestTimeoutMs: Type.Integer({ minimum: 1000, maximum: 300_000, default: 30_000 }),
    /**
     * How inbound media (mxc://server/id) becomes an attachment URL: a template
     * with `{server}` and `{mediaId}`, e.g. a gateway media proxy. Absent: the
     * mxc:// URI is kept as is.
     */
    mediaUrlTemplate: Type.Optional(Type.String({ maxLength: 2048 })),
    /**
     * Outbound attachments at an https URL are fetched and uploaded to the
     * homeserver's media repository up to this size (0: never; larger or
     * failed ones go as a text link).
     */
    mediaUploadMaxBytes: Type.Integer({ minimum: 0, maximum: 512 * 1024 * 1024, default: 10 * 1024 * 1024 }),
    /** also fetch plain-http attachment URLs for upload (a private network, tests) */
    mediaUploadAllowHttp: Type.Boolean({ default: false }),
    /**
     * Encrypted rooms: where the gateway serves this adapter's decrypted
     * attachments (GET /v1/media/{adapter}/{id}), as other protocols' clients
     * reach it, e.g. `https://gateway.example/v1/media/matrix`. Absent: the
     * attachment URL is the path alone (`/v1/media/{adapter}/{id}`), which
     * clients of the HTTP API resolve against the gateway.
     */
    encryptedMediaBaseUrl: Type.Optional(Type.String({ minLength: 1, maxLength: 1024, pattern: '^(https?://[^\\s]+|/[^\\s]*)$' })),
    /** an encrypted attachment larger than this is not downloaded, checked nor served (marked unreadable) */
    encryptedMediaMaxBytes: Type.Integer({ minimum: 1, maximum: 512 * 1024 * 1024, default: 50 * 1024 * 1024 }),
    /** appservice mode: how often the homeserver is probed for /readyz */
    healthCheckIntervalMs: Type.Integer({ minimum: 1000, maximum: 600_000, default: 30_000 }),
    /** how long stop() waits for an in-flight transaction or sync batch */
    stopGraceMs: Type.Integer({ minimum: 0, maximum: 120_000, default: 5_000 }),
    /** end-to-end encrypted rooms (README "Encrypted rooms") */
    encryption: Type.Optional(MatrixEncryptionConfig),
  },
  { additionalProperties: false },
);
export type MatrixAdapterConfig = Static<typeof MatrixAdapterConfig>;

/** Applies defaults and validates, reporting every violation at once. For tests, the runtime and the CLI. */
export function parseMatrixConfig(input: unknown): MatrixAdapterConfig {
  const { value: withDefaults, problems } = applySchema(MatrixAdapterConfig, input);
  if (problems.length === 0) {
    const config = withDefaults as MatrixAdapterConfig;
    if (config.mode === 'appservice') {
      if (!config.appservice) problems.push('/appservice: required in appservice mode');
      else {
        const as = config.appservice;
        if (as.asToken === as.hsToken) problems.push('/appservice: asToken and hsToken must differ');
        if (as.botLocalpart.startsWith(as.ghostPrefix)) problems.push('/appservice/botLocalpart: must not start with ghostPrefix (a ghost could take its name)');
      }
    } else if (!config.bot) {
      problems.push('/bot: required in bot mode');
    } else if (config.bot.accessToken === undefined && config.bot.password === undefined) {
      problems.push('/bot: accessToken or password is required');
    }
    if (config.encryption?.mode === 'required' && config.encryption.storeSecret === undefined) {
      problems.push('/encryption/storeSecret: required when encryption.mode is required (the crypto state is encrypted at rest with it)');
    }
  }
  if (problems.length > 0) throw new MatrixConfigError(problems);
  return withDefaults as MatrixAdapterConfig;
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}

/** The user-namespace regex of our ghosts (the registration's and the echo filter's). */
export function ghostUserRegex(config: Pick<MatrixAdapterConfig, 'serverName'> & { appservice: Pick<MatrixAppserviceConfig, 'ghostPrefix'> }): string {
  return `@${escapeRegex(config.appservice.ghostPrefix)}.*:${escapeRegex(config.serverName)}`;
}

export function botUserId(config: MatrixAdapterConfig): string {
  if (config.mode === 'bot') return config.bot?.userId ?? '';
  return `@${config.appservice?.botLocalpart ?? ''}:${config.serverName}`;
}

/**
 * The registration file the homeserver loads (AS API "Registration"), as
 * YAML text: what `syncgate matrix-registration` writes.
 *
 * `receive_ephemeral` is the stable key (spec v1.13); the MSC2409 key is what
 * older homeservers (and matrix-bot-sdk) use. We read both push fields.
 */
export function registrationYaml(config: MatrixAdapterConfig): string {
  const as = config.appservice;
  if (!as) throw new MatrixConfigError(['/appservice: required to write a registration']);
  const registration = {
    id: as.id,
    url: as.url,
    as_token: as.asToken,
    hs_token: as.hsToken,
    sender_localpart: as.botLocalpart,
    namespaces: {
      users: [
        { exclusive: true, regex: ghostUserRegex({ serverName: config.serverName, appservice: as }) },
        { exclusive: true, regex: `@${escapeRegex(as.botLocalpart)}:${escapeRegex(config.serverName)}` },
      ],
      aliases: [],
      rooms: [],
    },
    rate_limited: false,
    receive_ephemeral: true,
    // MSC2409: also the to-device messages of our users (Synapse: with msc2409_to_device_messages_enabled).
    'de.sorunome.msc2409.push_ephemeral': true,
    // MSC3202: device lists and key counts in transactions (Synapse: with msc3202_transaction_extensions).
    'org.matrix.msc3202': true,
    // MSC4190: the AS deletes its users' devices without user-interactive auth (encryption.deleteOldDevices).
    ...(config.encryption?.deleteOldDevices === true ? { 'io.element.msc4190': true } : {}),
  };
  return `# syncgate application-service registration for ${config.serverName}\n# Give this file to the homeserver (e.g. app_service_config_files); keep it secret.\n${stringify(registration)}`;
}

/** A fresh random token for as_token / hs_token (for the CLI when the config has none yet). */
export function randomToken(): string {
  return randomBytes(32).toString('base64url');
}
