/**
 * The MQTT adapter's configuration (one TypeBox schema: type, defaults and
 * validation) and the per-link rule options read from room links.
 *
 * Rules are room links `{endpoint: <adapter name>, target: <topic filter with
 * named wildcards>, options}`; their options are checked by `compileRules`
 * (rules.ts), so the admin API can reject a bad link before storing it.
 */
import { Type, type Static } from '@sinclair/typebox';
import { applySchema } from '../../src/core/schema.js';
import { MqttConfigError } from './errors.js';

export const DEFAULT_OUT_TOPIC = 'sg/v1/rooms/{{room}}/out';

export const MqttCommandConfig = Type.Object(
  {
    /** for logs and metrics; defaults to the pattern */
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    /** a JS regular expression with named groups matched against a room message's body, e.g. `^!(?<device>[\w-]+) (?<command>.+)$` */
    pattern: Type.String({ minLength: 1, maxLength: 1024 }),
    flags: Type.String({ pattern: '^[imsu]*$', default: '' }),
    /** mustache template over the named groups (plus `room`, `sender`), e.g. `devices/{{device}}/cmd` */
    topic: Type.String({ minLength: 1, maxLength: 1024 }),
    /** where the device answers (MQTT 5 Response Topic), e.g. `devices/{{device}}/cmd/response`; subscribed with `{{x}}` → `+` */
    responseTopic: Type.String({ minLength: 1, maxLength: 1024 }),
    /** mustache template for the command payload; absent = a JSON object with the groups */
    payload: Type.Optional(Type.String({ maxLength: 4096 })),
    timeoutMs: Type.Integer({ minimum: 100, maximum: 3_600_000, default: 10_000 }),
    /** the group / response-topic wildcard that names the device: the reply's sender */
    sender: Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$', default: 'device' }),
    responseDecode: Type.Union([Type.Literal('json'), Type.Literal('text')], { default: 'text' }),
    /** mustache template turning the response into chat text; absent = the text, or the compact JSON */
    responseTemplate: Type.Optional(Type.String({ maxLength: 4096 })),
    /** the notice posted when no response came in time */
    timeoutTemplate: Type.String({ maxLength: 1024, default: 'No response from {{device}} to "{{body}}" within {{seconds}} s' }),
    /**
     * Who may issue the command. Default: every HTTP (gateway) user — the API
     * lets only users granted the room send there — and no bridged sender.
     */
    allow: Type.Object(
      {
        /** gateway user ids; `*` = every user granted the room */
        users: Type.Array(Type.String({ minLength: 1, maxLength: 128 }), { maxItems: 1000, default: ['*'] }),
        /** names of `roles` (adapter option) whose members may */
        roles: Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 100, default: [] }),
        /** bridged senders by uid (`xmpp:alice@example.org`, `matrix:@bob:example.org`); never a sender whose identity is only claimed */
        bridged: Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 1000, default: [] }),
      },
      { additionalProperties: false, default: {} },
    ),
    /** the notice posted when the sender may not issue the command */
    denyTemplate: Type.String({ maxLength: 1024, default: '{{sender}} may not send "{{body}}"' }),
  },
  { additionalProperties: false },
);
export type MqttCommandConfig = Static<typeof MqttCommandConfig>;

export const MqttAdapterConfig = Type.Object(
  {
    url: Type.String({ pattern: '^(mqtts?|wss?|tcp|ssl)://', description: 'broker URL' }),
    /** fixed: the broker keeps the session (subscriptions, queued messages) under this id */
    clientId: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9_.:-]+$' }),
    username: Type.Optional(Type.String({ maxLength: 256 })),
    password: Type.Optional(Type.String({ maxLength: 1024 })),
    /** how long the broker keeps the session and queues messages while the gateway is away */
    sessionExpirySec: Type.Integer({ minimum: 1, maximum: 0xffff_ffff, default: 7 * 24 * 3600 }),
    keepaliveSec: Type.Integer({ minimum: 5, maximum: 65_535, default: 30 }),
    connectTimeoutMs: Type.Integer({ minimum: 1000, maximum: 120_000, default: 10_000 }),
    reconnect: Type.Object(
      {
        minMs: Type.Integer({ minimum: 50, maximum: 60_000, default: 500 }),
        maxMs: Type.Integer({ minimum: 100, maximum: 600_000, default: 30_000 }),
      },
      { additionalProperties: false, default: {} },
    ),
    /** how many unacknowledged QoS 1 messages the broker may send us at once (MQTT 5 Receive Maximum) */
    receiveMaximum: Type.Integer({ minimum: 1, maximum: 65_535, default: 100 }),
    /** QoS 0 messages ingested concurrently (in arrival order); above it the connection waits. Several
     *  of the log's append batches must fit, or the gateway idles while Redis works on them. */
    qos0InFlight: Type.Integer({ minimum: 1, maximum: 10_000, default: 512 }),
    /** default topic for room events; mustache over `room` (a link's `outTopic` option overrides it) */
    outTopicTemplate: Type.String({ minLength: 1, maxLength: 1024, default: DEFAULT_OUT_TOPIC }),
    publishTimeoutMs: Type.Integer({ minimum: 100, maximum: 300_000, default: 10_000 }),
    commands: Type.Array(MqttCommandConfig, { maxItems: 64, default: [] }),
    /**
     * Catch-up over MQTT: a device publishes `{since?, limit?, rooms?}` to
     * `topic` (its named wildcard `sender` is the device, as for ingest:
     * trustworthy only with broker ACLs) with a Response Topic and
     * Correlation Data, and gets a page of the events of its granted rooms.
     */
    sync: Type.Optional(
      Type.Object(
        {
          topic: Type.String({ minLength: 1, maxLength: 1024, default: 'sg/v1/sync/+device' }),
          sender: Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$', default: 'device' }),
          /** which devices may read which rooms: `pattern` a JS regular expression over the device name */
          grants: Type.Array(
            Type.Object(
              { pattern: Type.String({ minLength: 1, maxLength: 1024 }), rooms: Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { minItems: 1, maxItems: 1000 }) },
              { additionalProperties: false },
            ),
            { maxItems: 1000, default: [] },
          ),
          defaultLimit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
          maxLimit: Type.Integer({ minimum: 1, maximum: 1000, default: 1000 }),
          /** requests served at once; more wait, up to `maxQueued`, beyond which they are answered SG_ERR_RATE_LIMITED */
          concurrency: Type.Integer({ minimum: 1, maximum: 64, default: 4 }),
          maxQueued: Type.Integer({ minimum: 0, maximum: 100_000, default: 256 }),
        },
        { additionalProperties: false },
      ),
    ),
    /** named lists of gateway user ids and bridged sender uids, for commands' `allow.roles` */
    roles: Type.Record(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$' }), Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 1000 }), { default: {} }),
    /** larger payloads are dropped (counted as payload-too-large) */
    // Telemetry keeps binary payloads as base64 (4/3 larger) in a field of at most 1 MiB.
    maxPayloadBytes: Type.Integer({ minimum: 1, maximum: 768 * 1024, default: 256 * 1024 }),
    throttle: Type.Object(
      {
        /** default per-topic interval for rules without `throttleMs`; 0 = no throttling */
        intervalMs: Type.Integer({ minimum: 0, maximum: 86_400_000, default: 0 }),
        /** the aggregate line: `count` suppressed messages, `last` the last suppressed text */
        summaryTemplate: Type.String({ minLength: 1, maxLength: 1024, default: '+{{count}} more (latest: {{last}})' }),
        /** topics tracked at once; beyond it messages pass unthrottled (and are counted) */
        maxKeys: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 10_000 }),
      },
      { additionalProperties: false, default: {} },
    ),
    /**
     * Redeliveries (DUP) of messages without `sg-msgid` are matched against
     * appends of the last one to two windows; see normalise.ts.
     */
    dupWindowSec: Type.Integer({ minimum: 10, maximum: 30 * 24 * 3600, default: 600 }),
    /** how long an append failure is retried before the connection is dropped (so the broker redelivers later) */
    ingestRetryMs: Type.Integer({ minimum: 0, maximum: 600_000, default: 5_000 }),
  },
  { additionalProperties: false },
);
export type MqttAdapterConfig = Static<typeof MqttAdapterConfig>;

/** Applies defaults and validates, reporting every violation at once. For tests and the runtime. */
export function parseMqttConfig(input: unknown): MqttAdapterConfig {
  const { value: withDefaults, problems } = applySchema(MqttAdapterConfig, input);
  if (problems.length > 0) throw new MqttConfigError(problems);
  const config = withDefaults as MqttAdapterConfig;
  if (config.reconnect.maxMs < config.reconnect.minMs) throw new MqttConfigError(['/reconnect: maxMs must be >= minMs']);
  const unknownRoles = config.commands.flatMap((c, i) => c.allow.roles.filter((r) => !Object.hasOwn(config.roles, r)).map((r) => `/commands/${i}/allow/roles: no role ${r}`));
  if (unknownRoles.length > 0) throw new MqttConfigError(unknownRoles);
  return config;
}

/** The options of one rule (room link), after defaults. */
export interface RuleOptions {
  readonly decode: 'json' | 'text' | 'binary';
  readonly template: string | undefined;
  readonly kind: 'message' | 'telemetry';
  readonly throttleMs: number;
  /** named wildcard whose topic segment is the sender */
  readonly sender: string;
  readonly outTopic: string;
  /** publish room events to `outTopic` from this link */
  readonly out: boolean;
  /** turn matching room messages into device commands from this link */
  readonly commands: boolean;
  /** also publish this endpoint's own events (device messages, command replies, gateway notices) to `outTopic` */
  readonly outOwn: boolean;
  /** QoS of out-topic publications (default 1) */
  readonly outQos: 0 | 1 | 2;
  /** publish out-topic events retained: a new subscriber gets the room's latest event at once (default false) */
  readonly outRetain: boolean;
  /** bridge retained messages (marked historical); default: ignore them */
  readonly retained: boolean;
  readonly summaryTemplate: string;
}

export const RULE_OPTION_NAMES = ['id', 'decode', 'template', 'kind', 'throttleMs', 'sender', 'outTopic', 'out', 'outOwn', 'outQos', 'outRetain', 'commands', 'retained', 'summaryTemplate'] as const;
