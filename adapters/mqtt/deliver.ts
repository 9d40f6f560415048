/**
 * Outbound: deliver() publishes a room event to the link's out topic, and a
 * room message that matches a command pattern to the device (then waits for
 * its response: handlers/command-response.ts). Both wait for the PUBACK.
 * This runs on the delivery worker's call, never inside message handling,
 * so it cannot stall the inbound path.
 */
import type { DeliveryContext, DeliveryResult, DeliveryTarget } from '../../src/core/adapter.js';
import type { LogEvent } from '../../src/core/event.js';
import type { RoomLink } from '../../src/core/ports.js';
import { backoffDelay } from '../../src/core/backoff.js';
import { MqttPublishError } from './errors.js';
import { postDenied } from './notices.js';
import { matchCommand, mayIssue, PUBLISHED_KINDS, renderCommand, renderRoomEvent } from './render.js';
import { compileRule, type Rule } from './rules.js';
import { track } from './sink.js';
import type { MqttState } from './state.js';

const MAX_DELIVERED_PARTS = 10_000;

export function deliver(state: MqttState, event: LogEvent, target: DeliveryTarget, context: DeliveryContext): Promise<DeliveryResult> {
  if (state.lifecycle.stopping) return Promise.resolve({ status: 'retry', reason: 'the MQTT adapter is stopping', afterMs: 1000 });
  return track(state.outbound.inFlight, deliverEvent(state, event, target, context));
}

/** Whether events from this endpoint go back out on `link`: only to an out topic that mirrors the whole room (`outOwn`). */
export function deliversOwn(link: RoomLink): boolean {
  const o = link.options;
  const on = (key: string, fallback: boolean) => (o?.[key] === undefined ? fallback : o[key] === true || o[key] === 'true');
  return on('out', true) && on('outOwn', false);
}

async function deliverEvent(state: MqttState, event: LogEvent, target: DeliveryTarget, context: DeliveryContext): Promise<DeliveryResult> {
  const { config, stats, log } = state;
  const { deliveredParts } = state.outbound;
  if (!PUBLISHED_KINDS.has(event.kind)) return { status: 'skipped', reason: `${event.kind} events are not published to MQTT` };
  const rule = ruleOf(state, target);
  if (!rule) return { status: 'rejected', reason: `the link ${target.link.target} is not a valid MQTT rule` };
  // Events from this endpoint (device messages, replies, gateway notices) only go to the out topic of links that mirror them.
  const own = event.origin.via === state.name;
  if (own && !(rule.options.out && rule.options.outOwn)) return { status: 'skipped', reason: 'came from this endpoint' };
  const roomRules = state.rules.current.rules.filter((r) => r.room === target.room);
  const partsKey = `${event.eventId}\u0000${target.link.target}`;
  const done = deliveredParts.get(partsKey) ?? new Set<'command' | 'out'>();
  let sent = done.size > 0;

  // A room with several MQTT links gets each command once, from its first link.
  const firstLink = (roomRules[0] ?? rule).link.target === rule.link.target;
  const match = !own && rule.options.commands && firstLink ? matchCommand(event, state.commands) : undefined;
  if (match && !done.has('command') && !mayIssue(match.command, event.sender, config.roles)) {
    // Not this sender's to give: answered in the room, never sent (the message itself still goes out).
    postDenied(state, event, match);
  } else if (match && !done.has('command')) {
    const rendered = renderCommand(event, match);
    if (!rendered.ok) {
      stats.counters.commandsRefused++;
      log.warn({ room: event.room, eventId: event.eventId, reason: rendered.reason }, 'command not sent');
    } else {
      try {
        await state.session.connection.publish(rendered.publication);
      } catch (err) {
        return failure(state, err, context.attempt);
      }
      stats.counters.published++;
      stats.counters.commandsSent++;
      sent = true;
      done.add('command');
      deliveredParts.set(partsKey, done);
      if (deliveredParts.size > MAX_DELIVERED_PARTS) deliveredParts.delete(deliveredParts.keys().next().value ?? partsKey);
      state.pending.add({
        eventId: event.eventId,
        room: event.room,
        commandName: match.command.name,
        responseTopic: rendered.publication.properties.responseTopic ?? '',
        vars: match.vars,
        timeoutMs: match.command.config.timeoutMs,
      });
    }
  }

  if (rule.options.out && !done.has('out')) {
    const rendered = renderRoomEvent(event, rule.outTopic, context.content, { qos: rule.options.outQos, retain: rule.options.outRetain, maxPayloadBytes: config.maxPayloadBytes });
    if (!rendered.ok) return { status: 'rejected', reason: rendered.reason };
    // Several links of one room with the same out topic publish once (from the first of them).
    const earlier = roomRules.slice(0, Math.max(0, roomRules.indexOf(rule))).some((r) => {
      if (!r.options.out || (own && !r.options.outOwn)) return false;
      const t = renderRoomEvent(event, r.outTopic);
      return t.ok && t.publication.topic === rendered.publication.topic;
    });
    if (!earlier) {
      try {
        await state.session.connection.publish(rendered.publication);
      } catch (err) {
        return failure(state, err, context.attempt);
      }
      stats.counters.published++;
      sent = true;
    }
  }
  deliveredParts.delete(partsKey);
  return sent ? { status: 'delivered', nativeIds: {} } : { status: 'skipped', reason: 'nothing to publish from this link (out disabled, or published from another link of the room)' };
}

/** The rule of a delivery target: from the current set, or compiled from the link (the view may lag behind). */
function ruleOf(state: MqttState, target: DeliveryTarget): Rule | undefined {
  const known = state.rules.current.rules.find((r) => r.room === target.room && r.link.target === target.link.target);
  if (known) return known;
  try {
    return compileRule(target.room, target.link, state.config);
  } catch {
    return undefined;
  }
}

function failure(state: MqttState, err: unknown, attempt: number): DeliveryResult {
  state.stats.counters.publishFailed++;
  if (err instanceof MqttPublishError && err.permanent) return { status: 'rejected', reason: err.message };
  return { status: 'retry', reason: (err as Error).message, afterMs: backoffDelay(attempt, state.config.reconnect.minMs, state.config.reconnect.maxMs) };
}
