/**
 * Delivery throughput (issue 4): the delivery engine through a no-op adapter
 * against the thinnest consumer of the same feeds — a raw XREADGROUP loop
 * that XACKs every entry — in the same run.
 */
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import type { Adapter, DeliveryResult } from '../../src/core/adapter.js';
import { createDeliveryManager } from '../../src/bridge/delivery.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { LATEST_KEY_LAYOUT, keySpace } from '../../src/eventlog/keys.js';
import { silentLogger } from '../../src/log/index.js';
import { dropPrefix, testPrefix } from '../harness/redis.js';
import { benchMessage } from './eventlog.js';
import type { Bench } from './report.js';

const PARTITIONS = 16;

class NoopAdapter implements Adapter {
  readonly protocol = 'xmpp' as const;
  delivered = 0;
  constructor(readonly name: string) {}
  start(): Promise<void> {
    return Promise.resolve();
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
  status() {
    return { connected: true, ready: true };
  }
  deliver(): Promise<DeliveryResult> {
    this.delivered++;
    return Promise.resolve({ status: 'delivered', nativeIds: {} });
  }
}

async function until(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('bench: timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const benchDelivery: Bench = async ({ redisUrl, quick }) => {
  const N = quick ? 5_000 : 30_000;
  const prefix = testPrefix('benchdel');
  const rooms = Array.from({ length: 64 }, (_, i) => `room-${i}`);
  const log = createEventLog({ partitions: PARTITIONS, log: silentLogger(), redis: { url: redisUrl, prefix }, retention: { roomMaxLen: 0 } });
  for (const id of rooms) await log.rooms.put({ id, links: [{ endpoint: 'noop', target: id }] });
  const linkMap = new Map(rooms.map((r) => [r, [{ endpoint: 'noop', target: r }]]));
  const adapter = new NoopAdapter('noop');
  const manager = createDeliveryManager({ log, adapters: [adapter], links: { linksOfRoom: (room) => linkMap.get(room) ?? [] }, logger: silentLogger() });
  // groups first (created at the feed's end), then the backlog
  await Promise.all(Array.from({ length: PARTITIONS }, (_, p) => log.delivery.ensureGroup(p, 'out:noop')));
  const redis = new Redis(redisUrl);
  const keys = keySpace(prefix, LATEST_KEY_LAYOUT);
  await Promise.all(Array.from({ length: PARTITIONS }, (_, p) => redis.xgroup('CREATE', keys.feed(p), 'raw', '$', 'MKSTREAM').catch(() => undefined)));
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < N) {
        const i = next++;
        await log.append(benchMessage(rooms[i % rooms.length] ?? 'room-0', i));
      }
    }),
  );

  // the engine: a backlog of N events through a no-op adapter
  const t0 = performance.now();
  await manager.start();
  await until(() => adapter.delivered >= N, 300_000);
  const engineRate = N / ((performance.now() - t0) / 1000);
  await manager.stop(1000);

  // the thinnest pipe: XREADGROUP batches, one XACK per entry, 16 partition loops
  const t1 = performance.now();
  let acked = 0;
  await Promise.all(
    Array.from({ length: PARTITIONS }, async (_, p) => {
      const client = redis.duplicate();
      for (;;) {
        const reply = (await client.xreadgroup('GROUP', 'raw', 'c1', 'COUNT', 128, 'STREAMS', keys.feed(p), '>')) as Array<[string, Array<[string, string[]]>]> | null;
        const entries = reply?.[0]?.[1] ?? [];
        if (entries.length === 0) break;
        await Promise.all(entries.map(([id]) => client.xack(keys.feed(p), 'raw', id)));
        acked += entries.length;
      }
      await client.quit();
    }),
  );
  const rawRate = acked / ((performance.now() - t1) / 1000);

  await log.close();
  await dropPrefix(redis, prefix);
  await redis.quit();
  return {
    title: 'Delivery (Redis)',
    rows: [
      {
        name: `delivery of a ${N.toLocaleString('en-US')}-event backlog, no-op adapter`,
        value: engineRate,
        unit: 'events/s',
        baseline: rawRate,
        ratio: engineRate / rawRate,
        goal: 'ratio ≥ 0.5',
        note: 'baseline: XREADGROUP COUNT 128 + one XACK per entry, 16 partitions',
      },
    ],
  };
};
