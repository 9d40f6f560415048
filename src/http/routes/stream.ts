/**
 * `GET /v1/stream`: the live stream, as a WebSocket (upgrade) or as SSE
 * (`Accept: text/event-stream`). The cursor comes from `Last-Event-ID` (SSE
 * reconnects), else `since`, else now. Auth, rate limit and the cursor are
 * checked before the upgrade, so a bad request gets a plain HTTP error.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { decodeSyncCursor } from '../../core/cursor.js';
import { SyncgateError } from '../../core/errors.js';
import { deviceAuth, deviceOf } from '../auth.js';
import type { HttpContext } from '../context.js';
import type { StreamStart } from '../live.js';
import { StreamQuery, errors } from '../schemas.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** set by the stream's preHandler */
    streamStart: StreamStart | null;
  }
}

export function registerStreamRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const { log, directory } = ctx;
  app.decorateRequest('streamStart', null);

  async function prepare(request: FastifyRequest<{ Querystring: StreamQuery }>): Promise<void> {
    const device = deviceOf(request);
    const lastEventId = request.headers['last-event-id'];
    const given = (typeof lastEventId === 'string' && lastEventId !== '' ? lastEventId : undefined) ?? request.query.since;
    // Validate here so a bad cursor is a 400, not a stream that dies at once.
    if (given !== undefined) decodeSyncCursor(given);
    const grants = await directory.grants(device.user);
    const since = given ?? (await log.head(new Set(grants)));
    request.streamStart = { device, rooms: new Set(grants), since, telemetry: request.query.telemetry };
  }

  const started = (request: FastifyRequest): StreamStart => {
    if (!request.streamStart) throw new SyncgateError('SG_ERR_INTERNAL', 'stream without a start');
    return request.streamStart;
  };

  app.route<{ Querystring: StreamQuery }>({
    method: 'GET',
    url: '/v1/stream',
    onRequest: deviceAuth({ directory, rateLimit: ctx.rateLimit, allowQueryToken: true }),
    preHandler: prepare,
    schema: {
      tags: ['device'],
      security: [{ bearer: [] }],
      summary: 'Live stream: WebSocket (upgrade) or SSE (Accept: text/event-stream)',
      description: [
        'History after the cursor, then live events, with no gap and no duplicate.',
        'Cursor: `Last-Event-ID` (SSE), else `since`, else now. The token may be given as `access_token` for clients that cannot set headers.',
        'WebSocket frames: `{type:"ready",next}`, `{type:"event",event,next}`, `{type:"limited",next}`, `{type:"heartbeat"}`, and a last `{type:"close",code,message,next}`.',
        'SSE: events have `id` = the cursor after them and `data` = the event; `ready`, `limited`, `heartbeat` and `close` are named events.',
        'A client that falls too far behind is closed with its cursor; reconnect with it.',
        'With `telemetry=true` the rooms\' telemetry readings that arrive from then on come too (polled about once a second): WebSocket `{type:"telemetry",room,reading}`, SSE `event: telemetry` without an `id` (readings do not move the cursor).',
      ].join('\n\n'),
      querystring: StreamQuery,
      produces: ['text/event-stream'],
      response: errors(400, 401, 429),
    },
    handler: async (request, reply) => {
      const accept = request.headers.accept ?? '';
      if (!accept.includes('text/event-stream')) {
        throw new SyncgateError('SG_ERR_REQUEST_INVALID', 'open /v1/stream as a WebSocket or with "Accept: text/event-stream"');
      }
      reply.hijack();
      reply.raw.on('error', (err) => request.log.debug({ err }, 'sse connection error'));
      ctx.live.openSse(reply.raw, started(request));
    },
    wsHandler: (socket, request) => {
      ctx.live.openWebSocket(socket, request.raw.socket, started(request));
    },
  });
}
