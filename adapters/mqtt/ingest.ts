/**
 * The ingest path: one received message and the rule it matched become an
 * event in the rule's room (normalise.ts), deduplicated against an earlier
 * delivery, throttled per topic (throttle.ts), and appended through the sink
 * (sink.ts). The caller acknowledges the message when this resolves; a
 * rejection from the sink leaves it unacknowledged (inbound.ts).
 *
 * Also the throttle's summaries ("+N more"), appended in the background.
 */
import { randomUUID } from 'node:crypto';
import type { DraftOf } from '../../src/core/event.js';
import { truncate } from '../../src/core/text.js';
import { asTelemetry, CONTEXT_IDS, normalise, type InboundMessage, type Normalised } from './normalise.js';
import type { Rule } from './rules.js';
import { track, withRetry } from './sink.js';
import type { MqttState, Suppressed } from './state.js';
import type { ThrottleSummary } from './throttle.js';

/** A settled promise for a message handled without waiting for anything (shared by all of them). */
export const HANDLED: Promise<void> = Promise.resolve();

/**
 * Ingests `msg` through `rule`; `extra.replyTo`: a command response, appended as a reply to the command and never throttled.
 * Never throws: a failure is the promise's rejection. Not an async function:
 * the common case (a message appended at once) returns its append's promise
 * with one step for the counters, no layers of its own.
 */
export function ingest(state: MqttState, msg: InboundMessage, rule: Rule, params: Readonly<Record<string, string>>, extra?: { replyTo: string }): Promise<void> {
  try {
    return ingestNow(state, msg, rule, params, extra);
  } catch (err) {
    return Promise.reject(err);
  }
}

function ingestNow(state: MqttState, msg: InboundMessage, rule: Rule, params: Readonly<Record<string, string>>, extra: { replyTo: string } | undefined): Promise<void> {
  const { config, stats } = state;
  const counters = stats.counters;
  const result = normalise(msg, rule, params, { via: state.name, clientId: config.clientId, now: Date.now(), maxPayloadBytes: config.maxPayloadBytes, dupWindowMs: config.dupWindowSec * 1000 });
  if (result.ok === 'skip') {
    counters.retainedSkipped++;
    return HANDLED;
  }
  if (!result.ok) {
    stats.drop(result.reason, result.detail, msg.topic);
    stats.ruleDrop(rule, result.reason);
    return HANDLED;
  }
  const n = result.value;
  if (n.draft.kind === 'telemetry') {
    const draft = n.draft;
    return withRetry(state, () => state.sink.ingestTelemetry(draft)).then(() => {
      counters.telemetry++;
      stats.ruleCount(rule, 'ingested');
    });
  }
  const draft: DraftOf<'message'> = extra ? { ...n.draft, rel: { replyTo: extra.replyTo } } : n.draft;
  // A redelivery looks up its first delivery before anything else (inbound.ts makes it a barrier).
  if (n.dupLookups.length > 0) {
    return alreadyAppended(state, n).then((seen) => {
      if (!seen) return post(state, msg, rule, params, n, draft, extra);
      counters.duplicate++;
      stats.ruleCount(rule, 'duplicate');
      return undefined;
    });
  }
  return post(state, msg, rule, params, n, draft, extra);
}

/** Throttles, then appends the chat line (or, suppressed, keeps the reading as telemetry). */
function post(state: MqttState, msg: InboundMessage, rule: Rule, params: Readonly<Record<string, string>>, n: Normalised, draft: DraftOf<'message'>, extra: { replyTo: string } | undefined): Promise<void> {
  const { stats, sink } = state;
  const counters = stats.counters;
  // Command responses are not throttled: each answers one command.
  const decision =
    extra || rule.options.throttleMs === 0
      ? 'post'
      : state.session.throttle.offer(`${rule.room}\u0000${msg.topic}`, rule.options.throttleMs, { rule, params, sender: draft.sender, topic: msg.topic, text: n.text });
  if (decision === 'suppress') {
    counters.throttled++;
    // The reading itself is kept (telemetry) before the ack; only the chat line is folded into the summary.
    return withRetry(state, () => sink.ingestTelemetry(asTelemetry(draft, msg.payload, msg.contentType, rule.options.decode))).then(() => {
      counters.telemetry++;
      stats.ruleCount(rule, 'throttled');
    });
  }
  if (decision === 'overflow') counters.throttleOverflow++;
  return withRetry(state, () => sink.ingest(draft, { aliases: n.aliases, contextIds: CONTEXT_IDS })).then((r) => stats.countResult(r, rule));
}

/** For a redelivery without sg-msgid: was the first delivery appended already? */
async function alreadyAppended(state: MqttState, n: Normalised): Promise<boolean> {
  for (const key of n.dupLookups) {
    if ((await withRetry(state, () => state.sink.resolve(n.draft.room, key))) !== undefined) return true;
  }
  return false;
}

/** A throttle window closed with messages in it: one "+N more" line in the room, appended in the background (stop() waits for it). */
export function postSummary(state: MqttState, s: ThrottleSummary<Suppressed>): void {
  const { rule, params, sender, topic, text } = s.last;
  const rendered = rule.summary.render({ count: s.count, last: text, topic, ...params });
  const body = truncate(rendered.ok ? rendered.text : `+${s.count} more`);
  const draft: DraftOf<'message'> = {
    v: 1,
    kind: 'message',
    idem: `mqtt:summary:${randomUUID()}`,
    room: rule.room,
    sender,
    origin: { proto: 'mqtt', via: state.name, ids: { 'mqtt.topic': topic } },
    ts: { received: Date.now() },
    content: { body },
  };
  state.stats.counters.summaries++;
  track(
    state.background,
    withRetry(state, () => state.sink.ingest(draft, { contextIds: CONTEXT_IDS })).then(
      (r) => state.stats.countResult(r),
      (err: unknown) => state.log.error({ err, room: rule.room, topic }, 'could not append a throttle summary'),
    ),
  );
}
