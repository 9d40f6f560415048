/**
 * The adapter's figures: counters, dropped messages by reason (logged,
 * rate-limited per reason), and per-rule series of bounded cardinality.
 * status.ts reports them; every other module only counts.
 */
import type { Logger } from 'pino';
import type { IngestResult } from '../../src/core/adapter.js';
import { DROP_REASONS, type DropReason } from './errors.js';
import type { Rule } from './rules.js';

export interface MqttCounters {
  /** PUBLISH packets received */
  received: number;
  appended: number;
  duplicate: number;
  echo: number;
  /** refused by the sink (invalid event, unknown room) */
  ignored: number;
  telemetry: number;
  /** messages counted into a "+N more" summary instead of posted */
  throttled: number;
  summaries: number;
  /** topics that passed unthrottled because too many topics were tracked */
  throttleOverflow: number;
  /** retained messages a rule does not bridge */
  retainedSkipped: number;
  /** publications confirmed by PUBACK */
  published: number;
  publishFailed: number;
  commandsSent: number;
  commandsRefused: number;
  /** commands whose sender may not issue them (answered with a notice, not sent) */
  commandsDenied: number;
  commandResponses: number;
  commandTimeouts: number;
  /** append attempts that threw (the log was unavailable) */
  ingestErrors: number;
  /** sync requests received, answered with an error, and events sent in sync answers */
  syncRequests: number;
  syncErrors: number;
  syncEvents: number;
}

/** at most this many rule ids have their own metric series; further rules are counted under OTHER_RULES */
export const MAX_RULE_STATS = 1000;
export const OTHER_RULES = '(other)';
/** Drop log lines are rate-limited per reason: at most DROP_LOGS_PER_WINDOW lines in each window, then one line with the number suppressed. */
export const DROP_LOG_WINDOW_MS = 10_000;
export const DROP_LOGS_PER_WINDOW = 20;

export type RuleStat = 'ingested' | 'duplicate' | 'echo' | 'throttled';

export interface RuleSeries {
  readonly rule: string;
  readonly stat: string;
  readonly value: number;
}

function zeroCounters(): MqttCounters {
  return {
    received: 0,
    appended: 0,
    duplicate: 0,
    echo: 0,
    ignored: 0,
    telemetry: 0,
    throttled: 0,
    summaries: 0,
    throttleOverflow: 0,
    retainedSkipped: 0,
    published: 0,
    publishFailed: 0,
    commandsSent: 0,
    commandsRefused: 0,
    commandsDenied: 0,
    commandResponses: 0,
    commandTimeouts: 0,
    ingestErrors: 0,
    syncRequests: 0,
    syncErrors: 0,
    syncEvents: 0,
  };
}

export class MqttStats {
  readonly counters: MqttCounters = zeroCounters();
  readonly dropped = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>;
  private readonly dropLog = new Map<DropReason, { windowStart: number; logged: number; suppressed: number }>();
  /**
   * Figures per rule, by the rule's id (its `id` option, else room and
   * target): the series are bounded by the configured rules (plus one per
   * command for its responses), forgotten when a rule goes, and capped at
   * MAX_RULE_STATS ids — any further rule is counted under "other".
   */
  private readonly ruleStats = new Map<string, Map<string, number>>();

  constructor(private readonly log: Logger) {}

  /** Counts a dropped message and logs it, rate-limited per reason; `err` (a bug while handling it) is logged as an error with its stack. */
  drop(reason: DropReason, detail: string, topic: string, err?: unknown): void {
    const log = this.log;
    this.dropped[reason]++;
    // Filtered on purpose by the rule's template: counted, not a problem to warn about.
    if (reason === 'template-empty') {
      log.debug({ reason, topic }, 'MQTT message filtered by its template');
      return;
    }
    // Bounded logging: a device sending garbage at 1,000/s must not flood the log.
    const now = Date.now();
    let w = this.dropLog.get(reason);
    if (!w || now - w.windowStart >= DROP_LOG_WINDOW_MS) {
      if (w && w.suppressed > 0) log.warn({ reason, suppressed: w.suppressed }, 'MQTT messages dropped (log lines suppressed)');
      w = { windowStart: now, logged: 0, suppressed: 0 };
      this.dropLog.set(reason, w);
    }
    if (w.logged < DROP_LOGS_PER_WINDOW) {
      w.logged++;
      if (err === undefined) log.warn({ reason, detail, topic }, 'MQTT message dropped');
      else log.error({ reason, err, topic }, detail);
    } else {
      w.suppressed++;
    }
  }

  /** Counts what the sink made of an ingested draft, under the rule it came through when there is one. */
  countResult(result: IngestResult, rule?: Rule): void {
    if (result.status === 'ignored') {
      this.counters.ignored++;
      this.dropped['invalid-event']++;
      if (rule) this.ruleDrop(rule, 'invalid-event');
    } else {
      this.counters[result.status]++;
      if (rule) this.ruleCount(rule, result.status === 'appended' ? 'ingested' : result.status);
    }
  }

  ruleCount(rule: Rule, stat: RuleStat): void {
    const stats = this.statsOf(rule);
    stats.set(stat, (stats.get(stat) ?? 0) + 1);
  }

  ruleDrop(rule: Rule, reason: DropReason): void {
    const stats = this.statsOf(rule);
    const stat = `dropped.${reason}`;
    stats.set(stat, (stats.get(stat) ?? 0) + 1);
  }

  /** Forgets the series of rule ids not in `current` (a removed rule's series go with it). */
  keepRules(current: ReadonlySet<string>): void {
    for (const id of this.ruleStats.keys()) if (!current.has(id)) this.ruleStats.delete(id);
  }

  ruleSeries(): RuleSeries[] {
    return [...this.ruleStats].flatMap(([rule, stats]) => [...stats].map(([stat, value]) => ({ rule, stat, value })));
  }

  private statsOf(rule: Rule): Map<string, number> {
    let stats = this.ruleStats.get(rule.id);
    if (!stats) {
      const id = this.ruleStats.size < MAX_RULE_STATS ? rule.id : OTHER_RULES;
      stats = this.ruleStats.get(id) ?? new Map<string, number>();
      this.ruleStats.set(id, stats);
    }
    return stats;
  }
}
