/**
 * The MQTT adapter (docs/protocols.md, "MQTT"; issue 5). README.md in this
 * folder lists its files in the order a message takes through them.
 *
 * In: rules (this endpoint's room links) match topics, decode and render
 * payloads, and the sink appends the event before the message is
 * acknowledged (client.ts). Appends are issued in arrival order and several
 * may be in flight; PUBACKs still go out in arrival order, each after its
 * own append. The inbound path never publishes or waits for a publication.
 *
 * Out: deliver() publishes room events to the link's out topic and room
 * messages that match a command pattern to the device; both wait for the
 * PUBACK (deliver.ts).
 */
import type { Adapter, AdapterDeps } from '../../src/core/adapter.js';
import type { MqttAdapterConfig } from './config.js';
import { deliver, deliversOwn } from './deliver.js';
import { testRule } from './rule-test.js';
import { onMessage } from './inbound.js';
import { postSummary } from './ingest.js';
import { postTimeout } from './notices.js';
import { ENVELOPE_BYTES } from './render.js';
import { abort, start, stop } from './session.js';
import { createState } from './state.js';
import { adapterStatus } from './status.js';

export { MqttAdapterConfig, parseMqttConfig } from './config.js';
export { compileRule as validateMqttRule } from './rules.js';
// The adapter type's descriptor (config, secrets, links, CLI): the one entry in src/runtime's adapter list.
import { describeMqttAdapter } from './descriptor.js';
export const mqttAdapter = describeMqttAdapter(createMqttAdapter);

export type MqttAdapterDeps = AdapterDeps<MqttAdapterConfig>;

export { DROP_LOG_WINDOW_MS, DROP_LOGS_PER_WINDOW, MAX_RULE_STATS, OTHER_RULES, type MqttCounters } from './counters.js';

export interface MqttAdapter extends Adapter {
  /** Drops the connection like a crash (no DISCONNECT, nothing in progress acknowledged, no summaries). For tests and fatal errors. */
  abort(): void;
}

export function createMqttAdapter(deps: MqttAdapterDeps): MqttAdapter {
  const state = createState(deps, { onMessage, onSummary: postSummary, onTimeout: postTimeout });
  return {
    name: state.name,
    protocol: 'mqtt',
    // Devices get plain text in `content` (the delivery engine converts rich text).
    textFormat: 'plain',
    // Publications stay within the payload size the adapter accepts (README "Message size").
    maxBodyBytes: Math.max(0, state.config.maxPayloadBytes - ENVELOPE_BYTES),
    start: () => start(state),
    stop: () => stop(state),
    abort: () => abort(state),
    status: () => adapterStatus(state),
    deliversOwn,
    deliver: (event, target, context) => deliver(state, event, target, context),
    testRule: (sample) => testRule(state.config, state.name, sample),
  };
}
