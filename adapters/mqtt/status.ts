/**
 * What the adapter reports (`status()`): connection and readiness, the
 * figures of counters.ts, and the per-rule series exported as metrics.
 */
import type { AdapterStatus } from '../../src/core/adapter.js';
import type { MqttState } from './state.js';

export function adapterStatus(state: MqttState): AdapterStatus {
  const { config, stats } = state;
  const c = state.session.connection.status();
  return {
    connected: c.connected,
    ready: c.connected && c.subscribed && !state.lifecycle.stopping,
    ruleStats: stats.ruleSeries(),
    detail: {
      clientId: config.clientId,
      sessionPresent: c.sessionPresent,
      connects: c.connects,
      lastError: c.lastError,
      subscriptionErrors: c.subscriptionErrors,
      rules: state.rules.current.rules.length,
      invalidRules: state.rules.current.invalid,
      subscriptions: c.granted,
      pendingCommands: state.pending.size,
      throttledTopics: state.session.throttle.size,
      counters: { ...stats.counters },
      dropped: { ...stats.dropped },
    },
  };
}
