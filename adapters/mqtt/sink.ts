/**
 * The way into the log as the adapter uses it (the last step of the inbound
 * path): the sink's own failures are marked, so message handling can tell
 * "the log is unavailable" (do not acknowledge: the broker redelivers) from
 * a bug in handling one message; appends are retried for a while; appends
 * not tied to a received message are tracked so stop() can wait for them.
 */
import type { Logger } from 'pino';
import type { IngestSink } from '../../src/core/adapter.js';
import { backoffDelay } from '../../src/core/backoff.js';
import type { MqttAdapterConfig } from './config.js';
import type { MqttStats } from './counters.js';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

/** Errors thrown by the sink (the log is unavailable), as opposed to bugs in handling one message. */
const sinkFailures = new WeakSet<object>();

export function isSinkFailure(err: unknown): boolean {
  return typeof err === 'object' && err !== null && sinkFailures.has(err);
}

/** The sink with every error it throws marked as a sink failure. */
export function markingFailures(sink: IngestSink): IngestSink {
  const mark = (err: unknown): never => {
    if (typeof err === 'object' && err !== null) sinkFailures.add(err);
    throw err;
  };
  return {
    ingest: (draft, options) => sink.ingest(draft, options).catch(mark),
    resolve: (room, key) => sink.resolve(room, key).catch(mark),
    getEvent: (room, eventId) => sink.getEvent(room, eventId).catch(mark),
    ingestTelemetry: (draft) => sink.ingestTelemetry(draft).catch(mark),
  };
}

/** What a retry needs of the adapter's state (state.ts: MqttState has it all). */
export interface RetryScope {
  readonly config: Pick<MqttAdapterConfig, 'ingestRetryMs'>;
  readonly log: Logger;
  readonly stats: MqttStats;
  readonly lifecycle: { readonly stopping: boolean };
}

/** Retries an append while the log is unavailable, up to ingestRetryMs; then throws (the caller does not ack). */
export function withRetry<T>(scope: RetryScope, op: () => Promise<T>): Promise<T> {
  // The common case costs one promise; the retry loop only exists after a failure.
  return op().catch(async (first: unknown) => {
    const deadline = Date.now() + scope.config.ingestRetryMs;
    let err = first;
    for (let attempt = 0; ; attempt++) {
      scope.stats.counters.ingestErrors++;
      if (scope.lifecycle.stopping || Date.now() >= deadline) throw err;
      scope.log.warn({ err: err instanceof Error ? err.message : String(err), attempt }, 'append failed; retrying');
      await sleep(Math.min(backoffDelay(attempt, 50, 1000), Math.max(0, deadline - Date.now())));
      try {
        return await op();
      } catch (next) {
        err = next;
      }
    }
  });
}

/** Adds `p` to `set` until it settles. */
export function track<T>(set: Set<Promise<unknown>>, p: Promise<T>): Promise<T> {
  set.add(p);
  void p.then(
    () => set.delete(p),
    () => set.delete(p),
  );
  return p;
}
