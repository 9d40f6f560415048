/**
 * Configuration: one schema gives the type, the defaults and the validation.
 * load = YAML file + SYNCGATE_* environment overrides → defaults → validate
 * (every violation reported at once) → deep-freeze. Only `main` passes
 * process.env in; nothing here runs at import time.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parse as parseYaml } from 'yaml';
import { SyncgateError } from '../core/errors.js';
import { RoomSpec } from '../core/ports.js';
import { ADAPTER_SECRETS, ADAPTER_SHORT_FORMS, adapterEnvName, parseAdapterSections, type AdapterSection } from './adapters.js';

export type { AdapterSection } from './adapters.js';

const LogLevel = Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)));

export const ConfigSchema = Type.Object(
  {
    partitions: Type.Integer({ minimum: 1, maximum: 1024, default: 16, description: 'the log\'s partition count: may be raised on an existing log (restart with a larger value), never lowered' }),
    redis: Type.Optional(
      Type.Object(
        {
          url: Type.Optional(Type.String({ pattern: '^rediss?://', description: 'one Redis; absent (and no cluster) = the embedded in-memory log (not durable)' })),
          cluster: Type.Optional(
            Type.Object(
              {
                nodes: Type.Array(Type.String({ pattern: '^(rediss?://)?[^\\s/:]+:[0-9]{1,5}/?$' }), { minItems: 1, description: 'seed list host:port (or redis[s]://host:port); the rest of the cluster is discovered' }),
                tls: Type.Boolean({ default: false, description: 'TLS to every node (also implied by rediss:// seeds)' }),
              },
              { additionalProperties: false },
            ),
          ),
          sentinel: Type.Optional(
            Type.Object(
              {
                nodes: Type.Array(Type.String({ pattern: '^[^\\s/:]+:[0-9]{1,5}$' }), { minItems: 1, description: 'the sentinels, host:port; the client asks them for the current master and follows its failovers' }),
                name: Type.String({ minLength: 1, description: 'the master group the sentinels monitor (`sentinel monitor <name> …`)' }),
                password: Type.Optional(Type.String({ description: "the sentinels' own password, when they have one (the master and replicas use redis.password)" })),
                tls: Type.Boolean({ default: false, description: 'TLS to the sentinels and to the master' }),
              },
              { additionalProperties: false },
            ),
          ),
          prefix: Type.String({ pattern: '^[A-Za-z0-9:_.-]{0,64}$', default: 'sg:' }),
          waitReplicas: Type.Integer({ minimum: 0, maximum: 16, default: 0, description: 'an append is acknowledged only once WAIT reports this many replicas have it (0 = on the master alone)' }),
          waitTimeoutMs: Type.Integer({ minimum: 1, maximum: 60_000, default: 2_000, description: 'how long WAIT may take before the append is reported as failed' }),
          roomPlacement: Type.Optional(
            Type.Union([Type.Literal('hash'), Type.Literal('balanced')], {
              description: "where a new room goes: 'balanced' (the default with redis.cluster: the partition of the master carrying the least traffic, then the fewest rooms) or 'hash' (the default on one Redis or Sentinel: fnv1a32(room) mod partitions); a room never moves either way, so changing it affects only rooms created afterwards",
            }),
          ),
          keyGroups: Type.Optional(
            Type.Integer({ minimum: 1, maximum: 256, description: 'key groups (hash slots) of a log created now (default 18): the log spreads over at most this many cluster masters; an existing log keeps its count' }),
          ),
          password: Type.Optional(Type.String({ description: 'when not part of the URL' })),
        },
        { additionalProperties: false },
      ),
    ),
    retention: Type.Object(
      {
        roomMaxLen: Type.Integer({ minimum: 0, default: 100_000, description: 'events kept per room (approximate, 0 = no cap)' }),
        feedMaxLen: Type.Integer({ minimum: 0, default: 0, description: 'entries kept per partition feed (0 = no cap)' }),
        maxAgeDays: Type.Number({ minimum: 0, default: 0, description: 'events older than this are removed (0 = keep)' }),
        idTtlDays: Type.Number({ exclusiveMinimum: 0, default: 30, description: 'idempotency keys and native-id aliases are kept at least this long' }),
        telemetryMaxLen: Type.Integer({ minimum: 0, default: 10_000 }),
      },
      { additionalProperties: false, default: {} },
    ),
    http: Type.Object(
      {
        host: Type.String({ default: '127.0.0.1' }),
        port: Type.Integer({ minimum: 0, maximum: 65535, default: 8080 }),
        adminToken: Type.Optional(Type.String({ minLength: 16, description: 'bearer token for /v1/admin; absent = admin API disabled' })),
        viewerTokens: Type.Array(Type.String({ minLength: 16 }), {
          default: [],
          maxItems: 64,
          description: 'read-only bearer tokens for /v1/admin and the console: every GET, and no change (SG_ERR_FORBIDDEN)',
        }),
        console: Type.Boolean({ default: true, description: 'serve the operator console at /console/ (false: not served)' }),
        bodyLimitBytes: Type.Integer({ minimum: 1024, maximum: 64 * 1024 * 1024, default: 1_048_576 }),
        rateLimit: Type.Object(
          {
            perSecond: Type.Number({ exclusiveMinimum: 0, default: 50 }),
            burst: Type.Integer({ minimum: 1, default: 100 }),
          },
          {
            additionalProperties: false,
            default: {},
            description: 'per device: `burst` requests per window of burst/perSecond seconds, counted in Redis (shared by all replicas) when Redis is configured',
          },
        ),
        cors: Type.Object(
          {
            origins: Type.Array(Type.String({ minLength: 1 }), { default: [], description: 'browser origins allowed to call the API (e.g. https://app.example.org); empty = no cross-origin access' }),
          },
          { additionalProperties: false, default: {} },
        ),
        syncTimeoutMaxMs: Type.Integer({ minimum: 0, maximum: 300_000, default: 30_000 }),
        heartbeatMs: Type.Integer({ minimum: 1000, maximum: 120_000, default: 15_000 }),
        trustProxy: Type.Boolean({ default: false }),
      },
      { additionalProperties: false, default: {} },
    ),
    log: Type.Object(
      {
        level: Type.Unsafe<'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'>({ ...LogLevel, default: 'info' }),
      },
      { additionalProperties: false, default: {} },
    ),
    delivery: Type.Object(
      {
        leaseMs: Type.Integer({ minimum: 500, maximum: 600_000, default: 15_000, description: 'delivery lease: a dead replica\'s partitions move within it' }),
        maxAttempts: Type.Integer({ minimum: 1, maximum: 1000, default: 8, description: 'tries while the adapter is connected before an event is dead-lettered' }),
        backoffBaseMs: Type.Integer({ minimum: 1, maximum: 600_000, default: 500 }),
        backoffMaxMs: Type.Integer({ minimum: 1, maximum: 3_600_000, default: 60_000 }),
      },
      { additionalProperties: false, default: {} },
    ),
    rooms: Type.Array(RoomSpec, { default: [], description: 'rooms created (or updated) at start' }),
    adapters: Type.Record(Type.String({ pattern: '^[a-z][a-z0-9-]{0,31}$' }), Type.Unknown(), {
      default: {},
      description: 'adapter instances by endpoint name; `type` picks the adapter, its own schema checks the rest',
    }),
    shutdownGraceMs: Type.Integer({ minimum: 0, maximum: 600_000, default: 10_000 }),
    replicaId: Type.Optional(
      Type.String({
        pattern: '^[A-Za-z0-9._-]{1,128}$',
        description: 'this replica\'s stable identity in the leases (default: the hostname = the pod name); a restarted replica takes its own leases back at once. Unique per replica',
      }),
    ),
  },
  { additionalProperties: false },
);

/** The validated config: adapter sections parsed by their own schemas. */
export type Config = Omit<Static<typeof ConfigSchema>, 'adapters'> & { readonly adapters: Readonly<Record<string, AdapterSection>> };

/** Environment overrides: variable → config path. Kept explicit so each is documented. */
export const ENV_OVERRIDES: Readonly<Record<string, readonly string[]>> = {
  SYNCGATE_PARTITIONS: ['partitions'],
  SYNCGATE_REDIS_URL: ['redis', 'url'],
  SYNCGATE_REDIS_CLUSTER_NODES: ['redis', 'cluster', 'nodes'],
  SYNCGATE_REDIS_SENTINEL_NODES: ['redis', 'sentinel', 'nodes'],
  SYNCGATE_REDIS_SENTINEL_NAME: ['redis', 'sentinel', 'name'],
  SYNCGATE_REDIS_SENTINEL_PASSWORD: ['redis', 'sentinel', 'password'],
  SYNCGATE_REDIS_PREFIX: ['redis', 'prefix'],
  SYNCGATE_REDIS_PASSWORD: ['redis', 'password'],
  SYNCGATE_HTTP_HOST: ['http', 'host'],
  SYNCGATE_HTTP_PORT: ['http', 'port'],
  SYNCGATE_ADMIN_TOKEN: ['http', 'adminToken'],
  SYNCGATE_VIEWER_TOKENS: ['http', 'viewerTokens'],
  SYNCGATE_HTTP_CONSOLE: ['http', 'console'],
  SYNCGATE_LOG_LEVEL: ['log', 'level'],
  SYNCGATE_REPLICA_ID: ['replicaId'],
  SYNCGATE_RETENTION_MAX_AGE_DAYS: ['retention', 'maxAgeDays'],
  SYNCGATE_RETENTION_ROOM_MAX_LEN: ['retention', 'roomMaxLen'],
  // Secrets of the adapters with their default names (the Helm chart's Secret keys), from each adapter's descriptor.
  ...ADAPTER_SHORT_FORMS,
};

/** Overrides whose value is a list: comma-separated, blanks around each item dropped. */
const LIST_ENV: ReadonlySet<string> = new Set(['SYNCGATE_REDIS_CLUSTER_NODES', 'SYNCGATE_REDIS_SENTINEL_NODES', 'SYNCGATE_VIEWER_TOKENS']);

/**
 * Kubernetes injects "service link" variables for every Service of the
 * namespace (docker-link style): a Service named `syncgate` gives
 * SYNCGATE_SERVICE_HOST, SYNCGATE_SERVICE_PORT[_<PORT NAME>], SYNCGATE_PORT,
 * SYNCGATE_PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR]. They are not settings and must
 * not stop the gateway; the shape and the value must both match, so a
 * misspelt setting is still refused.
 */
const SERVICE_LINK_SHAPES: ReadonlyArray<readonly [RegExp, RegExp]> = [
  [/^[A-Z0-9_]+_SERVICE_HOST$/, /^[0-9A-Fa-f.:]+$/],
  [/^[A-Z0-9_]+_SERVICE_PORT(?:_[A-Z0-9_]+)?$/, /^\d{1,5}$/],
  [/^[A-Z0-9_]+_PORT$/, /^(?:tcp|udp|sctp):\/\/[^\s]+:\d{1,5}$/],
  [/^[A-Z0-9_]+_PORT_\d{1,5}_(?:TCP|UDP|SCTP)$/, /^(?:tcp|udp|sctp):\/\/[^\s]+:\d{1,5}$/],
  [/^[A-Z0-9_]+_PORT_\d{1,5}_(?:TCP|UDP|SCTP)_PROTO$/, /^(?:tcp|udp|sctp)$/],
  [/^[A-Z0-9_]+_PORT_\d{1,5}_(?:TCP|UDP|SCTP)_PORT$/, /^\d{1,5}$/],
  [/^[A-Z0-9_]+_PORT_\d{1,5}_(?:TCP|UDP|SCTP)_ADDR$/, /^[0-9A-Fa-f.:]+$/],
];

/** Whether an environment variable is one Kubernetes injects for a Service (see SERVICE_LINK_SHAPES). */
export function isServiceLinkVariable(name: string, value: string | undefined): boolean {
  if (value === undefined) return false;
  return SERVICE_LINK_SHAPES.some(([shape, valueShape]) => shape.test(name) && valueShape.test(value));
}

/** Variables the command line reads itself (the configuration file, and the gateway and token the client commands use): not settings. */
export const CLI_ENV: ReadonlySet<string> = new Set(['SYNCGATE_CONFIG', 'SYNCGATE_URL', 'SYNCGATE_TOKEN']);

/** The SYNCGATE_* variables that are Kubernetes service links, ignored by the config (main logs them at debug). */
export function ignoredServiceLinks(env: Readonly<Record<string, string | undefined>>): string[] {
  return Object.keys(env).filter((name) => name.startsWith('SYNCGATE_') && !(name in ENV_OVERRIDES) && isServiceLinkVariable(name, env[name])).sort();
}

/** Overrides whose values are secrets: each may also come from a file, <NAME>_FILE (a mounted Secret). */
const SECRET_ENV: ReadonlySet<string> = new Set([
  'SYNCGATE_ADMIN_TOKEN',
  'SYNCGATE_VIEWER_TOKENS',
  'SYNCGATE_REDIS_URL',
  'SYNCGATE_REDIS_PASSWORD',
  'SYNCGATE_REDIS_SENTINEL_PASSWORD',
  ...Object.keys(ADAPTER_SHORT_FORMS),
]);

const ADAPTER_SECRET_PREFIX = 'SYNCGATE_ADAPTER_';

/**
 * SYNCGATE_ADAPTER_<NAME>_<SECRET> → the config path of that secret of the
 * adapter named <name> in the file (whatever it is called), by its type.
 */
function adapterSecretPath(variable: string, adapters: unknown): string[] | undefined {
  if (!variable.startsWith(ADAPTER_SECRET_PREFIX) || typeof adapters !== 'object' || adapters === null) return undefined;
  const rest = variable.slice(ADAPTER_SECRET_PREFIX.length);
  for (const [name, section] of Object.entries(adapters as Record<string, unknown>)) {
    const type = typeof section === 'object' && section !== null ? (section as Record<string, unknown>)['type'] : undefined;
    const secrets = typeof type === 'string' && Object.hasOwn(ADAPTER_SECRETS, type) ? ADAPTER_SECRETS[type] : undefined;
    for (const [suffix, path] of Object.entries(secrets ?? {})) {
      if (rest === `${adapterEnvName(name)}_${suffix}`) return ['adapters', name, ...path];
    }
  }
  return undefined;
}

/**
 * <SECRET>_FILE variables: the secret is the file's content (one trailing
 * newline dropped), as Kubernetes mounts a Secret. Returns the environment with
 * those values filled in, the _FILE names consumed, and the problems.
 */
function readSecretFiles(env: Readonly<Record<string, string | undefined>>, adapters: unknown): { env: Record<string, string | undefined>; consumed: Set<string>; problems: string[] } {
  const out: Record<string, string | undefined> = { ...env };
  const consumed = new Set<string>();
  const problems: string[] = [];
  for (const [name, file] of Object.entries(env)) {
    if (!name.startsWith('SYNCGATE_') || !name.endsWith('_FILE') || file === undefined || file === '') continue;
    const secret = name.slice(0, -'_FILE'.length);
    if (!SECRET_ENV.has(secret) && adapterSecretPath(secret, adapters) === undefined) continue;
    consumed.add(name);
    if (env[secret] !== undefined && env[secret] !== '') {
      problems.push(`environment variables ${secret} and ${name} are both set: use one`);
      continue;
    }
    try {
      out[secret] = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      problems.push(`${name}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  return { env: out, consumed, problems };
}

/** Config paths whose values are secrets: a problem with one never shows the value. */
const SECRET_PATHS: readonly string[] = ['/http/adminToken', '/http/viewerTokens', '/redis/password', '/redis/url', '/redis/sentinel/password'];

type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

function setPath(target: Record<string, unknown>, path: readonly string[], value: string | string[]): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const child = node[key];
    if (typeof child !== 'object' || child === null || Array.isArray(child)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  const last = path.at(-1);
  if (last !== undefined) node[last] = value;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

export interface LoadOptions {
  readonly file?: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/** Builds the config from a plain object and the environment; throws SG_ERR_CONFIG_INVALID listing every problem. */
export function resolveConfig(raw: unknown, given: Readonly<Record<string, string | undefined>> = {}): Config {
  if (raw !== undefined && raw !== null && (typeof raw !== 'object' || Array.isArray(raw))) {
    throw new SyncgateError('SG_ERR_CONFIG_INVALID', 'the configuration must be a mapping', { problems: ['/ must be a mapping'] });
  }
  const merged = structuredClone((raw ?? {}) as Record<string, unknown>);
  const files = readSecretFiles(given, merged['adapters']);
  const env = files.env;
  for (const [name, path] of Object.entries(ENV_OVERRIDES)) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    setPath(merged, path, LIST_ENV.has(name) ? value.split(',').map((item) => item.trim()).filter(Boolean) : value);
  }
  const adapterSecrets = new Set<string>();
  for (const [name, value] of Object.entries(env)) {
    const path = adapterSecretPath(name, merged['adapters']);
    if (path === undefined) continue;
    adapterSecrets.add(name);
    if (value !== undefined && value !== '') setPath(merged, path, value);
  }
  const problems = [...files.problems];
  problems.push(
    ...[...Object.keys(env)]
      .filter((name) => name.startsWith('SYNCGATE_') && !(name in ENV_OVERRIDES) && !CLI_ENV.has(name) && !files.consumed.has(name) && !adapterSecrets.has(name) && !isServiceLinkVariable(name, env[name]))
      .map((name) =>
        name.startsWith(ADAPTER_SECRET_PREFIX)
          ? `environment variable ${name} is not a known setting (adapter secrets are SYNCGATE_ADAPTER_<NAME>_<SECRET> for an adapter <name> in the configuration file)`
          : `environment variable ${name} is not a known setting`,
      ),
  );
  const withDefaults = Value.Default(ConfigSchema, merged);
  const converted = Value.Convert(ConfigSchema, withDefaults);
  problems.push(
    ...[...Value.Errors(ConfigSchema, converted)].map((e) => {
      const shown = e.value !== undefined && typeof e.value !== 'object' && !SECRET_PATHS.some((secret) => e.path === secret || e.path.startsWith(`${secret}/`));
      return `${e.path || '/'}: ${e.message}${shown ? ` (got ${JSON.stringify(e.value)})` : ''}`;
    }),
  );
  const base = converted as Static<typeof ConfigSchema>;
  if (base.redis && [base.redis.url, base.redis.cluster, base.redis.sentinel].filter((target) => target !== undefined).length !== 1) {
    problems.push('/redis: set exactly one of redis.url (one Redis), redis.cluster.nodes (Redis Cluster) and redis.sentinel (Redis Sentinel)');
  }
  const adapters = parseAdapterSections(typeof base.adapters === 'object' && base.adapters !== null ? base.adapters : {});
  problems.push(...adapters.problems);
  if (problems.length > 0) {
    throw new SyncgateError('SG_ERR_CONFIG_INVALID', `${problems.length} problem(s):\n  - ${problems.join('\n  - ')}`, { problems });
  }
  return deepFreeze({ ...base, adapters: adapters.sections });
}

export async function loadConfig(options: LoadOptions = {}): Promise<Config> {
  let raw: Json | undefined;
  if (options.file) {
    let text: string;
    try {
      text = await readFile(options.file, 'utf8');
    } catch (err) {
      throw new SyncgateError('SG_ERR_CONFIG_FILE', `${options.file}: ${err instanceof Error ? err.message : String(err)}`);
    }
    try {
      raw = parseYaml(text) as Json;
    } catch (err) {
      throw new SyncgateError('SG_ERR_CONFIG_FILE', `${options.file}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return resolveConfig(raw, options.env ?? {});
}
