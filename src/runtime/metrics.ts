/**
 * Gateway-level Prometheus metrics (docs/architecture.md, "Operations"):
 * ingest and delivery per adapter, delivery lag, dead-letter depth per group,
 * delivery leases, adapter connection state. Counts that only grow are
 * counters (`…_total`), levels are gauges. The HTTP layer registers its own
 * metrics on the same registry.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Adapter } from '../core/adapter.js';
import type { EventLog } from '../core/ports.js';
import type { DeliveryObserver } from '../bridge/delivery.js';
import type { BridgeSink } from '../bridge/ingest.js';

/** The last confirmed delivery per adapter, for the status endpoint. */
export interface DeliveryLag {
  lastDelivery(adapter: string): { readonly lagMs: number; readonly at: string } | undefined;
}

export function registerGatewayMetrics(deps: {
  registry: Registry;
  log: EventLog;
  adapters: readonly Adapter[];
  sink: BridgeSink;
  /** told of each confirmed delivery (the per-link rates count it in memory) */
  onDelivered?: (adapter: string, room: string) => void;
}): DeliveryObserver & DeliveryLag {
  const registers = [deps.registry];
  const last = new Map<string, { lagMs: number; at: string }>();
  const lag = new Histogram({
    name: 'syncgate_delivery_lag_seconds',
    help: "From an event's arrival in the log to its delivery confirmed by the target, per adapter",
    labelNames: ['adapter'],
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers,
  });
  const delivered = new Counter({ name: 'syncgate_delivered_total', help: 'Events delivered to an adapter and confirmed by its protocol', labelNames: ['adapter'], registers });
  const retried = new Counter({ name: 'syncgate_delivery_failed_total', help: 'Delivery attempts that failed and will be retried', labelNames: ['adapter'], registers });
  const dead = new Counter({ name: 'syncgate_dead_lettered_total', help: 'Events moved to the dead-letter stream', labelNames: ['adapter'], registers });
  const leases = new Gauge({ name: 'syncgate_delivery_leases_held', help: 'Partitions whose delivery lease this process holds', labelNames: ['adapter'], registers });
  new Gauge({
    name: 'syncgate_dead_letter_depth',
    help: 'Entries in the dead-letter streams, per consumer group (out:ADAPTER)',
    labelNames: ['group'],
    registers,
    async collect() {
      const groups = deps.adapters.map((a) => `out:${a.name}`);
      const counts = await Promise.all(groups.map((g) => deps.log.delivery.deadCount(g).catch(() => Number.NaN)));
      groups.forEach((group, i) => this.set({ group }, counts[i] ?? Number.NaN));
    },
  });
  new Gauge({
    name: 'syncgate_delivery_pending',
    help: 'Entries delivered to a consumer group (out:ADAPTER) and not yet acknowledged, over all partitions',
    labelNames: ['group'],
    registers,
    async collect() {
      const groups = deps.adapters.map((a) => `out:${a.name}`);
      const counts = await Promise.all(groups.map((g) => deps.log.delivery.pendingCount(g).catch(() => Number.NaN)));
      groups.forEach((group, i) => this.set({ group }, counts[i] ?? Number.NaN));
    },
  });
  new Gauge({
    name: 'syncgate_adapter_connected',
    help: '1 when the adapter is connected to its server',
    labelNames: ['adapter'],
    registers,
    collect() {
      for (const a of deps.adapters) this.set({ adapter: a.name }, a.status().connected ? 1 : 0);
    },
  });
  // The sink and the adapters keep their own running counts; a scrape copies them (reset, then the total).
  new Counter({
    name: 'syncgate_ingested_total',
    help: 'Inbound events by adapter and outcome (appended, duplicate, echo, ignored)',
    labelNames: ['adapter', 'outcome'],
    registers,
    collect() {
      this.reset();
      for (const [via, c] of Object.entries(deps.sink.counters)) {
        for (const [outcome, n] of Object.entries(c)) this.inc({ adapter: via, outcome }, n);
      }
    },
  });
  new Counter({
    name: 'syncgate_adapter_events_total',
    help: 'The running counts an adapter reports in its status detail (messages received/sent, dropped.<reason>, encrypted.<reason>, transactions, HTTP requests …), by dotted name',
    labelNames: ['adapter', 'counter'],
    registers,
    collect() {
      this.reset();
      for (const a of deps.adapters) {
        for (const [name, value] of numericLeaves(a.status().detail ?? {}, '')) if (isCount(name) && value >= 0) this.inc({ adapter: a.name, counter: name.replace(/^counters\./, '') }, value);
      }
    },
  });
  new Gauge({
    name: 'syncgate_adapter_stat',
    help: 'The levels an adapter reports in its status detail (rooms joined, queued, reconnect attempts, timestamps …), by dotted name; running counts are in syncgate_adapter_events_total',
    labelNames: ['adapter', 'stat'],
    registers,
    collect() {
      this.reset();
      for (const a of deps.adapters) {
        for (const [stat, value] of numericLeaves(a.status().detail ?? {}, '')) if (!isCount(stat)) this.set({ adapter: a.name, stat }, value);
      }
    },
  });
  new Counter({
    name: 'syncgate_adapter_rule_events_total',
    help: 'Messages an adapter counted per rule (MQTT: ingested, duplicate, throttled, dropped.<reason>), by rule id',
    labelNames: ['adapter', 'rule', 'stat'],
    registers,
    collect() {
      this.reset();
      for (const a of deps.adapters) {
        for (const { rule, stat, value } of a.status().ruleStats ?? []) if (value >= 0) this.inc({ adapter: a.name, rule, stat }, value);
      }
    },
  });
  return {
    delivered: (adapter, room, lagMs) => {
      delivered.inc({ adapter });
      deps.onDelivered?.(adapter, room);
      lag.observe({ adapter }, Math.max(0, lagMs) / 1000);
      last.set(adapter, { lagMs, at: new Date().toISOString() });
    },
    lastDelivery: (adapter) => last.get(adapter),
    retried: (adapter) => retried.inc({ adapter }),
    deadLettered: (adapter) => dead.inc({ adapter }),
    leaseChanged: (adapter, _partition, held) => leases.inc({ adapter }, held ? 1 : -1),
  };
}

/** Redis command latency and failures (the blocking reads aside), by command name. */
export function registerRedisMetrics(registry: Registry): (command: string, seconds: number, failed: boolean) => void {
  const registers = [registry];
  const duration = new Histogram({
    name: 'syncgate_redis_command_duration_seconds',
    help: 'Time from sending a Redis command to its answer (blocking stream reads not included), by command',
    labelNames: ['command'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers,
  });
  const errors = new Counter({ name: 'syncgate_redis_command_errors_total', help: 'Redis commands that failed (error reply, lost connection), by command', labelNames: ['command'], registers });
  return (command, seconds, failed) => {
    const labels = { command: command.toLowerCase() };
    duration.observe(labels, seconds);
    if (failed) errors.inc(labels);
  };
}

/** The status-detail groups (and single figures) that are running counts: they only grow while the process runs. */
const COUNT_GROUPS: ReadonlySet<string> = new Set(['counters', 'dropped', 'encrypted', 'transactions', 'sync', 'inbound', 'outbound', 'http']);
const COUNT_FIGURES: ReadonlySet<string> = new Set(['connects', 'sessions', 'resumptions', 'subscriptionErrors']);

function isCount(path: string): boolean {
  const first = path.split('.')[0] ?? '';
  return COUNT_FIGURES.has(path) || (path.includes('.') && COUNT_GROUPS.has(first));
}

/** Flattens the numeric leaves of a status detail: {inbound: {appended: 3}} → ["inbound.appended", 3]. */
function numericLeaves(value: unknown, path: string, depth = 0): Array<[string, number]> {
  if (typeof value === 'number' && Number.isFinite(value)) return path ? [[path, value]] : [];
  if (typeof value !== 'object' || value === null || Array.isArray(value) || depth > 4) return [];
  return Object.entries(value).flatMap(([k, v]) => numericLeaves(v, path ? `${path}.${k}` : k, depth + 1));
}

/** What the runtime knows of each adapter on this replica, as metrics (the status endpoint shows the same). */
export function registerAdapterStateMetrics(deps: {
  registry: Registry;
  adapters: ReadonlyArray<{ readonly name: string; state(): string; ready(): boolean; lastErrorAt(): string | undefined }>;
}): void {
  const registers = [deps.registry];
  const STATES = ['standby', 'starting', 'active', 'failed', 'stopping', 'stopped'];
  new Gauge({
    name: 'syncgate_adapter_state',
    help: 'Which state the adapter\'s supervisor is in on this replica (1 for the current state): active = this replica holds the connection, standby = another one does, failed = the last start failed (retrying)',
    labelNames: ['adapter', 'state'],
    registers,
    collect() {
      for (const a of deps.adapters) for (const state of STATES) this.set({ adapter: a.name, state }, a.state() === state ? 1 : 0);
    },
  });
  new Gauge({
    name: 'syncgate_adapter_ready',
    help: '1 when the adapter can deliver (connected, joined or subscribed) on this replica',
    labelNames: ['adapter'],
    registers,
    collect() {
      for (const a of deps.adapters) this.set({ adapter: a.name }, a.ready() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'syncgate_adapter_last_error_timestamp_seconds',
    help: 'When this replica last saw an error of the adapter (failed start or an error it reported)',
    labelNames: ['adapter'],
    registers,
    collect() {
      this.reset();
      for (const a of deps.adapters) {
        const at = a.lastErrorAt();
        if (at !== undefined) this.set({ adapter: a.name }, Date.parse(at) / 1000);
      }
    },
  });
}
