/**
 * buildApp: the HTTP API as a fastify instance, ready to `listen` — which only
 * `main` (src/runtime) does. It sees the EventLog port, never an
 * implementation, and keeps everything shared between replicas in the log.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import websocket from '@fastify/websocket';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import cors from '@fastify/cors';
import rateLimit from '@fastify/rate-limit';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import type { EventLog, RoomSpec } from '../core/ports.js';
import type { HttpConfig, HttpContext, LinkCheck, MediaSource, RuleTester, StatusReport } from './context.js';
import { Directory } from './directory.js';
import { utf8JsonParser, type JsonTextParser } from './body.js';
import { registerConsole } from './console.js';
import { clientErrorHandler, createErrorHandler, notFoundHandler } from './errors.js';
import { SyncgateError } from '../core/errors.js';
import { LiveHub } from './live.js';
import { createHttpMetrics } from './metrics.js';
import { refineOpenApi } from './openapi.js';
import { registerAdminRoutes } from './routes/admin.js';
import { registerDeadLetterRoutes } from './routes/dead-letters.js';
import { registerDeviceRoutes } from './routes/device.js';
import { registerOperatorRoutes } from './routes/operator.js';
import { registerOperatorLiveRoute } from './routes/operator-live.js';
import { registerAuditRoutes } from './routes/audit.js';
import { trackDevicePositions } from './device-lag.js';
import { registerMediaRoutes } from './routes/media.js';
import { registerOpsRoutes } from './routes/ops.js';
import { registerPartitionRoutes } from './routes/partitions.js';
import { registerStreamRoutes } from './routes/stream.js';
import { MAX_PARAM_LENGTH } from './schemas.js';
import { typeboxValidatorCompiler } from './validation.js';
import { ViewCache } from './view.js';

export interface AppDeps {
  readonly log: EventLog;
  readonly logger: Logger;
  readonly config: HttpConfig;
  /** each adapter's state for GET /v1/admin/status (readiness is the log's alone) */
  readonly status?: StatusReport;
  /** checks a room's links before the admin API stores it (e.g. MQTT rules); returns every problem */
  readonly validateRoom?: (spec: RoomSpec) => readonly string[];
  /** where the rate limit counts: a store shared by the replicas (closed with the app); absent = in this process */
  readonly rateLimitStore?: { readonly client: unknown; readonly nameSpace: string; close(): Promise<void> };
  /**
   * The largest body (UTF-8 bytes) each endpoint carries whole (the adapters'
   * `maxBodyBytes`): a send answers with the linked endpoints its body
   * exceeds (README "Message size").
   */
  readonly bodyLimits?: Readonly<Record<string, number>>;
  /** asks the linked endpoints whether they can bridge a room's links (e.g. not an encrypted Matrix room) */
  readonly checkLinks?: LinkCheck;
  /** runs an MQTT rule on a sample (POST /v1/admin/rules/test); absent = no MQTT adapter */
  readonly testRule?: RuleTester;
  /** files adapters serve under attachment URLs (GET /v1/media/:endpoint/:id); absent = none */
  readonly media?: MediaSource;
  /** where the built console is (default dist/console of this checkout) */
  readonly consoleRoot?: string;
  /** where the metrics go; a fresh registry when absent */
  readonly registry?: Registry;
  /** live stream tuning (tests and benchmarks) */
  readonly stream?: {
    /** a client whose socket holds more than this gets no more events until it drained; default 64 KiB */
    readonly pauseBytes?: number;
    /** a client whose socket holds more than this is closed with its cursor; default 1 MiB */
    readonly maxBufferedBytes?: number;
    /** a paused client that has not drained within this is closed with its cursor; default 10 s */
    readonly stallMs?: number;
  };
}

const STREAM_DEFAULTS = { pauseBytes: 64 * 1024, maxBufferedBytes: 1024 * 1024, stallMs: 10_000 } as const;

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { log, config } = deps;
  // The caller binds the context it wants (src/runtime passes a child logger with module=http).
  const logger = deps.logger;
  const registry = deps.registry ?? new Registry();
  const metrics = createHttpMetrics(registry);
  const directory = new Directory(log);
  const views = new ViewCache();
  const onError = createErrorHandler(() => log.available);
  const app: FastifyInstance = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // Request lines are logged by the onResponse hook below, without query strings (they may carry access_token).
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.bodyLimitBytes,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    trustProxy: config.trustProxy,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    // Refusals from the router and from Node's HTTP parser get our error shape too.
    frameworkErrors: (err, request, reply) => void onError(err, request, reply),
    clientErrorHandler: clientErrorHandler({ logger: logger as FastifyBaseLogger, bodyLimit: config.bodyLimitBytes }),
  });

  // Browsers: only the configured origins; none by default.
  await app.register(cors, {
    origin: config.cors.origins.length > 0 ? [...config.cors.origins] : false,
    methods: ['GET', 'PUT', 'POST', 'DELETE'],
    allowedHeaders: ['authorization', 'content-type', 'last-event-id'],
    exposedHeaders: ['retry-after', 'ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset'],
    maxAge: 600,
  });
  // Per device, counted in Redis when there is one, so every replica shares the limit.
  const store = deps.rateLimitStore;
  if (store) app.addHook('onClose', async () => store.close());
  await app.register(rateLimit, {
    global: false,
    enableDraftSpec: true,
    // the store's client is an ioredis client (src/eventlog creates it)
    ...(store ? { redis: store.client as NonNullable<Parameters<typeof rateLimit>[1]>['redis'], nameSpace: store.nameSpace } : {}),
  });
  const windowMs = Math.max(1000, Math.ceil((config.rateLimit.burst / config.rateLimit.perSecond) * 1000));
  const deviceRateLimit = app.rateLimit({
    max: config.rateLimit.burst,
    timeWindow: windowMs,
    keyGenerator: (request) => request.device?.deviceId ?? request.ip,
    onExceeded: () => metrics.rateLimited.inc(),
    // A counter store that does not answer (its Redis Cluster shard failing over) does not fail the
    // request with a 500: it goes on uncounted for that moment, and meets the log's own 503 if the log is away too.
    skipOnError: true,
    errorResponseBuilder: (_request, context) => new SyncgateError('SG_ERR_RATE_LIMITED', `retry in ${context.after}`, { retryAfterMs: context.ttl }),
  });

  const ctx: HttpContext = {
    log,
    logger,
    config,
    directory,
    rateLimit: async (request, reply) => {
      await deviceRateLimit.call(app, request, reply);
    },
    metrics,
    registry,
    views,
    live: new LiveHub({
      log,
      directory,
      metrics,
      views,
      logger,
      heartbeatMs: config.heartbeatMs,
      pauseBytes: deps.stream?.pauseBytes ?? STREAM_DEFAULTS.pauseBytes,
      maxBufferedBytes: deps.stream?.maxBufferedBytes ?? STREAM_DEFAULTS.maxBufferedBytes,
      stallMs: deps.stream?.stallMs ?? STREAM_DEFAULTS.stallMs,
    }),
    status: deps.status,
    validateRoom: deps.validateRoom,
    bodyLimits: deps.bodyLimits ?? {},
    checkLinks: deps.checkLinks,
    testRule: deps.testRule,
    media: deps.media,
  };

  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, utf8JsonParser(app.getDefaultJsonParser('error', 'error') as JsonTextParser));
  app.setValidatorCompiler(typeboxValidatorCompiler);
  // Response schemas document the API; JSON.stringify writes the bodies, so nothing is dropped silently.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  app.setErrorHandler(onError);
  app.setNotFoundHandler(notFoundHandler);
  app.decorateRequest('device', null);
  app.decorateRequest('admin', null);

  await app.register(swagger, {
    transformObject: (documentObject) => refineOpenApi(('openapiObject' in documentObject ? documentObject.openapiObject : documentObject.swaggerObject) as Record<string, unknown>),
    openapi: {
      openapi: '3.0.3',
      info: { title: 'syncgate HTTP API', version: '1', description: 'Devices sync from a cursor: send, sync, history, live stream, read markers.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'a device token (sgd_…) or, for /v1/admin, the admin token' } } },
      tags: [
        { name: 'device', description: 'device token' },
        { name: 'admin', description: 'admin token' },
        { name: 'operations', description: 'no token' },
      ],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  await app.register(websocket, {
    // Clients only listen on the stream; a small cap keeps junk frames cheap.
    options: { maxPayload: 4096 },
    preClose(done) {
      ctx.live.closeAll();
      this.websocketServer.close();
      done();
    },
  });

  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.requests.inc({ method: request.method, route, status: String(reply.statusCode) });
    metrics.duration.observe({ route }, reply.elapsedTime / 1000);
    request.log.debug({ method: request.method, route, status: reply.statusCode, ms: Math.round(reply.elapsedTime) }, 'request');
  });
  app.addHook('preClose', async () => ctx.live.closeAll());
  // While the log's connection is lost, the API answers at once rather than after
  // the store client's retries (~10 s): authentication itself needs the log.
  app.addHook('onRequest', async (request) => {
    if (!log.available && request.url.startsWith('/v1/')) throw new SyncgateError('SG_ERR_LOG_UNAVAILABLE', 'the event log is not reachable now; retry later');
  });

  if (config.console === true) await registerConsole(app, { logger, ...(deps.consoleRoot !== undefined ? { root: deps.consoleRoot } : {}) });
  registerOpsRoutes(app, ctx);
  registerMediaRoutes(app, ctx);
  registerAdminRoutes(app, ctx);
  registerDeadLetterRoutes(app, ctx);
  registerOperatorRoutes(app, ctx);
  registerOperatorLiveRoute(app, ctx);
  registerAuditRoutes(app, ctx);
  trackDevicePositions(app, log.state);
  registerPartitionRoutes(app, ctx);
  registerDeviceRoutes(app, ctx);
  registerStreamRoutes(app, ctx);
  return app;
}
