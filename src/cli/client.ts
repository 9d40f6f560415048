/**
 * The CLI's small HTTP client for a running gateway: the admin API (admin
 * token from the configuration) and the device API (a device token).
 */
import type { Config } from '../config/index.js';
import { SyncgateError, isErrorCode } from '../core/errors.js';

export interface Client {
  call<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
}

/** --url, else SYNCGATE_URL, else the configured listener (0.0.0.0 reached as 127.0.0.1). */
export function gatewayUrl(config: Config, url: string | undefined): string {
  if (url !== undefined && url !== '') return url.replace(/\/+$/, '');
  const host = config.http.host === '0.0.0.0' || config.http.host === '::' || config.http.host === '' ? '127.0.0.1' : config.http.host;
  return `http://${host.includes(':') ? `[${host}]` : host}:${config.http.port}`;
}

export function createClient(base: string, token: string): Client {
  return {
    async call<T>(method: string, path: string, body?: unknown): Promise<T> {
      let res: Response;
      try {
        res = await fetch(`${base}${path}`, {
          method,
          headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
          ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        });
      } catch (err) {
        const cause = err instanceof Error && err.cause instanceof Error ? err.cause.message : String(err);
        throw new SyncgateError('SG_ERR_GATEWAY_UNREACHABLE', `${base} (--url / SYNCGATE_URL): ${cause}`);
      }
      const text = await res.text();
      const parsed = text ? (JSON.parse(text) as unknown) : undefined;
      if (!res.ok) {
        const e = (parsed ?? {}) as { code?: string; message?: string };
        const code = e.code !== undefined && isErrorCode(e.code) ? e.code : 'SG_ERR_INTERNAL';
        throw new SyncgateError('SG_ERR_GATEWAY_REFUSED', `${method} ${path}: ${res.status} ${code}: ${e.message ?? text}`, { status: res.status, code });
      }
      return parsed as T;
    },
  };
}
