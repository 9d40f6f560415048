/**
 * One error handler: whatever fails, the client gets `{code, message}` with
 * the status of that code in the error table (src/core/errors.ts).
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { SyncgateError, isSyncgateError, type ErrorCode } from '../core/errors.js';
import type { SchemaProblem } from './validation.js';

/** fastify's own errors that are the client's fault, by fastify code. */
const FRAMEWORK_CODES: Readonly<Record<string, ErrorCode>> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'SG_ERR_BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'SG_ERR_REQUEST_INVALID',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'SG_ERR_REQUEST_INVALID',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'SG_ERR_REQUEST_INVALID',
  FST_ERR_CTP_INVALID_JSON_BODY: 'SG_ERR_REQUEST_INVALID',
  FST_ERR_VALIDATION: 'SG_ERR_REQUEST_INVALID',
};

function isValidationError(err: unknown): err is FastifyError & { validation: SchemaProblem[]; validationContext?: string } {
  return typeof err === 'object' && err !== null && Array.isArray((err as { validation?: unknown }).validation);
}

/** Turns anything thrown by a route or by fastify into a SyncgateError. */
export function toSyncgateError(err: unknown): SyncgateError {
  if (isSyncgateError(err)) return err;
  if (isValidationError(err)) {
    const where = err.validationContext ?? 'request';
    const problems = err.validation.map((p) => `${where}${p.instancePath || ''} ${p.message}`);
    return new SyncgateError('SG_ERR_REQUEST_INVALID', problems[0], { problems });
  }
  const e = err as Partial<FastifyError> | undefined;
  const mapped = e?.code !== undefined ? FRAMEWORK_CODES[e.code] : undefined;
  if (mapped) return new SyncgateError(mapped, e?.message);
  // JSON parse errors and other 4xx raised by fastify or its parsers.
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) return new SyncgateError('SG_ERR_REQUEST_INVALID', e.message);
  return new SyncgateError('SG_ERR_INTERNAL', undefined, undefined, { cause: err });
}

export function errorHandler(err: unknown, request: FastifyRequest, reply: FastifyReply): void {
  const sg = toSyncgateError(err);
  if (sg.status >= 500) request.log.error({ err: sg.code === 'SG_ERR_INTERNAL' ? err : sg, route: request.routeOptions.url }, 'request failed');
  else request.log.debug({ code: sg.code, route: request.routeOptions.url }, sg.message);
  void reply.code(sg.status).type('application/json; charset=utf-8').send(sg.toJSON());
}

export function notFoundHandler(request: FastifyRequest, reply: FastifyReply): void {
  const err = new SyncgateError('SG_ERR_NOT_FOUND', `${request.method} ${request.url.split('?')[0] ?? ''}`);
  void reply.code(err.status).type('application/json; charset=utf-8').send(err.toJSON());
}
