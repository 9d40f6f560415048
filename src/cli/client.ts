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

/** An answer as it came: the status, the parsed JSON body (undefined when empty) and the text. */
export interface JsonAnswer<T = unknown> {
  readonly status: number;
  readonly body: T;
  readonly text: string;
}

/**
 * One request to a gateway with a bearer token and an optional JSON body:
 * the shape every client of the API shares (this CLI, the tests, the
 * benches). A network failure is thrown as fetch throws it; any status is
 * returned. A body that is not JSON (an error page of a proxy) is undefined.
 */
export async function requestJson<T = unknown>(base: string, token: string, method: string, path: string, body?: unknown): Promise<JsonAnswer<T>> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text ? (JSON.parse(text) as unknown) : undefined;
  } catch {
    parsed = undefined;
  }
  return { status: res.status, body: parsed as T, text };
}

export function createClient(base: string, token: string): Client {
  return {
    async call<T>(method: string, path: string, body?: unknown): Promise<T> {
      let res: JsonAnswer;
      try {
        res = await requestJson(base, token, method, path, body);
      } catch (err) {
        const cause = err instanceof Error && err.cause instanceof Error ? err.cause.message : String(err);
        throw new SyncgateError('SG_ERR_GATEWAY_UNREACHABLE', `${base} (--url / SYNCGATE_URL): ${cause}`);
      }
      if (res.status < 200 || res.status >= 300) {
        const e = (res.body ?? {}) as { code?: string; message?: string };
        const code = e.code !== undefined && isErrorCode(e.code) ? e.code : 'SG_ERR_INTERNAL';
        throw new SyncgateError('SG_ERR_GATEWAY_REFUSED', `${method} ${path}: ${res.status} ${code}: ${e.message ?? res.text}`, { status: res.status, code });
      }
      return res.body as T;
    },
  };
}
