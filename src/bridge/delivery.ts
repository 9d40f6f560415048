/**
 * Outbound delivery (docs/architecture.md, "Delivery"): for each adapter and partition, a worker that
 * holds the partition's lease, reads the partition feed through the adapter's
 * consumer group, and delivers each event to the adapter's linked targets —
 * in log order per room, a failing room waiting alone while the others flow.
 * An entry is acknowledged only after the protocol confirmed the delivery; a
 * transient failure is retried with jittered exponential backoff (honouring
 * the remote's retry-after), and after `maxAttempts` it goes to the
 * dead-letter stream, with a log line and a metric. Nothing is dropped
 * silently.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { nativeKey, traceKeys, type Adapter, type DeliveryResult, type ReferenceIds } from '../core/adapter.js';
import type { LogEvent, Relations } from '../core/event.js';
import { isSyncgateError } from '../core/errors.js';
import { contentInFormat } from './format/index.js';
import type { DeliveryQueue, EventLog, QueuedEntry, RoomLink } from '../core/ports.js';

export interface DeliveryOptions {
  /** tries per event before it is dead-lettered */
  readonly maxAttempts: number;
  /** lease time; a crashed holder's partitions move to another process within it */
  readonly leaseMs: number;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  /** entries read per batch */
  readonly batch: number;
  /** entries held in memory per worker before it stops reading new ones */
  readonly maxQueued: number;
}

export const DEFAULT_DELIVERY: DeliveryOptions = Object.freeze({
  maxAttempts: 8,
  leaseMs: 15_000,
  backoffBaseMs: 500,
  backoffMaxMs: 60_000,
  batch: 128,
  maxQueued: 10_000,
});

/** What the runtime turns into metrics; every give-up is also a log line with the event id. */
export interface DeliveryObserver {
  /** `lagMs`: from the event's arrival in the log to its confirmed delivery */
  delivered(adapter: string, room: string, lagMs: number): void;
  retried(adapter: string, room: string, reason: string): void;
  deadLettered(adapter: string, room: string, eventId: string, reason: string): void;
  leaseChanged(adapter: string, partition: number, held: boolean): void;
}

const noopObserver: DeliveryObserver = { delivered() {}, retried() {}, deadLettered() {}, leaseChanged() {} };

export interface LinkSource {
  linksOfRoom(room: string): readonly RoomLink[];
}

export interface DeliveryDeps {
  readonly log: EventLog;
  readonly adapters: readonly Adapter[];
  readonly links: LinkSource;
  readonly logger: Logger;
  readonly options?: Partial<DeliveryOptions>;
  readonly observer?: DeliveryObserver;
  /** a stable name for this process's consumers (default: host, pid and a random suffix) */
  readonly owner?: string;
  /** a lease holder for which this returns true is a dead earlier incarnation of this replica: its leases are taken at once */
  readonly reclaim?: (holder: string) => boolean;
}

export function backoffDelay(attempt: number, options: Pick<DeliveryOptions, 'backoffBaseMs' | 'backoffMaxMs'>, afterMs?: number): number {
  const exp = Math.min(options.backoffMaxMs, options.backoffBaseMs * 2 ** Math.max(0, attempt - 1));
  const jittered = exp * (0.5 + Math.random() / 2);
  return Math.max(afterMs ?? 0, Math.round(jittered));
}

interface RoomQueue {
  readonly entries: QueuedEntry[];
  busy: boolean;
  retryAt: number;
  attempts: number;
  /** retries while the adapter was disconnected: they back off but do not count as attempts */
  waits: number;
  /** a retry of the head entry is noted in the shared state (cleared once it is delivered or dead-lettered) */
  noted: boolean;
  /** targets this entry already reached (a retry does not resend to them) */
  readonly done: Set<string>;
  timer: NodeJS.Timeout | undefined;
  /** set when the lease was lost: a delivery still running on it must not go on after a new takeover */
  stale: boolean;
}

class PartitionWorker {
  private readonly group: string;
  private active = false;
  private stopped = false;
  private readonly rooms = new Map<string, RoomQueue>();
  private queued = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly replaying = new Set<string>();
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  /** finished entries whose XACK goes out with the next batch (one fenced script call per tick) */
  private acks: string[] = [];
  private ackFlush: Promise<void> | undefined;
  private readonly stopping = new AbortController();
  /** when this worker last claimed other consumers' idle entries */
  private lastClaim = 0;

  constructor(
    private readonly partition: number,
    private readonly adapter: Adapter,
    private readonly deps: Required<Omit<DeliveryDeps, 'options' | 'adapters' | 'reclaim'>> & { readonly options: DeliveryOptions; readonly reclaim?: (holder: string) => boolean },
  ) {
    this.group = `out:${adapter.name}`;
  }

  private get queue(): DeliveryQueue {
    return this.deps.log.delivery;
  }

  private get log(): Logger {
    return this.deps.logger;
  }

  start(): void {
    this.loop = this.run().catch((err: unknown) => this.log.error({ err, partition: this.partition }, 'delivery worker crashed'));
  }

  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    this.stopping.abort();
    this.wake?.();
    for (const q of this.rooms.values()) clearTimeout(q.timer);
    const settle = Promise.all([...this.inFlight]);
    await Promise.race([settle, new Promise((r) => setTimeout(r, graceMs).unref())]);
    await this.loop;
    await this.ackFlush;
    if (this.active) await this.queue.releaseLease(this.partition, this.group, this.deps.owner).catch(() => undefined);
    this.active = false;
  }

  get holdsLease(): boolean {
    return this.active;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }

  private async run(): Promise<void> {
    const { options, owner } = this.deps;
    const tick = Math.max(50, Math.floor(options.leaseMs / 3));
    let failures = 0;
    while (!this.stopped) {
      try {
        const held = await this.queue.acquireLease(this.partition, this.group, owner, options.leaseMs, this.deps.reclaim);
        if (!held) {
          if (this.active) this.lose('another process holds the lease');
          await this.sleep(tick);
          continue;
        }
        if (!this.active) await this.takeOver();
        else if (Date.now() - this.lastClaim >= options.leaseMs) {
          // A holder that lost its lease without noticing (paused, partitioned) may still have
          // read entries into its own pending list after we took over: claim what it left idle.
          this.lastClaim = Date.now();
          await this.enqueue(await this.queue.claimStale(this.partition, this.group, owner, 10_000, options.leaseMs), false);
        }
        await this.enqueue(await this.queue.takeReplays(this.partition, this.group, options.batch), true);
        if (this.queued < options.maxQueued) {
          const fresh = await this.queue.readNew(this.partition, this.group, owner, options.batch, tick, this.stopping.signal);
          await this.enqueue(fresh, false);
        } else {
          await this.sleep(tick);
        }
        failures = 0;
      } catch (err) {
        if (this.stopped) break;
        failures++;
        this.log.warn({ err: errText(err), partition: this.partition }, 'delivery loop error; retrying');
        await this.sleep(backoffDelay(failures, { backoffBaseMs: 200, backoffMaxMs: 5000 }));
      }
    }
  }

  /** On taking the lease: our own pending entries first, then the previous holder's. */
  private async takeOver(): Promise<void> {
    this.active = true;
    this.deps.observer.leaseChanged(this.adapter.name, this.partition, true);
    await this.queue.ensureGroup(this.partition, this.group);
    const own = await this.queue.readPending(this.partition, this.group, this.deps.owner, 100_000);
    const claimed = await this.queue.claimStale(this.partition, this.group, this.deps.owner, 100_000);
    this.lastClaim = Date.now();
    const all = [...own, ...claimed].sort((a, b) => compareIds(a.id, b.id));
    if (all.length > 0) this.log.info({ partition: this.partition, pending: own.length, claimed: claimed.length }, 'lease taken; resuming pending deliveries');
    await this.enqueue(all, false);
  }

  private lose(why: string): void {
    if (!this.active) return;
    this.log.warn({ partition: this.partition, why }, 'delivery lease lost; standing by');
    this.active = false;
    this.deps.observer.leaseChanged(this.adapter.name, this.partition, false);
    for (const q of this.rooms.values()) {
      clearTimeout(q.timer);
      q.stale = true;
    }
    this.rooms.clear();
    this.replaying.clear();
    this.queued = 0;
  }

  private async enqueue(entries: readonly QueuedEntry[], replay: boolean): Promise<void> {
    for (const entry of entries) {
      if (replay) {
        if (!entry.replayId || this.replaying.has(entry.replayId)) continue;
        this.replaying.add(entry.replayId);
      }
      let q = this.rooms.get(entry.room);
      if (!q) this.rooms.set(entry.room, (q = { entries: [], busy: false, retryAt: 0, attempts: 0, waits: 0, noted: false, done: new Set(), timer: undefined, stale: false }));
      // The same id can come back from pending + claim after a hiccup; keep one.
      if (!replay && q.entries.some((e) => e.id === entry.id && !e.replayId)) continue;
      q.entries.push(entry);
      this.queued++;
    }
    this.pump();
  }

  private pump(): void {
    if (!this.active || this.stopped) return;
    const now = Date.now();
    for (const [room, q] of this.rooms) {
      if (q.busy || q.entries.length === 0) continue;
      if (q.retryAt > now) {
        if (!q.timer) q.timer = setTimeout(() => ((q.timer = undefined), this.pump()), q.retryAt - now);
        continue;
      }
      q.busy = true;
      const work = this.drainRoom(room, q).finally(() => {
        q.busy = false;
        this.inFlight.delete(work);
        // Only this queue's own entry: after a lost lease and a new takeover the room has a new one.
        if (this.rooms.get(room) === q && q.entries.length === 0 && !q.timer) this.rooms.delete(room);
        this.pump();
      });
      this.inFlight.add(work);
    }
  }

  private async drainRoom(room: string, q: RoomQueue): Promise<void> {
    while (q.entries.length > 0 && this.active && !q.stale && !this.stopped) {
      const entry = q.entries[0];
      if (!entry) break;
      let finished: boolean;
      try {
        finished = await this.deliverEntry(room, entry, q);
      } catch (err) {
        // Bookkeeping failed (e.g. Redis unreachable): keep the entry, try later.
        this.log.warn({ err: errText(err), room, partition: this.partition }, 'delivery bookkeeping failed; will retry');
        q.retryAt = Date.now() + backoffDelay(1, this.deps.options);
        return;
      }
      if (!finished) return;
      q.entries.shift();
      this.queued--;
      q.attempts = 0;
      q.waits = 0;
      q.noted = false;
      q.done.clear();
    }
  }

  /** true when the entry is finished (acked or dead-lettered), false when the room must wait */
  private async deliverEntry(room: string, entry: QueuedEntry, q: RoomQueue): Promise<boolean> {
    const event = entry.event;
    if (!event) {
      this.log.warn({ room, feedId: entry.id }, 'event removed by retention before delivery');
      return this.finish(entry);
    }
    const ownLinks = this.deps.links.linksOfRoom(room).filter((l) => l.endpoint === this.adapter.name);
    // Its own events go back to an endpoint only on the links it asks for them.
    const targets = event.origin.via === this.adapter.name ? ownLinks.filter((l) => this.adapter.deliversOwn?.(l) === true) : ownLinks;
    if (targets.length > 0) {
      const references = await this.references(event);
      const content = contentInFormat(event, this.adapter.textFormat ?? 'plain');
      for (const link of targets) {
        if (q.done.has(link.target)) continue;
        let result: DeliveryResult;
        try {
          result = await this.adapter.deliver(event, { room, link }, { attempt: q.attempts, references, ...(content ? { content } : {}) });
        } catch (err) {
          result = { status: 'retry', reason: err instanceof Error ? err.message : String(err) };
        }
        if (!this.active || q.stale) return false;
        switch (result.status) {
          case 'delivered': {
            await this.record(event, result.nativeIds, result.aliases ?? []);
            if (q.noted) await this.queue.noteRetry(room, event.eventId, this.adapter.name, undefined);
            q.noted = false;
            this.deps.observer.delivered(this.adapter.name, room, Date.now() - event.ts.received);
            q.done.add(link.target);
            break;
          }
          case 'skipped':
            q.done.add(link.target);
            break;
          case 'retry': {
            // While the adapter is disconnected the remote side is down, not refusing this
            // event: wait (backing off) without spending attempts, so an outage never
            // dead-letters the backlog.
            const connected = this.adapter.status().connected;
            if (connected) q.attempts++;
            else q.waits++;
            this.deps.observer.retried(this.adapter.name, room, result.reason);
            if (q.attempts >= this.deps.options.maxAttempts) return this.dead(entry, event, `gave up after ${q.attempts} attempts: ${result.reason}`, q.attempts, q);
            const delay = backoffDelay(connected ? q.attempts : Math.min(q.waits, 6), this.deps.options, result.afterMs);
            q.retryAt = Date.now() + delay;
            // Shared with every replica (the console's `retrying`); a wait for a disconnected adapter is `pending`, not noted.
            if (connected) {
              await this.queue.noteRetry(room, event.eventId, this.adapter.name, { attempt: q.attempts, nextAt: q.retryAt, error: result.reason, at: Date.now() });
              q.noted = true;
            }
            this.log.warn({ room, eventId: event.eventId, attempt: q.attempts, delayMs: delay, reason: result.reason }, 'delivery failed; will retry');
            return false;
          }
          case 'rejected':
            return this.dead(entry, event, `rejected: ${result.reason}`, q.attempts + 1, q);
        }
      }
    }
    return this.finish(entry);
  }

  /** The native ids, at this endpoint, of the events `rel` points to. */
  private async references(event: LogEvent): Promise<ReferenceIds> {
    const rel = 'rel' in event && event.rel ? (event.rel as Relations) : {};
    const out: ReferenceIds = {};
    for (const [name, target] of Object.entries(rel) as Array<[keyof Relations, string | undefined]>) {
      if (!target) continue;
      const original = await this.deps.log.getEvent(event.room, target);
      if (!original) continue;
      const ids = original.origin.via === this.adapter.name ? original.origin.ids : await this.queue.deliveredIds(event.room, target, this.adapter.name);
      if (ids) out[name] = ids;
    }
    return out;
  }

  private async record(event: LogEvent, nativeIds: Readonly<Record<string, string>>, aliases: readonly string[]): Promise<void> {
    // Recorded even without native ids (MQTT has none): the console's `delivered` and its time come from it.
    await this.queue.recordDelivery(event.room, event.eventId, this.adapter.name, nativeIds);
    const keys = [...Object.entries(nativeIds).map(([name, value]) => nativeKey(this.adapter.protocol, name, value)), ...traceKeys(Object.values(nativeIds)), ...aliases];
    if (keys.length > 0) await this.deps.log.alias(event.room, event.eventId, keys);
  }

  private async finish(entry: QueuedEntry): Promise<boolean> {
    if (!entry.replayId) {
      // The delivery is confirmed; the ack is batched with the other rooms' and does not hold
      // this room back. If the lease moved meanwhile, the fenced ack fails and the new holder
      // delivers the entry again — a duplicate the remote side's idempotency absorbs.
      this.acks.push(entry.id);
      this.ackFlush ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.flushAcks());
      return true;
    }
    const ok = await this.queue.finishReplay(this.partition, this.group, this.deps.owner, entry.replayId);
    this.replaying.delete(entry.replayId);
    if (!ok) {
      this.lose('fenced: the lease moved before the acknowledgement');
      return false;
    }
    return true;
  }

  private async flushAcks(): Promise<void> {
    const ids = this.acks;
    this.acks = [];
    this.ackFlush = undefined;
    if (ids.length === 0) return;
    try {
      if (!(await this.queue.ack(this.partition, this.group, this.deps.owner, ids))) this.lose('fenced: the lease moved before the acknowledgement');
    } catch (err) {
      // Not acknowledged: the entries stay pending and are delivered again after a takeover.
      this.log.warn({ err, partition: this.partition, entries: ids.length }, 'acknowledgement failed');
    }
  }

  private async dead(entry: QueuedEntry, event: LogEvent, reason: string, attempts: number, q: RoomQueue): Promise<boolean> {
    const ok = await this.queue.deadLetter(this.partition, this.group, this.deps.owner, { id: entry.id, room: event.room, eventId: event.eventId }, reason, attempts);
    if (!ok) {
      this.lose('fenced: the lease moved before dead-lettering');
      return false;
    }
    if (q.noted) await this.queue.noteRetry(event.room, event.eventId, this.adapter.name, undefined);
    q.noted = false;
    this.log.error({ room: event.room, eventId: event.eventId, attempts, reason }, 'delivery gave up: event moved to the dead-letter stream');
    this.deps.observer.deadLettered(this.adapter.name, event.room, event.eventId, reason);
    if (entry.replayId) return this.finish(entry);
    return true;
  }
}

function compareIds(a: string, b: string): number {
  const [am = 0, as = 0] = a.split('-').map(Number);
  const [bm = 0, bs = 0] = b.split('-').map(Number);
  return am - bm || as - bs;
}

export interface DeliveryManager {
  readonly owner: string;
  /** creates every consumer group first (so nothing appended from now on is missed), then starts the workers; again after stop() */
  start(): Promise<void>;
  stop(graceMs?: number): Promise<void>;
  /** partitions whose lease this process holds, per adapter */
  leases(): Record<string, number[]>;
}

export function createDeliveryManager(deps: DeliveryDeps): DeliveryManager {
  const options = { ...DEFAULT_DELIVERY, ...deps.options };
  const owner = deps.owner ?? `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
  const full = { log: deps.log, links: deps.links, logger: deps.logger, observer: deps.observer ?? noopObserver, owner, options, ...(deps.reclaim ? { reclaim: deps.reclaim } : {}) };
  const groupsNow = () => deps.adapters.flatMap((adapter) => Array.from({ length: deps.log.info.partitions }, (_, p) => ({ adapter, partition: p })));
  // Workers are made afresh on every start: a manager stopped when its
  // adapter's connection moved away can start again when it comes back.
  let workers: Array<{ adapter: string; partition: number; worker: PartitionWorker }> = [];
  /** bumped by stop(): a growth check that was under way when it stopped adds nothing */
  let generation = 0;
  let growTimer: NodeJS.Timeout | undefined;

  /** Workers for the (adapter, partition) pairs not running yet; their groups exist first. */
  async function addWorkers(run: number): Promise<void> {
    const have = new Set(workers.map((w) => `${w.adapter}\u0000${w.partition}`));
    const missing = groupsNow().filter((g) => !have.has(`${g.adapter.name}\u0000${g.partition}`));
    if (missing.length === 0) return;
    await Promise.all(missing.map((g) => ensureGroupUnlessUnavailable(deps.log, g.partition, `out:${g.adapter.name}`, deps.logger)));
    if (run !== generation) return;
    const added = missing.map((g) => ({
      adapter: g.adapter.name,
      partition: g.partition,
      worker: new PartitionWorker(g.partition, g.adapter, { ...full, logger: deps.logger.child({ adapter: g.adapter.name }) }),
    }));
    workers = [...workers, ...added];
    for (const w of added) w.worker.start();
  }

  /**
   * The partition count can be raised while this replica runs (another
   * replica restarted with more, or the admin command): once a lease period
   * it is read again, and the new partitions get their workers.
   */
  async function grow(run: number): Promise<void> {
    const before = deps.log.info.partitions;
    const now = await deps.log.partitionCount();
    if (run !== generation || now <= before && workers.length === groupsNow().length) return;
    deps.logger.info({ from: before, to: now }, 'partition count raised: delivering the new partitions too');
    await addWorkers(run);
  }

  return {
    owner,
    async start() {
      if (workers.length > 0) return;
      await deps.log.open();
      const run = generation;
      await addWorkers(run);
      growTimer = setInterval(() => {
        grow(run).catch((err: unknown) => deps.logger.warn({ err: errText(err) }, 'could not check the partition count'));
      }, options.leaseMs);
      growTimer.unref();
    },
    async stop(graceMs = 10_000) {
      generation++;
      if (growTimer) clearInterval(growTimer);
      growTimer = undefined;
      const stopping = workers;
      workers = [];
      await Promise.all(stopping.map((w) => w.worker.stop(graceMs)));
    },
    leases() {
      const out: Record<string, number[]> = {};
      for (const w of workers) if (w.worker.holdsLease) (out[w.adapter] ??= []).push(w.partition);
      return out;
    },
  };
}

/**
 * Creates the consumer group, except on a partition that is unavailable (a
 * Redis Cluster shard lost with no replica): nothing can be appended there
 * either, and its worker creates the group when it takes the partition's
 * lease once the shard is back. Only a group that never existed (a new
 * adapter started during the outage) starts from that moment.
 */
export async function ensureGroupUnlessUnavailable(log: EventLog, partition: number, group: string, logger: Logger): Promise<void> {
  try {
    await log.delivery.ensureGroup(partition, group);
  } catch (err) {
    if (!isSyncgateError(err, 'SG_ERR_LOG_PARTITION_UNAVAILABLE')) throw err;
    logger.warn({ partition, group, err: errText(err) }, 'partition unavailable: its consumer group is checked when its worker takes the lease');
  }
}

/** A retry logs the message only: a stack trace per attempt buries the log. */
function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
