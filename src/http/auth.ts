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

/** Who called an admin route: the admin token, or one of the read-only viewer tokens. */
export interface AdminIdentity {
  readonly role: 'admin' | 'viewer';
  /** what the audit log names: `admin`, or `viewer:<first 8 hex of the token's sha256>` (never the token) */
  readonly name: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** set by the admin auth hook */
    admin: AdminIdentity | null;
  }
}

export interface AdminAuthOptions {
  /** read-only tokens (http.viewerTokens): every admin GET, no change */
  readonly viewerTokens?: readonly string[];
  /** a POST that changes nothing (e.g. a rule test): viewers may call it too */
  readonly readOnly?: boolean;
}

const READ_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD']);

/**
 * The admin token from the configuration (absent = the admin API is disabled),
 * and the viewer tokens, which may read and never change: a viewer calling a
 * mutating route gets SG_ERR_FORBIDDEN.
 */
export function adminAuth(adminToken: string | undefined, options: AdminAuthOptions = {}): onRequestAsyncHookHandler {
  const expected = adminToken === undefined ? undefined : digest(adminToken);
  const viewers = (options.viewerTokens ?? []).map((t) => ({ hash: digest(t), name: `viewer:${digest(t).toString('hex').slice(0, 8)}` }));
  return async function authenticateAdmin(request: FastifyRequest): Promise<void> {
    if (!expected) throw new SyncgateError('SG_ERR_FORBIDDEN', 'the admin API is disabled: no admin token is configured');
    const token = bearerToken(request, false);
    if (token === undefined) throw new SyncgateError('SG_ERR_AUTH_MISSING');
    // Hashing first gives equal lengths, as timingSafeEqual needs, without leaking the length.
    const given = digest(token);
    if (timingSafeEqual(expected, given)) {
      request.admin = { role: 'admin', name: 'admin' };
      return;
    }
    // every viewer is compared, so the time taken does not say which one matched
    let viewer: string | undefined;
    for (const v of viewers) if (timingSafeEqual(v.hash, given)) viewer = v.name;
    if (viewer === undefined) throw new SyncgateError('SG_ERR_AUTH_INVALID');
    request.admin = { role: 'viewer', name: viewer };
    if (!READ_METHODS.has(request.method) && options.readOnly !== true) throw new SyncgateError('SG_ERR_FORBIDDEN', 'a viewer token is read-only', { role: 'viewer' });
  };
}

/** The caller of an admin route, for the audit log. */
export function adminOf(request: FastifyRequest): AdminIdentity {
  return request.admin ?? { role: 'admin', name: 'admin' };
}
