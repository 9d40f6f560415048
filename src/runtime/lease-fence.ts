/**
 * The fencing token of an adapter's connection lease, as its supervisor holds
 * it (docs/architecture.md, "Runtime"): set when the supervisor starts the
 * adapter under the lease, dropped once the adapter stopped. The sealed
 * store the runtime hands the adapter writes under it (sealed-store.ts), so
 * an adapter never sees leases, and a former holder that resumes after
 * another replica took over (paused by GC, SIGSTOP, a slow VM) has its
 * writes refused with SG_ERR_STATE_FENCED instead of mixing its stale
 * crypto records into the new holder's. A refusal tells the supervisor,
 * which stops the adapter's session here.
 */
import type { SyncgateError } from '../core/errors.js';

export class LeaseFence {
  private token: number | undefined;
  private readonly listeners = new Set<(err: SyncgateError) => void>();

  /** the token of the session running now; undefined while this replica runs none */
  get current(): number | undefined {
    return this.token;
  }

  hold(token: number): void {
    this.token = token;
  }

  drop(): void {
    this.token = undefined;
  }

  /** a write under `token` was refused: a later holder wrote or claimed since */
  refused(err: SyncgateError): void {
    for (const listener of this.listeners) listener(err);
  }

  onRefused(listener: (err: SyncgateError) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
