/**
 * Builds the configured EventLog. Only src/runtime and tests call this.
 */
import type { Logger } from 'pino';
import type { EventLog } from '../core/ports.js';
import type { RetentionPolicy } from './backend.js';
import { MemoryBackend } from './memory-backend.js';
import { PartitionedLog } from './partitioned-log.js';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { RedisBackend, parseSeed, sentinelOptions, type RedisSentinelTarget } from './redis-backend.js';
import { guardPartitions } from './partition-guard.js';

export type { RetentionPolicy } from './backend.js';
export { MAX_READ_LIMIT } from './partitioned-log.js';

export const DEFAULT_RETENTION: RetentionPolicy = Object.freeze({
  roomMaxLen: 100_000,
  feedMaxLen: 0,
  maxAgeMs: 0,
  idTtlMs: 30 * 24 * 3600 * 1000,
  telemetryMaxLen: 10_000,
});

export interface EventLogOptions {
  readonly partitions: number;
  readonly retention?: Partial<RetentionPolicy>;
  readonly log: Logger;
  /** absent: the embedded in-memory log */
  readonly redis?: {
    /** one Redis; or `cluster` */
    readonly url?: string | undefined;
    readonly cluster?: { readonly nodes: readonly string[]; readonly tls?: boolean | undefined } | undefined;
    /** or Redis Sentinel */
    readonly sentinel?: SentinelTarget | undefined;
    readonly prefix: string;
    readonly password?: string | undefined;
    /** acknowledge an append only once WAIT reports this many replicas (default 0) */
    readonly waitReplicas?: number | undefined;
    readonly waitTimeoutMs?: number | undefined;
    /** key groups of a log created now (keys.ts; default 18) */
    readonly keyGroups?: number | undefined;
    /** where new rooms go (room-placement.ts; default balanced on a cluster, hash otherwise) */
    readonly roomPlacement?: 'hash' | 'balanced' | undefined;
  };
  readonly tailBuffer?: number;
  readonly blockMs?: number;
  /** memory only: open a log over this store (from `createMemoryStore`) instead of a new one, as another replica would */
  readonly memoryStore?: MemoryStore;
  /** Redis only: told of each command's name, seconds and failure (metrics) */
  readonly onRedisCommand?: (command: string, seconds: number, failed: boolean) => void;
}

/** An in-memory store several logs can open, as replicas share one Redis (tests). */
export interface MemoryStore {
  readonly backend: MemoryBackend;
}

/** `beforeFormatGate` (tests): the store as a build before the write-format gate left it (a log writing format 1) */
export function createMemoryStore(options: { readonly partitions: number; readonly retention?: Partial<RetentionPolicy>; readonly beforeFormatGate?: boolean }): MemoryStore {
  return {
    backend: new MemoryBackend({ partitions: options.partitions, retention: { ...DEFAULT_RETENTION, ...options.retention }, ...(options.beforeFormatGate ? { beforeFormatGate: true } : {}) }),
  };
}

export function createEventLog(options: EventLogOptions): EventLog {
  const retention = { ...DEFAULT_RETENTION, ...options.retention };
  const log = options.log;
  const redis = options.redis
    ? new RedisBackend({
        ...(options.redis.url !== undefined ? { url: options.redis.url } : {}),
        ...(options.redis.cluster ? { cluster: { nodes: options.redis.cluster.nodes, tls: options.redis.cluster.tls === true } } : {}),
        ...(options.redis.sentinel ? { sentinel: sentinelTarget(options.redis.sentinel) } : {}),
        prefix: options.redis.prefix,
        waitReplicas: options.redis.waitReplicas ?? 0,
        waitTimeoutMs: options.redis.waitTimeoutMs ?? 2_000,
        ...(options.redis.keyGroups !== undefined ? { keyGroups: options.redis.keyGroups } : {}),
        ...(options.redis.roomPlacement !== undefined ? { roomPlacement: options.redis.roomPlacement } : {}),
        partitions: options.partitions,
        retention,
        log,
        ...(options.redis.password ? { redisOptions: { password: options.redis.password } } : {}),
        ...(options.onRedisCommand ? { onCommand: options.onRedisCommand } : {}),
      })
    : undefined;
  // On a cluster one shard can be lost while the others serve: its partitions' failures get a code.
  const backend = redis
    ? options.redis?.cluster
      ? guardPartitions(redis)
      : redis
    : (options.memoryStore?.backend ?? new MemoryBackend({ partitions: options.partitions, retention })).attach();
  const tuning = {
    ...(options.tailBuffer !== undefined ? { tailBuffer: options.tailBuffer } : {}),
    ...(options.blockMs !== undefined ? { blockMs: options.blockMs } : {}),
  };
  return new PartitionedLog({ backend, partitions: options.partitions, retention, log, ...tuning });
}

/** Redis Sentinel as the config gives it */
export interface SentinelTarget {
  readonly nodes: readonly string[];
  readonly name: string;
  readonly password?: string | undefined;
  readonly tls?: boolean | undefined;
}

function sentinelTarget(given: SentinelTarget): RedisSentinelTarget {
  return { nodes: given.nodes, name: given.name, tls: given.tls === true, ...(given.password !== undefined ? { password: given.password } : {}) };
}

/** A Redis connection for a counter shared by the replicas (the HTTP rate limit); opaque outside src/eventlog. */
export interface SharedCounterStore {
  /** an ioredis client, as @fastify/rate-limit takes it */
  readonly client: unknown;
  /** the key prefix of the counters */
  readonly nameSpace: string;
  close(): Promise<void>;
}

export function createSharedCounterStore(options: {
  /** one Redis, or the `cluster` seed nodes (as for the log) */
  readonly url?: string | undefined;
  readonly cluster?: { readonly nodes: readonly string[]; readonly tls?: boolean | undefined } | undefined;
  readonly sentinel?: SentinelTarget | undefined;
  readonly prefix: string;
  readonly password?: string | undefined;
  readonly log: Logger;
}): SharedCounterStore {
  const redisOptions: RedisOptions = {
    connectionName: `${options.prefix}ratelimit`,
    ...(options.password !== undefined ? { password: options.password } : {}),
    // a request is not held up by a lost connection: the API's log check answers 503 then
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
  };
  const { cluster } = options;
  const client: Redis | Cluster = options.sentinel
    ? new Redis(sentinelOptions(sentinelTarget(options.sentinel), redisOptions))
    : cluster
    ? new Cluster(
        cluster.nodes.map(parseSeed),
        { redisOptions: { ...redisOptions, ...(cluster.tls === true || cluster.nodes.some((n) => n.startsWith('rediss://')) ? { tls: {} } : {}) } },
      )
    : new Redis(options.url ?? '', redisOptions);
  client.on('error', (err: Error) => options.log.debug({ err: err.message }, 'rate-limit redis connection error'));
  return {
    client,
    nameSpace: `${options.prefix}ratelimit:`,
    close: async () => {
      await client.quit().catch(() => client.disconnect());
    },
  };
}
