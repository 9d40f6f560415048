/**
 * One replica holds each adapter's connection (docs/architecture.md, "Runtime"): a lease per
 * adapter in the log backend decides which. The holder starts the adapter
 * and its delivery workers; the others stand by and take over within the
 * lease time when the holder dies. Two replicas never run the same XMPP
 * resource, MQTT client id or Matrix sync loop at once, and deliveries always
 * run where the connection is. A replica may lose the lease and win it back
 * (paused past it, say): the same adapter is then started again, which the
 * adapter port requires to begin a new session.
 *
 * Fencing: each start of the adapter here holds the lease's fencing token
 * (DeliveryQueue.leaseToken) in the adapter's LeaseFence, under which the
 * sealed store it was handed writes. A write refused because a later holder
 * wrote or claimed since (SG_ERR_STATE_FENCED) stops the session here: this
 * replica was paused past its lease and is no longer the holder, whatever
 * its last renewal said.
 */
import type { Logger } from 'pino';
import type { Adapter } from '../core/adapter.js';
import type { DeliveryQueue } from '../core/ports.js';
import type { DeliveryManager } from '../bridge/delivery.js';
import type { LeaseFence } from './lease-fence.js';

export interface SupervisorDeps {
  readonly adapter: Adapter;
  readonly delivery: DeliveryManager;
  readonly queue: DeliveryQueue;
  readonly owner: string;
  /** a holder for which this returns true is a dead earlier incarnation of this replica (see replica.ts) */
  readonly reclaim?: (holder: string) => boolean;
  readonly leaseMs: number;
  readonly logger: Logger;
  /** how long stop() lets in-flight deliveries finish */
  readonly graceMs: number;
  /** the adapter's fence: the lease's token is held in it while the adapter runs here */
  readonly fence?: LeaseFence;
}

/**
 * `standby`: another replica holds the connection. `failed`: this replica won
 * the lease but the adapter did not start; the lease is released and it tries
 * again, so possibly no replica holds the connection (not ready).
 */
export type SupervisorState = 'standby' | 'starting' | 'active' | 'failed' | 'stopping' | 'stopped';

/** The lease lives on partition 0's hash tag, under a group name no consumer group uses. */
const LEASE_PARTITION = 0;

export class AdapterSupervisor {
  private state: SupervisorState = 'standby';
  private timer: NodeJS.Timeout | undefined;
  private transition: Promise<void> = Promise.resolve();
  private readonly lease: string;
  private failure: { readonly message: string; readonly at: string } | undefined;
  /** when the last renewal that found the lease held was asked for (Date.now()) */
  private renewedAt = 0;

  constructor(private readonly deps: SupervisorDeps) {
    this.lease = `conn:${deps.adapter.name}`;
    deps.fence?.onRefused((err) => this.fenced(err));
  }

  /** A state write under this session's token was refused: another replica holds the connection now. */
  private fenced(err: Error): void {
    if (this.state !== 'active' && this.state !== 'starting') return;
    const { adapter, logger } = this.deps;
    logger.warn({ err, adapter: adapter.name }, 'adapter state write refused by its fence: another replica took the connection over; stopping the connection here');
    this.transition = this.transition.then(async () => {
      if (this.state === 'active' || this.state === 'starting') await this.deactivate('standby');
    });
  }

  get current(): SupervisorState {
    return this.state;
  }

  /** why the last start failed, while in state `failed` */
  get lastError(): string | undefined {
    return this.state === 'failed' ? this.failure?.message : undefined;
  }

  /** the last error the adapter reported in its status (`detail.lastError`) and when this replica first saw it */
  get lastAdapterError(): { readonly message: string; readonly at: string } | undefined {
    this.noteAdapterError();
    return this.adapterError;
  }

  private adapterError: { readonly message: string; readonly at: string } | undefined;

  private noteAdapterError(): void {
    const reported = this.deps.adapter.status().detail?.['lastError'];
    if (typeof reported !== 'string' || reported === '' || reported === this.adapterError?.message) return;
    this.adapterError = { message: reported, at: new Date().toISOString() };
  }

  /** the last failed start and when (ISO time), kept after a later start succeeds; for the status endpoint */
  get lastFailure(): { readonly message: string; readonly at: string } | undefined {
    return this.failure;
  }

  /** Tries for the lease now (so a single replica starts at once), then keeps renewing or trying. */
  async start(): Promise<void> {
    await this.tick();
    this.schedule();
  }

  private schedule(): void {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    this.timer = setTimeout(() => {
      void this.tick().finally(() => this.schedule());
    }, Math.max(100, Math.floor(this.deps.leaseMs / 3)));
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    const { adapter, logger } = this.deps;
    // sampled on every tick, so the time an adapter's error appeared is known within leaseMs/3
    this.noteAdapterError();
    let held: boolean;
    const asked = Date.now();
    try {
      held = await this.deps.queue.acquireLease(LEASE_PARTITION, this.lease, this.deps.owner, this.deps.leaseMs, this.deps.reclaim);
    } catch (err) {
      logger.warn({ err, adapter: adapter.name }, 'adapter lease check failed');
      return;
    }
    // Held again after more than the lease time without a renewal (this process was paused or cut
    // off from the log): the lease may have lapsed and another replica held the connection meanwhile,
    // so what this adapter holds in memory may be stale. Begin a new session, as after a loss.
    const lapsedMs = Date.now() - this.renewedAt;
    if (held) this.renewedAt = asked;
    if (held && (this.state === 'active' || this.state === 'starting') && lapsedMs > this.deps.leaseMs) {
      logger.warn({ adapter: adapter.name, lapsedMs }, 'adapter lease lapsed since its last renewal: another replica may have held it; starting the connection again');
      await this.transition;
      if (this.state === 'active' || this.state === 'starting') await this.deactivate('standby');
    }
    if (held && (this.state === 'standby' || this.state === 'failed')) {
      this.state = 'starting';
      this.transition = this.activate();
      await this.transition;
      // A start may take longer than the lease (an adapter waits for its connection): counted
      // from its end, so a slow start is not taken for a lapse and restarted over and over.
      this.renewedAt = Date.now();
    } else if (!held && this.state === 'failed') {
      // Another replica took the lease we released: it holds the connection now.
      this.state = 'standby';
    } else if (!held && (this.state === 'active' || this.state === 'starting')) {
      logger.warn({ adapter: adapter.name }, 'adapter lease lost to another replica: stopping the connection here');
      await this.transition;
      if (this.state === 'active' || this.state === 'starting') await this.deactivate('standby');
    }
  }

  private async activate(): Promise<void> {
    const { adapter, delivery, logger, fence } = this.deps;
    try {
      if (fence) {
        // the token of this session: asked of the store, not of a cached renewal
        const token = await this.deps.queue.leaseToken(LEASE_PARTITION, this.lease, this.deps.owner);
        if (token === undefined) {
          this.state = 'standby';
          return;
        }
        fence.hold(token);
      }
      await delivery.start();
      await adapter.start();
    } catch (err) {
      logger.error({ err, adapter: adapter.name }, 'adapter failed to start; releasing its lease and trying again later');
      this.failure = { message: err instanceof Error ? err.message : String(err), at: new Date().toISOString() };
      await this.deactivate('failed');
      await this.deps.queue.releaseLease(LEASE_PARTITION, this.lease, this.deps.owner).catch(() => undefined);
      return;
    }
    if (this.state !== 'starting') return;
    this.state = 'active';
    // start() may return before the connection is up (the adapter keeps trying): say which.
    const { connected, ready } = adapter.status();
    logger.info({ adapter: adapter.name, protocol: adapter.protocol, connected, ready }, 'adapter started (this replica holds its connection)');
  }

  private async deactivate(next: SupervisorState): Promise<void> {
    const { adapter, delivery, logger } = this.deps;
    this.state = next === 'stopped' ? 'stopping' : next;
    // Deliveries first (they need the connection to finish), then the connection.
    await delivery.stop(this.deps.graceMs).catch((err: unknown) => logger.warn({ err, adapter: adapter.name }, 'delivery stop failed'));
    await adapter.stop().catch((err: unknown) => logger.warn({ err, adapter: adapter.name }, 'adapter stop failed'));
    // writes after the session ended (and before the next one starts) are refused
    this.deps.fence?.drop();
    if (next === 'stopped') this.state = 'stopped';
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    const wasRunning = this.state === 'active' || this.state === 'starting';
    await this.transition;
    if (wasRunning || this.state === 'active') await this.deactivate('stopped');
    this.state = 'stopped';
    await this.deps.queue.releaseLease(LEASE_PARTITION, this.lease, this.deps.owner).catch(() => undefined);
  }
}
