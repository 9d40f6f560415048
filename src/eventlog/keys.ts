/**
 * Every Redis key name syncgate uses, in one place (docs/architecture.md, "Redis layout").
 *
 * The keys of a partition share one hash tag, so one Lua script can touch
 * them atomically, also in Redis Cluster. How partitions map to tags is the
 * log's key layout, stored with its partition count and fixed for the log's
 * life:
 *
 * - layout 1 (logs created before layout 2, and logs with no stored layout):
 *   each partition its own tag `{p:NN}`, so its own hash slot; the log's meta
 *   hash is `<prefix>{log}:partitions`, as builds before layout 2 read it;
 * - layout 2 (every new log): partition p belongs to key group p mod G (G
 *   the log's group count, stored as `groups`, 18 when absent), and the
 *   groups' tags (groupTags) hash to G evenly spaced slots, so one blocking
 *   XREAD (one slot) covers all partitions of a group, and any even split of
 *   the slot space over masters gets an even share of the groups. Keys are
 *   `<prefix>{<group tag>}:pNN:…`; a delivery lease is one per group. The
 *   meta hash is `<prefix>{log}:meta`, and `<prefix>{log}:partitions` holds a
 *   string (LAYOUT_FENCE): a build from before layout 2 reads that key as a
 *   hash first thing at start, gets WRONGTYPE and stops, instead of writing
 *   under layout 1's names beside the log.
 */
import { SyncgateError } from '../core/errors.js';

const PREFIX = /^[A-Za-z0-9:_.-]{0,64}$/;

export type KeyLayout = 1 | 2;
/** the layout a new log is created with */
export const LATEST_KEY_LAYOUT: KeyLayout = 2;
/**
 * Key groups of a layout-2 log unless chosen otherwise at its creation
 * (`redis.keyGroups`). A process holds one blocking connection per group
 * on a cluster, so this bounds its connections (18 + main, append, rate
 * limit and room watch ≤ 32 on 3 masters), and 18 divides evenly over 2, 3,
 * 6 and 9 masters (4: 5/5/4/4). A log spreads over at most as many masters
 * as it has groups.
 */
export const KEY_GROUPS = 18;
/** the most key groups a log may be created with (a replica holds one blocking connection per group on a cluster) */
export const MAX_KEY_GROUPS = 256;

/**
 * What a layout-2 log keeps at `<prefix>{log}:partitions`, the key builds
 * from before layout 2 read as their meta hash: a string, so they fail there
 * (WRONGTYPE) and an operator who looks finds why.
 */
export const LAYOUT_FENCE = 'syncgate: this log uses key layout 2 (meta in {log}:meta); a syncgate build from before key layout 2 cannot run on it — upgrade that replica';

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

/**
 * A layout as stored: absent (a log from before the layout was stored) is 1.
 * A layout this build does not know is refused: its keys are elsewhere, so
 * running would write beside the log, not in it.
 */
export function toKeyLayout(value: string | number | null | undefined): KeyLayout {
  const layout = Number(value ?? 1);
  if (layout === 1 || layout === 2) return layout;
  throw new SyncgateError('SG_ERR_LOG_TOO_NEW', `this log uses key layout ${String(value)}; this build knows layouts 1 and ${LATEST_KEY_LAYOUT}: run a newer syncgate`, { layout: String(value) });
}

/** A group count as stored: absent (a layout-2 log from before the count was stored) is 18. */
export function toKeyGroups(value: string | number | null | undefined): number {
  const groups = Number(value ?? KEY_GROUPS);
  if (!Number.isInteger(groups) || groups < 1 || groups > MAX_KEY_GROUPS) {
    throw new SyncgateError('SG_ERR_LOG_TOO_NEW', `this log has ${String(value)} key groups; this build knows 1 to ${MAX_KEY_GROUPS}: run a newer syncgate`, { groups: String(value) });
  }
  return groups;
}

/**
 * The key group of a partition: partitions of one group share a hash slot
 * (layout 2: p mod the log's group count; layout 1: every partition is a
 * group of its own).
 */
export function keyGroupOf(layout: KeyLayout, partition: number, groups = KEY_GROUPS): number {
  return layout === 1 ? partition : partition % groups;
}

/**
 * The positions 0 … n-1 of n evenly spaced slots in the order their groups
 * use them: each next one as far as can be from those before (ties: the
 * lowest), so the first groups of a log with fewer partitions than groups
 * spread over the slot space too.
 */
function spreadOrder(n: number): number[] {
  const order = [0];
  const taken = new Set(order);
  while (order.length < n) {
    let best = -1;
    let bestGap = -1;
    for (let k = 0; k < n; k++) {
      if (taken.has(k)) continue;
      let gap = n;
      for (const t of order) gap = Math.min(gap, Math.abs(k - t), n - Math.abs(k - t));
      if (gap > bestGap) [best, bestGap] = [k, gap];
    }
    order.push(best);
    taken.add(best);
  }
  return order;
}

/** CRC16 (XMODEM) mod 16384 of an ASCII tag */
function tagSlot(tag: string): number {
  let crc = 0;
  for (let i = 0; i < tag.length; i++) {
    crc ^= tag.charCodeAt(i) << 8;
    for (let b = 0; b < 8; b++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

const tagsByCount = new Map<number, readonly string[]>([[KEY_GROUPS, GROUP_TAGS]]);

/**
 * The hash tags of a layout-2 log with `count` key groups: 18 groups use
 * GROUP_TAGS; any other count gets, for group g, the first of `g0`, `g1`, …
 * (base 36) that hashes to slot floor((k + 0.5) × 16384 / count), k the g-th
 * of spreadOrder(count). Stored logs depend on these names: this derivation
 * never changes (test/unit/eventlog-keys.test.ts pins some).
 */
export function groupTags(count: number): readonly string[] {
  const known = tagsByCount.get(count);
  if (known) return known;
  const order = spreadOrder(count);
  const wanted = new Map<number, number>(order.map((k, g) => [Math.floor(((k + 0.5) * 16384) / count), g]));
  const tags = new Array<string>(count);
  let left = count;
  for (let i = 0; left > 0; i++) {
    const tag = `g${i.toString(36)}`;
    const g = wanted.get(tagSlot(tag));
    if (g === undefined || tags[g] !== undefined) continue;
    tags[g] = tag;
    left--;
  }
  tagsByCount.set(count, tags);
  return tags;
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
  /** layout 2: the log's key groups (18 until the log is opened) */
  readonly groups: number;
  /** set once the stored layout (and layout 2's group count) is known, when the log is opened */
  setLayout(layout: KeyLayout, groups?: number): void;
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
  /**
   * hash: `partitions` = the stored partition count, `format`, `layout`,
   * `groups` (shares its slot with the directory): layout 1
   * `<prefix>{log}:partitions`, layout 2 `<prefix>{log}:meta`
   */
  partitionMeta(): string;
  /** layout 1's meta hash; in a layout-2 log the fence string (LAYOUT_FENCE) */
  legacyMeta(): string;
  /** layout 2's meta hash, whatever the layout set */
  layoutMeta(): string;
  /** hash: room → partition; an entry is never removed, so a room never moves */
  roomPartitions(): string;
  /** hash: partition → rooms placed in it (since this count was kept: balanced placement's tie-breaker) */
  roomCounts(): string;
  roomChannel(): string;
  state(ns: string): string;
}

export function keySpace(prefix: string, initial: KeyLayout = 1): KeySpace {
  if (!PREFIX.test(prefix)) throw new SyncgateError('SG_ERR_CONFIG_INVALID', `redis key prefix ${JSON.stringify(prefix)} may only use A-Z a-z 0-9 : _ . -`);
  let layout: KeyLayout = initial;
  let groups = KEY_GROUPS;
  let tags = GROUP_TAGS;
  const groupTag = (p: number) => `${prefix}{${tags[p % groups] ?? ''}}`;
  const tag = (p: number) => (layout === 1 ? `${prefix}{p:${String(p).padStart(2, '0')}}` : `${groupTag(p)}:p${String(p).padStart(2, '0')}`);
  return {
    prefix,
    get layout() {
      return layout;
    },
    get groups() {
      return groups;
    },
    setLayout(next, count = KEY_GROUPS) {
      layout = next;
      groups = count;
      tags = groupTags(count);
    },
    groupOf: (p) => keyGroupOf(layout, p, groups),
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
    partitionMeta: () => (layout === 1 ? `${prefix}{log}:partitions` : `${prefix}{log}:meta`),
    legacyMeta: () => `${prefix}{log}:partitions`,
    layoutMeta: () => `${prefix}{log}:meta`,
    roomPartitions: () => `${prefix}{log}:room-partition`,
    roomCounts: () => `${prefix}{log}:partition-rooms`,
    roomChannel: () => `${prefix}rooms:changed`,
    state: (ns) => `${prefix}state:${ns}`,
  };
}
