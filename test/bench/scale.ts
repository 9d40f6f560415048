/**
 * A scale simulation (issue 24): a synthetic deployment — 1M devices, 100k
 * rooms, room popularity Zipf-distributed (s = 1: a few huge rooms, a long
 * tail of small ones), rooms per device skewed (most in a handful, some in
 * 100+) — and, at 16 / 256 / 1,024 partitions:
 *
 * - sync cursor size per device (p50/p99/max), computed for every device
 *   from its rooms' partitions, with positions as a busy log has them (each
 *   partition's last position within the last minute);
 * - how evenly the partitions' hash slots fall on the 3 masters of the local
 *   cluster (max/min), with key layout 1 (a slot per partition, logs created
 *   before layout 2) and layout 2 (18 key groups on evenly spaced slots);
 * - what placing rooms by the room directory would give against hash
 *   placement — each new room to the master with the fewest rooms, or to the
 *   master whose rooms carry the least traffic so far (what balanced
 *   placement, room-placement.ts, does) —: rooms and traffic (Zipf weight)
 *   per master;
 * - append and catch-up throughput on 1 master (the run's Redis) and on the
 *   3 masters of the local cluster, with the operations each master served
 *   (max/min), on a sample of the rooms (rooms drawn by popularity), on the
 *   cluster with the default room placement (balanced on a cluster) and
 *   with hash placement;
 *   catch-up per device is the median time for sampled devices to sync all
 *   their rooms from the start.
 *
 * What a two-core machine cannot show: the cluster's masters share the two
 * cores with the benchmark, so 3 masters give no more throughput than 1 here;
 * the figures that carry over are the ratios (16 vs 1,024 partitions on the
 * same target, operations per master) and the cursor sizes, which do not
 * depend on the machine.
 */
import { performance } from 'node:perf_hooks';
import { encodeSyncCursor } from '../../src/core/cursor.js';
import type { EventLog } from '../../src/core/ports.js';
import { partitionOf, type StreamPos } from '../../src/core/position.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { KEY_GROUPS, hashSlot, keySpace, type KeyLayout } from '../../src/eventlog/keys.js';
import { silentLogger } from '../../src/log/index.js';
import { testPrefix } from '../harness/redis.js';
import { nodeCommand, startRedisCluster, type TestRedisCluster } from '../harness/redis-cluster.js';
import { legacyVectorCursor } from '../fixtures/legacy-cursor.js';
import { benchMessage } from './eventlog.js';
import { percentile, type Bench, type BenchRow } from './report.js';

/** A small deterministic PRNG (mulberry32): the same deployment on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

interface Deployment {
  readonly rooms: number;
  /** each device's rooms (room indexes) */
  readonly devices: Uint32Array[];
  readonly memberships: number;
  readonly largestRoom: number;
  /** draws a room index by popularity */
  readonly drawRoom: () => number;
}

/** rooms by Zipf popularity (s = 1); rooms per device 1 + a Pareto tail (α = 1.2), at most 200 */
export function synthesize(devices: number, rooms: number, seed: number): Deployment {
  const random = prng(seed);
  const cumulative = new Float64Array(rooms);
  let sum = 0;
  for (let r = 0; r < rooms; r++) cumulative[r] = sum += 1 / (r + 1);
  const drawRoom = () => {
    const x = random() * sum;
    let lo = 0;
    let hi = rooms - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((cumulative[mid] ?? 0) < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  const size = new Uint32Array(rooms);
  const out: Uint32Array[] = [];
  let memberships = 0;
  for (let d = 0; d < devices; d++) {
    const k = Math.min(200, Math.floor(1 / Math.pow(1 - random(), 1 / 1.2)));
    const mine = new Set<number>();
    for (let guard = 0; mine.size < k && guard < k * 4; guard++) mine.add(drawRoom());
    const list = Uint32Array.from(mine);
    for (const r of list) size[r] = (size[r] ?? 0) + 1;
    memberships += list.length;
    out.push(list);
  }
  return { rooms, devices: out, memberships, largestRoom: size.reduce((a, b) => Math.max(a, b), 0), drawRoom };
}

const roomName = (r: number) => `room${r}`;

/** cursor characters per device at `partitions`, positions within the last minute (a busy log) */
function cursorSizes(deployment: Deployment, partitions: number, seed: number): number[] {
  const random = prng(seed);
  const now = 1_795_000_000_000;
  const head: StreamPos[] = Array.from({ length: partitions }, () => ({ ms: now - Math.floor(random() * 60_000), seq: random() < 0.3 ? Math.floor(random() * 20) : 0 }));
  const partitionOfRoom = new Uint16Array(deployment.rooms);
  for (let r = 0; r < deployment.rooms; r++) partitionOfRoom[r] = partitionOf(roomName(r), partitions);
  const sizes = deployment.devices.map((rooms) => {
    const cursor = new Map<number, StreamPos>();
    for (const r of rooms) {
      const p = partitionOfRoom[r] ?? 0;
      cursor.set(p, head[p] ?? { ms: now, seq: 0 });
    }
    return encodeSyncCursor(cursor).length;
  });
  return sizes.sort((a, b) => a - b);
}

function cursorSizesUpTo(deployment: Deployment, partitions: number, seed: number, maxRooms: number): number[] {
  return cursorSizes({ ...deployment, devices: deployment.devices.filter((d) => d.length <= maxRooms) }, partitions, seed);
}

function cursorSizesExactly(deployment: Deployment, partitions: number, seed: number, rooms: number): number[] {
  return cursorSizes({ ...deployment, devices: deployment.devices.filter((d) => d.length === rooms) }, partitions, seed);
}

/** the slot of partition p's keys in a key layout (keys.ts) */
const partitionSlot = (layout: KeyLayout, p: number) => hashSlot(keySpace('sg:', layout).feed(p));

interface Master {
  readonly port: number;
  readonly ranges: Array<[number, number]>;
}

async function mastersOf(cluster: TestRedisCluster): Promise<Master[]> {
  const first = cluster.nodes[0] ?? '';
  const port = Number(first.slice(first.lastIndexOf(':') + 1));
  const slots = (await nodeCommand(port, 'CLUSTER', 'SLOTS')) as Array<[number, number, [string, number, ...unknown[]], ...unknown[]]>;
  const byPort = new Map<number, Master>();
  for (const [from, to, [, masterPort]] of slots) {
    const m = byPort.get(masterPort) ?? { port: masterPort, ranges: [] };
    m.ranges.push([from, to]);
    byPort.set(masterPort, m);
  }
  return [...byPort.values()];
}

function spread(counts: readonly number[]): number {
  return Math.max(...counts) / Math.max(1e-9, Math.min(...counts));
}

const masterOfSlot = (masters: readonly Master[], slot: number) => masters.findIndex((m) => m.ranges.some(([a, b]) => slot >= a && slot <= b));

/**
 * Rooms and traffic per master when rooms are placed by hash (fnv1a32 mod
 * the count, what the directory records today) and when the directory would
 * place each new room (rooms created in a random order) on the master with
 * the fewest rooms, in its partition there with the fewest. Traffic is the
 * room's Zipf weight (its popularity, what its appends follow).
 */
export function directoryPlacement(deployment: Deployment, partitions: number, masters: readonly Master[], seed: number): { hashRooms: number[]; hashWeight: number[]; dirRooms: number[]; dirWeight: number[]; loadRooms: number[]; loadWeight: number[] } {
  const random = prng(seed);
  const masterOf = Array.from({ length: partitions }, (_, p) => masterOfSlot(masters, partitionSlot(2, p)));
  const hashRooms = masters.map(() => 0);
  const hashWeight = masters.map(() => 0);
  const dirRooms = masters.map(() => 0);
  const dirWeight = masters.map(() => 0);
  const loadRooms = masters.map(() => 0);
  const loadWeight = masters.map(() => 0);
  const partitionRooms = new Uint32Array(partitions);
  const partitionLoad = new Float64Array(partitions);
  const byMaster = masters.map((_, m) => masterOf.flatMap((owner, p) => (owner === m ? [p] : [])));
  const order = Array.from({ length: deployment.rooms }, (_, r) => r);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j] ?? 0, order[i] ?? 0];
  }
  for (const r of order) {
    const weight = 1 / (r + 1);
    const h = masterOf[partitionOf(roomName(r), partitions)] ?? 0;
    hashRooms[h] = (hashRooms[h] ?? 0) + 1;
    hashWeight[h] = (hashWeight[h] ?? 0) + weight;
    let m = 0;
    for (let k = 1; k < masters.length; k++) if ((dirRooms[k] ?? 0) < (dirRooms[m] ?? 0)) m = k;
    const candidates = byMaster[m] ?? [];
    let best = candidates[0] ?? 0;
    for (const p of candidates) if ((partitionRooms[p] ?? 0) < (partitionRooms[best] ?? 0)) best = p;
    partitionRooms[best] = (partitionRooms[best] ?? 0) + 1;
    dirRooms[m] = (dirRooms[m] ?? 0) + 1;
    dirWeight[m] = (dirWeight[m] ?? 0) + weight;
    // by observed traffic: the master whose rooms carry the least traffic so far (their
    // appends, once running), in it the partition with the least; the new room's own
    // traffic is not known when it is placed
    let l = 0;
    for (let k = 1; k < masters.length; k++) if ((loadWeight[k] ?? 0) < (loadWeight[l] ?? 0)) l = k;
    const mine = byMaster[l] ?? [];
    let lightest = mine[0] ?? 0;
    for (const p of mine) if ((partitionLoad[p] ?? 0) < (partitionLoad[lightest] ?? 0)) lightest = p;
    partitionLoad[lightest] = (partitionLoad[lightest] ?? 0) + weight;
    loadRooms[l] = (loadRooms[l] ?? 0) + 1;
    loadWeight[l] = (loadWeight[l] ?? 0) + weight;
  }
  return { hashRooms, hashWeight, dirRooms, dirWeight, loadRooms, loadWeight };
}

async function commandCalls(port: number): Promise<number> {
  const text = String(await nodeCommand(port, 'INFO', 'commandstats'));
  let calls = 0;
  for (const m of text.matchAll(/calls=(\d+)/g)) calls += Number(m[1]);
  return calls;
}

type Target = { readonly url: string } | { readonly cluster: { readonly nodes: readonly string[] } };
type Placement = 'hash' | 'balanced';

interface RunResult {
  readonly appendRate: number;
  readonly catchUpRate: number;
  readonly catchUpMsP50: number;
  readonly opsPerMaster: number[];
  /** commands the catch-up sent per page read (the client's count) */
  readonly commandsPerPage: number;
}

/** appends `total` events to rooms drawn by popularity, then syncs sampled devices from the start */
/** `roomPlacement` absent: the default of the target (balanced on a cluster, hash on one Redis) */
async function runAt(target: Target, partitions: number, deployment: Deployment, sample: { rooms: number[]; devices: Uint32Array[] }, total: number, masters: Master[], roomPlacement?: Placement): Promise<RunResult> {
  let commands = 0;
  const log: EventLog = createEventLog({
    partitions,
    log: silentLogger(),
    redis: { ...target, prefix: testPrefix('bench-scale'), ...(roomPlacement ? { roomPlacement } : {}) },
    retention: { roomMaxLen: 0 },
    onRedisCommand: () => void commands++,
  });
  try {
    for (let i = 0; i < sample.rooms.length; i += 64) await Promise.all(sample.rooms.slice(i, i + 64).map((r) => log.rooms.put({ id: roomName(r), links: [] })));
    const before = await Promise.all(masters.map((m) => commandCalls(m.port)));
    // events spread evenly over the sampled rooms (the sample itself was drawn by popularity)
    const draws = Array.from({ length: total }, (_, i) => sample.rooms[i % sample.rooms.length] ?? 0);
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < total) {
          const i = next++;
          await log.append(benchMessage(roomName(draws[i] ?? 0), i));
        }
      }),
    );
    const appendRate = total / ((performance.now() - t0) / 1000);
    let read = 0;
    let pages = 0;
    const perDevice: number[] = [];
    const commandsBefore = commands;
    const c0 = performance.now();
    for (const rooms of sample.devices) {
      const d0 = performance.now();
      const filter = new Set([...rooms].map(roomName));
      let since: string | undefined;
      for (;;) {
        const page = await log.read(since, { rooms: filter, limit: 1000 });
        pages++;
        read += page.events.length;
        since = page.next;
        if (page.events.length === 0) break;
      }
      perDevice.push(performance.now() - d0);
    }
    const catchUpRate = read / ((performance.now() - c0) / 1000);
    const commandsPerPage = (commands - commandsBefore) / Math.max(1, pages);
    const after = await Promise.all(masters.map((m) => commandCalls(m.port)));
    perDevice.sort((a, b) => a - b);
    return { appendRate, catchUpRate, catchUpMsP50: percentile(perDevice, 50), opsPerMaster: after.map((a, i) => a - (before[i] ?? 0)), commandsPerPage };
  } finally {
    await log.close();
  }
}

export const benchScale: Bench = async ({ redisUrl, quick }) => {
  const devices = quick ? 100_000 : 1_000_000;
  const roomCount = quick ? 10_000 : 100_000;
  const rows: BenchRow[] = [];
  const s0 = performance.now();
  const deployment = synthesize(devices, roomCount, 24);
  const perDevice = deployment.devices.map((d) => d.length).sort((a, b) => a - b);
  rows.push({
    name: 'synthetic deployment',
    value: devices,
    unit: 'devices',
    note: `${roomCount.toLocaleString('en-US')} rooms (Zipf s=1, largest ${deployment.largestRoom.toLocaleString('en-US')} devices), rooms per device p50 ${percentile(perDevice, 50)} / p99 ${percentile(perDevice, 99)} / max ${perDevice.at(-1)}, ${deployment.memberships.toLocaleString('en-US')} memberships; built in ${((performance.now() - s0) / 1000).toFixed(1)} s`,
  });
  for (const partitions of [16, 256, 1024]) {
    const sizes = cursorSizes(deployment, partitions, partitions);
    const byRooms = cursorSizesUpTo(deployment, partitions, partitions, 100);
    // the cursor of before, the same for every device: the vector of all partitions
    const before = legacyVectorCursor(Array.from({ length: partitions }, (_, p) => ({ ms: 1_795_000_000_000 - p, seq: p % 3 }))).length;
    rows.push({ name: `cursor size per device p50, ${partitions} partitions`, value: percentile(sizes, 50), unit: 'chars', baseline: before, ratio: percentile(sizes, 50) / before, note: `baseline: the format before (every partition), for every device` });
    rows.push({ name: `cursor size per device p99, ${partitions} partitions`, value: percentile(sizes, 99), unit: 'chars', baseline: before });
    rows.push({ name: `cursor size max, devices in ≤ 100 rooms, ${partitions} partitions`, value: byRooms.at(-1) ?? 0, unit: 'chars', goal: partitions === 1024 ? '≤ 1,024' : '', note: `${byRooms.length.toLocaleString('en-US')} of ${devices.toLocaleString('en-US')} devices` });
    rows.push({ name: `cursor size max, all devices (up to 200 rooms), ${partitions} partitions`, value: sizes.at(-1) ?? 0, unit: 'chars' });
    const single = byRooms.length > 0 ? cursorSizesExactly(deployment, partitions, partitions, 1) : [];
    rows.push({ name: `cursor size max, devices in 1 room, ${partitions} partitions`, value: single.at(-1) ?? 0, unit: 'chars', goal: partitions === 1024 ? '≤ 64' : '' });
  }

  const cluster = await startRedisCluster();
  try {
    const masters = await mastersOf(cluster);
    const groups = masters.map((_, m) => Array.from({ length: KEY_GROUPS }, (_, g) => masterOfSlot(masters, partitionSlot(2, g))).filter((owner) => owner === m).length);
    rows.push({ name: `key groups (hash slots) per master, layout 2`, value: spread(groups), unit: 'max/min', goal: '≤ 1.1', note: `${KEY_GROUPS} groups on ${masters.length} masters: ${groups.join(' / ')}` });
    for (const partitions of [16, 256, 1024]) {
      for (const layout of [1, 2] as const) {
        const counts = masters.map((_, m) => Array.from({ length: partitions }, (_, p) => masterOfSlot(masters, partitionSlot(layout, p))).filter((owner) => owner === m).length);
        const arithmetic = partitions % masters.length !== 0 && Math.ceil(partitions / masters.length) / Math.floor(partitions / masters.length) > 1.1;
        rows.push({
          name: `partitions per master, layout ${layout}, ${partitions} partitions`,
          value: spread(counts),
          unit: 'max/min',
          goal: layout === 2 ? (arithmetic ? `best possible ${(Math.ceil(partitions / masters.length) / Math.floor(partitions / masters.length)).toFixed(2)}` : '≤ 1.1') : '',
          note: `${masters.length} masters: ${counts.join(' / ')}${layout === 1 ? ' (logs created before layout 2: a slot per partition)' : ''}${arithmetic ? `; ${partitions} partitions cannot split evenly over ${masters.length} masters` : ''}`,
        });
      }
      const placed = directoryPlacement(deployment, partitions, masters, partitions);
      const fmt = (xs: number[]) => xs.map((x) => Math.round(x).toLocaleString('en-US')).join(' / ');
      rows.push({ name: `rooms per master, hash placement, ${partitions} partitions`, value: spread(placed.hashRooms), unit: 'max/min', note: fmt(placed.hashRooms) });
      rows.push({ name: `rooms per master, directory placement, ${partitions} partitions`, value: spread(placed.dirRooms), unit: 'max/min', note: `simulated: each new room to the master with the fewest rooms: ${fmt(placed.dirRooms)}` });
      rows.push({ name: `traffic per master (Zipf weight), hash placement, ${partitions} partitions`, value: spread(placed.hashWeight), unit: 'max/min', note: placed.hashWeight.map((w) => w.toFixed(2)).join(' / ') });
      rows.push({ name: `traffic per master (Zipf weight), directory placement, ${partitions} partitions`, value: spread(placed.dirWeight), unit: 'max/min', note: placed.dirWeight.map((w) => w.toFixed(2)).join(' / ') });
      rows.push({ name: `traffic per master (Zipf weight), placement by observed traffic, ${partitions} partitions`, value: spread(placed.loadWeight), unit: 'max/min', note: `simulated: each new room to the master whose rooms carry the least traffic so far: ${placed.loadWeight.map((w) => w.toFixed(2)).join(' / ')} (rooms ${fmt(placed.loadRooms)})` });
    }
    // throughput on a sample: rooms drawn by popularity, devices whose rooms are all in the sample
    const sampleRooms = [...new Set(Array.from({ length: quick ? 300 : 2_000 }, () => deployment.drawRoom()))];
    const inSample = new Set(sampleRooms);
    const sampleDevices = deployment.devices.filter((rooms) => rooms.every((r) => inSample.has(r))).slice(0, quick ? 50 : 300);
    const sample = { rooms: sampleRooms, devices: sampleDevices };
    const total = quick ? 3_000 : 20_000;
    const single = (port: string) => Number(port.slice(port.lastIndexOf(':') + 1));
    // each target with its default room placement (label without a placement; on one Redis: hash), the cluster also
    // with hash placement, for the comparison (by default rooms, not partitions, spread over the masters: room-placement.ts)
    const targets: Array<{ label: string; target: Target; masters: Master[]; placements: Array<Placement | 'default'> }> = [
      { label: '1 master', target: { url: redisUrl }, masters: [{ port: single(redisUrl), ranges: [[0, 16383]] }], placements: ['default'] },
      { label: `${masters.length} masters`, target: { cluster: { nodes: cluster.nodes } }, masters, placements: ['default', 'hash'] },
    ];
    const rounds = quick ? 2 : 3;
    const median = (values: number[]) => percentile([...values].sort((a, b) => a - b), 50);
    for (const { label: targetLabel, target, masters: ms, placements } of targets) {
      // an unmeasured warm-up, then the partition counts (and placements) alternate over a few rounds; medians reported
      await runAt(target, 16, deployment, sample, Math.min(total, 1_000), ms);
      const runs = new Map<string, RunResult[]>();
      for (let round = 0; round < rounds; round++) {
        for (const partitions of [16, 256, 1024]) {
          for (const placement of placements) {
            const result = await runAt(target, partitions, deployment, sample, total, ms, placement === 'default' ? undefined : placement);
            runs.set(`${placement}:${partitions}`, [...(runs.get(`${placement}:${partitions}`) ?? []), result]);
          }
        }
      }
      for (const placement of placements) {
        const label = placement === 'default' ? (ms.length > 1 ? `${targetLabel}, balanced placement (default)` : targetLabel) : `${targetLabel}, ${placement} placement`;
        const results = new Map<number, RunResult>();
        for (const partitions of [16, 256, 1024]) {
          const all = runs.get(`${placement}:${partitions}`) ?? [];
          const r: RunResult = {
            appendRate: median(all.map((x) => x.appendRate)),
            catchUpRate: median(all.map((x) => x.catchUpRate)),
            catchUpMsP50: median(all.map((x) => x.catchUpMsP50)),
            opsPerMaster: ms.map((_, i) => median(all.map((x) => x.opsPerMaster[i] ?? 0))),
            commandsPerPage: median(all.map((x) => x.commandsPerPage)),
          };
          results.set(partitions, r);
          const base = results.get(16);
          const note = `${sample.rooms.length} rooms, ${total.toLocaleString('en-US')} events, 16 producers, median of ${rounds}; ops per master ${r.opsPerMaster.map((n) => n.toLocaleString('en-US')).join(' / ')}`;
          rows.push({ name: `append, ${label}, ${partitions} partitions`, value: r.appendRate, unit: 'events/s', ...(base ? { baseline: base.appendRate, ratio: r.appendRate / base.appendRate } : {}), goal: partitions === 1024 ? 'ratio ≥ 0.8' : '', note });
          rows.push({ name: `append per master, ${label}, ${partitions} partitions`, value: r.appendRate / ms.length, unit: 'events/s' });
          rows.push({ name: `catch-up, ${label}, ${partitions} partitions`, value: r.catchUpRate, unit: 'events/s', ...(base ? { baseline: base.catchUpRate, ratio: r.catchUpRate / base.catchUpRate } : {}), note: `${sample.devices.length} devices each from the start` });
          rows.push({ name: `catch-up commands per page, ${label}, ${partitions} partitions`, value: r.commandsPerPage, unit: 'commands', ...(base ? { baseline: base.commandsPerPage, ratio: r.commandsPerPage / base.commandsPerPage } : {}), note: 'sent together in one tick: one round trip per master, the masters in parallel' });
          rows.push({ name: `catch-up per device p50, ${label}, ${partitions} partitions`, value: r.catchUpMsP50, unit: 'ms', ...(base ? { baseline: base.catchUpMsP50, ratio: base.catchUpMsP50 / r.catchUpMsP50 } : {}), goal: partitions === 1024 ? 'ratio ≥ 0.8' : '' });
          if (ms.length > 1) rows.push({ name: `operations per master, ${label}, ${partitions} partitions`, value: spread(r.opsPerMaster), unit: 'max/min', goal: '≤ 1.1' });
        }
      }
    }
  } finally {
    await cluster.stop();
  }
  return { title: 'Scale simulation: cursor size, partitions over masters, append and catch-up at 16 / 256 / 1,024 partitions', rows };
};
