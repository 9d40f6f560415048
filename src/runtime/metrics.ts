/**
 * Gateway-level Prometheus metrics (DESIGN §8): ingest and delivery per
 * adapter, dead-letter depth, delivery leases, adapter connection state.
 * The HTTP layer registers its own metrics on the same registry.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Adapter } from '../core/adapter.js';
import type { EventLog } from '../core/ports.js';
import type { DeliveryObserver } from '../bridge/delivery.js';
import type { BridgeSink } from '../bridge/ingest.js';

/** The last confirmed delivery per adapter, for the status endpoint. */
export interface DeliveryLag {
  lastDelivery(adapter: string): { readonly lagMs: number; readonly at: string } | undefined;
}

export function registerGatewayMetrics(deps: { registry: Registry; log: EventLog; adapters: readonly Adapter[]; sink: BridgeSink }): DeliveryObserver & DeliveryLag {
  const registers = [deps.registry];
  const last = new Map<string, { lagMs: number; at: string }>();
  const lag = new Gauge({ name: 'syncgate_delivery_lag_seconds', help: 'From an event\'s arrival in the log to its confirmed delivery, for the last event delivered to the adapter', labelNames: ['adapter'], registers });
  const delivered = new Counter({ name: 'syncgate_delivered_total', help: 'Events delivered to an adapter and confirmed by its protocol', labelNames: ['adapter'], registers });
  const retried = new Counter({ name: 'syncgate_delivery_failed_total', help: 'Delivery attempts that failed and will be retried', labelNames: ['adapter'], registers });
  const dead = new Counter({ name: 'syncgate_dead_lettered_total', help: 'Events moved to the dead-letter stream', labelNames: ['adapter'], registers });
  const leases = new Gauge({ name: 'syncgate_delivery_leases_held', help: 'Partitions whose delivery lease this process holds', labelNames: ['adapter'], registers });
  new Gauge({
    name: 'syncgate_dead_letter_depth',
    help: 'Entries in the dead-letter streams',
    registers,
    async collect() {
      this.set(await deps.log.delivery.deadCount().catch(() => Number.NaN));
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
  new Gauge({
    name: 'syncgate_ingested_total',
    help: 'Inbound events by adapter and outcome (appended, duplicate, echo, ignored)',
    labelNames: ['adapter', 'outcome'],
    registers,
    collect() {
      for (const [via, c] of Object.entries(deps.sink.counters)) {
        for (const [outcome, n] of Object.entries(c)) this.set({ adapter: via, outcome }, n);
      }
    },
  });
  new Gauge({
    name: 'syncgate_adapter_stat',
    help: "Every numeric figure an adapter reports in its status detail (messages in/out, throttled, decode failures, transactions …), by dotted name",
    labelNames: ['adapter', 'stat'],
    registers,
    collect() {
      this.reset();
      for (const a of deps.adapters) {
        for (const [stat, value] of numericLeaves(a.status().detail ?? {}, '')) this.set({ adapter: a.name, stat }, value);
      }
    },
  });
  new Gauge({
    name: 'syncgate_adapter_rule_stat',
    help: 'Figures an adapter reports per rule (MQTT: ingested, duplicate, throttled, dropped.<reason>), by rule id',
    labelNames: ['adapter', 'rule', 'stat'],
    registers,
    collect() {
      this.reset();
      for (const a of deps.adapters) {
        for (const { rule, stat, value } of a.status().ruleStats ?? []) this.set({ adapter: a.name, rule, stat }, value);
      }
    },
  });
  return {
    delivered: (adapter, _room, lagMs) => {
      delivered.inc({ adapter });
      lag.set({ adapter }, lagMs / 1000);
      last.set(adapter, { lagMs, at: new Date().toISOString() });
    },
    lastDelivery: (adapter) => last.get(adapter),
    retried: (adapter) => retried.inc({ adapter }),
    deadLettered: (adapter) => dead.inc({ adapter }),
    leaseChanged: (adapter, _partition, held) => leases.inc({ adapter }, held ? 1 : -1),
  };
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
