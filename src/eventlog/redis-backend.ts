/**
 * Redis Streams backend (docs/architecture.md, "The event log"). The only module that imports ioredis.
 *
 * Per partition: a change feed stream (entries `r=<room>`), one timeline
 * stream per room whose entry ids equal the feed ids, and time-bucketed id-map
 * hashes (idempotency keys and native-id aliases → stream id). Blocking reads
 * never share a connection with other traffic: the live reads of all
 * partitions share a small pool (feed-pool.ts): on one Redis or Sentinel 16
 * connections; on a cluster one per key group (keys.ts: 24 with layout 2),
 * each to the master owning the group's slot.
 */
import { hash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Cluster, Redis, type Command, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { DraftOf, EventDraft, LogEvent } from '../core/event.js';
import { SyncgateError } from '../core/errors.js';
import { FENCE_FIELD, type RoomSpec, type RoomStore, type StateStore } from '../core/ports.js';
import { MAX_PARTITIONS, ZERO_POS, comparePos, fnv1a32, parseStreamId, parseStreamIdBytes, partitionOf, posToString, type StreamPos } from '../core/position.js';
import type { AppendOutcome, AppendRequest, DeadRecord, FeedEntry, FeedPage, GroupEntry, GroupLag, LogBackend, PartitionMeta, ReplayEntry, RetentionPolicy, RoomFilterFn, StreamBounds } from './backend.js';
import { LATEST_WRITE_FORMAT, fencedWrite, type WriteFormat } from './backend.js';
import { EVENT_FIELD, EVENT_FIELD_3, decodeFields, decodeStored, encodeEvent, encodeEventTail, encodeFields, encodeFieldsV1, encodeValues, storedJson } from './codec.js';
import { FeedPool } from './feed-pool.js';
import { choosePartition, type PartitionLoad } from './room-placement.js';
import { KEY_GROUPS, LATEST_KEY_LAYOUT, LAYOUT_FENCE, hashSlot, keySpace, toKeyGroups, toKeyLayout, type KeySpace } from './keys.js';
import { redactUrl } from '../log/index.js';

type StreamReply = Array<[string, string[]]>;
type StreamBufferReply = Array<[Buffer, Buffer[]]>;

/** an append waiting in its queue's batch */
interface PendingAppend {
  readonly request: AppendRequest;
  readonly resolve: (o: AppendOutcome) => void;
  readonly reject: (err: unknown) => void;
}

/**
 * Id-map fields are 84-bit hashes of the room-scoped key (the first 14
 * base64url characters of its SHA-256): they fit the smallest Redis string
 * allocation whatever the native id's length, the odds of any collision stay
 * negligible (~3e-12 with 10 million keys in a bucket), and being plain
 * ASCII they cost nothing to carry inside the batch's JSON.
 */
export function idField(field: string): string {
  return hash('sha256', field, 'base64url').slice(0, 14);
}

/** `ms.seq` in hex, as append-batch.lua writes id-map values. */
export function compactId(pos: StreamPos): string {
  return `${pos.ms.toString(16)}.${pos.seq.toString(16)}`;
}

function parseIdValue(value: string): StreamPos {
  const dot = value.indexOf('.');
  if (dot < 0) return parseStreamId(value);
  return { ms: parseInt(value.slice(0, dot), 16), seq: parseInt(value.slice(dot + 1), 16) };
}

/** how long an append waiting for replicas keeps following a cluster's failover before it fails */
const CLUSTER_RETRY_MS = 30_000;
const CLUSTER_RETRY_DELAY_MS = 200;

/** how long ping() waits for an answer before it reports the log unreachable */
const PING_TIMEOUT_MS = 10_000;

/** a stored write format: absent (a log from before the format gate) is 1; one this build does not know is refused */
function toWriteFormat(value: string | number | null): WriteFormat {
  const format = Number(value ?? 1);
  if (format === 1 || format === 2 || format === 3) return format;
  throw new SyncgateError('SG_ERR_LOG_TOO_NEW', `this log's write format is ${String(value)}; this build writes and reads formats 1 to ${LATEST_WRITE_FORMAT}: run a newer syncgate`, { format: String(value) });
}

/** blocking connections shared by the live reads of all partitions (one Redis or Sentinel) */
const FEED_POOL_SIZE = 16;

/**
 * The room placement in force: the configured one, else `balanced` on a
 * cluster and `hash` on one master. Either way the assign script stores a
 * room's partition once, so replicas with different placements still agree
 * on every room, and switching only affects rooms created afterwards.
 */
export function defaultRoomPlacement(options: { readonly roomPlacement?: 'hash' | 'balanced' | undefined; readonly cluster?: unknown }): 'hash' | 'balanced' {
  return options.roomPlacement ?? (options.cluster ? 'balanced' : 'hash');
}

/** how often balanced room placement reads the partitions' loads again */
const PLACEMENT_REFRESH_MS = 5_000;

/** how long a partition's probe may take before the partition counts as unavailable */
const PROBE_MS = 1_500;

/**
 * Events per append script call. Small enough that Redis starts on the first
 * part of a burst while the rest is still being prepared: MQTT ingest hands
 * over a broker window (100 QoS 1 messages, up to 512 QoS 0) in one turn,
 * and with 128 the whole window became one call, so the adapter, Redis and
 * the broker took turns instead of overlapping (issue 19, point 5; 32 was
 * faster in paired runs, with the same Redis CPU per event).
 */
const MAX_BATCH = 32;
/**
 * An idle queue's tick of this many appends or more goes out as two script
 * calls, one after the other on the connection: Redis runs the first while
 * the second is built, and the first's producers have their replies (and
 * make their next appends) while Redis runs the second. As one call, the
 * process and Redis took turns: 16 producers each awaiting its append reached
 * 0.40-0.50 of raw XADD's rate, split 0.52-0.69 (issue 19, point 4).
 */
const SPLIT_AT = 8;
/**
 * How often a partition's id-map bucket has its expiry set again by the
 * append script. Setting it on every call was one EXPIRE per partition and
 * call: with appends spread over 16 partitions about one per event, a sixth
 * of the script's commands (issue 19, sixth pass).
 */
const ID_EXPIRY_REFRESH_MS = 60_000;

const lua = (name: string) => readFileSync(new URL(`./lua/${name}`, import.meta.url), 'utf8');

interface SyncgateCommands {
  sgAppendBatch(numKeys: number, ...args: Array<string | number>): Promise<Array<number | string>>;
  sgAdvance(key: string, field: string, value: string): Promise<string>;
  sgAlias(...args: Array<string | number>): Promise<number>;
  sgTrim(stream: string, marks: string, cutoff: string): Promise<number>;
  sgLease(key: string, fence: string, owner: string, ttlMs: number, replace?: string): Promise<number>;
  sgLeaseToken(key: string, fence: string, owner: string): Promise<string | null>;
  sgFencedUpdate(key: string, ...args: string[]): Promise<number>;
  sgRelease(key: string, owner: string): Promise<number>;
  sgAck(lease: string, feed: string, owner: string, group: string, ...ids: string[]): Promise<number>;
  sgDead(lease: string, feed: string, dlq: string, ...args: Array<string | number>): Promise<number>;
  sgReplayDone(lease: string, replay: string, owner: string, id: string): Promise<number>;
  sgDeadMove(dlq: string, replay: string, mode: string, ...ids: string[]): Promise<number>;
  sgAssign(meta: string, directory: string, counts: string, room: string, hash: number, fallback: number, chosen: number): Promise<number>;
  sgRaise(meta: string, count: number, field?: string): Promise<number>;
  sgOpen(legacyMeta: string, layoutMeta: string, create: number, count: number, format: number, layout: number, groups: number, fence: string): Promise<number>;
}
type CommandClient = Redis & SyncgateCommands;

/**
 * A timeline entry as read: decoded when its draft is first asked for, so a
 * sync page written from the stored JSON text (FeedEntry.stored) never
 * decodes it (issue 19, point 1). `text` is format 2's or 3's value (`base`
 * given for format 3: the id's milliseconds), `fields` the entry's field
 * list when read as strings; neither: retention removed it.
 */
class StoredEntry implements FeedEntry {
  private decoded: EventDraft | undefined | null = null;
  private readonly text: string | undefined;
  private readonly base: number | undefined;
  constructor(
    readonly pos: StreamPos,
    readonly room: string,
    private readonly fields: readonly string[] | undefined,
    text?: string,
    base?: number,
  ) {
    if (text !== undefined) {
      this.text = text;
      this.base = base;
    } else {
      const found = fields ? storedJson(fields) : undefined;
      this.text = found?.text;
      this.base = found?.format === 3 ? pos.ms : undefined;
    }
  }
  private decode(): EventDraft | undefined {
    if (this.text !== undefined) return decodeStored(this.room, this.text, this.base);
    return this.fields ? decodeFields(this.room, this.fields) : undefined;
  }
  get draft(): EventDraft | undefined {
    if (this.decoded === null) this.decoded = this.decode();
    return this.decoded;
  }
  get stored(): string | undefined {
    return this.text;
  }
  get storedBase(): number | undefined {
    return this.base;
  }
  toEvent(eventId: string, cursor: string): LogEvent | undefined {
    // decoded already (and maybe handed out): a copy; else decoded straight into the event
    const draft = this.decoded === null ? this.decode() : this.decoded && Object.assign({}, this.decoded);
    if (!draft) return undefined;
    const event = draft as EventDraft & { eventId: string; cursor: string };
    event.eventId = eventId;
    event.cursor = cursor;
    return event;
  }
}

/**
 * A timeline entry from a reply in Buffers: the position parsed from the id's
 * bytes and only the event's text made a string. The string reply made
 * strings of the id and the field name too and copied each entry's arrays
 * (issue 19, fourth pass: catch-up is mostly this loop).
 */
function entryOfBuffers(room: string, id: Buffer, fields: readonly Buffer[]): StoredEntry {
  const pos = parseStreamIdBytes(id);
  const name = fields[0];
  const value = fields[1];
  if (fields.length === 2 && name?.length === 1 && value) {
    if (name[0] === EVENT_FIELD_3_BYTE) return new StoredEntry(pos, room, undefined, value.toString('utf8'), pos.ms);
    if (name[0] === EVENT_FIELD_BYTE) return new StoredEntry(pos, room, undefined, value.toString('utf8'));
  }
  return new StoredEntry(
    pos,
    room,
    fields.map((f) => f.toString('utf8')),
  );
}
const EVENT_FIELD_BYTE = EVENT_FIELD.charCodeAt(0);
const EVENT_FIELD_3_BYTE = EVENT_FIELD_3.charCodeAt(0);

/** Redis Cluster: seed nodes; the client discovers the rest and follows MOVED/ASK and failovers. */
export interface RedisClusterTarget {
  readonly nodes: readonly string[];
  readonly tls?: boolean;
}

/** Redis Sentinel: the sentinels name the current master of `name` and announce its failovers. */
export interface RedisSentinelTarget {
  readonly nodes: readonly string[];
  readonly name: string;
  /** the sentinels' own password (the master's is redisOptions.password) */
  readonly password?: string;
  readonly tls?: boolean;
}

export interface RedisBackendOptions {
  /** one Redis (exactly one of url, cluster and sentinel) */
  readonly url?: string;
  readonly cluster?: RedisClusterTarget;
  readonly sentinel?: RedisSentinelTarget;
  readonly prefix: string;
  /**
   * With N > 0 an append is acknowledged only once WAIT reports N replicas
   * have it; WAIT runs right after the append script, in the same pipeline,
   * so it goes to the same node (on a cluster a keyless command in a pipeline
   * follows the pipeline's keys) on the same connection.
   */
  readonly waitReplicas?: number;
  readonly waitTimeoutMs?: number;
  readonly partitions: number;
  /** key groups of a layout-2 log created by this process (keys.ts; default 18); an existing log keeps its stored count */
  readonly keyGroups?: number;
  /**
   * where new rooms go (room-placement.ts): `balanced` by default on a
   * cluster (the masters get even traffic), `hash` by default on one Redis
   * or Sentinel (one master: nothing to balance)
   */
  readonly roomPlacement?: 'hash' | 'balanced';
  readonly retention: RetentionPolicy;
  readonly log: Logger;
  readonly redisOptions?: RedisOptions;
  /** told of every command on the main and append connections (not the blocking reads): its name, seconds, and whether it failed */
  readonly onCommand?: CommandObserver;
}

export type CommandObserver = (command: string, seconds: number, failed: boolean) => void;

/** Reports each command's time and outcome; the blocking reads are left out (their wait is not latency). */
function instrument<T extends Redis>(client: T, onCommand: CommandObserver | undefined): T {
  if (!onCommand) return client;
  const send = client.sendCommand.bind(client);
  // Every argument is passed on: a Cluster's sendCommand takes a third (the node a redirection names).
  client.sendCommand = ((command: Command, ...rest: unknown[]) => {
    const start = process.hrtime.bigint();
    const done = (failed: boolean) => onCommand(command.name, Number(process.hrtime.bigint() - start) / 1e9, failed);
    command.promise.then(
      () => done(false),
      () => done(true),
    );
    return (send as (c: Command, ...r: unknown[]) => unknown)(command, ...rest);
  }) as T['sendCommand'];
  return client;
}

/** `host:port` or `redis[s]://host:port` of a cluster seed node */
export function parseSeed(seed: string): { host: string; port: number } {
  const bare = seed.replace(/^rediss?:\/\//, '').replace(/\/$/, '');
  const colon = bare.lastIndexOf(':');
  return { host: bare.slice(0, colon), port: Number(bare.slice(colon + 1)) };
}

/**
 * Opens a client on one Redis or on a Redis Cluster. A Cluster has the same
 * command API (keys of one partition share a hash slot, so every script and
 * command lands on the master owning that partition); it is typed as a Redis
 * here so the rest of the backend does not tell the two apart.
 */
export function openClient(options: Pick<RedisBackendOptions, 'url' | 'cluster' | 'sentinel' | 'redisOptions'>, extra: RedisOptions): Redis {
  const redisOptions: RedisOptions = { ...options.redisOptions, ...extra };
  const { cluster, sentinel } = options;
  if (sentinel) return new Redis(sentinelOptions(sentinel, redisOptions));
  if (!cluster) return new Redis(options.url ?? '', redisOptions);
  const tls = cluster.tls === true || cluster.nodes.some((n) => n.startsWith('rediss://'));
  // No auto-pipelining on a cluster: ioredis groups pipelines by the slots' node set,
  // and a slot map refreshed between queueing and sending fails a whole pipeline
  // ("All keys in the pipeline should belong to the same slots allocation group").
  // Appends batch by themselves, one script call per partition batch.
  const { enableAutoPipelining: _auto, ...nodeOptions } = redisOptions;
  return new Cluster(cluster.nodes.map(parseSeed), {
    enableAutoPipelining: false,
    redisOptions: { ...nodeOptions, ...(tls ? { tls: { ...nodeOptions.tls } } : {}) },
    // a promoted replica takes a few seconds to be voted in: keep commands queued meanwhile
    retryDelayOnClusterDown: 200,
    retryDelayOnFailover: 200,
    retryDelayOnTryAgain: 200,
    slotsRefreshTimeout: 2000,
  }) as unknown as Redis;
}

/**
 * The master of a Sentinel group: ioredis asks the sentinels for it at every
 * (re)connection and checks the server it reaches is a master; commands
 * queued meanwhile go to the new one. (ioredis' failover detector is left
 * off: its sentinel connections have no error listener, so a sentinel going
 * down would be reported on stderr, outside the log; a master demoted while
 * it stays up answers READONLY, which reconnects below.)
 */
export function sentinelOptions(sentinel: RedisSentinelTarget, redisOptions: RedisOptions): RedisOptions {
  return {
    ...redisOptions,
    sentinels: sentinel.nodes.map(parseSeed),
    name: sentinel.name,
    // A connection can land on a server the sentinels then turn into a replica (a killed master
    // restarted empty): its writes fail READONLY. Reconnect (the sentinels name the master) and
    // send the command again; the append script is idempotent, so a resend cannot double an event.
    reconnectOnError: (err: Error) => (err.message.startsWith('READONLY') ? 2 : false),
    ...(sentinel.password !== undefined ? { sentinelPassword: sentinel.password } : {}),
    ...(sentinel.tls === true ? { tls: { ...redisOptions.tls }, enableTLSForSentinelMode: true, sentinelTLS: {} } : {}),
  };
}

function defineCommands(client: Redis): CommandClient {
  // the key count varies with the batch: it is passed as the first argument
  client.defineCommand('sgAppendBatch', { lua: lua('append-batch.lua') });
  client.defineCommand('sgTrim', { numberOfKeys: 2, lua: lua('trim-2.lua') });
  client.defineCommand('sgAdvance', { numberOfKeys: 1, lua: lua('advance-1.lua') });
  client.defineCommand('sgAlias', { numberOfKeys: 2, lua: lua('alias-2.lua') });
  client.defineCommand('sgLease', { numberOfKeys: 2, lua: lua('lease-2.lua') });
  client.defineCommand('sgLeaseToken', { numberOfKeys: 2, lua: lua('leasetoken-2.lua') });
  client.defineCommand('sgFencedUpdate', { numberOfKeys: 1, lua: lua('fenced-update-1.lua') });
  client.defineCommand('sgRelease', { numberOfKeys: 1, lua: lua('release-1.lua') });
  client.defineCommand('sgAck', { numberOfKeys: 2, lua: lua('ack-2.lua') });
  client.defineCommand('sgDead', { numberOfKeys: 3, lua: lua('dead-3.lua') });
  client.defineCommand('sgReplayDone', { numberOfKeys: 2, lua: lua('replaydone-2.lua') });
  client.defineCommand('sgDeadMove', { numberOfKeys: 2, lua: lua('deadmove-2.lua') });
  client.defineCommand('sgAssign', { numberOfKeys: 3, lua: lua('assign-3.lua') });
  client.defineCommand('sgRaise', { numberOfKeys: 1, lua: lua('raise-1.lua') });
  client.defineCommand('sgOpen', { numberOfKeys: 2, lua: lua('open-2.lua') });
  return client as CommandClient;
}

class RedisRoomStore implements RoomStore {
  private subscriber: Redis | undefined;
  private subscribed: Promise<void> | undefined;
  private readonly listeners = new Set<(room: string) => void>();

  constructor(
    private readonly redis: Redis,
    private readonly keys: KeySpace,
    /** the room's partition, from the directory; undefined: the room never existed */
    private readonly locate: (room: string) => Promise<number | undefined>,
    /** the room's partition, assigned now for a new room */
    private readonly assign: (room: string) => Promise<number>,
    private readonly log: Logger,
    /** on a cluster the room's meta (its partition's slot) and the room index live on different nodes: no MULTI across them */
    private readonly cluster: boolean,
    private readonly duplicate: (name: string) => Redis,
  ) {}

  async put(spec: RoomSpec): Promise<void> {
    const partition = await this.assign(spec.id);
    if (this.cluster) {
      // meta first: the index never names a room without a spec
      await this.redis.hset(this.keys.roomMeta(partition, spec.id), 'spec', JSON.stringify(spec));
      await this.redis.sadd(this.keys.roomIndex(), spec.id);
      await this.announce(spec.id);
      return;
    }
    await this.redis
      .multi()
      .hset(this.keys.roomMeta(partition, spec.id), 'spec', JSON.stringify(spec))
      .sadd(this.keys.roomIndex(), spec.id)
      .publish(this.keys.roomChannel(), spec.id)
      .exec();
  }

  async get(room: string): Promise<RoomSpec | undefined> {
    const partition = await this.locate(room);
    if (partition === undefined) return undefined;
    const raw = await this.redis.hget(this.keys.roomMeta(partition, room), 'spec');
    return raw ? (JSON.parse(raw) as RoomSpec) : undefined;
  }

  async list(): Promise<RoomSpec[]> {
    const ids = (await this.redis.smembers(this.keys.roomIndex())).sort();
    const specs = await Promise.all(ids.map((id) => this.get(id)));
    return specs.filter((s): s is RoomSpec => s !== undefined);
  }

  async delete(room: string): Promise<boolean> {
    // The directory entry stays: a room created again with this id is in the same partition.
    const partition = await this.locate(room);
    if (partition === undefined) return false;
    if (this.cluster) {
      // out of the index first: the index never names a room without a spec
      const removed = await this.redis.srem(this.keys.roomIndex(), room);
      await this.redis.del(this.keys.roomMeta(partition, room));
      if (removed !== 1) return false;
      await this.announce(room);
      return true;
    }
    const [[, removed] = []] = (await this.redis.multi().del(this.keys.roomMeta(partition, room)).srem(this.keys.roomIndex(), room).exec()) ?? [];
    if (removed !== 1) return false;
    await this.redis.publish(this.keys.roomChannel(), room);
    return true;
  }

  /**
   * On a cluster a PUBLISH goes to any node and reaches the others over the
   * cluster bus, each node's messages on its own link: two changes published
   * through different nodes can arrive in either order. Published from a
   * script keyed on the room index, every change leaves from that one master,
   * in order.
   */
  private async announce(room: string): Promise<void> {
    await this.redis.eval("redis.call('PUBLISH', ARGV[1], ARGV[2]) return 1", 1, this.keys.roomIndex(), this.keys.roomChannel(), room);
  }

  async watch(listener: (room: string) => void): Promise<() => void> {
    this.listeners.add(listener);
    if (!this.subscribed) {
      const sub = this.duplicate(`${this.keys.prefix}rooms-watch`);
      this.subscriber = sub;
      sub.on('error', (err: Error) => this.log.warn({ err: err.message }, 'room watch connection error'));
      sub.on('message', (_channel: string, room: string) => {
        for (const l of this.listeners) l(room);
      });
      this.subscribed = sub.subscribe(this.keys.roomChannel()).then(() => undefined);
    }
    await this.subscribed;
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.subscriber?.disconnect();
    this.subscriber = undefined;
    this.subscribed = undefined;
  }
}

class RedisStateStore implements StateStore {
  constructor(
    private readonly redis: CommandClient,
    private readonly keys: KeySpace,
  ) {}
  async get(ns: string, key: string): Promise<string | undefined> {
    return (await this.redis.hget(this.keys.state(ns), key)) ?? undefined;
  }
  async set(ns: string, key: string, value: string): Promise<void> {
    await this.redis.hset(this.keys.state(ns), key, value);
  }
  async setIfAbsent(ns: string, key: string, value: string): Promise<boolean> {
    return (await this.redis.hsetnx(this.keys.state(ns), key, value)) === 1;
  }
  async delete(ns: string, key: string): Promise<boolean> {
    return (await this.redis.hdel(this.keys.state(ns), key)) === 1;
  }
  async entries(ns: string): Promise<Array<[string, string]>> {
    return Object.entries(await this.redis.hgetall(this.keys.state(ns)));
  }
  advance(ns: string, key: string, value: string): Promise<string> {
    return this.redis.sgAdvance(this.keys.state(ns), key, value);
  }
  async update(ns: string, set: ReadonlyArray<readonly [string, string]>, del: readonly string[]): Promise<void> {
    const key = this.keys.state(ns);
    const keep = new Set(set.map(([k]) => k));
    const gone = del.filter((k) => !keep.has(k));
    if (set.length === 0 && gone.length === 0) return;
    // One hash, one slot: MULTI/EXEC applies both or neither, on a single node and on a cluster.
    const tx = this.redis.multi();
    if (gone.length > 0) tx.hdel(key, ...gone);
    if (set.length > 0) tx.hset(key, Object.fromEntries(set));
    const results = await tx.exec();
    if (results === null) throw new Error(`state update of ${ns} was aborted`);
    for (const [err] of results) if (err) throw err;
  }
  async fencedUpdate(ns: string, token: number, set: ReadonlyArray<readonly [string, string]>, del: readonly string[]): Promise<number> {
    if (!Number.isSafeInteger(token) || token < 0) throw new SyncgateError('SG_ERR_INTERNAL', `fencing token ${token} is not a whole number`);
    const keep = new Set(set.map(([k]) => k));
    const gone = del.filter((k) => !keep.has(k));
    // one script on the namespace's one hash: atomic on a single node and on a cluster alike
    const deleted = await this.redis.sgFencedUpdate(this.keys.state(ns), FENCE_FIELD, String(token), String(gone.length), ...gone, ...set.flat());
    if (deleted < 0) throw fencedWrite(ns, token);
    return deleted;
  }
}

export class RedisBackend implements LogBackend {
  readonly backend = 'redis' as const;
  readonly durable = true;
  /** the configured partition count: what a new log is opened with */
  private readonly configured: number;
  /** room → partition, as read from (or written to) the directory: rooms never move */
  private readonly roomParts = new Map<string, number>();
  readonly rooms: RedisRoomStore;
  readonly state: StateStore;
  private readonly redis: CommandClient;
  /**
   * Appends have a connection of their own that never gives a command up
   * while Redis is away: ioredis keeps them queued in order and sends them in
   * that order once it is back. Failing them after its retries (~10 s, as the
   * main connection does) let appends made later reach Redis first, while the
   * failed one waited for its caller's retry: a room's order broke.
   */
  private readonly appender: CommandClient;
  /**
   * The live reads of all partitions share a pool of blocking connections
   * (feed-pool.ts; a group connects on first use), made at the first live
   * read, once the log's key layout is known. One Redis or Sentinel:
   * FEED_POOL_SIZE. A cluster: one per key group (one command reads one hash
   * slot), a plain connection to the master owning the group's slot.
   */
  private feedPool: FeedPool | undefined;
  /** the largest partition count seen (configured, stored or raised): what the probes cover */
  private partitions: number;
  /** the write format appends use: the stored one, as last read (format 1 until the log is opened) */
  private writeFormat: WriteFormat = 1;
  private readonly keys: KeySpace;
  private readonly retention: RetentionPolicy;
  private readonly idTtlSec: number;
  private closed = false;
  /** what the connection points at, for error messages (credentials redacted) */
  private readonly target: string;
  private readonly options: RedisBackendOptions;
  /** why the main connection last failed, for a startup error that names the cause */
  private lastConnectionError: string | undefined;
  /** balanced room placement: the partitions' loads as last read, and the read under way */
  private placement: { at: number; loads: PartitionLoad[] } | undefined;
  private placementRead: Promise<void> | undefined;
  /** options.roomPlacement, or its default for this deployment */
  private readonly roomPlacement: 'hash' | 'balanced';
  /** appends waiting for their batch, per queue (a key group on a cluster, else one queue: 0) */
  private readonly pending = new Map<number, PendingAppend[]>();
  /** batches on their way to Redis, per queue */
  private readonly sending = new Map<number, number>();
  /** per partition: the id-map bucket the append script last set the expiry of, and when (ID_EXPIRY_REFRESH_MS) */
  private readonly idExpirySet = new Map<number, { readonly bucket: number; readonly at: number }>();

  constructor(options: RedisBackendOptions) {
    this.options = options;
    this.roomPlacement = defaultRoomPlacement(options);
    this.target = options.cluster
      ? `Redis Cluster ${options.cluster.nodes.map((n) => redactUrl(n)).join(',')} (redis.cluster.nodes)`
      : options.sentinel
        ? `Redis Sentinel master ${options.sentinel.name} via ${options.sentinel.nodes.join(',')} (redis.sentinel)`
        : `Redis at ${redactUrl(options.url ?? '')} (redis.url / SYNCGATE_REDIS_URL)`;
    this.configured = options.partitions;
    this.partitions = options.partitions;
    this.retention = options.retention;
    this.keys = keySpace(options.prefix);
    this.idTtlSec = Math.ceil((2 * options.retention.idTtlMs) / 1000);
    this.redis = defineCommands(
      instrument(openClient(options, {
        connectionName: `${options.prefix}main`,
        // Appends are idempotent, so a command resent after a reconnect cannot duplicate an event.
        enableAutoPipelining: true,
        ...options.redisOptions,
      }), options.onCommand),
    );
    this.redis.on('error', (err: Error) => {
      this.lastConnectionError = err.message;
      options.log.warn({ err: err.message }, 'redis connection error');
    });
    this.appender = defineCommands(
      instrument(openClient(options, {
        connectionName: `${options.prefix}append`,
        // No auto-pipelining: appends are batched per tick already (one script call per
        // batch), and ioredis' auto-pipelining waits a setImmediate more before writing.
        enableAutoPipelining: false,
        ...options.redisOptions,
        maxRetriesPerRequest: null,
      }), options.onCommand),
    );
    this.appender.on('error', (err: Error) => options.log.debug({ err: err.message }, 'redis append connection error'));
    this.rooms = new RedisRoomStore(
      this.redis,
      this.keys,
      (room) => this.roomPartition(room),
      (room) => this.assignRoomPartition(room, fnv1a32(room)),
      options.log,
      options.cluster !== undefined,
      (name) => this.duplicate(name, {}),
    );
    this.state = new RedisStateStore(this.redis, this.keys);
  }

  /** Before the first connection counts as available (commands wait for it); after a loss, not until it is back. */
  get available(): boolean {
    return [this.redis, this.appender].every((client) => client.status !== 'reconnecting' && client.status !== 'close' && client.status !== 'end');
  }

  // --- the partition count and the room directory

  async openPartitions(configured: number): Promise<PartitionMeta> {
    this.closedCheck();
    let where = await this.locateMeta(configured, false);
    if (where === 0) {
      // No count stored: a new log, or one written before the count was stored, whose
      // rooms sit at `fnv1a32(room) mod <the count it ran with>`: find that count and
      // record every room's partition before anything may use another count.
      const rooms = await this.redis.smembers(this.keys.roomIndex());
      // A new log starts at the latest write format and key layout; one with rooms already keeps format 1 and layout 1.
      if (rooms.length === 0) where = await this.locateMeta(configured, true);
      if (where === 0) {
        const legacy = await this.legacyPartitions(rooms, configured);
        for (let i = 0; i < rooms.length; i += 500) {
          const chunk = rooms.slice(i, i + 500);
          const pipeline = this.redis.pipeline();
          for (const room of chunk) pipeline.hsetnx(this.keys.roomPartitions(), room, partitionOf(room, legacy));
          await pipeline.exec();
        }
        await this.redis.hsetnx(this.keys.legacyMeta(), 'partitions', legacy);
        where = 1;
      }
    }
    await this.readLayout(where);
    return { partitions: await this.readPartitions(), format: await this.readWriteFormat() };
  }

  /** Where the meta hash is (open-2.lua): 1 layout 1's key, 2 layout 2's, 0 none; `create`: a new log if none. */
  private async locateMeta(configured: number, create: boolean): Promise<number> {
    const groups = this.options.keyGroups ?? KEY_GROUPS;
    try {
      return Number(await this.redis.sgOpen(this.keys.legacyMeta(), this.keys.layoutMeta(), create ? 1 : 0, configured, LATEST_WRITE_FORMAT, LATEST_KEY_LAYOUT, groups, LAYOUT_FENCE));
    } catch (err) {
      if (err instanceof Error && err.message.startsWith('SG_ERR_PARTITIONS_MISMATCH')) throw new SyncgateError('SG_ERR_PARTITIONS_MISMATCH', err.message.slice('SG_ERR_PARTITIONS_MISMATCH '.length));
      throw err;
    }
  }

  /**
   * The log's key layout (keys.ts), stored when the log was created: a log
   * from before layout 2 keeps its meta at `{log}:partitions` with no layout
   * and keeps layout 1's key names. A layout, group count or (readWriteFormat)
   * write format newer than this build knows is refused: SG_ERR_LOG_TOO_NEW.
   */
  private async readLayout(where: number): Promise<void> {
    if (where === 1) {
      this.keys.setLayout(toKeyLayout(await this.redis.hget(this.keys.legacyMeta(), 'layout')));
      return;
    }
    const [layout, groups] = await this.redis.hmget(this.keys.layoutMeta(), 'layout', 'groups');
    const known = toKeyLayout(layout ?? LATEST_KEY_LAYOUT);
    if (known === 1) throw new SyncgateError('SG_ERR_PARTITIONS_MISMATCH', `${this.keys.layoutMeta()} says layout 1: the log meta was changed by hand`);
    const count = toKeyGroups(groups);
    const configured = this.options.keyGroups;
    if (configured !== undefined && configured !== count) {
      this.options.log.warn({ configured, stored: count }, `redis.keyGroups (${configured}) applies to new logs only: this log was created with ${count} key groups and keeps them`);
    }
    this.keys.setLayout(known, count);
  }

  /** The key group whose partitions share a delivery lease (and a hash slot). */
  leaseGroupOf(partition: number): number {
    return this.keys.groupOf(partition);
  }

  async readWriteFormat(): Promise<WriteFormat> {
    this.closedCheck();
    return (this.writeFormat = toWriteFormat(await this.redis.hget(this.keys.partitionMeta(), 'format')));
  }

  async raiseWriteFormat(format: WriteFormat): Promise<WriteFormat> {
    this.closedCheck();
    return (this.writeFormat = toWriteFormat(await this.redis.sgRaise(this.keys.partitionMeta(), format, 'format')));
  }

  /** The count a log from before the stored count was written with: the one that finds every room's definition. */
  private async legacyPartitions(rooms: readonly string[], configured: number): Promise<number> {
    const candidates = [configured, ...Array.from({ length: MAX_PARTITIONS }, (_, i) => i + 1).filter((c) => c !== configured)];
    const sample = rooms.slice(0, 32);
    for (const count of candidates) {
      const pipeline = this.redis.pipeline();
      for (const room of sample) pipeline.exists(this.keys.roomMeta(partitionOf(room, count), room));
      const found = ((await pipeline.exec()) ?? []).every(([err, n]) => !err && Number(n) === 1);
      if (found) return count;
    }
    throw new SyncgateError('SG_ERR_PARTITIONS_MISMATCH', `no partition count from 1 to ${MAX_PARTITIONS} finds the rooms of this log (${this.keys.prefix})`);
  }

  async readPartitions(): Promise<number> {
    this.closedCheck();
    return this.saw(Number((await this.redis.hget(this.keys.partitionMeta(), 'partitions')) ?? 0));
  }

  async raisePartitions(count: number): Promise<number> {
    this.closedCheck();
    return this.saw(Number(await this.redis.sgRaise(this.keys.partitionMeta(), count)));
  }

  /** Notes a partition count read from the store (it only grows). */
  private saw(count: number): number {
    if (count > this.partitions) this.partitions = count;
    return count;
  }

  knownRoomPartition(room: string): number | undefined {
    return this.roomParts.get(room);
  }

  async roomPartition(room: string): Promise<number | undefined> {
    this.closedCheck();
    const known = this.roomParts.get(room);
    if (known !== undefined) return known;
    const stored = await this.redis.hget(this.keys.roomPartitions(), room);
    if (stored === null) return undefined;
    const partition = Number(stored);
    this.roomParts.set(room, partition);
    return partition;
  }

  async assignRoomPartition(room: string, hash: number): Promise<number> {
    this.closedCheck();
    const known = this.roomParts.get(room);
    if (known !== undefined) return known;
    const chosen = this.roomPlacement === 'balanced' ? await this.placeRoom() : -1;
    const partition = Number(await this.redis.sgAssign(this.keys.partitionMeta(), this.keys.roomPartitions(), this.keys.roomCounts(), room, hash, this.configured, chosen));
    this.roomParts.set(room, partition);
    return partition;
  }

  /**
   * Balanced placement (room-placement.ts): the partition for a new room from
   * each partition's traffic (the entries its feed keeps), rooms and master,
   * read at most every PLACEMENT_REFRESH_MS; the rooms placed meanwhile are
   * counted here, so a burst of new rooms spreads. -1 (the hash decides) when
   * the loads cannot be read (a lost shard).
   */
  private async placeRoom(): Promise<number> {
    const stale = !this.placement || Date.now() - this.placement.at > PLACEMENT_REFRESH_MS || this.placement.loads.length < this.partitions;
    if (stale) {
      this.placementRead ??= this.readLoads()
        .then((loads) => void (this.placement = { at: Date.now(), loads }))
        .catch((err: unknown) => this.options.log.warn({ err }, 'room placement: partition loads not readable, placing by hash'))
        .finally(() => (this.placementRead = undefined));
      await this.placementRead;
    }
    const loads = this.placement?.loads;
    if (!loads || loads.length === 0) return -1;
    const p = choosePartition(loads);
    const load = loads[p];
    if (load) loads[p] = { ...load, rooms: load.rooms + 1 };
    return p;
  }

  private async readLoads(): Promise<PartitionLoad[]> {
    const count = this.partitions;
    const cluster = this.options.cluster ? (this.redis as unknown as Cluster) : undefined;
    const [entries, rooms] = await Promise.all([Promise.all(Array.from({ length: count }, (_, p) => this.redis.xlen(this.keys.feed(p)))), this.redis.hgetall(this.keys.roomCounts())]);
    return entries.map((n, p) => ({
      master: cluster ? ((cluster.slots[hashSlot(this.keys.feed(p))] as string[] | undefined)?.[0] ?? '') : '',
      entries: n,
      rooms: Number(rooms[String(p)] ?? 0),
    }));
  }

  async groupNames(partition: number): Promise<string[]> {
    this.closedCheck();
    try {
      const groups = (await this.redis.xinfo('GROUPS', this.keys.feed(partition))) as unknown[][];
      return groups.map((fields) => String(fields[fields.indexOf('name') + 1] ?? '')).filter((name) => name !== '');
    } catch (err) {
      if (err instanceof Error && /no such key/i.test(err.message)) return [];
      throw err;
    }
  }

  private closedCheck(): void {
    if (this.closed) throw new SyncgateError('SG_ERR_LOG_CLOSED');
  }

  private bucket(now = Date.now()): number {
    return Math.floor(now / this.retention.idTtlMs);
  }

  /**
   * Appends go to Redis in batches, one script call each (up to MAX_BATCH
   * events). On one Redis or Sentinel a batch takes the appends of every
   * partition: concurrent producers mostly write to different partitions,
   * and one call per partition paid the script's fixed cost for ~1.2 events
   * (issue 19, point 4). On a cluster a batch holds one key group: with
   * layout 2 the partitions p ≡ g mod 18 (their keys share one hash slot),
   * with layout 1 one partition. An idle batch queue sends as soon as the current
   * tick's appends joined, so a lone append is not delayed (a tick of
   * SPLIT_AT or more as two calls, so that Redis and the process work at the
   * same time); while a batch of the queue is on its way, new appends gather
   * for a whole event-loop turn first, so under load the batches grow by
   * themselves. Batches go out in order on one connection, so appends keep
   * their order.
   */
  append(request: AppendRequest): Promise<AppendOutcome> {
    this.closedCheck();
    return new Promise((resolve, reject) => {
      const q = this.options.cluster ? this.keys.groupOf(request.partition) : 0;
      let batch = this.pending.get(q);
      if (!batch) {
        batch = [];
        this.pending.set(q, batch);
        if ((this.sending.get(q) ?? 0) > 0) setImmediate(() => this.flushAppends(q));
        else queueMicrotask(() => this.flushAppends(q));
      }
      batch.push({ request, resolve, reject });
      if (batch.length >= MAX_BATCH) this.flushAppends(q);
    });
  }

  /** Sends the pending batch of queue `q` (a key group on a cluster, 0 for all on one Redis): in two calls when it is large and the queue idle (SPLIT_AT). */
  private flushAppends(q: number): void {
    const whole = this.pending.get(q);
    if (!whole) return;
    this.pending.delete(q);
    if (whole.length >= SPLIT_AT && (this.sending.get(q) ?? 0) === 0) {
      const half = Math.ceil(whole.length / 2);
      this.sendAppends(q, whole.slice(0, half));
      this.sendAppends(q, whole.slice(half));
      return;
    }
    this.sendAppends(q, whole);
  }

  private sendAppends(q: number, batch: PendingAppend[]): void {
    this.sending.set(q, (this.sending.get(q) ?? 0) + 1);
    const now = Date.now();
    const b = this.bucket(now);
    // Each partition's four keys and each room's two once; the events name them by their place.
    const partIndex = new Map<number, number>();
    const partKeys: string[] = [];
    const roomIndex = new Map<string, number>();
    const roomKeys: string[] = [];
    const events: unknown[] = [];
    const stored: string[] = [];
    const format = this.writeFormat;
    for (const { request } of batch) {
      const { draft, aliasFields, partition: p } = request;
      let pi = partIndex.get(p);
      if (pi === undefined) {
        pi = partIndex.size + 1;
        partIndex.set(p, pi);
        partKeys.push(this.keys.feed(p), this.keys.ids(p, b), this.keys.ids(p, b - 1), this.keys.trimMarks(p));
      }
      const roomKey = this.keys.room(p, draft.room);
      let r = roomIndex.get(roomKey);
      if (r === undefined) {
        r = roomIndex.size + 1;
        roomIndex.set(roomKey, r);
        roomKeys.push(roomKey, this.keys.roomMeta(p, draft.room));
      }
      // Format 1: the ten values as a JSON array (the script writes them as fields k … x) and a 1 in the tuple;
      // format 3: the text after the received time, which the script writes as an offset from the new id
      // (a received time past 2^53, which no clock gives, is not exact as a difference: stored as format 2).
      const tuple: unknown[] = [pi, r, draft.room, idField(request.idemField), aliasFields.map(idField)];
      if (format === 1) {
        tuple.push(1);
        stored.push(JSON.stringify(encodeValues<string>(draft)));
      } else if (format === 3 && Number.isSafeInteger(draft.ts.received)) {
        tuple.push(3, draft.ts.received);
        stored.push(encodeEventTail(draft));
      } else {
        stored.push(encodeEvent(draft));
      }
      events.push(tuple);
    }
    const done = () => this.sending.set(q, (this.sending.get(q) ?? 1) - 1);
    const batchJson = JSON.stringify(events);
    // the partitions whose id-map bucket is due an expiry: new to this process, or set a while ago
    const parts = [...partIndex.keys()];
    let expiry = '';
    for (const p of parts) {
      const set = this.idExpirySet.get(p);
      expiry += set === undefined || set.bucket !== b || now - set.at >= ID_EXPIRY_REFRESH_MS ? '1' : '0';
    }
    const args: [number, ...Array<string | number>] = [
      partKeys.length + roomKeys.length,
      ...partKeys,
      ...roomKeys,
      this.retention.roomMaxLen,
      this.retention.feedMaxLen,
      this.idTtlSec,
      expiry,
      batchJson,
      ...stored,
    ];
    const waitReplicas = this.options.waitReplicas ?? 0;
    const sent: Promise<Array<number | string>> =
      waitReplicas > 0 ? this.appendAndWait(args, waitReplicas, this.options.waitTimeoutMs ?? 2_000) : this.appender.sgAppendBatch(...args);
    sent.then(
      (reply) => {
        done();
        // after the events: the partitions whose bucket expiry the script set ('1'; it sets it only where it wrote)
        const expired = String(reply[2 * batch.length] ?? '');
        parts.forEach((p, k) => {
          if (expired.charCodeAt(k) === 49) this.idExpirySet.set(p, { bucket: b, at: now });
        });
        batch.forEach(({ resolve }, i) => {
          const status = Number(reply[2 * i]);
          const id = String(reply[2 * i + 1] ?? '');
          resolve(status === -1 ? { status: 'room-unknown' } : { status: status === 1 ? 'appended' : 'duplicate', pos: parseIdValue(id) });
        });
      },
      (err: unknown) => {
        done();
        batch.forEach(({ reject }) => reject(err));
      },
    );
  }

  /**
   * The append script, then WAIT on the same connection. A Lua script cannot
   * call WAIT, and a WAIT sent on its own would go to any node of a cluster:
   * in one pipeline it follows the script's keys to the master that ran it.
   */
  private async appendAndWait(args: Array<string | number>, replicas: number, timeoutMs: number): Promise<Array<number | string>> {
    let results: Array<[Error | null, unknown]> = [];
    for (let attempt = 0; ; attempt++) {
      const pipeline = this.appender.pipeline() as ReturnType<Redis['pipeline']> & { sgAppendBatch(...a: Array<string | number>): unknown };
      pipeline.sgAppendBatch(...args);
      pipeline.wait(replicas, timeoutMs);
      results = (await pipeline.exec()) ?? [];
      const appendErr = results[0]?.[0];
      // The pipeline went to a node that no longer owns the slot (a failover) or the cluster is
      // voting: ioredis does not redirect a pipeline whose WAIT succeeded where the script failed,
      // so refresh the slot map and send again (the script is idempotent), for up to RETRY_MS.
      if (!appendErr || !this.options.cluster || !/^(MOVED|ASK|CLUSTERDOWN|TRYAGAIN|LOADING)\b/.test(appendErr.message) || attempt * CLUSTER_RETRY_DELAY_MS >= CLUSTER_RETRY_MS || this.closed) break;
      (this.appender as unknown as Cluster).refreshSlotsCache();
      await new Promise((resolve) => setTimeout(resolve, CLUSTER_RETRY_DELAY_MS));
    }
    const [appendErr, reply] = results[0] ?? [new Error('no reply to the append script')];
    if (appendErr) throw appendErr;
    const [waitErr, acked] = results[1] ?? [new Error('no reply to WAIT')];
    if (waitErr) throw waitErr;
    if (Number(acked) < replicas) {
      throw new SyncgateError('SG_ERR_LOG_NOT_REPLICATED', `WAIT ${replicas} ${timeoutMs}: ${Number(acked)} replica(s) confirmed the append (redis.waitReplicas / redis.waitTimeoutMs)`, {
        replicas: Number(acked),
        wanted: replicas,
      });
    }
    return reply as Array<number | string>;
  }

  /** Loads the timeline entries behind feed rows: one XRANGE per room covering its rows. */
  private async withDrafts(p: number, rows: Array<{ pos: StreamPos; id: string; room: string }>): Promise<FeedEntry[]> {
    const byRoom = new Map<string, { lo: { id: string; pos: StreamPos }; hi: { id: string; pos: StreamPos } }>();
    for (const row of rows) {
      const r = byRoom.get(row.room);
      if (!r) byRoom.set(row.room, { lo: row, hi: row });
      else if (comparePos(row.pos, r.lo.pos) < 0) r.lo = row;
      else if (comparePos(row.pos, r.hi.pos) > 0) r.hi = row;
    }
    const found = new Map<string, string[]>();
    await Promise.all(
      [...byRoom].map(async ([room, range]) => {
        const entries = (await this.redis.xrange(this.keys.room(p, room), range.lo.id, range.hi.id)) as StreamReply;
        for (const [id, fields] of entries) found.set(`${room}\u0000${id}`, fields);
      }),
    );
    return rows.map((row) => new StoredEntry(row.pos, row.room, found.get(`${row.room}\u0000${row.id}`)));
  }

  private feedRows(reply: StreamReply) {
    return reply.map(([id, fields]) => ({ id, pos: parseStreamId(id), room: fields[1] ?? '' }));
  }

  async readFeed(partition: number, after: StreamPos, count: number, match: RoomFilterFn): Promise<FeedPage> {
    this.closedCheck();
    const reply = (await this.redis.xrange(this.keys.feed(partition), `(${posToString(after)}`, '+', 'COUNT', count)) as StreamReply;
    const rows = this.feedRows(reply);
    const entries = await this.withDrafts(
      partition,
      rows.filter((r) => match(r.room)),
    );
    return { entries, scannedTo: rows.at(-1)?.pos ?? after, scanned: rows.length };
  }

  async readFeedReverse(partition: number, before: StreamPos | undefined, count: number, match: RoomFilterFn): Promise<FeedPage> {
    this.closedCheck();
    const end = before === undefined ? '+' : `(${posToString(before)}`;
    const reply = (await this.redis.xrevrange(this.keys.feed(partition), end, '-', 'COUNT', count)) as StreamReply;
    const rows = this.feedRows(reply);
    const entries = await this.withDrafts(
      partition,
      rows.filter((r) => match(r.room)),
    );
    return { entries, scannedTo: rows.at(-1)?.pos ?? before ?? ZERO_POS, scanned: rows.length };
  }

  /** A new client to the same place (on a cluster: one that connects to the nodes it is sent to, lazily). */
  private duplicate(connectionName: string, extra: RedisOptions): Redis {
    if (!this.options.cluster) return this.redis.duplicate({ connectionName, ...extra });
    return openClient(this.options, { connectionName, ...extra });
  }

  /** The pool of blocking connections for live reads, made on first use (the key layout is known by then). */
  private livePool(): FeedPool {
    if (this.feedPool) return this.feedPool;
    const name = (g: number) => `${this.keys.prefix}tail:g${String(g).padStart(2, '0')}`;
    if (!this.options.cluster) {
      return (this.feedPool = new FeedPool({
        groupOf: (p) => p % FEED_POOL_SIZE,
        feedKey: (p) => this.keys.feed(p),
        connect: (g) => this.duplicate(name(g), { enableAutoPipelining: false }),
        control: () => this.redis,
      }));
    }
    // A cluster: one group per key group (its partitions share a slot), each a plain
    // connection to the master the main client's slot map names for that slot. A
    // failure (a failover, MOVED after a reshard) drops it: the next read connects to
    // the slot's master as the refreshed map names it.
    const cluster = this.redis as unknown as Cluster;
    const nodeOf = new Map<number, string>();
    return (this.feedPool = new FeedPool({
      groupOf: (p) => this.keys.groupOf(p),
      feedKey: (p) => this.keys.feed(p),
      connect: (g, partition) => {
        const slot = hashSlot(this.keys.feed(partition));
        const owner = nodeOf.get(g) ?? (cluster.slots[slot] as string[] | undefined)?.[0] ?? this.options.cluster?.nodes[0] ?? '';
        nodeOf.delete(g);
        const { host, port } = parseSeed(owner);
        const { enableAutoPipelining: _auto, ...nodeOptions } = this.options.redisOptions ?? {};
        const tls = this.options.cluster?.tls === true || this.options.cluster?.nodes.some((n) => n.startsWith('rediss://'));
        return new Redis({ ...nodeOptions, ...(tls ? { tls: { ...nodeOptions.tls } } : {}), host, port, connectionName: name(g), enableAutoPipelining: false, retryStrategy: () => null });
      },
      control: (_g, client) => {
        const key = `${client.options.host}:${client.options.port}`;
        return cluster.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === key);
      },
      dropOnError: (g, err) => {
        const moved = err instanceof Error ? /^MOVED \d+ (\S+)/.exec(err.message) : null;
        if (moved?.[1]) nodeOf.set(g, moved[1]);
        cluster.refreshSlotsCache();
      },
    }));
  }

  async waitFeed(partition: number, after: StreamPos, timeoutMs: number, count: number): Promise<FeedEntry[]> {
    this.closedCheck();
    const entries = await this.livePool().wait(partition, posToString(after), timeoutMs, count);
    this.closedCheck();
    return this.withDrafts(partition, this.feedRows(entries));
  }

  private async bounds(partition: number, key: string): Promise<StreamBounds> {
    const [first, last, mark] = await Promise.all([
      this.redis.xrange(key, '-', '+', 'COUNT', 1) as Promise<StreamReply>,
      this.redis.xrevrange(key, '+', '-', 'COUNT', 1) as Promise<StreamReply>,
      this.redis.hget(this.keys.trimMarks(partition), key),
    ]);
    const firstId = first[0]?.[0];
    const lastId = last[0]?.[0];
    return {
      first: firstId ? parseStreamId(firstId) : undefined,
      last: lastId ? parseStreamId(lastId) : undefined,
      maxDeleted: mark ? parseStreamId(mark) : ZERO_POS,
    };
  }

  feedBounds(partition: number): Promise<StreamBounds> {
    this.closedCheck();
    return this.bounds(partition, this.keys.feed(partition));
  }

  async trimmedUpTo(partition: number): Promise<StreamPos> {
    this.closedCheck();
    const mark = await this.redis.hget(this.keys.trimMarks(partition), this.keys.feed(partition));
    return mark ? parseStreamId(mark) : ZERO_POS;
  }

  async roomsTrimmedUpTo(partition: number, rooms: readonly string[]): Promise<StreamPos[]> {
    this.closedCheck();
    if (rooms.length === 0) return [];
    const marks = await this.redis.hmget(this.keys.trimMarks(partition), ...rooms.map((room) => this.keys.room(partition, room)));
    return marks.map((mark) => (mark ? parseStreamId(mark) : ZERO_POS));
  }

  roomBounds(partition: number, room: string): Promise<StreamBounds> {
    this.closedCheck();
    return this.bounds(partition, this.keys.room(partition, room));
  }

  async roomRange(partition: number, room: string, from: StreamPos | undefined, dir: 'f' | 'b', count: number): Promise<FeedEntry[]> {
    this.closedCheck();
    const key = this.keys.room(partition, room);
    const reply = (
      dir === 'f'
        ? await this.redis.xrangeBuffer(key, from ? `(${posToString(from)}` : '-', '+', 'COUNT', count)
        : await this.redis.xrevrangeBuffer(key, from ? `(${posToString(from)}` : '+', '-', 'COUNT', count)
    ) as StreamBufferReply;
    const entries: FeedEntry[] = new Array<FeedEntry>(reply.length);
    for (let i = 0; i < reply.length; i++) {
      const [id, fields] = reply[i] as [Buffer, Buffer[]];
      entries[i] = entryOfBuffers(room, id, fields);
    }
    return entries;
  }

  async lookup(partition: number, fields: readonly string[]): Promise<Array<StreamPos | undefined>> {
    this.closedCheck();
    if (fields.length === 0) return [];
    const b = this.bucket();
    const hashed = fields.map(idField);
    const [current, previous] = await Promise.all([
      this.redis.hmget(this.keys.ids(partition, b), ...hashed),
      this.redis.hmget(this.keys.ids(partition, b - 1), ...hashed),
    ]);
    return fields.map((_, i) => {
      const id = current[i] ?? previous[i];
      return id ? parseIdValue(id) : undefined;
    });
  }

  async addAliases(partition: number, pos: StreamPos, fields: readonly string[]): Promise<void> {
    this.closedCheck();
    const b = this.bucket();
    await this.redis.sgAlias(this.keys.ids(partition, b), this.keys.ids(partition, b - 1), compactId(pos), this.idTtlSec, ...fields.map(idField));
  }

  async appendTelemetry(partition: number, draft: DraftOf<'telemetry'>): Promise<string> {
    this.closedCheck();
    const key = this.keys.telemetry(partition, draft.room);
    const max = this.retention.telemetryMaxLen;
    // the log's write format, as the timelines: a replica of an older build reads telemetry too
    // (format 3's offset needs the id before the write: telemetry stays at format 2, which builds of format 3 read)
    const fields = this.writeFormat === 1 ? encodeFieldsV1(draft) : encodeFields(draft);
    const id = max > 0 ? await this.redis.xadd(key, 'MAXLEN', '~', max, '*', ...fields) : await this.redis.xadd(key, '*', ...fields);
    if (!id) throw new SyncgateError('SG_ERR_INTERNAL', 'XADD returned no id');
    return id;
  }

  async telemetry(partition: number, room: string, limit: number, page: { readonly before?: StreamPos; readonly after?: StreamPos } = {}): Promise<Array<{ id: string; draft: DraftOf<'telemetry'> }>> {
    this.closedCheck();
    const key = this.keys.telemetry(partition, room);
    const reply = (
      page.after !== undefined
        ? await this.redis.xrange(key, `(${posToString(page.after)}`, '+', 'COUNT', limit)
        : await this.redis.xrevrange(key, page.before !== undefined ? `(${posToString(page.before)}` : '+', '-', 'COUNT', limit)
    ) as StreamReply;
    return reply.map(([id, fields]) => ({ id, draft: decodeFields(room, fields, parseStreamId(id).ms) as DraftOf<'telemetry'> }));
  }

  async trimByAge(partition: number, rooms: readonly string[], cutoffMs: number): Promise<void> {
    this.closedCheck();
    const minId = `${cutoffMs}-0`;
    const marks = this.keys.trimMarks(partition);
    await Promise.all([
      this.redis.sgTrim(this.keys.feed(partition), marks, minId),
      ...rooms.map((room) => this.redis.sgTrim(this.keys.room(partition, room), marks, minId)),
      ...rooms.map((room) => this.redis.xtrim(this.keys.telemetry(partition, room), 'MINID', minId)),
    ]);
  }

  // --- outbound delivery

  private async groupEntries(partition: number, reply: Array<[string, string[] | null]>): Promise<GroupEntry[]> {
    // Entries trimmed away while pending come back with no fields: delivered as "gone".
    const rows = reply.map(([id, fields]) => ({ id, pos: parseStreamId(id), room: fields?.[1] ?? '' }));
    const present = rows.filter((r) => r.room !== '');
    const loaded = await this.withDrafts(partition, present);
    const drafts = new Map(present.map((r, i) => [r.id, loaded[i]?.draft]));
    return rows.map((r) => ({ id: r.id, pos: r.pos, room: r.room, draft: drafts.get(r.id) }));
  }

  async groupCreate(partition: number, group: string, fromStart = false): Promise<void> {
    this.closedCheck();
    try {
      await this.redis.xgroup('CREATE', this.keys.feed(partition), group, fromStart ? '0' : '$', 'MKSTREAM');
    } catch (err) {
      if (!(err instanceof Error && err.message.includes('BUSYGROUP'))) throw err;
    }
  }

  async groupRead(partition: number, group: string, consumer: string, mode: 'new' | 'pending', count: number): Promise<GroupEntry[]> {
    this.closedCheck();
    const reply = (await this.redis.xreadgroup('GROUP', group, consumer, 'COUNT', count, 'STREAMS', this.keys.feed(partition), mode === 'new' ? '>' : '0')) as Array<
      [string, Array<[string, string[] | null]>]
    > | null;
    return this.groupEntries(partition, reply?.[0]?.[1] ?? []);
  }

  async groupClaim(partition: number, group: string, consumer: string, count: number, minIdleMs: number): Promise<GroupEntry[]> {
    this.closedCheck();
    const out: GroupEntry[] = [];
    let start = '0-0';
    for (let guard = 0; guard < 1000 && out.length < count; guard++) {
      const [next, entries] = (await this.redis.xautoclaim(this.keys.feed(partition), group, consumer, minIdleMs, start, 'COUNT', Math.min(count - out.length, 500))) as [
        string,
        Array<[string, string[] | null]>,
        ...unknown[],
      ];
      out.push(...(await this.groupEntries(partition, entries)));
      if (next === '0-0') break;
      start = next;
    }
    return out;
  }

  async leaseAcquire(partition: number, group: string, owner: string, ttlMs: number, replace?: string): Promise<boolean> {
    this.closedCheck();
    const key = this.keys.lease(partition, group);
    const fence = this.keys.leaseFence(partition, group);
    return (await (replace === undefined ? this.redis.sgLease(key, fence, owner, ttlMs) : this.redis.sgLease(key, fence, owner, ttlMs, replace))) === 1;
  }

  async leaseToken(partition: number, group: string, owner: string): Promise<number | undefined> {
    this.closedCheck();
    const token = await this.redis.sgLeaseToken(this.keys.lease(partition, group), this.keys.leaseFence(partition, group), owner);
    return token === null ? undefined : Number(token);
  }

  async leaseHolder(partition: number, group: string): Promise<string | undefined> {
    this.closedCheck();
    return (await this.redis.get(this.keys.lease(partition, group))) ?? undefined;
  }

  async leaseRelease(partition: number, group: string, owner: string): Promise<void> {
    if (this.closed) return;
    await this.redis.sgRelease(this.keys.lease(partition, group), owner);
  }

  async groupAck(partition: number, group: string, owner: string, ids: readonly string[]): Promise<boolean> {
    this.closedCheck();
    if (ids.length === 0) return true;
    return (await this.redis.sgAck(this.keys.lease(partition, group), this.keys.feed(partition), owner, group, ...ids)) >= 0;
  }

  async deadLetter(partition: number, group: string, owner: string, entry: { id: string; room: string; eventId: string }, reason: string, attempts: number): Promise<boolean> {
    this.closedCheck();
    const result = await this.redis.sgDead(
      this.keys.lease(partition, group),
      this.keys.feed(partition),
      this.keys.dead(partition),
      owner,
      group,
      entry.id,
      entry.room,
      entry.eventId,
      reason.slice(0, 1000),
      attempts,
      Date.now(),
    );
    return result >= 0;
  }

  private parseDead(id: string, fields: string[]): DeadRecord {
    const f = new Map<string, string>();
    for (let i = 0; i + 1 < fields.length; i += 2) f.set(fields[i] ?? '', fields[i + 1] ?? '');
    return {
      streamId: id,
      group: f.get('g') ?? '',
      feedId: f.get('f') ?? '',
      room: f.get('r') ?? '',
      eventId: f.get('e') ?? '',
      reason: f.get('why') ?? '',
      attempts: Number(f.get('n') ?? 0),
      ts: Number(f.get('t') ?? 0),
    };
  }

  async replays(partition: number, group: string, count: number): Promise<ReplayEntry[]> {
    this.closedCheck();
    const reply = (await this.redis.xrange(this.keys.replay(partition), '-', '+', 'COUNT', 1000)) as StreamReply;
    const mine = reply.map(([id, fields]) => this.parseDead(id, fields)).filter((d) => d.group === group).slice(0, count);
    const entries = await this.withDrafts(
      partition,
      mine.map((d) => ({ id: d.feedId, pos: parseStreamId(d.feedId), room: d.room })),
    );
    return mine.map((d, i) => ({ id: d.feedId, pos: parseStreamId(d.feedId), room: d.room, draft: entries[i]?.draft, replayId: d.streamId }));
  }

  async replayDone(partition: number, group: string, owner: string, replayId: string): Promise<boolean> {
    this.closedCheck();
    return (await this.redis.sgReplayDone(this.keys.lease(partition, group), this.keys.replay(partition), owner, replayId)) >= 0;
  }

  async deadList(partition: number, limit: number): Promise<DeadRecord[]> {
    this.closedCheck();
    const reply = (await this.redis.xrange(this.keys.dead(partition), '-', '+', 'COUNT', limit)) as StreamReply;
    return reply.map(([id, fields]) => this.parseDead(id, fields));
  }

  async deadMove(partition: number, streamIds: readonly string[], mode: 'replay' | 'drop'): Promise<number> {
    this.closedCheck();
    if (streamIds.length === 0) return 0;
    return this.redis.sgDeadMove(this.keys.dead(partition), this.keys.replay(partition), mode, ...streamIds);
  }

  async pendingCount(partition: number, group: string): Promise<number> {
    this.closedCheck();
    try {
      const summary = (await this.redis.xpending(this.keys.feed(partition), group)) as [number, ...unknown[]];
      return Number(summary[0]);
    } catch (err) {
      if (err instanceof Error && err.message.includes('NOGROUP')) return 0;
      throw err;
    }
  }

  async groupLag(partition: number, group: string): Promise<GroupLag> {
    this.closedCheck();
    const key = this.keys.feed(partition);
    let groups: unknown[][];
    try {
      groups = (await this.redis.xinfo('GROUPS', key)) as unknown[][];
    } catch (err) {
      if (err instanceof Error && /no such key|NOGROUP/i.test(err.message)) return { events: 0, oldestMs: undefined };
      throw err;
    }
    const info = groups.map((g) => {
      const fields = new Map<string, unknown>();
      for (let i = 0; i + 1 < g.length; i += 2) fields.set(String(g[i]), g[i + 1]);
      return fields;
    }).find((f) => f.get('name') === group);
    if (!info) return { events: 0, oldestMs: undefined };
    const pending = Number(info.get('pending') ?? 0);
    const last = String(info.get('last-delivered-id') ?? '0-0');
    // `lag` is null when retention removed entries the group never read: count them then
    const lagField = info.get('lag');
    const [summary, next] = await Promise.all([
      pending > 0 ? (this.redis.xpending(key, group) as Promise<[number, string | null, ...unknown[]]>) : Promise.resolve(undefined),
      this.redis.xrange(key, `(${last}`, '+', 'COUNT', 1),
    ]);
    let unread = typeof lagField === 'number' ? lagField : lagField === null || lagField === undefined ? -1 : Number(lagField);
    if (unread < 0) unread = (await this.redis.xrange(key, `(${last}`, '+', 'COUNT', 100_000)).length;
    const times = [summary?.[1], unread > 0 ? next[0]?.[0] : undefined].filter((id): id is string => typeof id === 'string').map((id) => parseStreamId(id).ms);
    return { events: pending + unread, oldestMs: times.length > 0 ? Math.min(...times) : undefined };
  }

  async deadCount(partition: number): Promise<number> {
    this.closedCheck();
    return this.redis.xlen(this.keys.dead(partition));
  }

  async deliverySet(partition: number, field: string, value: string): Promise<void> {
    this.closedCheck();
    const key = this.keys.delivered(partition, this.bucket());
    await this.redis.multi().hset(key, idField(field), value).expire(key, this.idTtlSec).exec();
  }

  async deliveryGet(partition: number, field: string): Promise<string | undefined> {
    this.closedCheck();
    const b = this.bucket();
    const hashed = idField(field);
    const [current, previous] = await Promise.all([this.redis.hget(this.keys.delivered(partition, b), hashed), this.redis.hget(this.keys.delivered(partition, b - 1), hashed)]);
    return current ?? previous ?? undefined;
  }

  async deliveryGetMany(partition: number, fields: readonly string[]): Promise<Array<string | undefined>> {
    this.closedCheck();
    if (fields.length === 0) return [];
    const b = this.bucket();
    const hashed = fields.map(idField);
    const [current, previous] = await Promise.all([this.redis.hmget(this.keys.delivered(partition, b), ...hashed), this.redis.hmget(this.keys.delivered(partition, b - 1), ...hashed)]);
    return fields.map((_, i) => current[i] ?? previous[i] ?? undefined);
  }

  async ping(): Promise<void> {
    this.closedCheck();
    let timer: NodeJS.Timeout | undefined;
    try {
      // A client that cannot reach any sentinel keeps asking them without ever failing
      // its commands: the ping (the gateway's startup check) gives up on its own.
      const silence = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${PING_TIMEOUT_MS} ms${this.options.sentinel ? ' (do the sentinels answer, with redis.sentinel.password, and name the master?)' : ''}`)), PING_TIMEOUT_MS);
      });
      await Promise.race([this.redis.ping(), silence]);
    } catch (err) {
      // On a cluster PING goes to any node, possibly a master that is gone while its
      // shard's partitions are reported by unavailablePartitions(): the log answers
      // as long as one partition does.
      if (this.options.cluster && !this.closed && (await this.unavailablePartitions()).length < this.partitions) return;
      // Say which setting points where and why the connection failed, not which client option gave up.
      const why = this.redis.status === 'ready' || this.lastConnectionError === undefined ? (err instanceof Error ? err.message : String(err)) : this.lastConnectionError;
      throw new SyncgateError('SG_ERR_LOG_UNAVAILABLE', `${this.target} is not reachable: ${why}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * On a cluster, one cheap keyed command per key group (EXISTS of the feed
   * of its first partition: the group's partitions share its slot) goes to
   * the master owning that slot; the partitions of a group whose command
   * fails or does not answer within PROBE_MS are unavailable. So a check
   * costs 18 commands for a layout-2 log at any partition count (layout 1:
   * one per partition). One Redis answers for all partitions or none, which
   * ping() already says.
   */
  async unavailablePartitions(): Promise<number[]> {
    this.closedCheck();
    if (!this.options.cluster) return [];
    const firstOfGroup = new Map<number, number>();
    for (let p = 0; p < this.partitions; p++) if (!firstOfGroup.has(this.keys.groupOf(p))) firstOfGroup.set(this.keys.groupOf(p), p);
    const reachable = new Map<number, boolean>();
    await Promise.all(
      [...firstOfGroup].map(async ([group, p]) => {
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), PROBE_MS)));
        const probe = this.redis.exists(this.keys.feed(p)).then(
          () => true,
          () => false,
        );
        reachable.set(group, await Promise.race([probe, late]).finally(() => clearTimeout(timer)));
      }),
    );
    return Array.from({ length: this.partitions }, (_, p) => p).filter((p) => reachable.get(this.keys.groupOf(p)) !== true);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.feedPool?.close();
    this.rooms.close();
    // QUIT waits for a reply: a connection that is away is dropped instead (its queued commands fail).
    await Promise.all([this.redis, this.appender].map((client) => (client.status === 'ready' ? client.quit().catch(() => client.disconnect()) : client.disconnect())));
  }
}
