/**
 * Every Redis key name syncgate uses, in one place (docs/architecture.md, "Redis layout").
 * Keys of a partition share the hash tag `{p:NN}` so one Lua script can touch
 * them atomically, also in Redis Cluster.
 */
import { SyncgateError } from '../core/errors.js';

const PREFIX = /^[A-Za-z0-9:_.-]{0,64}$/;

export interface KeySpace {
  readonly prefix: string;
  partitionTag(partition: number): string;
  feed(partition: number): string;
  room(partition: number, room: string): string;
  roomMeta(partition: number, room: string): string;
  ids(partition: number, bucket: number): string;
  trimMarks(partition: number): string;
  lease(partition: number, group: string): string;
  dead(partition: number): string;
  replay(partition: number): string;
  delivered(partition: number, bucket: number): string;
  telemetry(partition: number, room: string): string;
  roomIndex(): string;
  /** hash: `partitions` = the stored partition count (shares its slot with the directory) */
  partitionMeta(): string;
  /** hash: room → partition; an entry is never removed, so a room never moves */
  roomPartitions(): string;
  roomChannel(): string;
  state(ns: string): string;
}

export function keySpace(prefix: string): KeySpace {
  if (!PREFIX.test(prefix)) throw new SyncgateError('SG_ERR_CONFIG_INVALID', `redis key prefix ${JSON.stringify(prefix)} may only use A-Z a-z 0-9 : _ . -`);
  const tag = (p: number) => `${prefix}{p:${String(p).padStart(2, '0')}}`;
  return {
    prefix,
    partitionTag: tag,
    feed: (p) => `${tag(p)}:feed`,
    room: (p, room) => `${tag(p)}:room:${room}`,
    roomMeta: (p, room) => `${tag(p)}:meta:${room}`,
    ids: (p, bucket) => `${tag(p)}:ids:${bucket}`,
    trimMarks: (p) => `${tag(p)}:trimmed`,
    lease: (p, group) => `${tag(p)}:lease:${group}`,
    dead: (p) => `${tag(p)}:dlq`,
    replay: (p) => `${tag(p)}:replay`,
    delivered: (p, bucket) => `${tag(p)}:out:${bucket}`,
    telemetry: (p, room) => `${tag(p)}:tel:${room}`,
    roomIndex: () => `${prefix}rooms`,
    partitionMeta: () => `${prefix}{log}:partitions`,
    roomPartitions: () => `${prefix}{log}:room-partition`,
    roomChannel: () => `${prefix}rooms:changed`,
    state: (ns) => `${prefix}state:${ns}`,
  };
}
