/**
 * The operator console (issue 25): static files built by `npm run build`
 * (scripts/build-console.mjs → dist/console), served at /console/ with a
 * strict Content-Security-Policy — scripts, styles and API calls from this
 * origin only, no inline script — so chat content shown in it cannot run.
 * `http.console: false` leaves it out.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import fastifyStatic from '@fastify/static';
import type { Logger } from 'pino';

export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/** dist/console of the checkout this module belongs to (from dist/src/http or, under tsx, src/http). */
export function consoleDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json'))) return join(dir, 'dist', 'console');
    dir = dirname(dir);
  }
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'console');
}

export async function registerConsole(app: FastifyInstance, options: { readonly root?: string; readonly logger: Logger }): Promise<void> {
  const root = options.root ?? consoleDir();
  const built = existsSync(join(root, 'index.html'));
  if (!built) options.logger.warn({ root }, 'the console is not built (npm run build): /console/ answers 404');
  app.addHook('onSend', async (request, reply) => {
    if (request.url === '/console' || request.url.startsWith('/console/')) {
      reply.header('content-security-policy', CONSOLE_CSP);
      reply.header('x-content-type-options', 'nosniff');
      reply.header('referrer-policy', 'no-referrer');
      reply.header('x-frame-options', 'DENY');
      reply.header('cache-control', 'no-cache');
    }
  });
  app.get('/console', { schema: { hide: true } }, async (_request, reply) => reply.redirect('/console/'));
  if (!built) return;
  // swagger-ui registers this plugin too: no reply decorators of our own
  await app.register(fastifyStatic, { root, prefix: '/console/', decorateReply: false, index: ['index.html'], wildcard: true, schemaHide: true });
}
