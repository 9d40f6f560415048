/**
 * Blocking reads of partition feeds over a fixed pool of connections, so a
 * process's Redis connections do not grow with the partition count.
 *
 * Each partition belongs to a group (`groupOf`: on one Redis or Sentinel p
 * mod 16; on a cluster the partition's key group, whose partitions share a
 * hash slot, as one command can only read one slot). Each group has one blocking
 * connection and one loop: an XREAD BLOCK over the feeds of every partition
 * of the group that has a waiter, each from its waiter's position. Entries
 * of a partition resolve its waiter; the others keep waiting in the next
 * XREAD. A waiter that arrives while its group's XREAD is blocked (for a
 * partition not in it, or from another position) interrupts it with CLIENT
 * UNBLOCK, so it waits no longer than the others. Each waiter keeps its own
 * timeout.
 */
import type { Redis } from 'ioredis';

/** [id, fields] as XREAD returns them */
export type StreamEntryReply = [string, string[]];

interface Waiter {
  readonly partition: number;
  readonly after: string;
  readonly count: number;
  readonly resolve: (entries: StreamEntryReply[]) => void;
  readonly reject: (err: unknown) => void;
  readonly timer: NodeJS.Timeout;
}

export interface FeedPoolOptions {
  /** the group whose connection reads a partition's feed */
  readonly groupOf: (partition: number) => number;
  /** the feed key of a partition */
  readonly feedKey: (partition: number) => string;
  /** a new connection for the blocking reads of a group (`partition`: one of the group's) */
  readonly connect: (group: number, partition: number) => Redis;
  /** a connection to the same server as `blocking` for CLIENT UNBLOCK (never a blocking one); undefined: none now */
  readonly control: (group: number, blocking: Redis) => Redis | undefined;
  /**
   * Told of a failed read. When given, the group's connection is dropped
   * after a failure and the next read connects again (a cluster: the slot's
   * master may have changed); without it, the connection reconnects by itself.
   */
  readonly dropOnError?: (group: number, err: unknown) => void;
  /** the longest one XREAD blocks before the loop looks at its waiters again */
  readonly blockMs?: number;
}

class FeedGroup {
  private client: Redis | undefined;
  private clientId: number | undefined;
  private readonly waiters = new Map<number, Waiter>();
  private running = false;
  /** what the XREAD in flight covers: partition → position */
  private inFlight: Map<number, string> | undefined;
  private closed = false;

  constructor(
    private readonly group: number,
    private readonly o: FeedPoolOptions,
  ) {}

  wait(partition: number, after: string, timeoutMs: number, count: number): Promise<StreamEntryReply[]> {
    if (this.closed) return Promise.reject(new Error('Connection is closed.'));
    return new Promise((resolve, reject) => {
      // one reader per partition waits at a time (its live feed): a newer wait replaces an older one
      const older = this.waiters.get(partition);
      if (older) this.settle(partition, older, []);
      const timer = setTimeout(() => this.settle(partition, waiter, []), Math.max(0, timeoutMs));
      const waiter: Waiter = { partition, after, count, resolve, reject, timer };
      this.waiters.set(partition, waiter);
      if (!this.running) void this.run();
      else if (this.inFlight && this.inFlight.get(partition) !== after) this.interrupt();
    });
  }

  private settle(partition: number, waiter: Waiter, entries: StreamEntryReply[]): void {
    if (this.waiters.get(partition) !== waiter) return;
    this.waiters.delete(partition);
    clearTimeout(waiter.timer);
    waiter.resolve(entries);
  }

  private connection(partition: number): Redis {
    if (!this.client) {
      const client = this.o.connect(this.group, partition);
      client.on('error', () => undefined);
      // the id CLIENT UNBLOCK names, learnt on every (re)connection
      client.on('ready', () => {
        this.clientId = undefined;
        client.client('ID').then(
          (id) => (this.clientId = Number(id)),
          () => undefined,
        );
      });
      this.client = client;
    }
    return this.client;
  }

  /**
   * CLIENT UNBLOCK on the group's connection. When the XREAD has not reached
   * the server yet (nothing is blocked: the answer is 0) it is tried again
   * shortly, as long as that same read is still in flight.
   */
  private interrupt(read = this.inFlight, tries = 0): void {
    const id = this.clientId;
    const control = this.client ? this.o.control(this.group, this.client) : undefined;
    if (id === undefined || read === undefined || this.inFlight !== read || this.closed || !control) return;
    control
      .client('UNBLOCK', id)
      .then(
        (unblocked) => {
          // stops by itself once that read returned (this.inFlight is another one then)
          if (Number(unblocked) === 0) setTimeout(() => this.interrupt(read, tries + 1), Math.min(50, 5 * (tries + 1)));
        },
        () => undefined,
      );
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.waiters.size > 0 && !this.closed) {
        const batch = [...this.waiters.values()];
        const client = this.connection(batch[0]?.partition ?? 0);
        const count = Math.max(...batch.map((w) => w.count));
        let reply: Array<[string, StreamEntryReply[]]> | null;
        try {
          // the client id must be known before blocking, or a newcomer could not interrupt the read
          if (this.clientId === undefined) this.clientId = Number(await client.client('ID'));
          this.inFlight = new Map(batch.map((w) => [w.partition, w.after]));
          reply = (await client.xread(
            'COUNT',
            count,
            'BLOCK',
            this.o.blockMs ?? 5000,
            'STREAMS',
            ...batch.map((w) => this.o.feedKey(w.partition)),
            ...batch.map((w) => w.after),
          )) as Array<[string, StreamEntryReply[]]> | null;
        } catch (err) {
          this.inFlight = undefined;
          if (this.o.dropOnError) {
            this.o.dropOnError(this.group, err);
            this.client?.disconnect();
            this.client = undefined;
            this.clientId = undefined;
          }
          for (const w of batch) {
            if (this.waiters.get(w.partition) !== w) continue;
            this.waiters.delete(w.partition);
            clearTimeout(w.timer);
            w.reject(err);
          }
          continue;
        }
        this.inFlight = undefined;
        const byKey = new Map(batch.map((w) => [this.o.feedKey(w.partition), w]));
        for (const [key, entries] of reply ?? []) {
          const w = byKey.get(key);
          if (w) this.settle(w.partition, w, entries);
        }
        // Let the readers that just got entries ask again, so the next XREAD includes them.
        await new Promise((resolve) => setImmediate(resolve));
      }
    } finally {
      this.running = false;
    }
  }

  close(): void {
    this.closed = true;
    for (const w of this.waiters.values()) {
      clearTimeout(w.timer);
      w.reject(new Error('Connection is closed.'));
    }
    this.waiters.clear();
    this.client?.disconnect();
  }
}

export class FeedPool {
  private readonly groups = new Map<number, FeedGroup>();
  private closed = false;

  constructor(private readonly o: FeedPoolOptions) {}

  /** Entries of the partition's feed after `after` (a stream id), waiting up to timeoutMs for the first. */
  wait(partition: number, after: string, timeoutMs: number, count: number): Promise<StreamEntryReply[]> {
    if (this.closed) return Promise.reject(new Error('Connection is closed.'));
    const g = this.o.groupOf(partition);
    let group = this.groups.get(g);
    if (!group) this.groups.set(g, (group = new FeedGroup(g, this.o)));
    return group.wait(partition, after, timeoutMs, count);
  }

  close(): void {
    this.closed = true;
    for (const group of this.groups.values()) group.close();
  }
}
