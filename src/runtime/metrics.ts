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

export function registerGatewayMetrics(deps: { registry: Registry; log: EventLog; adapters: readonly Adapter[]; sink: BridgeSink }): DeliveryObserver {
  const registers = [deps.registry];
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
  return {
    delivered: (adapter) => delivered.inc({ adapter }),
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
