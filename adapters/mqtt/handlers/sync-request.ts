/**
 * Handler: a sync request (`sync.topic`, default `sg/v1/sync/+device`). It
 * is served off the inbound path, because serving reads the log and
 * publishes: the request is queued (catchup.ts) and acknowledged at once.
 */
import { enqueueSync } from '../catchup.js';
import type { InboundMessage } from '../normalise.js';
import type { MqttState } from '../state.js';

/** The device a sync request comes from, when the message is one: on the sync subscription, with the sender segment in its topic. */
export function syncRequestDevice(state: MqttState, msg: InboundMessage): string | undefined {
  const { sync, syncSubId } = state;
  const ids = msg.subscriptionIds;
  if (!sync || !(ids === undefined || (syncSubId !== undefined && ids.includes(syncSubId)))) return undefined;
  const params = sync.filter.match(msg.topic);
  return params?.[sync.config.sender];
}

export function handleSyncRequest(state: MqttState, msg: InboundMessage, device: string): void {
  enqueueSync(state, msg, device);
}
