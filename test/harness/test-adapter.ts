/**
 * An adapter that implements the port honestly, for delivery tests: it can be
 * told to be down, to fail one room, to reject, to be slow or to answer
 * retry-after. Like a real protocol endpoint it is idempotent on our event id
 * (a redelivery is absorbed and counted), and it records what arrived in
 * order. The recorder can live in Redis so that several gateway processes
 * share one "remote side".
 */
import type { Redis } from 'ioredis';
import type { Adapter, AdapterStatus, DeliveryContext, DeliveryResult, DeliveryTarget, IngestSink } from '../../src/core/adapter.js';
import type { EventDraft, LogEvent, Proto } from '../../src/core/event.js';

export interface DeliveryRecord {
  readonly eventId: string;
  readonly room: string;
  readonly target: string;
  readonly references: DeliveryContext['references'];
}

export interface Recorder {
  /** returns false when this event id already arrived (a duplicate) */
  record(rec: DeliveryRecord): Promise<boolean>;
  all(): Promise<DeliveryRecord[]>;
  duplicates(): Promise<number>;
}

export function memoryRecorder(): Recorder {
  const seen = new Set<string>();
  const list: DeliveryRecord[] = [];
  let dups = 0;
  return {
    record(rec) {
      const key = `${rec.target}\u0000${rec.eventId}`;
      if (seen.has(key)) {
        dups++;
        return Promise.resolve(false);
      }
      seen.add(key);
      list.push(rec);
      return Promise.resolve(true);
    },
    all: () => Promise.resolve([...list]),
    duplicates: () => Promise.resolve(dups),
  };
}

export function redisRecorder(redis: Redis, prefix: string): Recorder {
  return {
    async record(rec) {
      // One atomic step: a process killed between "seen" and "logged" would otherwise leave an
      // event marked seen but never logged, and its redelivery counted as a duplicate.
      const fresh = await redis.eval(
        "if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then redis.call('RPUSH', KEYS[2], ARGV[2]) return 1 end redis.call('INCR', KEYS[3]) return 0",
        3,
        `${prefix}remote:seen`,
        `${prefix}remote:log`,
        `${prefix}remote:dups`,
        `${rec.target}\u0000${rec.eventId}`,
        JSON.stringify(rec),
      );
      return fresh === 1;
    },
    async all() {
      return (await redis.lrange(`${prefix}remote:log`, 0, -1)).map((s) => JSON.parse(s) as DeliveryRecord);
    },
    async duplicates() {
      return Number((await redis.get(`${prefix}remote:dups`)) ?? 0);
    },
  };
}

export interface TestAdapterControls {
  down: boolean;
  failRooms: Set<string>;
  rejectRooms: Set<string>;
  retryAfterMs: number | undefined;
  slowMs: number;
  /** start() fails (the remote refuses the connection) */
  failStart: boolean;
  /** deliveries attempted, including failed ones */
  attempts: number;
}

export class TestAdapter implements Adapter {
  readonly controls: TestAdapterControls = { down: false, failRooms: new Set(), rejectRooms: new Set(), retryAfterMs: undefined, slowMs: 0, failStart: false, attempts: 0 };
  private started = false;

  constructor(
    readonly name: string,
    private readonly sink: IngestSink,
    readonly recorder: Recorder = memoryRecorder(),
    readonly protocol: Proto = 'xmpp',
  ) {}

  start(): Promise<void> {
    if (this.controls.failStart) return Promise.reject(new Error('the remote refuses the connection'));
    this.started = true;
    return Promise.resolve();
  }

  stop(): Promise<void> {
    this.started = false;
    return Promise.resolve();
  }

  status(): AdapterStatus {
    return { connected: this.started && !this.controls.down, ready: this.started && !this.controls.down };
  }

  async deliver(event: LogEvent, target: DeliveryTarget, context: DeliveryContext): Promise<DeliveryResult> {
    this.controls.attempts++;
    if (this.controls.slowMs > 0) await new Promise((r) => setTimeout(r, this.controls.slowMs));
    if (this.controls.down) return { status: 'retry', reason: 'remote is down', ...(this.controls.retryAfterMs !== undefined ? { afterMs: this.controls.retryAfterMs } : {}) };
    if (this.controls.failRooms.has(target.room)) return { status: 'retry', reason: `room ${target.room} is failing` };
    if (this.controls.rejectRooms.has(target.room)) return { status: 'rejected', reason: `room ${target.room} refuses` };
    await this.recorder.record({ eventId: event.eventId, room: target.room, target: target.link.target, references: context.references });
    // The native id the remote side assigned: deterministic, so a redelivery gets the same one.
    return { status: 'delivered', nativeIds: { 'test.id': `remote-${event.eventId}` } };
  }

  /** A message arriving from the remote side. */
  receive(draft: EventDraft): ReturnType<IngestSink['ingest']> {
    return this.sink.ingest(draft);
  }
}
