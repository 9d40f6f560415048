import { Registry } from 'prom-client';
import { afterAll, describe, expect, inject, it } from 'vitest';
import type { Adapter, AdapterStatus } from '../../../src/core/adapter.js';
import type { EventLog } from '../../../src/core/ports.js';
import type { BridgeSink } from '../../../src/bridge/ingest.js';
import { registerGatewayMetrics } from '../../../src/runtime/metrics.js';
import { startGateway, type TestGateway } from '../../harness/gateway.js';
import { testPrefix } from '../../harness/redis.js';

/** `# TYPE name type` of every family in a Prometheus text exposition */
function types(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) out.set(m[1] ?? '', m[2] ?? '');
  return out;
}

function world(status: () => AdapterStatus) {
  const adapter = { name: 'mqtt', status } as unknown as Adapter;
  const log = { delivery: { deadCount: async (group?: string) => (group === 'out:mqtt' ? 2 : 0), pendingCount: async (group: string) => (group === 'out:mqtt' ? 3 : 0) } } as unknown as EventLog;
  const sink = { counters: { mqtt: { appended: 5, duplicate: 1 } } } as unknown as BridgeSink;
  const registry = new Registry();
  const observer = registerGatewayMetrics({ registry, log, adapters: [adapter], sink });
  return { registry, observer };
}

describe('gateway metrics', () => {
  it('exports the counts an adapter reports per rule as a counter, labelled by rule id', async () => {
    let status: AdapterStatus = {
      connected: true,
      ready: true,
      ruleStats: [
        { rule: 'pumps', stat: 'ingested', value: 2 },
        { rule: 'pumps', stat: 'dropped.invalid-json', value: 1 },
      ],
    };
    const { registry } = world(() => status);
    const text = await registry.metrics();
    expect(types(text).get('syncgate_adapter_rule_events_total')).toBe('counter');
    expect(text).toContain('syncgate_adapter_rule_events_total{adapter="mqtt",rule="pumps",stat="ingested"} 2');
    expect(text).toContain('syncgate_adapter_rule_events_total{adapter="mqtt",rule="pumps",stat="dropped.invalid-json"} 1');
    // A rule that is gone takes its series with it.
    status = { connected: true, ready: true, ruleStats: [] };
    expect(await registry.metrics()).not.toContain('rule="pumps"');
  });

  it('types counts as counters and levels as gauges; delivery lag is a histogram; dead letters and pending entries per group', async () => {
    const { registry, observer } = world(() => ({
      connected: true,
      ready: true,
      detail: { counters: { received: 3, sent: 4 }, dropped: { 'invalid-json': 1 }, connects: 2, pendingCommands: 7, rooms: { a: { queued: 1 } } },
    }));
    observer.delivered('mqtt', 'ops', 1500);
    const text = await registry.metrics();
    const t = types(text);
    expect(t.get('syncgate_ingested_total')).toBe('counter');
    expect(text).toContain('syncgate_ingested_total{adapter="mqtt",outcome="appended"} 5');
    expect(t.get('syncgate_adapter_events_total')).toBe('counter');
    expect(text).toContain('syncgate_adapter_events_total{adapter="mqtt",counter="received"} 3');
    expect(text).toContain('syncgate_adapter_events_total{adapter="mqtt",counter="dropped.invalid-json"} 1');
    expect(text).toContain('syncgate_adapter_events_total{adapter="mqtt",counter="connects"} 2');
    // no count folded into the gauge's label
    expect(t.get('syncgate_adapter_stat')).toBe('gauge');
    expect(text).not.toMatch(/syncgate_adapter_stat\{[^}]*stat="(counters|dropped)\./);
    expect(text).toContain('syncgate_adapter_stat{adapter="mqtt",stat="pendingCommands"} 7');
    expect(text).toContain('syncgate_adapter_stat{adapter="mqtt",stat="rooms.a.queued"} 1');
    expect(t.get('syncgate_delivery_lag_seconds')).toBe('histogram');
    expect(text).toContain('syncgate_delivery_lag_seconds_bucket{le="2.5",adapter="mqtt"} 1');
    expect(text).toContain('syncgate_delivery_lag_seconds_bucket{le="1",adapter="mqtt"} 0');
    expect(text).toContain('syncgate_dead_letter_depth{group="out:mqtt"} 2');
    expect(t.get('syncgate_delivery_pending')).toBe('gauge');
    expect(text).toContain('syncgate_delivery_pending{group="out:mqtt"} 3');
  });
});

describe('/metrics of a running gateway', () => {
  let gw: TestGateway | undefined;
  afterAll(async () => gw?.stop());

  it('every family named …_total is typed counter (prom-client\'s own Node gauges aside); Redis command latency and errors are there', async () => {
    gw = await startGateway({ redisUrl: inject('redisUrl'), prefix: testPrefix('metrics') });
    const res = await fetch(`${gw.url}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    const t = types(text);
    expect(t.get('syncgate_redis_command_duration_seconds')).toBe('histogram');
    expect(t.get('syncgate_redis_command_errors_total')).toBe('counter');
    // starting the gateway ran commands (rooms, groups, pings)
    const counts = [...text.matchAll(/^syncgate_redis_command_duration_seconds_count\{command="[a-z]+"\} (\d+)$/gm)].map((m) => Number(m[1]));
    expect(counts.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    expect(t.size).toBeGreaterThan(10);
    const NODE_GAUGES = new Set(['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']);
    const wrong = [...t].filter(([name, type]) => name.endsWith('_total') && !NODE_GAUGES.has(name) && type !== 'counter');
    expect(wrong).toEqual([]);
    expect(t.get('syncgate_ingested_total')).toBe('counter');
  }, 60_000);
});
