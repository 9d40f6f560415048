/**
 * The session: start, stop and abort of the adapter around its connection
 * (client.ts), and the rules it follows — compiled from this endpoint's room
 * links, recompiled when they change, and turned into the subscriptions the
 * connection keeps (rules, the sync topic, command response topics).
 */
import { clearSyncQueue } from './catchup.js';
import type { SubscriptionSpec } from './client.js';
import { OTHER_RULES } from './counters.js';
import { commandRuleId } from './handlers/command-response.js';
import { compileRules } from './rules.js';
import { sleep } from './sink.js';
import { newSession, type MqttState } from './state.js';
import { subscriptionIdFor } from './topics.js';

export async function start(state: MqttState): Promise<void> {
  const { lifecycle } = state;
  if (lifecycle.started) return;
  lifecycle.started = true;
  if (lifecycle.stopping) {
    // Started again after a stop (this replica won the connection lease back): a new session.
    lifecycle.stopping = false;
    state.session = newSession(state);
  }
  reloadRules(state);
  lifecycle.unwatch = state.links.onChange(() => reloadRules(state));
  // Subscriptions are sent on every CONNACK (client.ts); set them before connecting.
  void state.session.connection.setSubscriptions(wantedSubscriptions(state));
  await state.session.connection.start();
}

export async function stop(state: MqttState): Promise<void> {
  const { lifecycle, session } = state;
  if (!lifecycle.started || lifecycle.stopping) return;
  lifecycle.stopping = true;
  lifecycle.unwatch?.();
  const deadline = (ms: number) => sleep(ms);
  // Finish sends in flight, then message handling (its acks), then disconnect.
  clearSyncQueue(state);
  await Promise.race([Promise.allSettled([...state.outbound.inFlight, ...state.catchup.jobs]), deadline(state.config.publishTimeoutMs)]);
  await session.connection.stop();
  await Promise.race([Promise.allSettled([...state.inbound.inFlight]), deadline(5_000)]);
  // Pending summaries are posted now rather than lost.
  session.throttle.flush();
  state.pending.close();
  await Promise.race([Promise.allSettled([...state.background]), deadline(5_000)]);
  lifecycle.started = false;
}

/** Drops the connection like a crash: nothing in progress acknowledged, no summaries. */
export function abort(state: MqttState): void {
  const { lifecycle } = state;
  lifecycle.stopping = true;
  lifecycle.started = false;
  lifecycle.unwatch?.();
  state.session.connection.abort();
  state.pending.close();
  // A crash loses the pending summaries; the suppressed readings are in the telemetry stream.
  state.session.throttle.cancel();
}

function wantedSubscriptions(state: MqttState): Map<string, SubscriptionSpec> {
  const { sync, syncSubId } = state;
  const wanted = new Map<string, SubscriptionSpec>();
  for (const s of state.rules.current.subscriptions.values()) wanted.set(s.filter, s);
  if (sync && syncSubId !== undefined) wanted.set(sync.filter.plain, { filter: sync.filter.plain, id: syncSubId, rh: 2 });
  for (const c of state.commands) {
    const filter = c.responseFilter.plain;
    if (!wanted.has(filter)) wanted.set(filter, { filter, id: subscriptionIdFor(filter), rh: 2 });
  }
  return wanted;
}

function reloadRules(state: MqttState): void {
  const { rules, log } = state;
  const next = compileRules(state.links.linksOf(state.name), state.config);
  rules.responses.clear();
  for (const bad of next.invalid) {
    if (!rules.current.invalid.some((b) => b.room === bad.room && b.target === bad.target)) {
      log.error({ room: bad.room, target: bad.target, problems: bad.problems }, 'MQTT rule ignored: the room link is not valid');
    }
  }
  rules.current = next;
  // A removed rule's series go with it.
  state.stats.keepRules(new Set([...next.rules.map((r) => r.id), ...state.commands.map(commandRuleId), OTHER_RULES]));
  if (state.lifecycle.started) {
    state.session.connection.setSubscriptions(wantedSubscriptions(state)).catch((err: unknown) => log.error({ err }, 'could not update MQTT subscriptions'));
  }
}
