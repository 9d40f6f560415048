/**
 * The composition root: builds the event log, room links, the ingest sink,
 * the adapters, the delivery engine and the HTTP app from one frozen config;
 * starts them in order (log → delivery groups → HTTP → adapters in the
 * background, each on the replica holding its connection lease) and stops
 * them in reverse (HTTP stops
 * accepting → in-flight deliveries finish → adapters stop → leases released
 * → log).
 */
import { hostname } from 'node:os';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { Config } from '../config/index.js';
import type { Adapter, RuleSample as AdapterRuleSample } from '../core/adapter.js';
import { SyncgateError } from '../core/errors.js';
import type { EventLog } from '../core/ports.js';
import { createDeliveryManager, ensureGroupUnlessUnavailable, type DeliveryOptions } from '../bridge/delivery.js';
import { createIngestSink, type BridgeSink } from '../bridge/ingest.js';
import { createRoomLinks, type RoomLinks } from '../bridge/links.js';
import { createEventLog, createSharedCounterStore } from '../eventlog/index.js';
import { buildApp } from '../http/app.js';
import { redactUrl } from '../log/index.js';
import { createAdapters, roomLinkProblems, type AdapterContext } from './adapters.js';
import { registerAdapterStateMetrics, registerGatewayMetrics, registerRedisMetrics } from './metrics.js';
import { RATE_SAMPLE_MS, RateMeter, sumRates, type LinkRate, type Rate } from './rates.js';
import { replicaIdentity } from './replica.js';
import { announceReplica, buildVersion, configHash, listReplicas, type ReplicaView } from './replicas.js';
import { AdapterSupervisor } from './supervisor.js';
import { LeaseFence } from './lease-fence.js';

const DAY_MS = 24 * 3600 * 1000;

export interface Gateway {
  readonly log: EventLog;
  readonly app: FastifyInstance;
  readonly links: RoomLinks;
  readonly sink: BridgeSink;
  readonly adapters: readonly Adapter[];
  /** one per adapter: which replica holds its connection */
  readonly supervisors: readonly AdapterSupervisor[];
  /**
   * Starts the HTTP listener, then the adapters in the background (each on the
   * replica holding its lease; a remote server being down does not hold the
   * API back); resolves with the bound address.
   */
  start(): Promise<string>;
  /** resolves once every adapter's first start attempt (or standby decision) is over; tests wait on it */
  adaptersStarted(): Promise<void>;
  /** each adapter's state on this replica: what GET /v1/admin/status shows */
  status(): Promise<GatewayStatus>;
  /** stops accepting, finishes in-flight sends, releases leases, closes the log; safe to call twice */
  stop(): Promise<void>;
}

export interface AdapterStatusReport {
  readonly protocol: string;
  /** active: this replica holds the connection; standby: another replica does; failed: the last start failed (retrying) */
  readonly state: string;
  /** the replica holding this adapter's connection lease (any replica), if one does */
  readonly holder?: string;
  readonly connected: boolean;
  readonly ready: boolean;
  readonly lastError?: { readonly message: string; readonly at: string };
  /** rooms linked to this adapter, with their targets */
  readonly links: ReadonlyArray<{ readonly room: string; readonly target: string }>;
  readonly delivery: { readonly partitionsHeld: number; readonly lastDelivery?: { readonly lagMs: number; readonly at: string } };
  /** events per second over the last ~10 s, all replicas together: ingested from the adapter (in) and delivered to it (out) */
  readonly rates?: Rate;
  /** the same on this replica only */
  readonly replicaRates?: Rate;
  /** the adapter's own report: joined rooms, session, counters … */
  readonly detail: Readonly<Record<string, unknown>>;
}

export interface GatewayStatus {
  readonly log: { readonly backend: string; readonly durable: boolean; readonly available: boolean; readonly unavailablePartitions: readonly number[] };
  readonly adapters: Readonly<Record<string, AdapterStatusReport>>;
  /** the replicas seen in the last three lease periods, with their build and configuration hash (drift flagged) */
  readonly replicas: readonly ReplicaView[];
  /** events in and out per second per link (room × adapter) with traffic, all replicas together */
  readonly linkRates: readonly LinkRate[];
}

export interface GatewayDeps {
  readonly config: Config;
  readonly logger: Logger;
  /** adapters built by the caller in addition to the configured ones (tests use a test adapter) */
  readonly extraAdapters?: (context: AdapterContext) => Adapter[];
  readonly deliveryOptions?: Partial<DeliveryOptions>;
}

export async function createGateway({ config, logger, extraAdapters, deliveryOptions }: GatewayDeps): Promise<Gateway> {
  if (config.redis) {
    const target = config.redis.cluster
      ? { cluster: config.redis.cluster.nodes.map((n) => redactUrl(n)) }
      : config.redis.sentinel
        ? { sentinel: { name: config.redis.sentinel.name, nodes: config.redis.sentinel.nodes } }
        : redactUrl(config.redis.url ?? '');
    logger.info({ redis: target, prefix: config.redis.prefix, partitions: config.partitions }, 'event log: Redis');
  } else {
    logger.warn(
      { partitions: config.partitions },
      'event log: embedded in-memory log because no Redis is configured (SYNCGATE_REDIS_URL or redis.url) — it is NOT durable: every event is lost when the process stops',
    );
  }
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const log = createEventLog({
    partitions: config.partitions,
    onRedisCommand: registerRedisMetrics(registry),
    log: logger.child({ module: 'eventlog' }),
    retention: {
      roomMaxLen: config.retention.roomMaxLen,
      feedMaxLen: config.retention.feedMaxLen,
      maxAgeMs: config.retention.maxAgeDays * DAY_MS,
      idTtlMs: config.retention.idTtlDays * DAY_MS,
      telemetryMaxLen: config.retention.telemetryMaxLen,
    },
    ...(config.redis ? { redis: { url: config.redis.url, cluster: config.redis.cluster, sentinel: config.redis.sentinel, prefix: config.redis.prefix, password: config.redis.password, waitReplicas: config.redis.waitReplicas, waitTimeoutMs: config.redis.waitTimeoutMs, keyGroups: config.redis.keyGroups, roomPlacement: config.redis.roomPlacement } } : {}),
  });

  const configProblems = config.rooms.flatMap((room, i) => roomLinkProblems(config, room).map((p) => `/rooms/${i}${p}`));
  if (configProblems.length > 0) {
    await log.close();
    throw new SyncgateError('SG_ERR_CONFIG_INVALID', `${configProblems.length} problem(s):\n  - ${configProblems.join('\n  - ')}`, { problems: configProblems });
  }
  let links: RoomLinks;
  try {
    await log.ping();
    for (const room of config.rooms) await log.rooms.put(room);
    links = await createRoomLinks({ rooms: log.rooms, logger: logger.child({ module: 'links' }) });
  } catch (err) {
    await log.close();
    throw err;
  }
  const meter = new RateMeter();
  const sink = createIngestSink({ log, logger: logger.child({ module: 'ingest' }), onAppended: (via, room) => meter.countIn(via, room) });
  // one fence per adapter, shared by the sealed stores it is handed and its supervisor
  const fences = new Map<string, LeaseFence>();
  const fence = (name: string): LeaseFence => {
    let f = fences.get(name);
    if (!f) fences.set(name, (f = new LeaseFence()));
    return f;
  };
  const context: AdapterContext = { log, sink, links, logger, fence };
  const extra = extraAdapters?.(context) ?? [];
  const adapters = [...createAdapters(config, context), ...extra];
  const names = new Set<string>();
  for (const a of adapters) {
    if (names.has(a.name) || a.name === 'api') throw new Error(`adapter name ${a.name} is used twice (or is the reserved name "api")`);
    names.add(a.name);
  }

  const observer = registerGatewayMetrics({ registry, log, adapters, sink, onDelivered: (adapter, room) => meter.countOut(adapter, room) });
  const adapterNames = adapters.map((a) => a.name);
  const deliveryConfig = { ...config.delivery, ...deliveryOptions };
  const identity = replicaIdentity(config.replicaId ?? hostname());
  const { owner } = identity;
  const reclaim = (holder: string) => identity.reclaim(holder);
  // One delivery manager and one connection lease per adapter: its deliveries run where its connection is.
  const supervisors = adapters.map((adapter) => {
    const delivery = createDeliveryManager({ log, adapters: [adapter], links, logger: logger.child({ module: 'delivery' }), observer, options: deliveryConfig, owner, reclaim });
    return {
      adapter,
      delivery,
      supervisor: new AdapterSupervisor({ adapter, delivery, queue: log.delivery, owner, reclaim, leaseMs: deliveryConfig.leaseMs, logger, graceMs: config.shutdownGraceMs, fence: fence(adapter.name) }),
    };
  });

  let rateTimer: NodeJS.Timeout | undefined;

  const lastError = (supervisor: AdapterSupervisor) => {
    const errors = [supervisor.lastFailure, supervisor.lastAdapterError].filter((e) => e !== undefined);
    return errors.sort((a, b) => a.at.localeCompare(b.at)).at(-1);
  };
  const status = async (): Promise<GatewayStatus> => {
    // a probe that fails as a whole (the log is away) is what `available` says already
    const unavailablePartitions = log.available ? await log.unavailablePartitions().catch(() => []) : [];
    const report: Record<string, AdapterStatusReport> = {};
    for (const { adapter, supervisor, delivery } of supervisors) {
      const s = adapter.status();
      // the owner is `<replicaId>#<pid>#<random>`: the replica id is what an operator knows
      const holder = log.available ? (await log.delivery.leaseHolder(0, `conn:${adapter.name}`).catch(() => undefined))?.replace(/#\d+#[0-9a-f]+$/, '') : undefined;
      const error = lastError(supervisor);
      const last = observer.lastDelivery(adapter.name);
      report[adapter.name] = {
        protocol: adapter.protocol,
        state: supervisor.current,
        ...(holder !== undefined ? { holder } : {}),
        connected: s.connected,
        ready: s.ready,
        ...(error ? { lastError: error } : {}),
        links: links.linksOf(adapter.name).map(({ room, link }) => ({ room, target: link.target })),
        delivery: { partitionsHeld: Object.values(delivery.leases()).reduce((n, p) => n + p.length, 0), ...(last ? { lastDelivery: last } : {}) },
        detail: s.detail ?? {},
      };
    }
    const listed = log.available ? await listReplicas(log.state, 3 * config.delivery.leaseMs).catch(() => []) : [];
    // the deployment's rates: this replica's measured now, the others' as they last published them
    const own = meter.rates(adapterNames);
    const deployment = sumRates([own, ...listed.filter((r) => r.replicaId !== identity.replicaId).map((r) => r.rates)]);
    for (const name of Object.keys(report)) {
      const a = report[name];
      const rate = deployment.adapters[name];
      const mine = own?.adapters[name];
      if (a) report[name] = { ...a, ...(rate ? { rates: rate } : {}), ...(mine ? { replicaRates: mine } : {}) };
    }
    // the published rates stay in the records the status reads, not in what it shows of each replica
    const replicas = listed.map(({ rates: _rates, ...r }) => r);
    return { log: { backend: log.info.backend, durable: log.info.durable, available: log.available, unavailablePartitions }, adapters: report, replicas, linkRates: deployment.links };
  };
  registerAdapterStateMetrics({
    registry,
    adapters: supervisors.map(({ adapter, supervisor }) => ({
      name: adapter.name,
      state: () => supervisor.current,
      ready: () => adapter.status().ready,
      lastErrorAt: () => lastError(supervisor)?.at,
    })),
  });

  const app = await buildApp({
    log,
    logger: logger.child({ module: 'http' }),
    config: config.http,
    ...(config.redis ? { rateLimitStore: createSharedCounterStore({ url: config.redis.url, cluster: config.redis.cluster, sentinel: config.redis.sentinel, prefix: config.redis.prefix, password: config.redis.password, log: logger }) } : {}),
    registry,
    validateRoom: (spec) => roomLinkProblems(config, spec, extra.map((a) => a.name)),
    status: () => status(),
    checkLinks: async (spec) => {
      const checks = spec.links.map(async (link) => {
        const adapter = adapters.find((a) => a.name === link.endpoint);
        const refusal = await adapter?.checkLink?.(link).catch(() => undefined);
        return refusal ? [{ endpoint: link.endpoint, target: link.target, ...refusal }] : [];
      });
      return (await Promise.all(checks)).flat();
    },
    // the console's Rules page: an adapter with inbound rules (MQTT) tries one on a sample
    ...(adapters.some((a) => a.testRule)
      ? {
          testRule: async (sample: AdapterRuleSample & { readonly endpoint?: string }) => {
            const adapter = adapters.find((a) => a.testRule && (sample.endpoint === undefined || a.name === sample.endpoint));
            if (!adapter?.testRule) throw new SyncgateError('SG_ERR_NOT_FOUND', `no adapter ${sample.endpoint ?? ''} with inbound rules`);
            return adapter.testRule(sample);
          },
        }
      : {}),
    bodyLimits: Object.fromEntries(adapters.flatMap((a) => (a.maxBodyBytes !== undefined ? [[a.name, a.maxBodyBytes]] : []))),
    // decrypted Matrix attachments: any replica serves them (the adapter needs no connection lease for it)
    media: async (endpoint, id) => adapters.find((a) => a.name === endpoint)?.media?.(id),
  });

  const version = buildVersion();
  const hash = configHash(config);
  const startedAt = Date.now();
  let trimTimer: NodeJS.Timeout | undefined;
  /** re-reads the stored partition count and write format once a lease period, adapters or not */
  let followTimer: NodeJS.Timeout | undefined;
  let adaptersStarted: Promise<void> = Promise.resolve();
  let stopping: Promise<void> | undefined;

  return {
    log,
    app,
    links,
    sink,
    adapters,
    supervisors: supervisors.map((s) => s.supervisor),
    adaptersStarted: () => adaptersStarted,
    status,
    async start() {
      // The log's partition count first: a count lower than the log's is refused here, before anything runs.
      await log.open();
      // Consumer groups exist before anything can be appended, so nothing is missed.
      for (const { adapter } of supervisors) {
        await Promise.all(Array.from({ length: log.info.partitions }, (_, p) => ensureGroupUnlessUnavailable(log, p, `out:${adapter.name}`, logger)));
      }
      // The API first: devices sync and send while the adapters connect (the log keeps what is sent meanwhile).
      const address = await listen(app, config.http.host, config.http.port);
      // Then each adapter starts, in the background, on the replica that gets its connection lease;
      // a start that fails is retried by its supervisor and shows in GET /v1/admin/status.
      adaptersStarted = Promise.all(
        supervisors.map(({ adapter, supervisor }) => supervisor.start().catch((err: unknown) => logger.error({ err, adapter: adapter.name }, 'adapter supervisor failed'))),
      ).then(() => undefined);
      if (config.retention.maxAgeDays > 0) {
        const every = Math.min(3600_000, Math.max(10_000, (config.retention.maxAgeDays * DAY_MS) / 10));
        trimTimer = setInterval(() => {
          log.trim().catch((err: unknown) => logger.warn({ err }, 'retention trim failed'));
        }, every);
        trimTimer.unref();
      }
      // A replica without adapters has no delivery polling the log: follow a raise of the count or format here.
      // Each period it also says it runs, with its build and configuration (the console's replicas).
      const announce = () => {
        const rates = meter.rates(adapterNames);
        return announceReplica(log.state, { replicaId: identity.replicaId, version, configHash: hash, startedAt, seenAt: Date.now(), ...(rates ? { rates } : {}) });
      };
      await announce().catch((err: unknown) => logger.warn({ err }, 'could not announce this replica'));
      followTimer = setInterval(() => {
        log.partitionCount().catch((err: unknown) => logger.warn({ err }, 'could not re-read the partition count and write format'));
        announce().catch((err: unknown) => logger.debug({ err }, 'could not announce this replica'));
      }, config.delivery.leaseMs);
      followTimer.unref();
      meter.sample();
      // each sample publishes the rates with the replica record (the deployment's rates are their sum)
      rateTimer = setInterval(() => {
        meter.sample();
        announce().catch((err: unknown) => logger.debug({ err }, 'could not announce this replica'));
      }, RATE_SAMPLE_MS);
      rateTimer.unref();
      logger.info({ address, backend: log.info.backend, durable: log.info.durable, adapters: adapters.map((a) => a.name), replica: owner }, 'syncgate listening');
      return address;
    },
    stop() {
      stopping ??= (async () => {
        if (trimTimer) clearInterval(trimTimer);
        if (followTimer) clearInterval(followTimer);
        if (rateTimer) clearInterval(rateTimer);
        logger.info('stopping: no new requests; closing live streams');
        await app.close();
        // each supervisor finishes in-flight deliveries, stops its adapter and releases the leases
        await Promise.all(supervisors.map((s) => s.supervisor.stop()));
        links.close();
        await log.close();
        logger.info('stopped');
      })();
      return stopping;
    },
  };
}

const LISTEN_PROBLEMS: Readonly<Record<string, string>> = {
  EADDRINUSE: 'the port is already in use (another process listens there)',
  EACCES: 'permission denied (ports below 1024 need privileges)',
  EADDRNOTAVAIL: 'the host is not an address of this machine',
};

/** listen, with a failure an operator can act on: which setting, which address, why. */
async function listen(app: FastifyInstance, host: string, port: number): Promise<string> {
  try {
    return await app.listen({ host, port });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    const why = LISTEN_PROBLEMS[code];
    if (why === undefined) throw err;
    throw new SyncgateError('SG_ERR_HTTP_LISTEN', `${host}:${port}: ${why}; set http.port / SYNCGATE_HTTP_PORT (and http.host / SYNCGATE_HTTP_HOST)`, { host, port, errno: code });
  }
}
