/**
 * Rules: the adapter's room links compiled into matchers. A rule maps a
 * topic filter with named wildcards to a room, with a payload decoding, a
 * chat template, a kind and a throttle interval; it is also where outbound
 * room events go (its `outTopic`).
 */
import type { RoomLink } from '../../src/core/ports.js';
import { DEFAULT_OUT_TOPIC, RULE_OPTION_NAMES, type MqttAdapterConfig, type RuleOptions } from './config.js';
import { MqttConfigError } from './errors.js';
import { compileTemplate, type Template } from './template.js';
import { parseNamedFilter, subscriptionIdFor, type NamedFilter } from './topics.js';

export interface Rule {
  /** names the rule in metrics: the link's `id` option, else `<room>:<target>` */
  readonly id: string;
  readonly room: string;
  readonly link: RoomLink;
  readonly filter: NamedFilter;
  readonly options: RuleOptions;
  /** the chat template; undefined = the default rendering for the decoding */
  readonly template: Template | undefined;
  readonly outTopic: Template;
  readonly summary: Template;
}

export interface Subscription {
  /** the plain MQTT filter */
  readonly filter: string;
  readonly id: number;
  /** Retain Handling: 1 = retained messages on a new subscription only, 2 = never */
  readonly rh: 1 | 2;
}

export interface RuleSet {
  readonly rules: readonly Rule[];
  /** distinct plain filters to subscribe */
  readonly subscriptions: ReadonlyMap<string, Subscription>;
  /** rules by the subscription identifier of their plain filter */
  readonly bySubscription: ReadonlyMap<number, readonly Rule[]>;
  /** links that could not be compiled, with the reason */
  readonly invalid: ReadonlyArray<{ readonly room: string; readonly target: string; readonly problems: readonly string[] }>;
}

type Defaults = Pick<MqttAdapterConfig, 'outTopicTemplate' | 'throttle'>;

function str(options: RoomLink['options'], key: string): string | undefined {
  const v = options?.[key];
  return v === undefined ? undefined : String(v);
}

function bool(options: RoomLink['options'], key: string, fallback: boolean, problems: string[]): boolean {
  const v = options?.[key];
  if (v === undefined) return fallback;
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === 'false') return v === 'true';
  problems.push(`option ${key} must be a boolean`);
  return fallback;
}

/** Compiles one link into a rule; throws MqttConfigError listing every problem. */
export function compileRule(room: string, link: RoomLink, defaults: Defaults): Rule {
  const problems: string[] = [];
  const o = link.options;
  for (const key of Object.keys(o ?? {})) {
    if (!(RULE_OPTION_NAMES as readonly string[]).includes(key)) problems.push(`unknown option ${key}`);
  }

  let filter: NamedFilter | undefined;
  try {
    filter = parseNamedFilter(link.target);
  } catch (err) {
    problems.push(`target: ${(err as Error).message}`);
  }

  const decode = str(o, 'decode') ?? 'text';
  if (decode !== 'json' && decode !== 'text' && decode !== 'binary') problems.push('option decode must be json, text or binary');
  const kind = str(o, 'kind') ?? 'message';
  if (kind !== 'message' && kind !== 'telemetry') problems.push('option kind must be message or telemetry');
  const rawThrottle = o?.['throttleMs'];
  const throttleMs = rawThrottle === undefined ? defaults.throttle.intervalMs : Number(rawThrottle);
  if (!Number.isInteger(throttleMs) || throttleMs < 0 || throttleMs > 86_400_000) problems.push('option throttleMs must be an integer in 0..86400000');
  // Throttling folds chat lines into a summary and keeps the readings as telemetry: a telemetry rule has no chat lines to fold.
  if (kind === 'telemetry' && rawThrottle !== undefined && Number(rawThrottle) > 0) problems.push('option throttleMs does not apply to kind telemetry (every reading is kept)');
  const outQos = Number(o?.['outQos'] ?? 1);
  if (outQos !== 0 && outQos !== 1 && outQos !== 2) problems.push('option outQos must be 0, 1 or 2');
  const id = str(o, 'id') ?? `${room}:${link.target}`;
  if (o?.['id'] !== undefined && !/^[A-Za-z0-9_.:-]{1,64}$/.test(id)) problems.push('option id must be 1 to 64 of A-Z a-z 0-9 _ . : -');
  const sender = str(o, 'sender') ?? 'device';
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(sender)) problems.push('option sender must be a wildcard name');

  const compile = (what: string, source: string | undefined): Template | undefined => {
    if (source === undefined) return undefined;
    try {
      return compileTemplate(source);
    } catch (err) {
      problems.push(`${what}: ${(err as Error).message}`);
      return undefined;
    }
  };
  const template = compile('option template', str(o, 'template'));
  const outTopicSource = str(o, 'outTopic') ?? defaults.outTopicTemplate ?? DEFAULT_OUT_TOPIC;
  const outTopic = compile('option outTopic', outTopicSource);
  const summarySource = str(o, 'summaryTemplate') ?? defaults.throttle.summaryTemplate;
  const summary = compile('option summaryTemplate', summarySource);

  const options: RuleOptions = {
    decode: decode as RuleOptions['decode'],
    template: template?.source,
    kind: kind as RuleOptions['kind'],
    throttleMs,
    sender,
    outTopic: outTopicSource,
    out: bool(o, 'out', true, problems),
    outOwn: bool(o, 'outOwn', false, problems),
    outQos: outQos === 0 || outQos === 2 ? outQos : 1,
    outRetain: bool(o, 'outRetain', false, problems),
    commands: bool(o, 'commands', true, problems),
    retained: bool(o, 'retained', false, problems),
    summaryTemplate: summarySource,
  };
  if (problems.length > 0 || !filter || !outTopic || !summary) throw new MqttConfigError(problems);
  return { id, room, link, filter, options, template, outTopic, summary };
}

/** Compiles every link of the adapter; invalid links are reported, not fatal (others keep working). */
export function compileRules(links: ReadonlyArray<{ readonly room: string; readonly link: RoomLink }>, defaults: Defaults): RuleSet {
  const rules: Rule[] = [];
  const invalid: Array<{ room: string; target: string; problems: readonly string[] }> = [];
  for (const { room, link } of links) {
    try {
      rules.push(compileRule(room, link, defaults));
    } catch (err) {
      invalid.push({ room, target: link.target, problems: err instanceof MqttConfigError ? err.problems : [(err as Error).message] });
    }
  }
  const subscriptions = new Map<string, Subscription>();
  const bySubscription = new Map<number, Rule[]>();
  for (const rule of rules) {
    const plain = rule.filter.plain;
    const id = subscriptionIdFor(plain);
    const existing = subscriptions.get(plain);
    // One subscription per plain filter: retained messages are wanted if any rule on it wants them.
    const rh: 1 | 2 = rule.options.retained || existing?.rh === 1 ? 1 : 2;
    subscriptions.set(plain, { filter: plain, id, rh });
    bySubscription.set(id, [...(bySubscription.get(id) ?? []), rule]);
  }
  return { rules, subscriptions, bySubscription, invalid };
}

/**
 * The rules a received message is for: at most one per room (the first
 * matching link of that room). `subscriptionIds` are those the broker put on
 * the message; without them (a broker that does not support them) every rule
 * is tried.
 */
export function rulesFor(set: RuleSet, topic: string, subscriptionIds: readonly number[] | undefined): Array<{ rule: Rule; params: Readonly<Record<string, string>> }> {
  const candidates =
    subscriptionIds === undefined
      ? set.rules
      : subscriptionIds.length === 1
        ? (set.bySubscription.get(subscriptionIds[0] as number) ?? [])
        : subscriptionIds.flatMap((id) => set.bySubscription.get(id) ?? []);
  if (candidates.length === 1) {
    // The common case: one rule for this subscription.
    const rule = candidates[0] as Rule;
    const params = rule.filter.match(topic);
    return params ? [{ rule, params }] : [];
  }
  const out: Array<{ rule: Rule; params: Readonly<Record<string, string>> }> = [];
  const rooms = new Set<string>();
  for (const rule of candidates) {
    if (rooms.has(rule.room)) continue;
    const params = rule.filter.match(topic);
    if (!params) continue;
    rooms.add(rule.room);
    out.push({ rule, params });
  }
  return out;
}
