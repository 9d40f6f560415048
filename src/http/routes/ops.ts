/**
 * Operations: liveness, readiness (the log and whatever the runtime adds, e.g.
 * each adapter) and Prometheus metrics. No authentication: expose them on an
 * internal network only.
 */
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { HttpContext } from '../context.js';
import { Health, Readiness } from '../schemas.js';

const READY_TIMEOUT_MS = 2000;

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
    { schema: { tags: ['operations'], summary: 'Readiness: the event log (and each adapter) is reachable', response: { 200: Readiness, 503: Readiness } } },
    async (_request, reply) => {
      const checks: Record<string, { ok: boolean; detail?: string }> = {};
      try {
        await withTimeout(ctx.log.ping(), READY_TIMEOUT_MS, 'the event log');
        checks['log'] = { ok: true, detail: ctx.log.info.backend };
      } catch (err) {
        checks['log'] = { ok: false, detail: message(err) };
      }
      if (ctx.readiness) {
        try {
          Object.assign(checks, await withTimeout(ctx.readiness(), READY_TIMEOUT_MS, 'the readiness check'));
        } catch (err) {
          checks['runtime'] = { ok: false, detail: message(err) };
        }
      }
      const ok = Object.values(checks).every((c) => c.ok);
      if (ok) return { status: 'ok' as const, checks };
      const code = checks['log']?.ok === false ? 'SG_ERR_LOG_UNAVAILABLE' : 'SG_ERR_NOT_READY';
      return reply.code(503).send({ status: 'unavailable', code, checks });
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
