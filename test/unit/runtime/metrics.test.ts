import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { Adapter, AdapterStatus } from '../../../src/core/adapter.js';
import type { EventLog } from '../../../src/core/ports.js';
import type { BridgeSink } from '../../../src/bridge/ingest.js';
import { registerGatewayMetrics } from '../../../src/runtime/metrics.js';

describe('gateway metrics', () => {
  it('exports the figures an adapter reports per rule, labelled by rule id', async () => {
    let status: AdapterStatus = {
      connected: true,
      ready: true,
      ruleStats: [
        { rule: 'pumps', stat: 'ingested', value: 2 },
        { rule: 'pumps', stat: 'dropped.invalid-json', value: 1 },
      ],
    };
    const adapter = { name: 'mqtt', status: () => status } as unknown as Adapter;
    const log = { delivery: { deadCount: async () => 0 } } as unknown as EventLog;
    const sink = { counters: {} } as unknown as BridgeSink;
    const registry = new Registry();
    registerGatewayMetrics({ registry, log, adapters: [adapter], sink });
    const text = await registry.metrics();
    expect(text).toContain('syncgate_adapter_rule_stat{adapter="mqtt",rule="pumps",stat="ingested"} 2');
    expect(text).toContain('syncgate_adapter_rule_stat{adapter="mqtt",rule="pumps",stat="dropped.invalid-json"} 1');
    // A rule that is gone takes its series with it.
    status = { connected: true, ready: true, ruleStats: [] };
    expect(await registry.metrics()).not.toContain('rule="pumps"');
  });
});
