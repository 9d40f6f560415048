/**
 * The HTTP layer's Prometheus metrics, registered on the registry the app was
 * given (one per app instance: tests build many apps in one process).
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface HttpMetrics {
  readonly requests: Counter<'method' | 'route' | 'status'>;
  readonly duration: Histogram<'route'>;
  readonly liveClients: Gauge<'transport'>;
  readonly liveClosed: Counter<'transport' | 'reason'>;
  readonly appends: Counter<'kind' | 'result'>;
  readonly syncWait: Histogram<'outcome'>;
  readonly syncWaiting: Gauge;
  readonly rateLimited: Counter;
}

export function createHttpMetrics(registry: Registry): HttpMetrics {
  const registers = [registry];
  return {
    requests: new Counter({
      name: 'syncgate_http_requests_total',
      help: 'HTTP requests answered, by route pattern and status',
      labelNames: ['method', 'route', 'status'],
      registers,
    }),
    duration: new Histogram({
      name: 'syncgate_http_request_duration_seconds',
      help: 'Time to answer an HTTP request (long-polls included)',
      labelNames: ['route'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    liveClients: new Gauge({
      name: 'syncgate_http_live_clients',
      help: 'Connected live stream clients',
      labelNames: ['transport'],
      registers,
    }),
    liveClosed: new Counter({
      name: 'syncgate_http_live_closed_total',
      help: 'Live streams closed, by reason',
      labelNames: ['transport', 'reason'],
      registers,
    }),
    appends: new Counter({
      name: 'syncgate_http_appends_total',
      help: 'Sends and markers appended through the API (result: appended or duplicate)',
      labelNames: ['kind', 'result'],
      registers,
    }),
    syncWait: new Histogram({
      name: 'syncgate_http_sync_wait_seconds',
      help: 'How long long-poll syncs waited for an event',
      labelNames: ['outcome'],
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60],
      registers,
    }),
    syncWaiting: new Gauge({
      name: 'syncgate_http_sync_waiting',
      help: 'Long-poll syncs waiting for an event now',
      registers,
    }),
    rateLimited: new Counter({
      name: 'syncgate_http_rate_limited_total',
      help: 'Requests refused by the per-device rate limit',
      registers,
    }),
  };
}
