/**
 * The one dispatch of inbound messages (after inbound.ts, which keeps their
 * order and acknowledgement): what a PUBLISH is decides its handler, one per
 * kind, in the spirit of mqtt.js's handlers/:
 *
 * - a sync request on the sync topic (sync-request.ts → catchup.ts);
 * - a response to a command we sent (command-response.ts);
 * - a device message on a rule's topic (rule-message.ts → ingest.ts).
 *
 * A command response may also match a rule: it is handled as both, and
 * "no rule matches" is a drop only when it answered no command.
 */
import { HANDLED } from '../ingest.js';
import type { InboundMessage } from '../normalise.js';
import type { MqttState } from '../state.js';
import { handleCommandResponse, responseCandidates } from './command-response.js';
import { handleRuleMessage } from './rule-message.js';
import { handleSyncRequest, syncRequestDevice } from './sync-request.js';

/** Not an async function: a device message's promise is its append's, with no layer of its own (inbound.ts). */
export function dispatch(state: MqttState, msg: InboundMessage): Promise<void> {
  const device = syncRequestDevice(state, msg);
  if (device !== undefined) {
    handleSyncRequest(state, msg, device);
    return HANDLED;
  }
  const candidates = responseCandidates(state, msg);
  // No await without candidates: up to its append, a device message waits for nothing (arrival order, inbound.ts).
  if (candidates.length === 0) return handleRuleMessage(state, msg, false);
  return handleCommandResponse(state, msg, candidates).then((answered) => handleRuleMessage(state, msg, answered));
}
