/**
 * Every Redis key name syncgate uses, in one place (docs/architecture.md, "Redis layout").
 *
 * The keys of a partition share one hash tag, so one Lua script can touch
 * them atomically, also in Redis Cluster. How partitions map to tags is the
 * log's key layout, stored with its partition count (`layout` in
 * `<prefix>{log}:partitions`) and fixed for the log's life:
 *
 * - layout 1 (logs created before layout 2, and logs with no stored layout):
 *   each partition its own tag `{p:NN}`, so its own hash slot;
 * - layout 2 (every new log): partition p belongs to key group p mod 18, and
 *   the 18 groups' tags (GROUP_TAGS) hash to 18 evenly spaced slots, so one
 *   blocking XREAD (one slot) covers all partitions of a group, and any even
 *   split of the slot space over masters gets an even share of the groups.
 *   Keys are `<prefix>{<group tag>}:pNN:…`; a delivery lease is one per group.
 */
import { SyncgateError } from '../core/errors.js';

const PREFIX = /^[A-Za-z0-9:_.-]{0,64}$/;

export type KeyLayout = 1 | 2;
/** the layout a new log is created with */
export const LATEST_KEY_LAYOUT: KeyLayout = 2;
/** key groups of layout 2 */
/**
 * Key groups of layout 2. A process holds one blocking connection per group
 * on a cluster, so this bounds its connections (18 + main, append, rate
 * limit and room watch ≤ 32 on 3 masters), and 18 divides evenly over 2, 3,
 * 6 and 9 masters (4: 5/5/4/4).
 */
export const KEY_GROUPS = 18;

/**
 * The hash tags of layout 2's key groups. Group g's tag hashes to slot
 * floor((k + 0.5) × 16384 / 18) where k = GROUP_ORDER[g] (found by search,
 * checked by test/unit/eventlog-keys.test.ts): the slots are evenly spaced,
 * and the order interleaves them so that the first n groups (a log with
 * fewer than 18 partitions uses groups 0 … n-1) split over 2, 3, 4, 6 or 9
 * equal slot ranges differ by at most one group between ranges.
 */
export const GROUP_TAGS: readonly string[] = ['med', '6s', 'nrv', '17p', 'qjc', 'bj5', 'fbf', '9ch', 'skd', '0em', '5ab', '52', '3kw', 'dca', 'xlf', '6ox', 'zma', 'im7'];
/** the position of each group's slot among the 18 evenly spaced ones */
export const GROUP_ORDER: readonly number[] = [0, 9, 13, 4, 6, 15, 2, 11, 16, 3, 7, 12, 1, 10, 14, 5, 8, 17];

/** a layout as stored: absent (a log from before the layout was stored) is 1 */
export function toKeyLayout(value: string | number | null | undefined): KeyLayout {
  return Number(value ?? 1) >= 2 ? 2 : 1;
}

/**
 * The key group of a partition: partitions of one group share a hash slot
 * (layout 2: p mod 18; layout 1: every partition is a group of its own).
 */
export function keyGroupOf(layout: KeyLayout, partition: number): number {
  return layout === 1 ? partition : partition % KEY_GROUPS;
}

/** CRC16 (XMODEM) mod 16384 of the key's hash tag (or whole key), as Redis Cluster places keys */
export function hashSlot(key: string): number {
  const open = key.indexOf('{');
  let hashed = key;
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) hashed = key.slice(open + 1, close);
  }
  let crc = 0;
  for (const byte of Buffer.from(hashed)) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

export interface KeySpace {
  readonly prefix: string;
  /** the layout the names below follow (1 until the log is opened) */
  readonly layout: KeyLayout;
  /** set once the stored layout is known (when the log is opened) */
  setLayout(layout: KeyLayout): void;
  /** the partition's key group (partitions of a group share a hash slot) */
  groupOf(partition: number): number;
  partitionTag(partition: number): string;
  feed(partition: number): string;
  room(partition: number, room: string): string;
  roomMeta(partition: number, room: string): string;
  ids(partition: number, bucket: number): string;
  trimMarks(partition: number): string;
  /** layout 2: one lease per key group (every partition of the group names the same key) */
  lease(partition: number, group: string): string;
  /** the lease's fencing token (same slot as the lease): grows each time the lease is taken */
  leaseFence(partition: number, group: string): string;
  dead(partition: number): string;
  replay(partition: number): string;
  delivered(partition: number, bucket: number): string;
  telemetry(partition: number, room: string): string;
  roomIndex(): string;
  /** hash: `partitions` = the stored partition count, `format`, `layout` (shares its slot with the directory) */
  partitionMeta(): string;
  /** hash: room → partition; an entry is never removed, so a room never moves */
  roomPartitions(): string;
  roomChannel(): string;
  state(ns: string): string;
}

export function keySpace(prefix: string, initial: KeyLayout = 1): KeySpace {
  if (!PREFIX.test(prefix)) throw new SyncgateError('SG_ERR_CONFIG_INVALID', `redis key prefix ${JSON.stringify(prefix)} may only use A-Z a-z 0-9 : _ . -`);
  let layout: KeyLayout = initial;
  const groupTag = (p: number) => `${prefix}{${GROUP_TAGS[p % KEY_GROUPS] ?? ''}}`;
  const tag = (p: number) => (layout === 1 ? `${prefix}{p:${String(p).padStart(2, '0')}}` : `${groupTag(p)}:p${String(p).padStart(2, '0')}`);
  return {
    prefix,
    get layout() {
      return layout;
    },
    setLayout(next) {
      layout = next;
    },
    groupOf: (p) => keyGroupOf(layout, p),
    partitionTag: tag,
    feed: (p) => `${tag(p)}:feed`,
    room: (p, room) => `${tag(p)}:room:${room}`,
    roomMeta: (p, room) => `${tag(p)}:meta:${room}`,
    ids: (p, bucket) => `${tag(p)}:ids:${bucket}`,
    trimMarks: (p) => `${tag(p)}:trimmed`,
    lease: (p, group) => (layout === 1 ? `${tag(p)}:lease:${group}` : `${groupTag(p)}:lease:${group}`),
    leaseFence: (p, group) => (layout === 1 ? `${tag(p)}:fence:${group}` : `${groupTag(p)}:fence:${group}`),
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
