/**
 * MQTT ingest benchmarks (issue 5): Mosquitto → MQTT adapter → ingest sink →
 * Redis log, at QoS 0 and QoS 1, against the thinnest pipe measured in the
 * same run — an mqtt.js subscriber doing one plain XADD per message with the
 * same acknowledgement discipline (QoS 1: PUBACK after the XADD; QoS 0: no
 * waiting) — and publish → visible-on-`log.tail` latency at 1,000 msg/s.
 *
 * QoS 1 is measured as a drain: the messages are queued by the broker for the
 * subscriber's persistent session while it is away, then it connects and we
 * time how long it takes to get them all into Redis. That measures the
 * subscriber path, not the publisher. QoS 0 is not queued for absent
 * sessions, so it is measured live with a fast publisher.
 */
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { connect, connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import type { IngestSink } from '../../src/core/adapter.js';
import type { EventLog } from '../../src/core/ports.js';
import { createIngestSink } from '../../src/bridge/ingest.js';
import { createRoomLinks, type RoomLinks } from '../../src/bridge/links.js';
import { createEventLog } from '../../src/eventlog/index.js';
import { silentLogger } from '../../src/log/index.js';
import { createMqttAdapter, parseMqttConfig, type MqttAdapter } from '../../adapters/mqtt/index.js';
import { CONTEXT_IDS, normalise } from '../../adapters/mqtt/normalise.js';
import { compileRule } from '../../adapters/mqtt/rules.js';
import { startMosquitto } from '../harness/mosquitto.js';
import { testPrefix, dropPrefix } from '../harness/redis.js';
import { percentile, type Bench, type BenchRow } from './report.js';

const ROOM = 'plant';
const FILTER = 'bench/+device/reading';
const TEMPLATE = '{{device}}: {{level}} at {{temp}} °C (#{{seq}})';
const payloadOf = (seq: number) => JSON.stringify({ seq, level: 'high', temp: 21.5 + (seq % 10), unit: 'C' });
const SESSION = { protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 600, receiveMaximum: 100 } } as const satisfies IClientOptions;

/** A promise resolved when `count()` has been called `n` times. */
function counter(n: number): { count: () => void; done: Promise<number>; readonly value: number } {
  let value = 0;
  let resolve: (t: number) => void = () => undefined;
  const done = new Promise<number>((r) => (resolve = r));
  return {
    count() {
      value++;
      if (value === n) resolve(performance.now());
    },
    done,
    get value() {
      return value;
    },
  };
}

function withDeadline<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out: ${what()}`)), ms)));
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

interface Gateway {
  log: EventLog;
  links: RoomLinks;
  sink: IngestSink;
  close(): Promise<void>;
}

async function gateway(redisUrl: string, prefix: string): Promise<Gateway> {
  const log = createEventLog({ partitions: 16, log: silentLogger(), redis: { url: redisUrl, prefix }, retention: { roomMaxLen: 0 } });
  await log.rooms.put({ id: ROOM, links: [{ endpoint: 'mqtt', target: FILTER, options: { decode: 'json', template: TEMPLATE } }] });
  const links = await createRoomLinks({ rooms: log.rooms, logger: silentLogger() });
  const sink = createIngestSink({ log, logger: silentLogger() });
  return {
    log,
    links,
    sink,
    async close() {
      links.close();
      await log.close();
    },
  };
}

function adapterFor(gw: Gateway, url: string, clientId: string, sink: IngestSink): MqttAdapter {
  return createMqttAdapter({ name: 'mqtt', config: parseMqttConfig({ url, clientId }), log: silentLogger(), sink, links: gw.links });
}

/** A sink that counts completed appends (the adapter path's finish line). */
function countingSink(inner: IngestSink, onAppended: () => void): IngestSink {
  return {
    ingest: (d, o) =>
      inner.ingest(d, o).then((r) => {
        if (r.status === 'appended') onAppended();
        return r;
      }),
    ingestTelemetry: (d) => inner.ingestTelemetry(d),
    resolve: (r, k) => inner.resolve(r, k),
    getEvent: (r, e) => inner.getEvent(r, e),
  };
}

/** The thinnest pipe: an mqtt.js subscriber with one plain XADD per message, PUBACK after the XADD for QoS 1. */
async function thinPipe(url: string, clientId: string, redis: Redis, key: string, onAppended: () => void): Promise<MqttClient> {
  // Handler first, then connect: a resumed session delivers right after CONNACK.
  const client = connect(url, { ...SESSION, clientId, manualConnect: true });
  client.handleMessage = (packet, done) => {
    const p = redis.xadd(key, '*', 't', packet.topic, 'p', packet.payload as Buffer);
    if (packet.qos === 0) {
      void p.then(onAppended);
      done();
    } else {
      p.then(() => {
        onAppended();
        done();
      }, done);
    }
  };
  client.connect();
  await new Promise<void>((resolve) => client.once('connect', () => resolve()));
  return client;
}

/**
 * Ends a persistent session on the broker. Without this every session a run
 * left behind stays subscribed and Mosquitto keeps queueing copies of all
 * later publications for it, which slows every later measurement.
 */
async function discardSession(url: string, clientId: string): Promise<void> {
  const c = await connectAsync(url, { protocolVersion: 5, clientId, clean: true, properties: { sessionExpiryInterval: 0 } });
  await c.endAsync();
}

async function publishAll(pub: MqttClient, n: number, qos: 0 | 1): Promise<void> {
  const window: Array<Promise<unknown>> = [];
  for (let i = 0; i < n; i++) {
    const topic = `bench/dev-${i % 50}/reading`;
    if (qos === 0) {
      pub.publish(topic, payloadOf(i), { qos: 0 });
      // Let the socket drain now and then so the publisher does not buffer everything in memory.
      if (i % 1000 === 999) await new Promise<void>((r) => setImmediate(r));
    } else {
      window.push(pub.publishAsync(topic, payloadOf(i), { qos: 1 }));
      if (window.length >= 50) await Promise.all(window.splice(0));
    }
  }
  await Promise.all(window);
}

/** One timed run: messages per second, and the CPU each message cost this process (publisher included, the same for both paths) and Redis. */
interface Run {
  readonly rate: number;
  readonly cpuUs: number;
  readonly redisUs: number;
}

/** Redis's own CPU seconds so far (user + system), from INFO. */
async function redisCpuSeconds(redis: Redis): Promise<number> {
  const info = await redis.info('cpu');
  const field = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? Number.NaN);
  return field('used_cpu_user') + field('used_cpu_sys');
}

/** Starts measuring CPU; the returned function ends it and gives the run's figures for `count` messages over `ms`. */
async function cpuMeter(redis: Redis): Promise<(count: number, ms: number) => Promise<Run>> {
  const redis0 = await redisCpuSeconds(redis);
  const cpu0 = process.cpuUsage();
  return async (count, ms) => {
    const cpu = process.cpuUsage(cpu0);
    const redisSeconds = (await redisCpuSeconds(redis)) - redis0;
    return { rate: count / (ms / 1000), cpuUs: (cpu.user + cpu.system) / count, redisUs: (redisSeconds * 1e6) / count };
  };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

export const benchMqtt: Bench = async ({ redisUrl, quick }) => {
  const rows: BenchRow[] = [];
  const broker = await startMosquitto();
  const admin = new Redis(redisUrl);
  const raw = new Redis(redisUrl);
  const n = quick ? 3_000 : 20_000;
  // Rounds alternate the two paths (after one unmeasured warm-up round of each,
  // so neither is measured before the JIT has seen its code). QoS 0 rounds take about a second: five of them steady the median
  // on a machine whose two cores the bench shares with Redis and Mosquitto.
  const roundsFor = (qos: 0 | 1) => (quick ? 1 : qos === 0 ? 5 : 3);
  let run = 0;
  const id = (what: string) => `sg-bench-${what}-${process.pid}-${++run}`;
  const pub = await connectAsync(broker.url, { protocolVersion: 5, clientId: id('pub') });

  /** Mosquitto → adapter → sink → Redis log; msgs/s until the last append. */
  async function adapterRate(qos: 0 | 1, count: number): Promise<Run> {
    const prefix = testPrefix('benchmqtt');
    const gw = await gateway(redisUrl, prefix);
    const clientId = id('gw');
    const done = counter(count);
    let t0: number;
    let adapter: MqttAdapter;
    let meter: Awaited<ReturnType<typeof cpuMeter>>;
    if (qos === 1) {
      const warm = adapterFor(gw, broker.url, clientId, gw.sink);
      await warm.start();
      await warm.stop();
      await publishAll(pub, count, 1);
      adapter = adapterFor(gw, broker.url, clientId, countingSink(gw.sink, done.count));
      meter = await cpuMeter(admin);
      t0 = performance.now();
      await adapter.start();
    } else {
      adapter = adapterFor(gw, broker.url, clientId, countingSink(gw.sink, done.count));
      await adapter.start();
      meter = await cpuMeter(admin);
      t0 = performance.now();
      await publishAll(pub, count, 0);
    }
    const t1 = await withDeadline(done.done, 300_000, () => `adapter QoS ${qos}: ${done.value}/${count} appended`);
    const run = await meter(count, t1 - t0);
    await adapter.stop();
    await discardSession(broker.url, clientId);
    await gw.close();
    await dropPrefix(admin, prefix);
    return run;
  }

  /** The thinnest pipe over the same broker and Redis; msgs/s until the last XADD. */
  async function thinRate(qos: 0 | 1, count: number): Promise<Run> {
    const key = `${testPrefix('benchmqttraw')}stream`;
    const rawDone = counter(count);
    const rawId = id('raw');
    let r0: number;
    let sub: MqttClient;
    let meter: Awaited<ReturnType<typeof cpuMeter>>;
    if (qos === 1) {
      const warm = await thinPipe(broker.url, rawId, raw, key, () => undefined);
      await warm.subscribeAsync(FILTER.replace('+device', '+'), { qos: 1, nl: true });
      await warm.endAsync();
      await publishAll(pub, count, 1);
      meter = await cpuMeter(admin);
      r0 = performance.now();
      sub = await thinPipe(broker.url, rawId, raw, key, rawDone.count);
    } else {
      sub = await thinPipe(broker.url, rawId, raw, key, rawDone.count);
      await sub.subscribeAsync(FILTER.replace('+device', '+'), { qos: 0, nl: true });
      meter = await cpuMeter(admin);
      r0 = performance.now();
      await publishAll(pub, count, 0);
    }
    const r1 = await withDeadline(rawDone.done, 300_000, () => `thin pipe QoS ${qos}: ${rawDone.value}/${count} appended`);
    const run = await meter(count, r1 - r0);
    await sub.endAsync(true);
    await discardSession(broker.url, rawId);
    await admin.unlink(key);
    return run;
  }

  /** The log's own ceiling: the same drafts straight into the sink, as many in flight as the adapter allows. */
  async function ceilingRate(qos: 0 | 1, count: number, window: number): Promise<number> {
    const ceilPrefix = testPrefix('benchmqttceil');
    const ceil = await gateway(redisUrl, ceilPrefix);
    const rule = compileRule(ROOM, { endpoint: 'mqtt', target: FILTER, options: { decode: 'json', template: TEMPLATE } }, parseMqttConfig({ url: broker.url, clientId: 'x' }));
    const drafts = Array.from({ length: count }, (_, i) => {
      const topic = `bench/dev-${i % 50}/reading`;
      const r = normalise({ topic, payload: Buffer.from(payloadOf(i)), qos, dup: false, retain: false, ...(qos === 1 ? { packetId: (i % 65_535) + 1 } : {}) }, rule, rule.filter.match(topic) ?? {}, {
        via: 'mqtt',
        clientId: 'x',
        now: Date.now(),
        maxPayloadBytes: 1 << 20,
        dupWindowMs: 600_000,
      });
      if (r.ok !== true) throw new Error('bench draft did not normalise');
      return r.value;
    });
    let next = 0;
    const c0 = performance.now();
    await Promise.all(
      Array.from({ length: window }, async () => {
        while (next < count) {
          const d = drafts[next++];
          if (d) await ceil.sink.ingest(d.draft, { aliases: d.aliases, contextIds: CONTEXT_IDS });
        }
      }),
    );
    const rate = count / ((performance.now() - c0) / 1000);
    await ceil.close();
    await dropPrefix(admin, ceilPrefix);
    return rate;
  }

  try {
    for (const qos of [0, 1] as const) {
      await adapterRate(qos, n);
      await thinRate(qos, n);
      const ourRuns: Run[] = [];
      const thinRuns: Run[] = [];
      const rounds = roundsFor(qos);
      for (let r = 0; r < rounds; r++) {
        ourRuns.push(await adapterRate(qos, n));
        thinRuns.push(await thinRate(qos, n));
      }
      const ours = ourRuns.map((r) => r.rate);
      const thin = thinRuns.map((r) => r.rate);
      const cpu = (runs: Run[]) => `${median(runs.map((r) => r.cpuUs)).toFixed(1)} + Redis ${median(runs.map((r) => r.redisUs)).toFixed(1)}`;
      const rate = median(ours);
      const rawRate = median(thin);
      // Each round's two runs are back to back, in the same phase of a machine whose speed drifts
      // from minute to minute: the ratio is the median of the rounds' own ratios.
      const ratio = median(ours.map((r, i) => r / (thin[i] ?? Number.NaN)));
      const window = qos === 1 ? 100 : parseMqttConfig({ url: broker.url, clientId: 'x' }).qos0InFlight;
      const ceilRate = await ceilingRate(qos, n, window);
      const spread2 = (xs: number[]) => `${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}`;
      const spread = (xs: number[]) => `${Math.round(Math.min(...xs)).toLocaleString('en-US')}–${Math.round(Math.max(...xs)).toLocaleString('en-US')}`;
      rows.push({
        name: `MQTT ingest QoS ${qos} (${n.toLocaleString('en-US')} msgs)`,
        value: rate,
        unit: 'msgs/s',
        baseline: rawRate,
        ratio,
        // issue 19, point 5: QoS 0 at the thin pipe's rate at least, QoS 1 at twice it (issue 5 asked 0.8)
        goal: qos === 0 ? 'ratio ≥ 1.0' : 'ratio ≥ 2',
        note: `${qos === 1 ? 'drain of a queued session; PUBACK after the append' : 'live; appends in flight in arrival order'}; medians of ${rounds} alternating rounds (ours ${spread(ours)}, pipe ${spread(thin)}; ratio = median of the rounds' ratios ${spread2(ours.map((r, i) => r / (thin[i] ?? Number.NaN)))}); CPU µs a message, this process (publisher included) + Redis: ours ${cpu(ourRuns)}, pipe ${cpu(thinRuns)}`,
      });
      rows.push({
        name: `  log ceiling: sink.ingest, ${window} in flight, no MQTT`,
        value: ceilRate,
        unit: 'msgs/s',
        baseline: rawRate,
        ratio: ceilRate / rawRate,
        note: `the adapter reaches ${Math.round((100 * rate) / ceilRate)}% of it`,
      });
    }

    // --- latency: publish → visible on log.tail, paced at 1,000 msg/s
    for (const qos of [1, 0] as const) {
      const prefix = testPrefix('benchmqttlat');
      const gw = await gateway(redisUrl, prefix);
      const latId = id('lat');
      const warmDone = counter(500);
      const adapter = adapterFor(gw, broker.url, latId, countingSink(gw.sink, warmDone.count));
      await adapter.start();
      // Steady state, not start-up: the first messages of a fresh process wait for connections and the JIT.
      await publishAll(pub, 500, qos);
      await withDeadline(warmDone.done, 60_000, () => `latency warm-up QoS ${qos}: ${warmDone.value}/500`);
      const seconds = quick ? 2 : 5;
      const total = seconds * 1000;
      const sentAt = new Float64Array(total);
      const latencies: number[] = [];
      const abort = new AbortController();
      const since = await gw.log.head();
      const reading = (async () => {
        for await (const item of gw.log.tail(since, { rooms: new Set([ROOM]), signal: abort.signal })) {
          if (item.type !== 'event' || !('content' in item.event)) continue;
          const seq = Number(/#(\d+)\)$/.exec(item.event.content.body)?.[1]);
          latencies.push(performance.now() - (sentAt[seq] ?? Number.NaN));
          if (latencies.length === total) return;
        }
      })();
      const start = performance.now();
      for (let i = 0; i < total; ) {
        // Publish everything due by now (1 per ms), then wait for the next tick.
        const due = Math.min(total, Math.floor(performance.now() - start) + 1);
        for (; i < due; i++) {
          sentAt[i] = performance.now();
          pub.publish(`bench/dev-${i % 50}/reading`, payloadOf(i), { qos });
        }
        await new Promise<void>((r) => setTimeout(r, 1));
      }
      const achieved = total / ((performance.now() - start) / 1000);
      await withDeadline(reading, 60_000, () => `latency QoS ${qos}: ${latencies.length}/${total} seen`);
      abort.abort();
      latencies.sort((a, b) => a - b);
      rows.push({ name: `MQTT publish → live p50, QoS ${qos}`, value: percentile(latencies, 50), unit: 'ms', note: `${total} msgs at ${Math.round(achieved)} msg/s, after 500 unmeasured` });
      rows.push({ name: `MQTT publish → live p99, QoS ${qos}`, value: percentile(latencies, 99), unit: 'ms' });
      await adapter.stop();
      await discardSession(broker.url, latId);
      await gw.close();
      await dropPrefix(admin, prefix);
    }
  } finally {
    await pub.endAsync(true).catch(() => undefined);
    await raw.quit();
    await admin.quit();
    await broker.stop();
  }
  return { title: 'MQTT ingest (Mosquitto → adapter → Redis log)', rows };
};
