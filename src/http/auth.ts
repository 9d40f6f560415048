/**
 * Bearer-token hooks: device tokens (then the per-device rate limit) and the
 * admin token. They run on `onRequest`, before any body is read.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest, onRequestAsyncHookHandler } from 'fastify';
import { SyncgateError } from '../core/errors.js';
import type { DeviceIdentity, Directory } from './directory.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** set by the device auth hook */
    device: DeviceIdentity | null;
  }
}

function bearerToken(request: FastifyRequest, allowQuery: boolean): string | undefined {
  const header = request.headers.authorization;
  if (header !== undefined) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!m?.[1]) throw new SyncgateError('SG_ERR_AUTH_INVALID', 'expected "Authorization: Bearer <token>"');
    return m[1];
  }
  if (allowQuery) {
    // Browsers cannot set headers on WebSocket or EventSource requests.
    const q = (request.query as { access_token?: unknown } | undefined)?.access_token;
    if (typeof q === 'string' && q !== '') return q;
  }
  return undefined;
}

export interface DeviceAuthOptions {
  readonly directory: Directory;
  readonly rateLimit: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
  readonly allowQueryToken?: boolean;
}

export function deviceAuth(options: DeviceAuthOptions): onRequestAsyncHookHandler {
  return async function authenticateDevice(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const token = bearerToken(request, options.allowQueryToken ?? false);
    if (token === undefined) throw new SyncgateError('SG_ERR_AUTH_MISSING');
    const device = await options.directory.authenticate(token);
    request.device = device;
    await options.rateLimit(request, reply);
  };
}

export function deviceOf(request: FastifyRequest): DeviceIdentity {
  if (!request.device) throw new SyncgateError('SG_ERR_INTERNAL', 'route without device authentication');
  return request.device;
}

const digest = (text: string) => createHash('sha256').update(text).digest();

/** The admin token from the configuration; absent = the admin API is disabled. */
export function adminAuth(adminToken: string | undefined): onRequestAsyncHookHandler {
  const expected = adminToken === undefined ? undefined : digest(adminToken);
  return async function authenticateAdmin(request: FastifyRequest): Promise<void> {
    if (!expected) throw new SyncgateError('SG_ERR_FORBIDDEN', 'the admin API is disabled: no admin token is configured');
    const token = bearerToken(request, false);
    if (token === undefined) throw new SyncgateError('SG_ERR_AUTH_MISSING');
    // Hashing first gives equal lengths, as timingSafeEqual needs, without leaking the length.
    if (!timingSafeEqual(expected, digest(token))) throw new SyncgateError('SG_ERR_AUTH_INVALID');
  };
}
