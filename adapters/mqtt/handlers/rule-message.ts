/**
 * Handler: a message on a topic of this endpoint's rules (its room links).
 * Each matching rule ingests it into its room (ingest.ts); the message is
 * done when every room's append is.
 */
import { HANDLED, ingest } from '../ingest.js';
import type { InboundMessage } from '../normalise.js';
import { rulesFor } from '../rules.js';
import type { MqttState } from '../state.js';

/** `answered`: the message was a command response already (then matching no rule is not a drop). */
export function handleRuleMessage(state: MqttState, msg: InboundMessage, answered: boolean): Promise<void> {
  const matches = rulesFor(state.rules.current, msg.topic, msg.subscriptionIds);
  if (matches.length === 0) {
    if (!answered) state.stats.drop('no-rule', 'no rule matches this topic (a subscription left from an earlier configuration?)', msg.topic);
    return HANDLED;
  }
  if (matches.length === 1 && matches[0]) return ingest(state, msg, matches[0].rule, matches[0].params);
  // All rooms' appends are issued now, in order; the message is done when all are.
  return Promise.allSettled(matches.map(({ rule, params }) => ingest(state, msg, rule, params))).then((results) => {
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  });
}
