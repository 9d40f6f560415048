/**
 * Operations: liveness, readiness and Prometheus metrics. Readiness means this
 * replica can serve the API — its event log answers; a remote server (XMPP,
 * Matrix, MQTT) being down must not take the device API out of a load
 * balancer, so adapter state is in GET /v1/admin/status and the metrics. No
 * authentication: expose them on an internal network only.
 */
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { HttpContext } from '../context.js';
import { Health, Readiness } from '../schemas.js';

const READY_TIMEOUT_MS = 2000;
/** the partition probe bounds each partition's answer itself (1.5 s); this is its outer limit */
const PROBE_TIMEOUT_MS = 3000;

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

export function registerOpsRoutes(app: FastifyInstance, ctx: HttpContext): void {
  app.get('/healthz', { schema: { tags: ['operations'], summary: 'Liveness: the process answers', response: { 200: Health } } }, async () => ({ status: 'ok' as const }));

  app.get(
    '/readyz',
    {
      schema: {
        tags: ['operations'],
        summary: 'Readiness: this replica can serve the API (its event log answers; `degraded` names partitions that do not); adapter state is in /v1/admin/status',
        response: { 200: Readiness, 503: Readiness },
      },
    },
    async (_request, reply) => {
      let check: { ok: boolean; detail?: string };
      try {
        await withTimeout(ctx.log.ping(), READY_TIMEOUT_MS, 'the event log');
        check = { ok: true, detail: ctx.log.info.backend };
      } catch (err) {
        check = { ok: false, detail: message(err) };
      }
      const checks: Record<string, { ok: boolean; detail?: string }> = { log: check };
      if (check.ok) {
        // A Redis Cluster that lost a shard with no replica still serves the other partitions:
        // still ready (every replica shares the cluster, so taking this one out helps no one),
        // but say which partitions are away.
        const down = await withTimeout(ctx.log.unavailablePartitions(), PROBE_TIMEOUT_MS, 'the partition probe').catch((err: unknown) => message(err));
        if (typeof down === 'string') {
          checks['partitions'] = { ok: false, detail: down };
          return { status: 'degraded' as const, checks };
        }
        if (down.length === 0) return { status: 'ok' as const, checks };
        checks['partitions'] = { ok: false, detail: `${down.length} of ${ctx.log.info.partitions} partitions unavailable (SG_ERR_LOG_PARTITION_UNAVAILABLE): ${down.join(', ')}` };
        return { status: 'degraded' as const, unavailablePartitions: down, checks };
      }
      return reply.code(503).send({ status: 'unavailable', code: 'SG_ERR_LOG_UNAVAILABLE', reason: `the event log: ${check.detail ?? 'unavailable'}`, checks });
    },
  );

  app.get(
    '/metrics',
    { schema: { tags: ['operations'], summary: 'Prometheus metrics', response: { 200: Type.String({ description: 'Prometheus text format' }) } } },
    async (_request, reply) => {
      const text = await ctx.registry.metrics();
      return reply.type(ctx.registry.contentType).send(text);
    },
  );
}
