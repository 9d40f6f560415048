/**
 * Handler: a device's response to a command we published (deliver.ts),
 * recognised by the command's response topic and its correlation data (the
 * command's event id). A command is answered once, on the response topic it
 * was sent with (so by its device), and not after its timeout notice; the
 * answer is ingested into the command's room as a reply to it.
 */
import type { DropReason } from '../errors.js';
import { ingest } from '../ingest.js';
import type { InboundMessage } from '../normalise.js';
import { matchCommand, renderCommand, type Command } from '../render.js';
import { compileRule, type Rule } from '../rules.js';
import { withRetry } from '../sink.js';
import type { MqttState } from '../state.js';

/** The rule id a command's responses are counted under. */
export function commandRuleId(command: Command): string {
  return `command:${command.name}`;
}

/** The commands this message may answer (by its subscription ids, or every command when the broker sent none); empty: it is no response. */
export function responseCandidates(state: MqttState, msg: InboundMessage): readonly Command[] {
  const { commands, responseSubs } = state;
  const ids = msg.subscriptionIds;
  if (commands.length === 0) return [];
  const candidates = ids === undefined ? commands : ids.flatMap((id) => responseSubs.get(id) ?? []);
  // Without subscription ids only correlation data tells a response.
  return ids !== undefined || msg.correlationData !== undefined ? candidates : [];
}

/** Whether the message was on a response topic of one of `candidates` (then it is handled here, answer or drop). */
export async function handleCommandResponse(state: MqttState, msg: InboundMessage, candidates: readonly Command[]): Promise<boolean> {
  const command = candidates.find((c) => c.responseFilter.match(msg.topic) !== undefined);
  if (!command) return false;
  const eventId = msg.correlationData?.toString('utf8');
  if (!eventId) {
    state.stats.drop('unmatched-response', 'a message on a response topic without correlation data', msg.topic);
    return true;
  }
  const bound = await commandOfResponse(state, eventId, msg.topic);
  if ('drop' in bound) {
    state.stats.drop(bound.drop, bound.detail, msg.topic);
    return true;
  }
  const { room } = bound;
  state.stats.counters.commandResponses++;
  await ingest(state, msg, responseRule(state, command, room), command.responseFilter.match(msg.topic) ?? {}, { replyTo: eventId });
  return true;
}

/**
 * The room of the command a response answers, or why it answers none: a
 * command is answered once, on the response topic it was sent with (so by
 * its device), and not after its timeout notice.
 */
async function commandOfResponse(state: MqttState, eventId: string, topic: string): Promise<{ room: string } | { drop: DropReason; detail: string }> {
  const id = eventId.slice(0, 64);
  const known = state.pending.answer(eventId, topic);
  switch (known.status) {
    case 'pending':
      return { room: known.command.room };
    case 'wrong-topic':
      return { drop: 'response-wrong-device', detail: `a response to command ${id} on another topic than ${known.expected}` };
    case 'answered':
      return { drop: 'response-duplicate', detail: `command ${id} was answered already` };
    case 'timed-out':
      return { drop: 'response-late', detail: `command ${id} timed out before this response` };
    case 'unknown':
      break;
  }
  // Not ours in this process (e.g. sent before a restart): find the command in a linked room and the response topic it named.
  const rooms = [...new Set(state.rules.current.rules.map((r) => r.room))];
  for (const room of rooms) {
    const event = await withRetry(state, () => state.sink.getEvent(room, eventId));
    if (!event) continue;
    const match = matchCommand(event, state.commands);
    const rendered = match ? renderCommand(event, match) : undefined;
    const expected = rendered?.ok ? rendered.publication.properties.responseTopic : undefined;
    if (expected === undefined) return { drop: 'unmatched-response', detail: `event ${id} is not a command` };
    if (expected !== topic) return { drop: 'response-wrong-device', detail: `a response to command ${id} on another topic than ${expected}` };
    state.pending.answered(eventId, room, topic);
    return { room };
  }
  return { drop: 'unmatched-response', detail: `no command ${id} in any linked room` };
}

/** A response rule: the command's response topic, decoded and rendered as configured, into the command's room. */
function responseRule(state: MqttState, command: Command, room: string): Rule {
  const key = `${command.name}\u0000${room}`;
  const known = state.rules.responses.get(key);
  if (known) return known;
  const rule = compileRule(
    room,
    {
      endpoint: state.name,
      target: command.responseFilter.source,
      options: {
        decode: command.config.responseDecode,
        sender: command.config.sender,
        ...(command.config.responseTemplate !== undefined ? { template: command.config.responseTemplate } : {}),
      },
    },
    state.config,
  );
  // Bounded by commands × rooms; cleared when rules change. Its figures are the command's.
  const withId: Rule = { ...rule, id: commandRuleId(command) };
  state.rules.responses.set(key, withId);
  return withId;
}
