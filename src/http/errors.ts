/**
 * One error handler: whatever fails, the client gets `{code, message}` with
 * the status of that code in the error table (src/core/errors.ts) — also
 * when fastify's router or body parser, or Node's HTTP parser, refuses the
 * request before a route runs. Every framework error is mapped here.
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyBaseLogger, FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { SyncgateError, isSyncgateError, type ErrorCode } from '../core/errors.js';
import { DRAIN_BODY_LIMITS, lingerAfterAnswer, readRest, stillLingering } from './connection.js';
import { MAX_PARAM_LENGTH } from './schemas.js';
import type { SchemaProblem } from './validation.js';

/**
 * fastify's own errors that are the client's fault, by fastify code. A
 * `detail` replaces fastify's message where that would echo the URL (which
 * may carry an access_token).
 */
const FRAMEWORK_ERRORS: Readonly<Record<string, { readonly code: ErrorCode; readonly detail?: string }>> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { code: 'SG_ERR_BODY_TOO_LARGE' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { code: 'SG_ERR_MEDIA_TYPE_UNSUPPORTED' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { code: 'SG_ERR_REQUEST_INVALID' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { code: 'SG_ERR_REQUEST_INVALID' },
  FST_ERR_CTP_INVALID_JSON_BODY: { code: 'SG_ERR_REQUEST_INVALID' },
  FST_ERR_VALIDATION: { code: 'SG_ERR_REQUEST_INVALID' },
  FST_ERR_BAD_URL: { code: 'SG_ERR_REQUEST_INVALID', detail: 'the path is not valid percent-encoded UTF-8' },
  // the router's `maxParamLength` is the longest id the schemas allow: a longer one is a schema violation
  FST_ERR_MAX_PARAM_LENGTH: { code: 'SG_ERR_REQUEST_INVALID', detail: `a path parameter is longer than ${MAX_PARAM_LENGTH} characters` },
};

/** Node's HTTP parser refusals (before fastify sees a request), by Node error code; anything else is a bad request. */
const CLIENT_ERRORS: Readonly<Record<string, ErrorCode>> = {
  HPE_HEADER_OVERFLOW: 'SG_ERR_HEADERS_TOO_LARGE',
  HPE_CHUNK_EXTENSIONS_OVERFLOW: 'SG_ERR_BODY_TOO_LARGE',
  ERR_HTTP_REQUEST_TIMEOUT: 'SG_ERR_REQUEST_TIMEOUT',
};

export function clientErrorCode(nodeCode: string | undefined): ErrorCode {
  return (nodeCode !== undefined ? CLIENT_ERRORS[nodeCode] : undefined) ?? 'SG_ERR_REQUEST_INVALID';
}

function isValidationError(err: unknown): err is FastifyError & { validation: SchemaProblem[]; validationContext?: string } {
  return typeof err === 'object' && err !== null && Array.isArray((err as { validation?: unknown }).validation);
}

/** Turns anything thrown by a route or by fastify into a SyncgateError. */
export function toSyncgateError(err: unknown, logAvailable = true): SyncgateError {
  if (isSyncgateError(err)) return err;
  // Whatever the store's client threw while its connection is lost: the log is away, not a bug.
  if (!logAvailable) return new SyncgateError('SG_ERR_LOG_UNAVAILABLE', undefined, undefined, { cause: err });
  if (isValidationError(err)) {
    const where = err.validationContext ?? 'request';
    const problems = err.validation.map((p) => `${where}${p.instancePath || ''} ${p.message}`);
    return new SyncgateError('SG_ERR_REQUEST_INVALID', problems[0], { problems });
  }
  const e = err as Partial<FastifyError> | undefined;
  const mapped = e?.code !== undefined ? FRAMEWORK_ERRORS[e.code] : undefined;
  if (mapped) return new SyncgateError(mapped.code, mapped.detail ?? e?.message);
  // Other 4xx raised by fastify's plugins or parsers.
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) return new SyncgateError('SG_ERR_REQUEST_INVALID', e.message);
  return new SyncgateError('SG_ERR_INTERNAL', undefined, undefined, { cause: err });
}

/**
 * Sends an error answer. A body the client is still sending is read and
 * thrown away first, so that the client reads the answer instead of a reset
 * (see connection.ts); past the drain limits the connection closes after the
 * answer.
 */
async function sendError(request: FastifyRequest, reply: FastifyReply, err: SyncgateError): Promise<FastifyReply> {
  if (!(await readRest(request.raw, DRAIN_BODY_LIMITS * request.routeOptions.bodyLimit))) reply.header('connection', 'close');
  return reply.code(err.status).type('application/json; charset=utf-8').send(err.toJSON());
}

/** Seconds a client is asked to wait before it retries while the event log is away. */
export const LOG_RETRY_AFTER_S = 5;

/**
 * The error handler of every route, and fastify's `frameworkErrors` (router
 * refusals). `logAvailable` tells an error of a lost store connection from a bug.
 */
export function createErrorHandler(logAvailable: () => boolean): (err: unknown, request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply> {
  return async (err, request, reply) => {
    const sg = toSyncgateError(err, isSyncgateError(err) || logAvailable());
    if (sg.status >= 500) request.log.error({ err: sg.code === 'SG_ERR_INTERNAL' ? err : sg, route: request.routeOptions.url }, 'request failed');
    else request.log.debug({ code: sg.code, route: request.routeOptions.url }, sg.message);
    if (sg.code === 'SG_ERR_LOG_UNAVAILABLE') void reply.header('retry-after', String(LOG_RETRY_AFTER_S));
    return sendError(request, reply, sg);
  };
}

export async function notFoundHandler(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  return sendError(request, reply, new SyncgateError('SG_ERR_NOT_FOUND', `${request.method} ${request.url.split('?')[0] ?? ''}`));
}

/**
 * fastify's `clientErrorHandler`: Node's HTTP parser refused the bytes, so
 * there is no request to answer through fastify; the answer goes straight to
 * the socket, which then closes.
 */
export function clientErrorHandler(options: { readonly logger: FastifyBaseLogger; readonly bodyLimit: number }): (err: Error & { code?: string }, socket: Socket) => void {
  return (err, socket) => {
    // A reset connection has no one to answer.
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    // An answered socket fails again on every later chunk the client sends.
    if (socket.writableEnded) return stillLingering(socket);
    const sg = new SyncgateError(clientErrorCode(err.code));
    options.logger.debug({ code: sg.code, cause: err.code }, sg.message);
    const body = JSON.stringify(sg.toJSON());
    socket.end(
      `HTTP/1.1 ${sg.status} ${STATUS_CODES[sg.status] ?? ''}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
    lingerAfterAnswer(socket, DRAIN_BODY_LIMITS * options.bodyLimit);
  };
}
