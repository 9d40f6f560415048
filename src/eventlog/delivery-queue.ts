/**
 * DeliveryQueue over a LogBackend's consumer-group primitives. Waiting for
 * new entries reuses the partition's shared live reader instead of a
 * blocking read per worker, so a process's blocking Redis connections are
 * the live readers' pool however many adapters deliver.
 *
 * Leases are held per key group (keys.ts: the partitions sharing a hash
 * slot; layout 1: one partition): every partition of a group names the same
 * lease, and the workers of one group in this process share each renewal
 * (one call per group and owner per LEASE_FRESH_PART of the lease time), so
 * the lease work of a process grows with the groups, not the partitions.
 */
import type { LogEvent } from '../core/event.js';
import type { DeadLetter, DeliveryQueue, DeliveryRecord, QueuedEntry, RetryNote } from '../core/ports.js';
import { ZERO_POS, type StreamPos } from '../core/position.js';
import type { GroupEntry, LogBackend } from './backend.js';
import type { LiveFeed } from './live-feed.js';

export interface DeliveryQueueDeps {
  readonly backend: LogBackend;
  readonly live: (partition: number) => LiveFeed;
  /** the log's partition count now (it may be raised while running) */
  readonly partitions: () => number;
  /** resolves once the log checked its partition count (undefined once it has) */
  readonly whenReady: () => Promise<void> | void;
  readonly toLogEvent: (partition: number, pos: StreamPos, draft: NonNullable<GroupEntry['draft']>) => LogEvent;
  /** -1 for a room that never existed */
  readonly partitionOfRoom: (room: string) => Promise<number>;
}

/**
 * A renewal answers every worker of the group for this part of the lease
 * time: with workers renewing every third of it, the lease is renewed at
 * least every half of it, so it never lapses while its holder is alive.
 */
const LEASE_FRESH_PART = 6;

/** the state-store namespace of retry notes: one field per (room, event, endpoint) that is retrying now */
const RETRY_NS = 'delivery:retry';
const AT_KEY = '@at';

function parseRecord(raw: string | undefined): DeliveryRecord | undefined {
  if (raw === undefined) return undefined;
  try {
    const stored = JSON.parse(raw) as Record<string, string>;
    const { [AT_KEY]: at, ...nativeIds } = stored;
    return at === undefined ? { nativeIds } : { nativeIds, at: Number(at) };
  } catch {
    return { nativeIds: {} };
  }
}

function splitDeadId(id: string): { partition: number; streamId: string } | undefined {
  const m = /^(\d{1,4}):(\d+-\d+)$/.exec(id);
  return m ? { partition: Number(m[1]), streamId: m[2] ?? '' } : undefined;
}

export function createDeliveryQueue(deps: DeliveryQueueDeps): DeliveryQueue {
  const { backend } = deps;
  const toQueued = (partition: number, entries: readonly GroupEntry[]): QueuedEntry[] =>
    entries.map((e) => ({ id: e.id, room: e.room, event: e.draft ? deps.toLogEvent(partition, e.pos, e.draft) : undefined }));
  const deliveredField = (room: string, eventId: string, endpoint: string) => `${room}\u0000${eventId}\u0000${endpoint}`;
  const partitions = () => Array.from({ length: deps.partitions() }, (_, p) => p);

  /**
   * The last answer per lease (key group and consumer group) and the owner
   * it was for, shared by the group's workers of that owner while fresh;
   * any other owner's call (another replica in this process, a takeover
   * from a dead incarnation) asks the store and replaces it.
   */
  const renewals = new Map<string, { owner: string; at: number; freshMs: number; held: Promise<boolean> }>();
  const leaseKey = (p: number, group: string) => `${backend.leaseGroupOf(p)}\u0000${group}`;
  /** a fenced write refused (the lease moved): the next acquire asks the store again */
  const fenced = (p: number, group: string, ok: boolean): boolean => {
    if (!ok) renewals.delete(leaseKey(p, group));
    return ok;
  };
  function acquire(p: number, group: string, owner: string, ttlMs: number, reclaim?: (holder: string) => boolean): Promise<boolean> {
    if (reclaim === undefined) return backend.leaseAcquire(p, group, owner, ttlMs);
    return (async () => {
      if (await backend.leaseAcquire(p, group, owner, ttlMs)) return true;
      const holder = await backend.leaseHolder(p, group);
      return holder !== undefined && reclaim(holder) ? backend.leaseAcquire(p, group, owner, ttlMs, holder) : false;
    })();
  }

  /** Resolves on the next feed entry after the current head, or after waitMs. */
  async function waitForAppend(partition: number, waitMs: number, signal?: AbortSignal): Promise<void> {
    const feed = deps.live(partition);
    if (waitMs <= 0 || signal?.aborted) return;
    const head = (await backend.feedBounds(partition)).last ?? ZERO_POS;
    await new Promise<void>((resolve) => {
      const sink = {
        position: () => head,
        push: () => {
          done();
          return false;
        },
      };
      const timer = setTimeout(done, waitMs);
      signal?.addEventListener('abort', done, { once: true });
      function done(): void {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        feed?.detach(sink);
        resolve();
      }
      if (!feed.attach(sink)) done();
    });
  }

  /**
   * A sink on the partition's running live reader, attached at what it read
   * last, before the caller looks for new entries: an entry appended after
   * that look is after this position, so it wakes `wait`. Undefined when the
   * reader is not running yet (then waitForAppend finds the head itself).
   */
  function armWake(partition: number): { wait(waitMs: number, signal?: AbortSignal): Promise<boolean>; stop(): void } | undefined {
    const feed = deps.live(partition);
    const from = feed.lastRead();
    if (from === undefined) return undefined;
    let fired = false;
    let wake: (() => void) | undefined;
    const sink = {
      position: () => from,
      push: () => {
        fired = true;
        wake?.();
        return false;
      },
    };
    if (!feed.attach(sink)) return undefined;
    return {
      wait: (waitMs, signal) =>
        new Promise<boolean>((resolve) => {
          if (fired || waitMs <= 0 || signal?.aborted) return resolve(fired);
          const done = (): void => {
            clearTimeout(timer);
            signal?.removeEventListener('abort', done);
            wake = undefined;
            resolve(fired);
          };
          const timer = setTimeout(done, waitMs);
          signal?.addEventListener('abort', done, { once: true });
          wake = done;
        }),
      stop: () => feed.detach(sink),
    };
  }

  async function moveDead(ids: readonly string[], mode: 'replay' | 'drop'): Promise<number> {
    let n = 0;
    for (const id of ids) {
      const where = splitDeadId(id);
      if (where && where.partition < deps.partitions()) n += await backend.deadMove(where.partition, [where.streamId], mode);
    }
    return n;
  }

  return {
    async ensureGroup(p, group) {
      await deps.whenReady();
      await backend.groupCreate(p, group);
    },
    async acquireLease(p, group, owner, ttlMs, reclaim) {
      // the key layout (so the lease's key and group) is known once the log is open
      await deps.whenReady();
      const key = leaseKey(p, group);
      const now = Date.now();
      const last = renewals.get(key);
      if (last && last.owner === owner && now - last.at < last.freshMs) return last.held;
      const held = acquire(p, group, owner, ttlMs, reclaim);
      const entry = { owner, at: now, freshMs: ttlMs / LEASE_FRESH_PART, held };
      renewals.set(key, entry);
      held.catch(() => renewals.get(key) === entry && renewals.delete(key));
      return held;
    },
    leaseGroupOf: (p) => backend.leaseGroupOf(p),
    async releaseLease(p, group, owner) {
      await deps.whenReady();
      renewals.delete(leaseKey(p, group));
      return backend.leaseRelease(p, group, owner);
    },
    leaseHolder: async (p, group) => (await deps.whenReady(), backend.leaseHolder(p, group)),
    async leaseToken(p, group, owner) {
      await deps.whenReady();
      const token = await backend.leaseToken(p, group, owner);
      // not held: a cached renewal must not say otherwise
      if (token === undefined) renewals.delete(leaseKey(p, group));
      return token;
    },
    readPending: async (p, group, consumer, count) => (await deps.whenReady(), toQueued(p, await backend.groupRead(p, group, consumer, 'pending', count))),
    claimStale: async (p, group, consumer, count, minIdleMs = 0) => (await deps.whenReady(), toQueued(p, await backend.groupClaim(p, group, consumer, count, minIdleMs))),
    async readNew(p, group, consumer, count, waitMs, signal) {
      await deps.whenReady();
      // With the live reader running, its wake-up is armed before the read: a wait that ends
      // with nothing appended needs no second read (an idle partition costs one XREADGROUP
      // per wait, not a head lookup and two reads).
      const wake = waitMs > 0 ? armWake(p) : undefined;
      try {
        const first = await backend.groupRead(p, group, consumer, 'new', count);
        if (first.length > 0 || signal?.aborted) return toQueued(p, first);
        if (wake) {
          if (!(await wake.wait(waitMs, signal)) || signal?.aborted) return [];
        } else {
          await waitForAppend(p, waitMs, signal);
          if (signal?.aborted) return [];
        }
        return toQueued(p, await backend.groupRead(p, group, consumer, 'new', count));
      } finally {
        wake?.stop();
      }
    },
    ack: async (p, group, owner, ids) => (await deps.whenReady(), fenced(p, group, await backend.groupAck(p, group, owner, ids))),
    deadLetter: async (p, group, owner, entry, reason, attempts) => (await deps.whenReady(), fenced(p, group, await backend.deadLetter(p, group, owner, entry, reason, attempts))),
    async takeReplays(p, group, count) {
      await deps.whenReady();
      const entries = await backend.replays(p, group, count);
      return entries.map((e) => ({ id: e.id, room: e.room, event: e.draft ? deps.toLogEvent(p, e.pos, e.draft) : undefined, replayId: e.replayId }));
    },
    finishReplay: async (p, group, owner, replayId) => (await deps.whenReady(), fenced(p, group, await backend.replayDone(p, group, owner, replayId))),
    async listDead(limit, group) {
      await deps.whenReady();
      const lists = await Promise.all(partitions().map(async (p) => (await backend.deadList(p, limit)).map((d) => ({ p, d }))));
      const out: DeadLetter[] = lists
        .flat()
        .filter(({ d }) => group === undefined || d.group === group)
        .sort((a, b) => a.d.ts - b.d.ts)
        .slice(0, limit)
        .map(({ p, d }) => ({ id: `${p}:${d.streamId}`, group: d.group, room: d.room, feedId: d.feedId, eventId: d.eventId, reason: d.reason, attempts: d.attempts, ts: d.ts }));
      return out;
    },
    async listDeadOfRoom(room, limit) {
      await deps.whenReady();
      const p = await deps.partitionOfRoom(room);
      if (p < 0) return [];
      return (await backend.deadList(p, limit))
        .filter((d) => d.room === room)
        .map((d) => ({ id: `${p}:${d.streamId}`, group: d.group, room: d.room, feedId: d.feedId, eventId: d.eventId, reason: d.reason, attempts: d.attempts, ts: d.ts }));
    },
    replayDead: (ids) => moveDead(ids, 'replay'),
    dropDead: (ids) => moveDead(ids, 'drop'),
    async deadCount(group) {
      await deps.whenReady();
      if (group === undefined) return (await Promise.all(partitions().map((p) => backend.deadCount(p)))).reduce((a, b) => a + b, 0);
      return (await this.listDead(100_000, group)).length;
    },
    async pendingCount(group) {
      await deps.whenReady();
      return (await Promise.all(partitions().map((p) => backend.pendingCount(p, group)))).reduce((a, b) => a + b, 0);
    },
    async recordDelivery(room, eventId, endpoint, nativeIds) {
      const p = await deps.partitionOfRoom(room);
      if (p < 0) return;
      // the time rides along under a key no native id name takes ('@' is not in them), so readers of older records keep working
      await backend.deliverySet(p, deliveredField(room, eventId, endpoint), JSON.stringify({ ...nativeIds, [AT_KEY]: String(Date.now()) }));
    },
    async deliveredIds(room, eventId, endpoint) {
      const p = await deps.partitionOfRoom(room);
      if (p < 0) return undefined;
      const record = parseRecord(await backend.deliveryGet(p, deliveredField(room, eventId, endpoint)));
      return record && Object.keys(record.nativeIds).length > 0 ? { ...record.nativeIds } : undefined;
    },
    async deliveryRecords(room, eventIds, endpoint) {
      const p = await deps.partitionOfRoom(room);
      if (p < 0) return eventIds.map(() => undefined);
      // one step for the page (two HMGETs on Redis: this bucket and the one before)
      const raws = await backend.deliveryGetMany(p, eventIds.map((id) => deliveredField(room, id, endpoint)));
      return raws.map(parseRecord);
    },
    async noteRetry(room, eventId, endpoint, note) {
      const field = deliveredField(room, eventId, endpoint);
      if (note === undefined) await backend.state.delete(RETRY_NS, field);
      else await backend.state.set(RETRY_NS, field, JSON.stringify(note));
    },
    async retries() {
      const out: Array<RetryNote & { room: string; eventId: string; endpoint: string }> = [];
      for (const [field, raw] of await backend.state.entries(RETRY_NS)) {
        const [room = '', eventId = '', endpoint = ''] = field.split('\u0000');
        try {
          const note = JSON.parse(raw) as RetryNote;
          out.push({ room, eventId, endpoint, attempt: Number(note.attempt), nextAt: Number(note.nextAt), error: String(note.error), at: Number(note.at) });
        } catch {
          // a damaged note is not worth failing the console for
        }
      }
      return out;
    },
    async lag(group) {
      await deps.whenReady();
      const lags = await Promise.all(partitions().map((p) => backend.groupLag(p, group)));
      const times = lags.map((l) => l.oldestMs).filter((t): t is number => t !== undefined);
      return { events: lags.reduce((n, l) => n + l.events, 0), oldestMs: times.length > 0 ? Math.min(...times) : undefined };
    },
  };
}
